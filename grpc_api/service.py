"""Recommendation logic behind the gRPC API, free of gRPC types so it is tested with a fake store.

A request reads one immutable ``Snapshot`` (item index + catalogue metadata + ranker) at its start, so a
concurrent ``swap`` (a rebuilt index) never mixes two versions within one answer.

Recommend:
1. profile and seen items from the store, concurrently;
2. with a non-empty preference vector: FAISS top ``candidate_pool (+ seen)`` candidates, filtered by
   seen items and genres; if the filters leave fewer than ``k``, exact scoring over every allowed item
   (a matrix-vector product: cheap, and it cannot miss a rare genre the pool happened not to reach);
3. the ranker re-scores the candidates, the best ``k`` are explained from the seen items;
4. without a usable vector (unknown user, empty or cancelled-out profile): the most popular allowed
   items ("cold start"), never an error.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from pydantic import TypeAdapter, ValidationError

from grpc_api.catalogue_rows import CatalogueItem, CatalogueRows
from llmrec import tracing
from llmrec.events.schema import EventType, ExternalItemId, Identifier, WatchStatus
from llmrec.item_ids import item_key
from llmrec.logs import get_logger
from llmrec.settings import Settings
from llmrec.store.interface import ProfileReader, SeenItem, StoredProfile, StoreUnavailable
from llmrec_client.errors import InvalidRequest, NotFound, Unavailable
from llmrec_client.models import (
    COLD_START,
    FUSION,
    LEARNED,
    PERSONALIZED,
    POPULARITY,
    GenreWeight,
    Recommendations,
    ScoredItem,
    SimilarItems,
    UserProfile,
)
from ranker.fusion import (
    Candidates,
    Evidence,
    Interaction,
    PlainFusionRanker,
    Ranker,
    cold_start_reason,
    explain,
    top_k,
)
from ranker.preferences import DecayPolicy, user_vector
from ranker.retrieval import ItemIndex

if TYPE_CHECKING:  # the trained ranker pulls in torch; the service only calls it
    from ranker.model.serving import LearnedRanker
    from ranker.model.two_stage import IndexCatalogue

log = get_logger(__name__)

BoolArray = npt.NDArray[np.bool_]
IdArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]
ObjectArray = npt.NDArray[np.object_]

_USER_ID = TypeAdapter(Identifier)
_ITEM_ID = TypeAdapter(ExternalItemId)
MAX_ECHOED_CHARS = 64  # of a bad request value repeated in an error message


@dataclass(frozen=True)
class ServiceConfig:
    max_k: int = 100
    default_k: int = 10
    candidate_pool: int = 100  # ApiSettings.candidate_pool says why
    # Seen items read per request, for exclusion and explanations. Real MAL lists reach a few thousand
    # titles; beyond this limit the weakest signals could reappear as recommendations.
    seen_limit: int = 5000
    top_genres: int = 5
    decay: DecayPolicy = field(default_factory=DecayPolicy)

    @classmethod
    def from_settings(cls, settings: Settings) -> ServiceConfig:
        return cls(
            max_k=settings.api.max_k,
            candidate_pool=settings.api.candidate_pool,
            decay=DecayPolicy(
                alpha=settings.preferences.decay_alpha, unit_s=settings.preferences.decay_unit_s
            ),
        )


class Snapshot:
    """Index, per-row item metadata and ranker that answer requests together. Immutable."""

    def __init__(
        self,
        index: ItemIndex,
        items: Iterable[CatalogueItem] | dict[int, CatalogueItem],
        ranker: Ranker | None = None,
        learned: LearnedRanker | None = None,
        hidden: frozenset[int] = frozenset(),
        *,
        rows: CatalogueRows | None = None,
    ) -> None:
        self.index = index
        self.ranker: Ranker = ranker or PlainFusionRanker()
        # The trained llmrec ranker, when one is loaded, and this index as its catalogue: the rows of the
        # items it was trained on (its universe) and search over every indexed item, so the two-stage
        # ranker reaches items it never saw (``ranker.model.two_stage``).
        self.learned = learned
        self.learned_catalogue = learned.catalogue_of(index) if learned is not None else None
        # Index rows the trained ranker knows: a user none of whose items is among them (a user of
        # another domain in the same catalogue, say) is answered by plain fusion instead.
        self.in_learned_universe: BoolArray = np.zeros(len(index), dtype=np.bool_)
        if self.learned_catalogue is not None:
            self.in_learned_universe = self.learned_catalogue.to_universe >= 0
        # The items this snapshot describes, by key, and the keys of those the catalogue hides (the live
        # catalogue derives the next snapshot from both). A dict is taken as it is (``with_rows``).
        self.items: dict[int, CatalogueItem] = (
            items if isinstance(items, dict) else {int(item.key): item for item in items}
        )
        self.hidden = hidden
        # Per-row metadata, built here or derived from the previous snapshot's at the cost of the changed
        # rows (``with_rows``); the attributes below are read-only views of its columns.
        self.catalogue_rows = (
            rows if rows is not None else CatalogueRows.build(index.item_ids, self.items, hidden)
        )
        if len(self.catalogue_rows) != len(index):
            raise ValueError(f"{len(self.catalogue_rows)} rows of metadata for an index of {len(index)}")
        self.servable: BoolArray = self.catalogue_rows.servable.values
        self.missing_metadata = int(len(index) - np.count_nonzero(self.servable))
        # Object arrays: ``external_ids[row]`` is a str, ``genres[row]`` a tuple of str.
        self.external_ids: ObjectArray = self.catalogue_rows.external_ids.values
        self.titles: ObjectArray = self.catalogue_rows.titles.values
        self.genres: ObjectArray = self.catalogue_rows.genres.values
        self.popularity: FloatArray = self.catalogue_rows.popularity.values
        # Most members first; ties by item id so the cold-start answer is deterministic.
        self.by_popularity: IdArray = self.catalogue_rows.by_popularity
        self.genre_rows: dict[str, BoolArray] = self.catalogue_rows.genre_rows
        self.genre_names: dict[str, str] = {name.casefold(): name for name in sorted(self.genre_rows)}

    def with_rows(
        self,
        index: ItemIndex,
        items: dict[int, CatalogueItem],
        hidden: frozenset[int],
        changed: Iterable[int],
    ) -> Snapshot:
        """The snapshot of ``index`` and the catalogue ``items`` (taken over, not copied) and ``hidden``,
        where only the items of the keys in ``changed`` differ from this snapshot's (their metadata,
        visibility or row). ``index`` is this one's or ``with_changes``/``rebased`` of it: rows this index
        has keep their numbers, so only changed and new rows are read; any other index (a compacted one)
        is described from scratch."""
        old = self.index
        if len(index) < len(old):
            return Snapshot(index, items, self.ranker, self.learned, hidden)
        # Rows whose id differs (retired ones, or another index's rows) and the rows of changed keys.
        prefix = index.item_ids[: len(old)]
        moved = np.flatnonzero(prefix != old.item_ids)
        rows = index.rows(np.fromiter(changed, dtype=np.int64))
        touched = np.concatenate([moved, rows[(rows >= 0) & (rows < len(old))]])
        if len(touched) > len(old) // 2:
            return Snapshot(index, items, self.ranker, self.learned, hidden)
        derived = self.catalogue_rows.derive(index.item_ids, touched, items, hidden)
        return Snapshot(index, items, self.ranker, self.learned, hidden, rows=derived)

    def with_learned(self, learned: LearnedRanker | None) -> Snapshot:
        """This snapshot with another trained ranker (a newly trained version swapped in)."""
        return Snapshot(self.index, self.items, self.ranker, learned, self.hidden, rows=self.catalogue_rows)

    @property
    def version(self) -> str:
        ranker = self.learned.version if self.learned is not None else self.ranker.version
        return f"{self.index.version}/{ranker}"

    def canonical_genres(self, names: Iterable[str]) -> tuple[str, ...]:
        """Catalogue spelling of each requested genre (case-insensitive); ``InvalidRequest`` for unknown."""
        out: list[str] = []
        for raw in names:
            name = self.genre_names.get(raw.strip().casefold())
            if name is None:
                known = ", ".join(self.genre_names.values())
                # The name is echoed cut short: details travel in a trailer that gRPC caps at a few KB.
                shown = repr(raw[:MAX_ECHOED_CHARS]) + ("..." if len(raw) > MAX_ECHOED_CHARS else "")
                raise InvalidRequest(f"unknown genre {shown}; known genres: {known}")
            if name not in out:
                out.append(name)
        return tuple(out)

    def allowed_rows(
        self, include: Sequence[str], exclude: Sequence[str], excluded_rows: IdArray | None = None
    ) -> BoolArray:
        allowed = self.servable.copy()
        if include:
            allowed &= np.logical_or.reduce([self.genre_rows[g] for g in include])
        for genre in exclude:
            allowed &= ~self.genre_rows[genre]
        if excluded_rows is not None and excluded_rows.size:
            allowed[excluded_rows] = False
        return allowed

    def scored_item(self, row: int, score: float, reason: str) -> ScoredItem:
        return ScoredItem(
            item_id=self.external_ids[row],
            title=self.titles[row],
            genres=self.genres[row],
            score=float(score),
            reason=reason,
        )


def interaction_of(seen: SeenItem) -> Interaction:
    """The strongest evidence kind for a seen item: rated, else reviewed, else completed (its latest watch
    status), else watched."""
    if seen.rating is not None:
        return Interaction.RATED
    if EventType.REVIEW in seen.event_types:
        return Interaction.REVIEWED
    if seen.status is WatchStatus.COMPLETED:
        return Interaction.COMPLETED
    return Interaction.WATCHED


class RecommendationService:
    def __init__(self, store: ProfileReader, snapshot: Snapshot, config: ServiceConfig | None = None) -> None:
        self._store = store
        self._snapshot = snapshot
        self._config = config or ServiceConfig()

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def swap(self, snapshot: Snapshot) -> None:
        """Serve a new index from the next request on; requests in flight finish on the old one."""
        self._snapshot = snapshot

    # -- validation ---------------------------------------------------------------------------------------

    def _k(self, k: int) -> int:
        if k == 0:
            return self._config.default_k
        if not 1 <= k <= self._config.max_k:
            raise InvalidRequest(
                f"k must be between 1 and {self._config.max_k} (0 means {self._config.default_k})"
            )
        return k

    @staticmethod
    def _user_id(user_id: str) -> str:
        try:
            return _USER_ID.validate_python(user_id)
        except ValidationError:
            raise InvalidRequest(
                "user_id must be 1 to 128 characters of letters, digits and ._:@-, "
                "starting with a letter or digit"
            ) from None

    @staticmethod
    def _item_id(item_id: str) -> str:
        try:
            return _ITEM_ID.validate_python(item_id)
        except ValidationError:
            shown = repr(item_id[:MAX_ECHOED_CHARS]) + ("..." if len(item_id) > MAX_ECHOED_CHARS else "")
            raise InvalidRequest(
                f"item_id {shown} is not a catalogue id: 1 to 256 characters, no control characters, "
                "no whitespace at either end"
            ) from None

    # -- store access -------------------------------------------------------------------------------------

    async def _read_user(self, user_id: str) -> tuple[StoredProfile | None, list[SeenItem]]:
        try:
            profile, seen = await self._store.read_user(user_id, self._config.seen_limit)
        except StoreUnavailable as exc:
            log.warning("store unavailable", user_id=user_id, error=str(exc))
            raise Unavailable("the profile database is unavailable; retry") from None
        return profile, seen

    # -- RPCs ---------------------------------------------------------------------------------------------

    async def recommend(
        self,
        user_id: str,
        k: int = 0,
        include_genres: Sequence[str] = (),
        exclude_genres: Sequence[str] = (),
        include_seen: bool = False,
    ) -> Recommendations:
        snap = self._snapshot
        k = self._k(k)
        user_id = self._user_id(user_id)
        include = snap.canonical_genres(include_genres)
        exclude = snap.canonical_genres(exclude_genres)

        profile, seen = await self._read_user(user_id)
        seen_rows = snap.index.rows([s.item_id for s in seen])
        allowed = snap.allowed_rows(include, exclude, None if include_seen else seen_rows[seen_rows >= 0])

        query = user_vector(profile.state) if profile is not None else None
        if query is not None and query.shape != (snap.index.dim,):
            # A profile built against another encoder: serve something rather than fail; rebuild profiles.
            log.warning(
                "profile dimension mismatch", user_id=user_id, dim=query.shape, index_dim=snap.index.dim
            )
            query = None
        if query is None or not np.any(query):
            with tracing.child_span("rank popularity"):
                items = self._cold_start(snap, allowed, k, include)
            return Recommendations(user_id, items, COLD_START, snap.version, POPULARITY)

        known = seen_rows[seen_rows >= 0]
        learned, catalogue = snap.learned, snap.learned_catalogue
        if (
            learned is not None
            and catalogue is not None
            and profile is not None
            and snap.in_learned_universe[known].any()
        ):
            items = await self._learned_items(
                snap, learned, catalogue, query, profile, seen, seen_rows, allowed, k
            )
            return Recommendations(user_id, items, PERSONALIZED, snap.version, LEARNED)

        with tracing.child_span("retrieve candidates"):
            rows, similarity = await self._candidates(snap, query, allowed, k, extra=len(seen))
        candidates = Candidates(
            item_ids=snap.index.item_ids[rows],
            similarity=similarity,
            popularity=snap.popularity[rows],
            vectors=snap.index.embeddings[rows],
        )
        with tracing.child_span("rank fusion", attributes={"llmrec.candidates": len(rows)}):
            scores = snap.ranker.score(query, candidates)
        best = top_k(scores, k)
        chosen = rows[best]
        reasons = self._reasons(snap, chosen, seen, seen_rows)
        items = tuple(
            snap.scored_item(int(r), float(scores[b]), why)
            for r, b, why in zip(chosen, best, reasons, strict=True)
        )
        return Recommendations(user_id, items, PERSONALIZED, snap.version, FUSION)

    async def similar_items(self, item_id: str, k: int = 0) -> SimilarItems:
        snap = self._snapshot
        k = self._k(k)
        item_id = self._item_id(item_id)
        key = item_key(item_id)
        row = int(snap.index.rows([key])[0])
        if row < 0 or not snap.servable[row]:
            raise NotFound(f"item {item_id!r} is not in the catalogue")
        title = snap.titles[row]
        own_genres = set(snap.genres[row])
        # One extra hit: the item itself comes back first and is dropped. Hidden, deleted and replaced rows
        # are skipped, so a neighbourhood full of them is searched again, wider.
        depth = k + 1
        while True:
            with tracing.child_span("retrieve similar", attributes={"llmrec.depth": depth}):
                scores, ids = await snap.index.search_async(snap.index.embeddings[row], depth)
            items: list[ScoredItem] = []
            for score, other in zip(scores[0].tolist(), ids[0].tolist(), strict=True):
                if other < 0 or other == key:
                    continue
                other_row = int(snap.index.rows([other])[0])
                if not snap.servable[other_row]:
                    continue
                shared = [g for g in snap.genres[other_row] if g in own_genres]
                reason = f"shares {', '.join(shared[:3])} with {title}" if shared else f"similar to {title}"
                items.append(snap.scored_item(other_row, score, reason))
            if len(items) >= k or depth >= len(snap.index):
                return SimilarItems(item_id, tuple(items[:k]), snap.index.version)
            depth = min(len(snap.index), depth * 4)

    async def user_profile(self, user_id: str) -> UserProfile:
        snap = self._snapshot
        user_id = self._user_id(user_id)
        profile, seen = await self._read_user(user_id)
        if profile is None:
            raise NotFound(f"no events have been applied for user {user_id}")
        return UserProfile(
            user_id=user_id,
            ratings=profile.ratings,
            reviews=profile.reviews,
            watch_events=profile.watch_events,
            top_genres=self._top_genres(snap, seen, profile.state.ref_time_s),
            last_event_time=profile.last_event_time,
            updated_at=profile.updated_at,
        )

    async def ping(self) -> None:
        try:
            await self._store.ping()
        except StoreUnavailable:
            raise Unavailable("the profile database is unavailable") from None

    # -- helpers ------------------------------------------------------------------------------------------

    def _cold_start(
        self, snap: Snapshot, allowed: BoolArray, k: int, include: Sequence[str]
    ) -> tuple[ScoredItem, ...]:
        order = snap.by_popularity[allowed[snap.by_popularity]][:k]
        return tuple(
            snap.scored_item(
                int(row), float(snap.popularity[row]), cold_start_reason(snap.genres[row], include)
            )
            for row in order
        )

    async def _learned_items(
        self,
        snap: Snapshot,
        learned: LearnedRanker,
        catalogue: IndexCatalogue,
        query: FloatArray,
        profile: StoredProfile,
        seen: Sequence[SeenItem],
        seen_rows: IdArray,
        allowed: BoolArray,
        k: int,
    ) -> tuple[ScoredItem, ...]:
        """The trained ranker's answer: the two-stage function the evaluation measures
        (``two_stage.rank_candidates``) over this snapshot's index, from the stored profile vector and seen
        items. It runs in a worker thread: candidate search plus a small network pass, a few ms."""
        signals = [(s.item_id, s.strength, s.event_time.timestamp()) for s in seen]
        inputs = learned.online_inputs(query, signals, profile.state.ref_time_s)
        size = {"llmrec.catalogue_items": len(catalogue.vectors)}
        with tracing.child_span("rank learned", attributes=size):
            ranked = await asyncio.to_thread(learned.rank, inputs, catalogue, allowed, k)
        rows, scores = ranked.rows[0], ranked.scores[0]
        keep = rows >= 0
        chosen, chosen_scores = rows[keep][:k], scores[keep][:k]
        reasons = self._reasons(snap, chosen, seen, seen_rows)
        return tuple(
            snap.scored_item(int(r), float(sc), why)
            for r, sc, why in zip(chosen, chosen_scores, reasons, strict=True)
        )

    async def _candidates(
        self, snap: Snapshot, query: FloatArray, allowed: BoolArray, k: int, extra: int
    ) -> tuple[IdArray, FloatArray]:
        """Rows of allowed candidates and their cosine similarity to ``query``."""
        index = snap.index
        # Retired, hidden and undescribed rows still come back from FAISS and are dropped: search deeper in
        # proportion, so a churned index fills the pool as a fresh one would (compaction bounds the share).
        served_share = max(0.25, 1.0 - snap.missing_metadata / max(1, len(index)))
        pool = min(len(index), math.ceil((self._config.candidate_pool + extra) / served_share))
        scores, ids = await index.search_async(query, max(pool, k))
        hit = ids[0] >= 0
        rows = index.rows(ids[0][hit])
        sims = scores[0][hit]
        keep = allowed[rows]
        if int(keep.sum()) >= k or int(keep.sum()) == int(allowed.sum()):
            return rows[keep], sims[keep]
        # Filters left too few: score every allowed item exactly (off the event loop, it is numpy work).
        return await asyncio.to_thread(_exact_scores, index.embeddings, query, allowed)

    @staticmethod
    def _reasons(snap: Snapshot, chosen: IdArray, seen: Sequence[SeenItem], seen_rows: IdArray) -> list[str]:
        known = [
            (s, int(r)) for s, r in zip(seen, seen_rows.tolist(), strict=True) if r >= 0 and s.strength > 0
        ]
        evidence = [
            Evidence(
                item_id=s.item_id,
                title=snap.titles[r],
                strength=s.strength,
                interaction=interaction_of(s),
                rating=s.rating,
            )
            for s, r in known
        ]
        evidence_vectors = (
            snap.index.embeddings[[r for _, r in known]] if known else np.zeros((0, snap.index.dim))
        )
        return explain(snap.index.item_ids[chosen], snap.index.embeddings[chosen], evidence, evidence_vectors)

    def _top_genres(
        self, snap: Snapshot, seen: Sequence[SeenItem], ref_time_s: float
    ) -> tuple[GenreWeight, ...]:
        """Genres weighted by each seen item's signed strength, decayed to the profile's reference time."""
        totals: dict[str, float] = {}
        rows = snap.index.rows([s.item_id for s in seen]).tolist()
        for s, row in zip(seen, rows, strict=True):
            if row < 0:
                continue
            age = ref_time_s - s.event_time.timestamp() if math.isfinite(ref_time_s) else 0.0
            weight = s.strength * self._config.decay.factor(age)
            for genre in snap.genres[row]:
                totals[genre] = totals.get(genre, 0.0) + weight
        positive = {g: w for g, w in totals.items() if w > 0.0}
        total = sum(positive.values())
        if total <= 0.0:
            return ()
        ranked = sorted(positive.items(), key=lambda gw: (-gw[1], gw[0]))[: self._config.top_genres]
        return tuple(GenreWeight(genre=g, weight=w / total) for g, w in ranked)


def _exact_scores(
    embeddings: FloatArray, query: FloatArray, allowed: BoolArray
) -> tuple[IdArray, FloatArray]:
    rows = np.flatnonzero(allowed).astype(np.int64)
    return rows, (embeddings[rows] @ query).astype(np.float32)
