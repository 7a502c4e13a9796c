"""The admin page (grpc_api/admin.py) in a real browser against a running stack: Kafka, PostgreSQL, the
worker (``python -m stream``) and the API (``llmrec serve``, HTTP on, a tokens file), over a published index
of the sample catalogue with synthetic vectors (no encoder needed: every event here is a rating, and the
late item carries its own vector).

Chromium is Debian's (/usr/bin/chromium, `make ui-deps`), driven by Playwright's sync API; `playwright
install` is never used. Screenshots go to reports/ui/ (README "Operate" shows one).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from api_process import ApiProcess, publish_sample_index
from playwright.sync_api import Locator, Page, expect, sync_playwright
from workers import running_worker

from deploy.process import free_ports
from llmrec.catalogue import Catalogue
from llmrec.events.lag import wait_until_consumed
from llmrec.events.producer import EventProducer
from llmrec.events.schema import RatingEvent, UpsertItemEvent
from llmrec.events.topics import ensure_system_topics
from llmrec.settings import REPO_ROOT, ApiSettings, Settings, WorkerSettings
from llmrec.store import migrate

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = REPO_ROOT / "reports" / "ui"
DIM = 64  # publish_sample_index's
TOKEN = "admin-ui-" + uuid.uuid4().hex[:12]
GENRE = "Sci-Fi"
T0 = datetime(2025, 6, 1, tzinfo=UTC)
WAIT_MS = 30_000


@dataclass(frozen=True)
class Stack:
    settings: Settings
    catalogue: Catalogue

    @property
    def url(self) -> str:
        return f"http://{self.settings.api.host}:{self.settings.api.http_port}/admin"


@pytest.fixture(scope="module")
def stack(
    settings_factory: Callable[..., Settings], postgres_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make ui-deps` (apt-get install chromium)", pytrace=False)
    tokens = tmp_path_factory.mktemp("admin-ui") / "tokens"
    tokens.write_text(f"ops:{TOKEN}\n")
    web, worker_metrics, grpc_port, api_metrics, http_port = free_ports(5)
    settings = settings_factory(
        # A rating about an item nobody has published yet is dead-lettered after a second, not ten.
        worker=WorkerSettings(web_port=web, metrics_port=worker_metrics, unknown_item_wait_s=1.0),
        api=ApiSettings(
            port=grpc_port, metrics_port=api_metrics, http_port=http_port, auth_tokens_file=tokens
        ),
    )
    migrate(postgres_dsn)
    ensure_system_topics(settings.kafka)
    catalogue = publish_sample_index(settings, dim=DIM)
    with running_worker(settings, "admin-ui-worker"):
        api = ApiProcess(settings, name="admin-ui-api")
        api.start()
        try:
            yield Stack(settings, catalogue)
        finally:
            api.stop()


@pytest.fixture(scope="module")
def page(stack: Stack) -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.set_default_timeout(WAIT_MS)
            yield page
        finally:
            browser.close()


def shot(target: Page | Locator, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    target.screenshot(path=str(SCREENSHOTS / name), animations="disabled")


def publish(settings: Settings, *events: Any, raw: tuple[bytes, ...] = ()) -> None:
    with EventProducer(settings.kafka) as producer:
        for event in events:
            if isinstance(event, UpsertItemEvent):
                producer.publish_item(event)
            else:
                producer.publish(event)
        for value in raw:
            producer.publish_raw(settings.kafka.ratings_topic, "ui-bad-user", value)
        producer.flush(30)


def inspect_until(page: Page, done: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Press Inspect until ``done`` (the API serves the worker's commits within a poll or two)."""
    deadline = time.monotonic() + timeout_s
    while True:
        page.click("#user-form button[type=submit]")
        page.wait_for_timeout(300)
        if done():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {page.inner_text('#user-card')}")
        page.wait_for_timeout(700)


