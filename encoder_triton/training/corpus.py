"""Texts for each stage, split by anime title so that nothing about a held-out show is seen in training.

* MLM: review texts and item synopses; held-out perplexity on the texts of held-out titles.
* Contrastive: every training review (unsupervised SimCSE view pairs) and, for reviews whose title
  resolves to a catalogue item, the pair (review, that item's embedding text) as a supervised positive.
* Retrieval: held-out reviews are the queries; the candidates are all reviewed items (train and held-out
  titles together), embedded from ``Item.embedding_text`` exactly as the platform's index embeds them.

The title split is the sentiment head's (``sentiment.data.split_of``: seeded SHA-256, 70/15/15 of titles):
train + val titles feed the encoder, test titles are held out, so Stage 3's test split is unseen by every
stage.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from encoder_triton.sentiment.data import Review, load_reviews, resolve_reviews_dir, split_of
from llmrec.catalogue import Catalogue, Item, read_matthew1906_items
from llmrec.datasets.matthew1906 import TitleIndex

HELD_OUT = "test"


@dataclass(frozen=True)
class Pair:
    review: str
    item_id: int


@dataclass(frozen=True)
class Corpus:
    source: str
    mlm_train: list[str]
    mlm_heldout: list[str]
    contrastive_texts: list[str]  # training reviews (SimCSE dropout pairs)
    pairs: list[Pair]  # training reviews with their item (supervised pairs)
    queries: list[Pair]  # held-out reviews with their item (retrieval queries)
    items: dict[int, Item]  # retrieval candidates
    reviews: list[Review]
    catalogue: dict[int, Item] = field(default_factory=dict)  # every item a pair may name

    def item_text(self, item_id: int) -> str:
        item = self.catalogue.get(item_id) or self.items[item_id]
        return item.embedding_text()

    def sizes(self) -> dict[str, int]:
        return {
            "reviews": len(self.reviews),
            "mlm_train": len(self.mlm_train),
            "mlm_heldout": len(self.mlm_heldout),
            "contrastive_texts": len(self.contrastive_texts),
            "pairs": len(self.pairs),
            "retrieval_queries": len(self.queries),
            "retrieval_candidates": len(self.items),
        }


def _cap(values: Sequence[str], limit: int | None, rng: random.Random) -> list[str]:
    out = list(values)
    rng.shuffle(out)
    return out if limit is None else out[:limit]


def build_corpus(
    data_dir: Path | None,
    seed: int = 42,
    mlm_texts: int | None = None,
    heldout_texts: int | None = None,
    contrastive_texts: int | None = None,
    retrieval_queries: int | None = None,
    retrieval_candidates: int | None = None,
) -> Corpus:
    """Deterministic for a given data folder and seed (every shuffle uses ``random.Random(seed)``)."""
    folder = resolve_reviews_dir(data_dir)
    reviews = load_reviews(data_dir)
    items = read_matthew1906_items(folder)
    titles = TitleIndex.from_data(folder, Catalogue.from_items(items.values()))

    def held_out(title: str) -> bool:
        return split_of(title, seed) == HELD_OUT

    rng = random.Random(seed)
    synopses_train = [i.synopsis for i in items.values() if i.synopsis and not held_out(i.title)]
    synopses_out = [i.synopsis for i in items.values() if i.synopsis and held_out(i.title)]
    reviews_train = [r for r in reviews if not held_out(r.title)]
    reviews_out = [r for r in reviews if held_out(r.title)]
    # Reviews and synopses in equal parts where the cap allows: both are the domain's text.
    mlm_train = _cap(
        [r.text for r in reviews_train]
        + _cap(synopses_train, None if mlm_texts is None else mlm_texts // 2, rng),
        mlm_texts,
        rng,
    )
    mlm_heldout = _cap(
        [r.text for r in reviews_out]
        + _cap(synopses_out, None if heldout_texts is None else heldout_texts // 2, rng),
        heldout_texts,
        rng,
    )

    def resolved(subset: Sequence[Review]) -> list[Pair]:
        out = []
        for review in subset:
            item_id = titles.resolve(review.title)
            if item_id is not None and item_id in items:
                out.append(Pair(review.text, item_id))
        return out

    pairs = resolved(reviews_train)
    rng.shuffle(pairs)
    queries = resolved(reviews_out)
    rng.shuffle(queries)
    if retrieval_queries is not None:
        queries = queries[:retrieval_queries]
    # The queries' own items first, then the other reviewed items in a seeded order, up to the cap.
    others = sorted({p.item_id for p in [*resolved(reviews_train), *resolved(reviews_out)]})
    rng.shuffle(others)
    pool = list(dict.fromkeys([*(q.item_id for q in queries), *others]))
    if retrieval_candidates is not None:
        pool = pool[: max(retrieval_candidates, len({q.item_id for q in queries}))]
    candidates = {item_id: items[item_id] for item_id in pool}
    train_texts = _cap([r.text for r in reviews_train], contrastive_texts, rng)
    if contrastive_texts is not None:
        pairs = pairs[:contrastive_texts]
    return Corpus(
        source=str(folder),
        mlm_train=mlm_train,
        mlm_heldout=mlm_heldout,
        contrastive_texts=train_texts,
        pairs=pairs,
        queries=queries,
        items=dict(sorted(candidates.items())),
        reviews=reviews,
        catalogue=items,
    )
