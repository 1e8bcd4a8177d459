"""``POST /v1/events``: what shoppers do (view, cart, wishlist, purchase), stored all or nothing."""

from __future__ import annotations

import time

from flask import Blueprint, Response, jsonify

from .observability import EVENTS
from .params import json_body, parse_events
from .stores import activity_store

bp = Blueprint("events", __name__, url_prefix="/v1/events")


@bp.post("")
def add_events() -> tuple[Response, int]:
    """Store a batch; 201 once it is on disk, 400 naming every bad event (and storing none)."""
    now = time.time()
    events = parse_events(json_body(), now)
    stored = activity_store().add_events(events, now=now)
    EVENTS.inc(stored)
    return jsonify({"stored": stored}), 201
