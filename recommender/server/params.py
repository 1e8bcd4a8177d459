"""Validation of request input shared by the views; each failure is a 400 naming the field."""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

from flask import current_app, request

from ..activity import EVENT_TYPES, Event
from ..config import ServeConfig
from ..serving.catalog import Filters
from .errors import ApiError
from .tracing import Citation

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_INTEGER = re.compile(r"\s*[+-]?\d{1,9}\s*")
NO_FILTERS = Filters()
_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")


def config() -> ServeConfig:
    return current_app.extensions["recommender_config"]


def bad(field: str, message: str) -> ApiError:
    return ApiError(400, "bad_parameter", f"{field}: {message}")


def query_value(name: str) -> str | None:
    """A query parameter given at most once (a repeated one is ambiguous, so it is refused)."""
    values = request.args.getlist(name)
    if len(values) > 1:
        raise bad(name, f"given {len(values)} times, expected once")
    return values[0] if values else None


def query_int(name: str, default: int | None, low: int, high: int) -> int | None:
    """An integer query parameter in ``[low, high]``."""
    raw = query_value(name)
    return default if raw is None else parse_int(name, raw, low, high)


def parse_int(name: str, raw: Any, low: int, high: int) -> int:
    if isinstance(raw, str) and _INTEGER.fullmatch(raw):
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int):
        shown = raw[:20] if isinstance(raw, str) else type(raw).__name__
        raise bad(name, f"must be an integer, got {shown!r}")
    if not low <= raw <= high:
        raise bad(name, f"must be between {low} and {high}, got {raw}")
    return raw


def parse_float(name: str, raw: Any) -> float:
    if isinstance(raw, str):
        try:
            raw = float(raw)
        except ValueError:
            raise bad(name, f"must be a number, got {raw[:20]!r}") from None
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
        raise bad(name, "must be a finite number")
    return float(raw)


