"""RecommendationService against an in-memory ProfileReader: cold start, personalisation, filters, bounds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from grpc_api.service import RecommendationService, ServiceConfig, Snapshot, interaction_of
from llmrec.catalogue import Item
from llmrec.events.schema import EventType, WatchStatus
from llmrec.item_ids import item_keys, mal_item_id
from llmrec.preference_state import PreferenceState
from llmrec.store.fake import FakeStore
from llmrec.store.interface import SeenItem, StoredProfile
from llmrec_client.errors import InvalidRequest, NotFound, Unavailable
from llmrec_client.models import ScoredItem
from ranker import fusion
from ranker.fusion import PROFILE_REASON
from ranker.model.features import CollabScores
from ranker.model.two_stage import IndexCatalogue, Ranked
from ranker.retrieval import ItemIndex
from tests.synthetic import Interaction, add_user, genre_embeddings

T0 = datetime(2024, 5, 1, tzinfo=UTC)
GENRE_CYCLE = [
    ("Sci-Fi",),
    ("Sci-Fi", "Action"),
    ("Romance",),
    ("Romance", "Comedy"),
    ("Comedy",),
    ("Action",),
]


def make_items() -> list[Item]:
    items = [
        Item(item_id=i, title=f"Title {i}", genres=GENRE_CYCLE[i % len(GENRE_CYCLE)], members=1000 * i)
        for i in range(1, 61)
    ]
    # A rare genre: three unpopular horror titles.
    items += [Item(item_id=100 + i, title=f"Horror {i}", genres=("Horror",), members=5) for i in range(3)]
    return items


ITEMS = make_items()
VECTORS = genre_embeddings([it.genres for it in ITEMS], dim=24, noise=0.2, seed=1)
VECTOR_BY_KEY = {it.key: VECTORS[row] for row, it in enumerate(ITEMS)}  # the ledger and index hold keys
SCI_FI = [it for it in ITEMS if it.genres == ("Sci-Fi",)]
ROMANCE = [it for it in ITEMS if it.genres == ("Romance",)]


def mal(*anime_ids: int) -> list[str]:
    """The catalogue ids the API answers with."""
    return [mal_item_id(i) for i in anime_ids]


def make_snapshot() -> Snapshot:
    return Snapshot(ItemIndex.build([it.key for it in ITEMS], VECTORS), ITEMS)


@pytest.fixture
def store() -> FakeStore:
    profiles = FakeStore()
    add_user(
        profiles,
        "scifi-fan",
        [Interaction(it.key, 0.4, T0 + timedelta(days=n), rating=9.0) for n, it in enumerate(SCI_FI[:4])],
        VECTOR_BY_KEY,
    )
    return profiles


@pytest.fixture
def service(store: FakeStore) -> RecommendationService:
    return RecommendationService(store, make_snapshot(), ServiceConfig(max_k=20, candidate_pool=10))


def genres_of(answer_items: tuple) -> list[tuple[str, ...]]:  # type: ignore[type-arg]
    return [i.genres for i in answer_items]


async def test_unknown_user_gets_the_most_popular_items(service: RecommendationService) -> None:
    answer = await service.recommend("nobody", k=5)
    assert answer.strategy == "cold_start"
    assert [i.item_id for i in answer.items] == mal(60, 59, 58, 57, 56)
    assert all(i.reason == "popular on MyAnimeList" for i in answer.items)
    assert answer.items[0].score == pytest.approx(1.0)
    assert answer.model_version.endswith("/plain-fusion-1")


async def test_cold_start_honours_genre_filters(service: RecommendationService) -> None:
    answer = await service.recommend("nobody", k=4, include_genres=["sci-fi"], exclude_genres=["Action"])
    assert [i.item_id for i in answer.items] == mal(60, 54, 48, 42)
    assert all(i.genres == ("Sci-Fi",) for i in answer.items)
    assert all(i.reason == "popular with Sci-Fi fans" for i in answer.items)


async def test_personalised_answer_follows_the_profile_and_excludes_seen(
    service: RecommendationService,
) -> None:
    answer = await service.recommend("scifi-fan", k=6)
    assert answer.strategy == "personalized" and len(answer.items) == 6
    ids = [i.item_id for i in answer.items]
    assert not set(ids) & {it.external_id for it in SCI_FI[:4]}
    assert all("Sci-Fi" in g for g in genres_of(answer.items))
    assert [i.score for i in answer.items] == sorted((i.score for i in answer.items), reverse=True)
    for item in answer.items:
        assert item.reason.startswith("like Title ") and item.reason.endswith(", which you rated 9")


async def test_include_seen_lets_seen_items_back_without_explaining_themselves(
    service: RecommendationService,
) -> None:
    answer = await service.recommend("scifi-fan", k=10, include_seen=True)
    seen_back = [i for i in answer.items if i.item_id in {it.external_id for it in SCI_FI[:4]}]
    assert seen_back
    for item in seen_back:
        assert f"like {item.title}," not in item.reason


async def test_personalised_genre_filters(service: RecommendationService) -> None:
    answer = await service.recommend("scifi-fan", k=5, exclude_genres=["Sci-Fi"])
    assert answer.items and all("Sci-Fi" not in g for g in genres_of(answer.items))
    answer = await service.recommend("scifi-fan", k=5, include_genres=["Romance", "Comedy"])
    assert answer.items and all({"Romance", "Comedy"} & set(g) for g in genres_of(answer.items))


async def test_a_rare_genre_outside_the_candidate_pool_is_still_found(service: RecommendationService) -> None:
    # The pool (10 + 4 seen) holds Sci-Fi items only; the three Horror items come from the exact fallback.
    answer = await service.recommend("scifi-fan", k=5, include_genres=["Horror"])
    assert sorted(i.item_id for i in answer.items) == mal(100, 101, 102)
    assert answer.strategy == "personalized"


async def test_contradictory_filters_give_an_empty_answer(service: RecommendationService) -> None:
    answer = await service.recommend("scifi-fan", k=5, include_genres=["Horror"], exclude_genres=["horror"])
    assert answer.items == ()


@pytest.mark.parametrize(("k", "expected"), [(0, 10), (1, 1), (20, 20)])
async def test_k_bounds(service: RecommendationService, k: int, expected: int) -> None:
    assert len((await service.recommend("nobody", k=k)).items) == expected


@pytest.mark.parametrize("k", [21, -1, 1000])
async def test_k_out_of_range_is_invalid(service: RecommendationService, k: int) -> None:
    with pytest.raises(InvalidRequest, match="between 1 and 20"):
        await service.recommend("nobody", k=k)
    with pytest.raises(InvalidRequest):
        await service.similar_items("mal:1", k=k)


@pytest.mark.parametrize("user_id", ["", " ", "a b", "-lead", "x" * 129, "ü"])
async def test_malformed_user_ids_are_invalid(service: RecommendationService, user_id: str) -> None:
    with pytest.raises(InvalidRequest, match="user_id"):
        await service.recommend(user_id)
    with pytest.raises(InvalidRequest, match="user_id"):
        await service.user_profile(user_id)


async def test_unknown_genre_is_invalid_and_names_the_known_ones(service: RecommendationService) -> None:
    with pytest.raises(InvalidRequest, match=r"unknown genre 'Scifi'.*Sci-Fi"):
        await service.recommend("nobody", include_genres=["Scifi"])


async def test_validation_happens_before_the_store_is_asked(
    service: RecommendationService, store: FakeStore
) -> None:
    with pytest.raises(InvalidRequest):
        await service.recommend("nobody", k=500)
    assert store.calls.total() == 0


async def test_database_outage_is_unavailable(service: RecommendationService, store: FakeStore) -> None:
    store.unavailable = True
    with pytest.raises(Unavailable):
        await service.recommend("scifi-fan")
    with pytest.raises(Unavailable):
        await service.user_profile("scifi-fan")
    with pytest.raises(Unavailable):
        await service.ping()


async def test_empty_profile_is_cold_start_without_seen_items(
    service: RecommendationService, store: FakeStore
) -> None:
    add_user(store, "planner", [Interaction(ITEMS[59].key, 0.0, T0)], VECTOR_BY_KEY)  # plan-to-watch: 0
    assert store.profiles["planner"].state.is_empty
    answer = await service.recommend("planner", k=3)
    assert answer.strategy == "cold_start"
    assert [i.item_id for i in answer.items] == mal(59, 58, 57)


async def test_profile_with_a_vector_of_another_dimension_falls_back_to_cold_start(
    service: RecommendationService, store: FakeStore
) -> None:
    state = PreferenceState(np.ones(7, np.float32), 1.0, T0.timestamp())
    store.profiles["old-model"] = StoredProfile("old-model", state, 1, 0, 0, T0, T0)
    assert (await service.recommend("old-model", k=2)).strategy == "cold_start"


async def test_only_disliked_items_give_the_profile_reason(
    service: RecommendationService, store: FakeStore
) -> None:
    add_user(store, "grumpy", [Interaction(SCI_FI[0].key, -0.4, T0, rating=1.0)], VECTOR_BY_KEY)
    answer = await service.recommend("grumpy", k=3)
    assert answer.strategy == "personalized"
    assert all("Sci-Fi" not in g for g in genres_of(answer.items))
    assert all(i.reason == PROFILE_REASON for i in answer.items)


async def test_similar_items(service: RecommendationService) -> None:
    item = SCI_FI[0]
    assert item.external_id == "mal:6"
    answer = await service.similar_items(item.external_id, k=3)
    assert answer.item_id == item.external_id == f"mal:{item.item_id}" and len(answer.items) == 3
    assert item.external_id not in [i.item_id for i in answer.items]
    assert all(i.item_id.startswith("mal:") for i in answer.items)
    assert all(i.genres == ("Sci-Fi",) for i in answer.items)
    assert answer.items[0].reason == f"shares Sci-Fi with Title {item.item_id}"
    assert -1.0 <= answer.items[-1].score <= answer.items[0].score <= 1.0


# "6" and "MAL:6" are near misses of the catalogue's "mal:6": ids are opaque, matched exactly.
@pytest.mark.parametrize("item_id", ["mal:99999", "ml:1", "6", "MAL:6", "mal:06"])
async def test_similar_items_of_an_unknown_id_is_not_found(
    service: RecommendationService, item_id: str
) -> None:
    with pytest.raises(NotFound, match=item_id):
        await service.similar_items(item_id)


@pytest.mark.parametrize("item_id", ["", " mal:1", "mal:1 ", "mal:1\n", "mal:\n1", "a\x00b", "x" * 257])
async def test_similar_items_of_a_malformed_id_is_invalid(
    service: RecommendationService, item_id: str
) -> None:
    with pytest.raises(InvalidRequest, match="item_id"):
        await service.similar_items(item_id)


async def test_user_profile(service: RecommendationService) -> None:
    profile = await service.user_profile("scifi-fan")
    assert (profile.ratings, profile.reviews, profile.watch_events) == (4, 0, 0)
    assert profile.last_event_time == T0 + timedelta(days=3)
    assert [g.genre for g in profile.top_genres] == ["Sci-Fi"]
    assert profile.top_genres[0].weight == pytest.approx(1.0)
    with pytest.raises(NotFound):
        await service.user_profile("nobody")


async def test_top_genres_weigh_recent_and_strong_signals(
    service: RecommendationService, store: FakeStore
) -> None:
    add_user(
        store,
        "mixed",
        [
            Interaction(SCI_FI[0].key, 0.4, T0 - timedelta(days=4 * 365), rating=9.0),  # old: decayed to ~8%
            Interaction(ROMANCE[0].key, 0.3, T0, rating=8.0),
            Interaction(ROMANCE[1].key, -0.2, T0, rating=3.0),  # disliked: counts against Romance
        ],
        VECTOR_BY_KEY,
    )
    genres = (await service.user_profile("mixed")).top_genres
    assert [g.genre for g in genres] == ["Romance", "Sci-Fi"]
    assert sum(g.weight for g in genres) == pytest.approx(1.0)


RATING, REVIEW, WATCH = EventType.RATING, EventType.REVIEW, EventType.WATCH


@pytest.mark.parametrize(
    ("rating", "kinds", "status", "expected"),
    [
        (9.0, {RATING, REVIEW, WATCH}, WatchStatus.COMPLETED, fusion.Interaction.RATED),
        (None, {REVIEW, WATCH}, WatchStatus.COMPLETED, fusion.Interaction.REVIEWED),
        (None, {REVIEW}, None, fusion.Interaction.REVIEWED),
        (None, {WATCH}, WatchStatus.COMPLETED, fusion.Interaction.COMPLETED),
        (None, {WATCH}, WatchStatus.WATCHING, fusion.Interaction.WATCHED),
        (None, {WATCH}, WatchStatus.DROPPED, fusion.Interaction.WATCHED),
        (None, {WATCH}, None, fusion.Interaction.WATCHED),
    ],
)
def test_interaction_of_picks_the_strongest_evidence_kind(
    rating: float | None,
    kinds: set[EventType],
    status: WatchStatus | None,
    expected: fusion.Interaction,
) -> None:
    seen = SeenItem(
        item_id=1, strength=0.3, event_time=T0, rating=rating, event_types=frozenset(kinds), status=status
    )
    assert interaction_of(seen) is expected


async def test_reasons_say_reviewed_and_completed(service: RecommendationService, store: FakeStore) -> None:
    add_user(
        store,
        "critic",
        [
            Interaction(SCI_FI[0].key, 0.3, T0, event_type=REVIEW),
            Interaction(ROMANCE[0].key, 0.3, T0, event_type=WATCH, status=WatchStatus.COMPLETED),
        ],
        VECTOR_BY_KEY,
    )
    scifi = await service.recommend("critic", k=3, include_genres=["Sci-Fi"], exclude_genres=["Romance"])
    assert scifi.strategy == "personalized" and len(scifi.items) == 3
    assert all(i.reason == f"like {SCI_FI[0].title}, which you reviewed" for i in scifi.items)
    loved = await service.recommend("critic", k=3, include_genres=["Romance"], exclude_genres=["Sci-Fi"])
    assert loved.strategy == "personalized" and len(loved.items) == 3
    assert all(i.reason == f"like {ROMANCE[0].title}, which you completed" for i in loved.items)
    profile = await service.user_profile("critic")
    assert (profile.ratings, profile.reviews, profile.watch_events) == (0, 1, 1)


async def test_swap_serves_the_new_snapshot_from_the_next_request(service: RecommendationService) -> None:
    before = (await service.recommend("nobody", k=1)).model_version
    fewer = ITEMS[:10]
    service.swap(Snapshot(ItemIndex.build([it.key for it in fewer], VECTORS[:10], "hnsw"), fewer))
    answer = await service.recommend("nobody", k=1)
    assert answer.model_version != before and answer.model_version.startswith("hnsw-")
    assert answer.items[0].item_id == "mal:10"


def test_snapshot_tolerates_index_items_missing_from_the_catalogue() -> None:
    snapshot = Snapshot(
        ItemIndex.build(item_keys(["mal:1", "mal:2"]), np.eye(2)),
        [Item(item_id=1, title="One", genres=("Drama",))],
    )
    assert snapshot.missing_metadata == 1
    assert snapshot.servable.tolist() == [True, False]
    assert (snapshot.external_ids[0], snapshot.titles[0]) == ("mal:1", "One")


async def test_index_rows_missing_from_the_catalogue_are_never_served(store: FakeStore) -> None:
    """An index row without a catalogue item has no id a client could use: it is left out of every answer,
    and asking for items similar to it is NotFound."""
    # The Sci-Fi titles the fan has not seen (the most popular title, mal:60, among them) are indexed but
    # not in this catalogue version: with them described, they would lead every answer below.
    missing = {it.external_id for it in SCI_FI[4:]}
    assert "mal:60" in missing
    described = [it for it in ITEMS if it.external_id not in missing]
    service = RecommendationService(
        store, Snapshot(ItemIndex.build([it.key for it in ITEMS], VECTORS), described)
    )
    answers: list[tuple[ScoredItem, ...]] = [
        (await service.recommend("nobody", k=20)).items,
        (await service.recommend("scifi-fan", k=20)).items,
        (await service.recommend("scifi-fan", k=20, include_seen=True)).items,
        (await service.recommend("scifi-fan", k=20, include_genres=["Sci-Fi"])).items,
        (await service.similar_items(SCI_FI[0].external_id, k=20)).items,
    ]
    for items in answers:
        assert items and not {i.item_id for i in items} & missing
        assert all(i.item_id and i.title for i in items)
    with pytest.raises(NotFound, match="mal:60"):
        await service.similar_items("mal:60")


class _ScoresByItemId:
    """Stands in for the trained ranker (``ranker.model.serving.LearnedRanker``): its universe holds the
    items' keys, and an item's MAL id is its score."""

    version = "fake-learned-1"

    def __init__(self, items: list[Item]) -> None:
        self.universe_ids = np.asarray([it.key for it in items], dtype=np.int64)
        self._scores = np.asarray([it.item_id for it in items], dtype=np.float32)

    def online_inputs(self, query: np.ndarray, signals: list[tuple[int, float, float]], ref: float) -> None:
        return None

    def catalogue_of(self, index: ItemIndex) -> IndexCatalogue:
        return IndexCatalogue(index, self.universe_ids)

    def rank(self, inputs: None, catalogue: IndexCatalogue, allowed: np.ndarray, k: int) -> Ranked:
        """Every allowed universe item, by score: the real ranker's contract (rows best first, -1 padded)."""
        rows = catalogue.from_universe
        keep = (rows >= 0) & allowed[np.maximum(rows, 0)]
        order = np.argsort(-self._scores[keep], kind="stable")
        empty = np.zeros((1, 0), dtype=np.float32)
        return Ranked(
            rows[keep][order][None, :], self._scores[keep][order][None, :], CollabScores(empty, empty, empty)
        )


