"""Endpoints a shopper's browser must never reach: model reload (and, later, privacy requests).

They need ``Authorization: Bearer <token>`` with the token from configuration
(``RECO_ADMIN_TOKEN``), compared in constant time. Without a configured token they are
disabled (403), not open.
"""

from __future__ import annotations

import functools
import hmac
import math
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from .errors import ApiError

bp = Blueprint("admin", __name__, url_prefix="/v1/admin")


def admin_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """401 without the right bearer token; 403 when no token is configured at all."""

    @functools.wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        expected = current_app.extensions["recommender_config"].admin_token
        if not expected:
            raise ApiError(
                403, "admin_disabled", "admin endpoints are disabled: no admin token is configured"
            )
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), expected.encode()
        ):
            raise ApiError(
                401,
                "unauthorized",
                "a valid 'Authorization: Bearer <admin token>' header is required",
            )
        return view(*args, **kwargs)

    return guarded


@bp.post("/reload")
@admin_required
def reload() -> Response:
    """Load the version ``models/current`` points at now, in the worker answering; the other
    workers notice within ``reload_interval`` seconds. A broken version is refused."""
    holder = current_app.extensions["recommender"]
    holder.refresh(force=True)
    service = holder.service
    return jsonify(
        {
            "model_version": service.version if service else None,
            "error": holder.last_error and "the new version was refused; see the server log",
        }
    )


@bp.put("/catalog/<item_id>")
@admin_required
def catalog_change(item_id: str) -> Response:
    """Record an item's new price and/or availability (``{"price": 9.5, "available": true}``)
    in the activity store's catalog history, which the e-mail alerts compare against."""
    from .params import bad, check_id, json_body
    from .stores import activity_store

    item_id = check_id("item_id", item_id)
    body = json_body()
    if not isinstance(body, dict):
        raise ApiError(400, "bad_body", "body: must be a JSON object with price and/or available")
    unknown = set(body) - {"price", "available"}
    if unknown:
        raise bad(sorted(unknown)[0], "unknown field; send price and/or available")
    price, available = body.get("price"), body.get("available")
    if price is None and available is None:
        raise bad("price", "give price or available (or both)")
    if price is not None and (
        isinstance(price, bool)
        or not isinstance(price, (int, float))
        or not math.isfinite(price)
        or price < 0
    ):
        raise bad("price", "must be a number, 0 or more")
    if available is not None and not isinstance(available, bool):
        raise bad("available", "must be true or false")
    changed = activity_store().record_catalog([(item_id, price, available)]) == 1
    return jsonify({"item_id": item_id, "price": price, "available": available, "changed": changed})
