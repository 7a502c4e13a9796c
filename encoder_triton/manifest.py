"""``export.json``: what an exported Triton version folder holds, and a check that it loads what was exported.

``llmrec export-encoder`` writes the manifest with the embedding of a probe text from the trained model.
When the server loads the version, it embeds the probe again and refuses to start on a mismatch: the weights
are not in git (see encoder_triton/README.md), and a version folder whose ``weights/`` went missing would
otherwise fall back to the packaged MiniLM and serve a sentiment head trained on another model's embeddings.

Imports only the standard library and numpy: it runs inside the Triton server's environment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

MANIFEST: Final = "export.json"
PROBE_TEXT: Final = "A quiet story about friendship, loss and the sea; the ending made me cry."
# Float32 CPU vs GPU kernels differ in the 1e-6 range; a different model differs by far more than this.
PROBE_TOLERANCE: Final = 2e-3


class ExportMismatch(RuntimeError):
    """The loaded model does not compute what the exported one did (weights missing or replaced)."""


def read_manifest(version_dir: Path) -> dict[str, Any] | None:
    path = version_dir / MANIFEST
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def write_manifest(version_dir: Path, body: dict[str, Any], probe_embedding: npt.ArrayLike) -> Path:
    vector = np.asarray(probe_embedding, dtype=np.float64).reshape(-1)
    payload = {**body, "probe_text": PROBE_TEXT, "probe_embedding": [round(float(v), 6) for v in vector]}
    path = version_dir / MANIFEST
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def check_files(manifest: dict[str, Any] | None, version_dir: Path) -> None:
    """Raise ``ExportMismatch`` when the manifest names a ``weights/`` folder that is not there."""
    wants_weights = manifest is not None and str(manifest.get("weights", "")).startswith("weights/")
    if wants_weights and not (version_dir / "weights").is_dir():
        raise ExportMismatch(
            f"{version_dir}/weights/ is missing (exported weights are not in git): copy it back or "
            "re-run llmrec export-encoder, or delete this version folder to serve the previous one"
        )


def check_probe(manifest: dict[str, Any] | None, embedding: npt.ArrayLike) -> None:
    """Raise ``ExportMismatch`` unless ``embedding`` (of ``PROBE_TEXT``) matches the manifest's."""
    if manifest is None or "probe_embedding" not in manifest:
        return
    expected = np.asarray(manifest["probe_embedding"], dtype=np.float64)
    got = np.asarray(embedding, dtype=np.float64).reshape(-1)
    if got.shape != expected.shape:
        raise ExportMismatch(f"embedding size {got.shape[0]}, the export recorded {expected.shape[0]}")
    gap = float(np.abs(got - expected).max())
    if gap > PROBE_TOLERANCE:
        raise ExportMismatch(
            f"the probe embedding differs from the export's by {gap:.4f} (> {PROBE_TOLERANCE}): "
            "this version's weights/ folder is missing or not the exported one; re-run llmrec export-encoder"
        )