async def test_each_answer_says_which_ranker_ordered_it(store: FakeStore) -> None:
    """The path (for the API's llmrec_api_recommendations_total): popularity for a cold start, the plain
    fusion without a trained ranker, the learned ranker when one is loaded."""
    plain = RecommendationService(store, make_snapshot())
    assert (await plain.recommend("nobody", k=3)).ranker == "popularity"
    assert (await plain.recommend("scifi-fan", k=3)).ranker == "fusion"
    keys = [it.key for it in ITEMS]
    learned = Snapshot(ItemIndex.build(keys, VECTORS), ITEMS, learned=_ScoresByItemId(ITEMS))  # type: ignore[arg-type]
    service = RecommendationService(store, learned)
    answer = await service.recommend("scifi-fan", k=3)
    assert (answer.strategy, answer.ranker) == ("personalized", "learned")
    assert [i.item_id for i in answer.items] == mal(102, 101, 100)  # the highest MAL ids: the fake's scores
    assert (await service.recommend("nobody", k=3)).ranker == "popularity"


async def test_a_user_whose_items_the_trained_ranker_never_saw_gets_plain_fusion(store: FakeStore) -> None:
    """A catalogue may hold a second domain the ranker was not trained on: its users are answered by the
    fusion path over the whole index rather than by a ranker that can only name its own items."""
    trained_on = [it for it in ITEMS if it not in SCI_FI]  # the fan's items are all Sci-Fi
    keys = [it.key for it in ITEMS]
    snapshot = Snapshot(ItemIndex.build(keys, VECTORS), ITEMS, learned=_ScoresByItemId(trained_on))  # type: ignore[arg-type]
    answer = await RecommendationService(store, snapshot).recommend("scifi-fan", k=3)
    assert (answer.strategy, answer.ranker) == ("personalized", "fusion")