def test_the_admin_page_follows_the_live_stack(stack: Stack, page: Page) -> None:
    settings, catalogue = stack.settings, stack.catalogue
    page.goto(stack.url)

    # -- access: the JSON needs the token; the page sends what is typed as Authorization: Bearer.
    expect(page.locator("#status-error")).to_contain_text("UNAUTHENTICATED")
    page.fill("#token", TOKEN)
    page.click("#token-form button[type=submit]")

    # -- live status: every component up, the served versions, the worker's lag per partition.
    for component in ("api", "store", "kafka"):
        expect(page.locator(f'#components tr[data-component="{component}"] .badge')).to_have_text("OK")
    version = page.locator('#versions dd[data-key="model_version"]')
    expect(version).not_to_be_empty()
    expect(page.locator('#versions dd[data-key="index"]')).to_contain_text(f"dim {DIM}")
    partitions = len(settings.kafka.consumed_topics) * settings.kafka.partitions
    expect(page.locator("#lag tbody tr")).to_have_count(partitions)
    expect(page.locator("#lag-group")).to_contain_text(settings.kafka.consumer_group)

    # -- a user before any event: cold start, no profile.
    user = f"ui-{uuid.uuid4().hex[:8]}"
    page.fill("#user-id", user)
    page.click("#user-form button[type=submit]")
    expect(page.locator("#user-strategy")).to_contain_text("cold_start")
    expect(page.locator("#user-profile")).to_contain_text("no events applied")
    cold = page.locator("#user-recs tbody tr").all_inner_texts()

    # -- events: five ratings of one genre, one rating of an item not published yet, two broken messages.
    liked = sorted((i for i in catalogue if GENRE in i.genres), key=lambda i: (-i.members, i.item_id))[:5]
    late_id = f"ui:late-{uuid.uuid4().hex[:6]}"
    ratings = [
        RatingEvent(
            event_id=f"{user}-r{n}",
            user_id=user,
            item_id=item.external_id,
            event_time=T0 + timedelta(hours=n),
            rating=10.0,
        )
        for n, item in enumerate(liked)
    ]
    late = RatingEvent(
        event_id=f"{user}-late", user_id=user, item_id=late_id, event_time=T0 + timedelta(days=1), rating=9.0
    )
    publish(settings, *ratings, late, raw=(b"not json", b'{"event_type": "rating", "rating": NaN}'))
    wait_until_consumed(settings.kafka, timeout_s=120)

    # -- the user's recommendations changed, and the page says how.
    inspect_until(page, lambda: "personalized" in page.inner_text("#user-strategy"), "personalized answer")
    changes = page.inner_text("#user-changes")
    assert "ratings 0 → 5" in changes and "strategy cold_start → personalized" in changes, changes
    assert page.locator("#user-recs tbody tr").all_inner_texts() != cold
    expect(page.locator("#user-seen tbody tr")).to_have_count(5)
    expect(page.locator("#user-recs td.new").first).to_be_visible()
    shot(page.locator("#user-card"), "admin-user.png")

    # -- the bad events are dead letters with their reasons.
    page.click("#dl-refresh")
    unknown = page.locator('#dead-letters tr[data-reason="unknown_item"]', has_text=user)
    expect(unknown).to_have_count(1)
    expect(unknown).to_contain_text(late_id)
    reasons = page.locator("#dead-letters td.reason")
    expect(reasons.filter(has_text="invalid_json")).not_to_have_count(0)
    expect(reasons.filter(has_text=re.compile("non_finite_number|invalid_json"))).not_to_have_count(0)

    # -- the cause goes away (the item is published), then a replay applies the rating once.
    vector = np.random.default_rng(5).standard_normal(DIM).astype(np.float32)
    vector /= np.linalg.norm(vector)
    publish(
        settings,
        UpsertItemEvent(
            event_id=f"{late_id}-v1",
            item_id=late_id,
            event_time=T0,
            title="A Late Arrival",
            categories=(GENRE,),
            vector=tuple(float(x) for x in vector),
        ),
    )
    wait_until_consumed(settings.kafka, timeout_s=120)
    unknown.locator("button.replay").click()
    expect(unknown.locator(".outcome")).to_contain_text(f"replayed to {settings.kafka.ratings_topic}")
    shot(page.locator("#dead-letters-card"), "admin-dead-letters.png")
    wait_until_consumed(settings.kafka, timeout_s=120)
    # Handled, not dead-lettered again: a refresh lists no new unknown_item letter and keeps the outcome.
    page.click("#dl-refresh")
    expect(unknown).to_have_count(1)
    expect(unknown.locator(".outcome")).to_contain_text("replayed to")
    inspect_until(
        page, lambda: late_id in page.inner_text("#user-seen"), "the replayed rating among the seen items"
    )
    assert "ratings 5 → 6" in page.inner_text("#user-changes")

    # -- item search over the served catalogue finds the late item; "try Recommend" answers.
    page.fill("#item-q", "late arrival")
    page.click("#item-form button[type=submit]")
    expect(page.locator("#items tbody tr").first).to_contain_text(late_id)
    page.fill("#try-user", user)
    page.fill("#try-k", "5")
    page.fill("#try-include", GENRE)
    page.click("#try-form button[type=submit]")
    expect(page.locator("#try-items tbody tr")).to_have_count(5)
    expect(page.locator("#try-meta")).to_contain_text("personalized")

    # The lag settles at zero once everything is handled; the status card is the README's picture.
    page.click("#status-refresh")
    expect(page.locator("#lag-total")).to_have_text("0")
    shot(page.locator("#status-card"), "admin-status.png")
