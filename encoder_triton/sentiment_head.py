"""A small torch head on frozen embeddings: logistic regression (hidden=0) or a 1-hidden-layer MLP whose
sigmoid output is the sentiment score in [0, 1], trained with binary cross-entropy against the review score
mapped to [0, 1] (a soft target: 7/10 -> 0.667)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class HeadConfig:
    hidden: int = 0  # 0: logistic regression on the embedding
    dropout: float = 0.1
    weight_decay: float = 1e-4
    lr: float = 1e-2
    epochs: int = 200
    batch_size: int = 256
    patience: int = 20  # epochs without a better validation loss before stopping


class SentimentHead(torch.nn.Module):
    def __init__(self, dim: int, hidden: int = 0, dropout: float = 0.1) -> None:
        super().__init__()
        self.dim, self.hidden = dim, hidden
        if hidden > 0:
            self.net: torch.nn.Module = torch.nn.Sequential(
                torch.nn.Dropout(dropout),
                torch.nn.Linear(dim, hidden),
                torch.nn.GELU(),
                torch.nn.Dropout(dropout),
                torch.nn.Linear(hidden, 1),
            )
        else:
            self.net = torch.nn.Sequential(torch.nn.Dropout(dropout), torch.nn.Linear(dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [n]."""
        out: torch.Tensor = self.net(x).squeeze(-1)
        return out

    @torch.inference_mode()
    def score(self, embeddings: npt.ArrayLike) -> FloatArray:
        """Sentiment in [0, 1] for embeddings [n, dim]."""
        self.eval()
        x = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
        return torch.sigmoid(self(x)).numpy().astype(np.float32)


def _loss(head: SentimentHead, x: torch.Tensor, y: torch.Tensor) -> float:
    head.eval()
    with torch.no_grad():
        return float(torch.nn.functional.binary_cross_entropy_with_logits(head(x), y))


def train_head(
    x_train: npt.ArrayLike,
    y_train: npt.ArrayLike,
    x_val: npt.ArrayLike,
    y_val: npt.ArrayLike,
    config: HeadConfig | None = None,
    seed: int = 42,
) -> tuple[SentimentHead, dict[str, Any]]:
    """Mini-batch AdamW, early stopping on validation BCE; returns the best epoch's head and a history."""
    config = config or HeadConfig()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    xt = torch.as_tensor(np.asarray(x_train, dtype=np.float32))
    yt = torch.as_tensor(np.asarray(y_train, dtype=np.float32))
    xv = torch.as_tensor(np.asarray(x_val, dtype=np.float32))
    yv = torch.as_tensor(np.asarray(y_val, dtype=np.float32))
    head = SentimentHead(xt.shape[1], config.hidden, config.dropout)
    optimiser = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    best_loss, best_epoch, best_state = float("inf"), -1, {k: v.clone() for k, v in head.state_dict().items()}
    for epoch in range(config.epochs):
        head.train()
        order = torch.randperm(len(xt), generator=generator)
        for start in range(0, len(xt), config.batch_size):
            idx = order[start : start + config.batch_size]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(head(xt[idx]), yt[idx])
            optimiser.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
        val_loss = _loss(head, xv, yv)
        if val_loss < best_loss - 1e-6:
            best_loss, best_epoch = val_loss, epoch
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
        elif epoch - best_epoch >= config.patience:
            break
    head.load_state_dict(best_state)
    head.eval()
    return head, {"best_epoch": best_epoch, "val_bce": best_loss, "epochs_run": epoch + 1}


def save_head(head: SentimentHead, out_dir: Path, meta: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(head.state_dict(), out_dir / "head.pt")
    body = {"dim": head.dim, "hidden": head.hidden, **meta}
    (out_dir / "head.json").write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    return out_dir / "head.pt"


def load_head(out_dir: Path) -> tuple[SentimentHead, dict[str, Any]]:
    meta = json.loads((out_dir / "head.json").read_text())
    head = SentimentHead(int(meta["dim"]), int(meta["hidden"]))
    head.load_state_dict(torch.load(out_dir / "head.pt", weights_only=True))
    head.eval()
    return head, meta


def config_dict(config: HeadConfig) -> dict[str, Any]:
    return asdict(config)