def parse_bool(name: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in _TRUE + _FALSE:
        return raw.strip().lower() in _TRUE
    raise bad(name, "must be true or false")


def exclude_purchased_param() -> bool | str | None:
    """``exclude_purchased``: true (every purchase excluded), false (purchases may appear,
    ranked by the customer's habit where the model has a repeat model) or ``repeat`` (the
    repeat-aware mode: what is rarely rebought stays excluded); absent: the model's default."""
    raw = query_value("exclude_purchased")
    if raw is None:
        return None
    if raw.strip().lower() == "repeat":
        return "repeat"
    if raw.strip().lower() in _TRUE + _FALSE:
        return raw.strip().lower() in _TRUE
    raise bad("exclude_purchased", "must be true, false or repeat")


def k_param(raw: Any = None) -> int:
    """``k``: how many recommendations, 1..max_k (from the query string unless given)."""
    settings = config()
    if raw is not None:
        return parse_int("k", raw, 1, settings.max_k)
    value = query_int("k", settings.default_k, 1, settings.max_k)
    assert value is not None
    return value


def check_id(name: str, value: Any) -> str:
    """An external id: a string of 1..max_id_length characters without control characters."""
    limit = config().max_id_length
    if not isinstance(value, str):
        raise bad(name, f"must be a string, got {type(value).__name__}")
    if not value or len(value) > limit:
        raise bad(name, f"must be 1 to {limit} characters")
    if _CONTROL.search(value):
        raise bad(name, "contains control characters")
    if "\ufffd" in value:  # what the URL decoder puts where the bytes were not UTF-8
        raise bad(name, "is not valid UTF-8")
    return value


def id_list(name: str, values: Any, comma_separated: bool = False) -> list[str]:
    """A list of ids, at most ``max_items`` long. A query string gives it comma-separated
    (``comma_separated``); in a JSON body it must be a list: ``"85123A"`` where a list is
    documented is a client's mistake, not a one-item list."""
    if comma_separated and isinstance(values, str):
        values = [part for part in values.split(",") if part != ""]
    if not isinstance(values, list):
        raise bad(name, "must be a list of ids")
    settings = config()
    if len(values) > settings.max_items:
        raise bad(name, f"at most {settings.max_items} items, got {len(values)}")
    limit = settings.max_id_length
    for position, value in enumerate(values):
        if not _plain_id(value, limit):  # check_id says what is wrong, naming the entry
            check_id(f"{name}[{position}]", value)
    return list(values)


def _plain_id(value: Any, limit: int) -> bool:
    """What ``check_id`` accepts, as one test: a list's entries are checked without making
    each one's field name (``items[3]``) or reading the configuration again."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= limit
        and _CONTROL.search(value) is None
        and "\ufffd" not in value
    )


# The query string's filter parameters (``filters``).
FILTER_NAMES = frozenset(
    ("exclude", "available", "category", "min_price", "max_price", "max_per_category")
)


def filters(source: dict[str, Any] | None = None) -> Filters:
    """Business filters from a JSON body, or from the query string when ``source`` is None
    (most page views give none: one look at the query's names answers those)."""
    if source is None and FILTER_NAMES.isdisjoint(request.args.keys()):
        return NO_FILTERS

    def get(name: str) -> Any:
        return query_value(name) if source is None else source.get(name)

    values: dict[str, Any] = {}
    if (raw := get("exclude")) is not None:
        values["exclude"] = frozenset(id_list("exclude", raw, comma_separated=source is None))
    if (raw := get("available")) is not None:
        values["available_only"] = parse_bool("available", raw)
    if (raw := get("category")) is not None:
        values["category"] = check_id("category", raw)
    for name in ("min_price", "max_price"):
        if (raw := get(name)) is not None:
            values[name] = parse_float(name, raw)
    if (raw := get("max_per_category")) is not None:
        values["max_per_category"] = parse_int("max_per_category", raw, 1, config().max_k)
    return Filters(**values)


def json_body() -> Any:
    """The request body parsed as JSON, or a 400 saying it is not."""
    body = request.get_json(force=True, silent=True)
    if body is None:
        raise ApiError(400, "bad_body", "body: must be valid JSON (UTF-8)")
    return body


def parse_events(body: Any, now: float) -> tuple[list[Event], list[Citation | None]]:
    """Validate a batch of events; a 400 lists every bad event by index, so nothing is
    half-written. Each event's ``Citation`` (None: it cites no recommendation) comes beside it."""
    events = body.get("events") if isinstance(body, dict) else body
    if not isinstance(events, list) or not events:
        raise ApiError(400, "bad_body", "events: must be a non-empty list of events")
    if len(events) > config().max_events:
        raise ApiError(
            400, "bad_body", f"events: at most {config().max_events} per batch, got {len(events)}"
        )
    parsed, citations, problems = [], [], []
    for position, raw in enumerate(events):
        try:
            event, citation = _event(raw, now)
            parsed.append(event)
            citations.append(citation)
        except ApiError as error:
            problems.append({"index": position, "message": error.message})
    if problems:
        raise ApiError(
            400,
            "bad_events",
            f"{len(problems)} of {len(events)} events are invalid; none were stored",
            details=problems,
        )
    return parsed, citations


def _event(raw: Any, now: float) -> tuple[Event, Citation | None]:
    if not isinstance(raw, dict):
        raise bad("event", "must be an object")
    unknown = set(raw) - {
        "user_id",
        "item_id",
        "type",
        "timestamp",
        "recommendation_id",
        "quantity",
        "price",
    }
    if unknown:
        raise bad(sorted(unknown)[0], "unknown field")
    kind = raw.get("type")
    if kind not in EVENT_TYPES:
        raise bad("type", f"must be one of {', '.join(EVENT_TYPES)}")
    timestamp = now if raw.get("timestamp") is None else _timestamp(raw["timestamp"])
    if timestamp > now + 86400:
        raise bad("timestamp", "more than a day in the future")
    event = Event(
        check_id("user_id", raw.get("user_id")),
        check_id("item_id", raw.get("item_id")),
        kind,
        timestamp,
    )
    return event, _citation(raw)


def _citation(raw: dict[str, Any]) -> Citation | None:
    """``recommendation_id`` (the list the event followed), with a purchase's ``quantity``
    (default 1) and unit ``price`` (default: the catalog's)."""
    token = raw.get("recommendation_id")
    if token is None:
        for name in ("quantity", "price"):
            if raw.get(name) is not None:
                raise bad(name, "only with a recommendation_id (it values an attributed purchase)")
        return None
    if not isinstance(token, str) or not 0 < len(token) <= 8192:
        raise bad("recommendation_id", "must be the string a recommendation response gave")
    quantity = 1.0 if raw.get("quantity") is None else parse_float("quantity", raw["quantity"])
    if not 0 < quantity <= 1e6:
        raise bad("quantity", "must be more than 0")
    price = None if raw.get("price") is None else parse_float("price", raw["price"])
    if price is not None and price < 0:
        raise bad("price", "must not be negative")
    return Citation(token, quantity, price)


def _timestamp(raw: Any) -> float:
    """ISO 8601 (a time without zone is UTC) or seconds since the epoch."""
    if isinstance(raw, str):
        try:
            moment = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise bad("timestamp", "must be ISO 8601 or seconds since the epoch") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return moment.timestamp()
    value = parse_float("timestamp", raw)
    if value < 0:
        raise bad("timestamp", "must not be negative")
    return value
