"""Readable terminal tables for the CLI and the demo (rich). Presentation only: no logic."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from llmrec_client.models import Recommendations, ScoredItem, SimilarItems, UserProfile

console = Console()


def _genres(item: ScoredItem, limit: int = 3) -> str:
    return ", ".join(item.genres[:limit])


def items_table(title: str, items: Sequence[ScoredItem], marks: Sequence[str] | None = None) -> Table:
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("#", justify="right")
    if marks is not None:
        table.add_column("", justify="center")
    table.add_column("title", overflow="fold", max_width=42)
    table.add_column("genres", overflow="fold", max_width=30)
    table.add_column("score", justify="right")
    table.add_column("why", overflow="fold", max_width=48)
    for rank, item in enumerate(items, start=1):
        row = [str(rank)]
        if marks is not None:
            row.append(marks[rank - 1])
        row += [item.title, _genres(item), f"{item.score:.3f}", item.reason]
        table.add_row(*row)
    return table


def recommendations_table(answer: Recommendations, title: str | None = None) -> None:
    heading = (
        title or f"Recommendations for {answer.user_id} ({answer.strategy}, model {answer.model_version})"
    )
    console.print(items_table(heading, answer.items))


def changed_recommendations_table(before: Recommendations, after: Recommendations, title: str) -> None:
    """The new list, with NEW beside items that were not in the old one and arrows for moves."""
    old_rank = {item.item_id: rank for rank, item in enumerate(before.items, start=1)}
    marks = []
    for rank, item in enumerate(after.items, start=1):
        previous = old_rank.get(item.item_id)
        if previous is None:
            marks.append("NEW")
        elif previous > rank:
            marks.append(f"up {previous - rank}")
        elif previous < rank:
            marks.append(f"down {rank - previous}")
        else:
            marks.append("=")
    console.print(items_table(title, after.items, marks))


def similar_table(item_id: str, answer: SimilarItems) -> None:
    console.print(items_table(f"Items similar to {item_id} (model {answer.model_version})", answer.items))


def profile_table(profile: UserProfile) -> None:
    table = Table(title=f"Profile of {profile.user_id}", title_justify="left")
    table.add_column("field")
    table.add_column("value", overflow="fold")
    table.add_row(
        "ratings / reviews / watch events", f"{profile.ratings} / {profile.reviews} / {profile.watch_events}"
    )
    table.add_row("top genres", ", ".join(f"{g.genre} ({g.weight:.2f})" for g in profile.top_genres) or "-")
    table.add_row("last event", profile.last_event_time.isoformat() if profile.last_event_time else "-")
    table.add_row("updated", profile.updated_at.isoformat() if profile.updated_at else "-")
    console.print(table)
