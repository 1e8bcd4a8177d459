"""Validation of request parameters shared by the views; each failure is a 400 naming the field."""
from __future__ import annotations

import re

from flask import current_app, request

from .errors import ApiError

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def query_int(name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter in ``[low, high]``; given once at most."""
    values = request.args.getlist(name)
    if not values:
        return default
    if len(values) > 1:
        raise ApiError(400, "bad_parameter", f"{name}: given {len(values)} times, expected once")
    raw = values[0].strip()
    if not re.fullmatch(r"[+-]?\d{1,9}", raw):
        raise ApiError(400, "bad_parameter", f"{name}: must be an integer, got {values[0][:20]!r}")
    value = int(raw)
    if not low <= value <= high:
        raise ApiError(400, "bad_parameter", f"{name}: must be between {low} and {high}, got {value}")
    return value


def k_param() -> int:
    """The ``k`` query parameter: how many recommendations, 1..max_k."""
    config = current_app.extensions["recommender_config"]
    return query_int("k", config.default_k, 1, config.max_k)


def check_id(name: str, value: str) -> str:
    """An external id from the URL: not empty, not too long, no control characters."""
    limit = current_app.extensions["recommender_config"].max_id_length
    if not value or len(value) > limit:
        raise ApiError(400, "bad_parameter", f"{name}: must be 1 to {limit} characters")
    if _CONTROL.search(value):
        raise ApiError(400, "bad_parameter", f"{name}: contains control characters")
    return value
