"""``POST /v1/events``: what shoppers do (view, cart, wishlist, purchase), stored all or nothing."""

from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, jsonify

from .observability import EVENTS
from .params import json_body, parse_events
from .stores import activity_store
from .tracing import attribute

bp = Blueprint("events", __name__, url_prefix="/v1/events")


@bp.post("")
def add_events() -> tuple[Response, int]:
    """Store a batch; 201 once it is on disk, 400 naming every bad event (and storing none).

    An event citing a ``recommendation_id`` whose list showed its item is attributed to that
    list in the same transaction; one citing a forged or expired id, or an item the list did
    not show, is stored as an ordinary event and counted as not attributed."""
    now = time.time()
    events, citations = parse_events(json_body(), now)
    attributions, missed = attribute(events, citations, _catalog_price)
    stored = activity_store().add_events(events, now, attributions, missed)
    EVENTS.inc(stored)
    body = {
        "stored": stored,
        "attributed": len(attributions),
        "not_attributed": sum(missed.values()),
    }
    return jsonify(body), 201


def _catalog_price(item_id: str) -> float | None:
    """The current model's price of an item (None: unknown item or no model)."""
    service = current_app.extensions["recommender"].get()
    if service is None:
        return None
    item_idx = service.items.index(item_id, missing="none")
    return None if item_idx is None else service.prices[item_idx]
