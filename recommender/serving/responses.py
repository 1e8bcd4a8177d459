"""Response shaping: rankings in internal indices become the JSON the API documents, with
each item's name and price, what led to it ("because"), and page-you-made's groups."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..activity import Event
from ..serving.catalog import Catalog
from ..serving.ranking import Ranked

EVENT_VERBS = {
    "view": "viewed",
    "cart": "added to cart",
    "wishlist": "wished for",
    "purchase": "bought",
}


def ranking(
    ranked: Ranked, catalog: Catalog, version: str, extra: dict[str, dict[int, Any]] | None = None
) -> dict[str, Any]:
    """``{"strategy", "model_version", "recommendations": [...]}``; ``extra`` adds a field to
    the entries of the items it maps (e.g. ``bought_both``).

    Every answer builds this, so it is one comprehension over the entries, with the optional
    fields added after it (in the same key order: ``extra``'s, then ``because``): a loop
    looking at ``extra`` and the reason for each entry cost an item page about 8 us."""
    ids, names, prices = catalog.ids, catalog.names, catalog.prices
    items = ranked.items
    recommendations: list[dict[str, Any]] = [
        {
            "item_id": ids[item],
            "name": names[item],
            "price": prices[item],
            "score": None if score is None else round(score, 6),
            "source": source,
        }
        for item, score, source in zip(items, ranked.scores, ranked.sources)
    ]
    for key, values in (extra or {}).items():
        for entry, item in zip(recommendations, items):
            if item in values:
                entry[key] = values[item]
    for entry, reason in zip(recommendations, ranked.reasons):
        if reason >= 0:
            entry["because"] = {"item_id": ids[reason], "name": names[reason]}
    sources = ranked.sources
    strategy = "popular" if sources.count("popular") == len(sources) else ranked.strategy
    return {"strategy": strategy, "model_version": version, "recommendations": recommendations}


def item(catalog: Catalog, item_idx: int | None, item_id: str) -> dict[str, Any]:
    """An item as the API shows it outside a ranking (page header, history, search)."""
    if item_idx is None:
        return {"item_id": item_id, "known": False}
    return {
        "item_id": item_id,
        "name": catalog.names[item_idx],
        "price": catalog.prices[item_idx],
        "known": True,
    }


def page_groups(
    response: dict[str, Any], ranked: Ranked, recent: Sequence[Event], catalog: Catalog
) -> list[dict[str, Any]]:
    """Page-you-made's groups: the recommendations under the recent item that led to them, each
    reason said in words ("because you viewed X"); ``response``'s entries gain the event."""
    last_event: dict[str, Event] = {}
    for event in recent:  # newest first: keep each item's latest event
        last_event.setdefault(event.item_id, event)
    groups: dict[int, dict[str, Any]] = {}
    for entry, reason in zip(response["recommendations"], ranked.reasons):
        if reason < 0:
            continue
        event = last_event[catalog.ids[reason]]
        entry["because"]["event"] = event.type
        entry["because"]["text"] = (
            f"because you {EVENT_VERBS[event.type]} {catalog.names[reason] or event.item_id}"
        )
        group = groups.setdefault(reason, {"because": entry["because"], "recommendations": []})
        group["recommendations"].append({key: v for key, v in entry.items() if key != "because"})
    return list(groups.values())
