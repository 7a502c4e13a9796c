"""The one text the encoder embeds for an item, whatever the catalogue.

``llmrec build-index`` embeds the MAL catalogue's items with it (``llmrec.catalogue.Item.embedding_text``)
and the worker embeds items from the items topic with it (``embedding_text_of``), so an item imported
through the topic lands where the offline index put it. The MAL importer carries MAL's type and themes in
the attributes ``type`` and ``themes``; any catalogue may use them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

KIND_ATTRIBUTE = "type"
THEMES_ATTRIBUTE = "themes"


def embedding_text(
    title: str, categories: Sequence[str], text: str, *, kind: str | None = None, themes: Sequence[str] = ()
) -> str:
    """Title, kind, categories (as genres) and themes, then the free text."""
    parts = [title.rstrip(".") + "."]
    if kind:
        parts.append(f"{kind}.")
    if categories:
        parts.append("Genres: " + ", ".join(categories) + ".")
    if themes:
        parts.append("Themes: " + ", ".join(themes) + ".")
    if text:
        parts.append(text)
    return " ".join(parts)


def embedding_text_of(title: str, categories: Sequence[str], text: str, attributes: Mapping[str, Any]) -> str:
    """``embedding_text`` of an item event's fields: the kind and themes come from its attributes."""
    kind = attributes.get(KIND_ATTRIBUTE)
    themes = attributes.get(THEMES_ATTRIBUTE)
    return embedding_text(
        title,
        categories,
        text,
        kind=kind if isinstance(kind, str) else None,
        themes=[t for t in themes if isinstance(t, str)] if isinstance(themes, list) else (),
    )
