"""``POST /v1/recommendations``: recommendations from any list of items the shop holds itself."""

from __future__ import annotations

from flask import Blueprint, Response

from .errors import ApiError
from .items import respond
from .params import check_id, filters, id_list, json_body, k_param
from .stores import current_service
from .tracing import arm, holdout

bp = Blueprint("recommendations", __name__, url_prefix="/v1/recommendations")

_FIELDS = {
    "items",
    "k",
    "exclude",
    "available",
    "category",
    "min_price",
    "max_price",
    "max_per_category",
    "shopper_id",
}


@bp.post("")
def from_items() -> Response:
    """Body ``{"items": [...], "k": 10, "exclude": [...]}`` plus optional filters and
    ``shopper_id`` (places the request in a running experiment)."""
    body = json_body()
    if not isinstance(body, dict):
        raise ApiError(400, "bad_body", "body: must be a JSON object")
    unknown = set(body) - _FIELDS
    if unknown:
        raise ApiError(400, "bad_parameter", f"{sorted(unknown)[0]}: unknown field")
    if "items" not in body:
        raise ApiError(400, "bad_parameter", "items: required")
    items = id_list("items", body["items"])
    k = k_param(body["k"]) if "k" in body else k_param()
    shopper_id = body.get("shopper_id")
    answering = arm(
        current_service(), None if shopper_id is None else check_id("shopper_id", shopper_id)
    )
    chosen = filters(body)
    held = holdout(answering, k, chosen)
    return respond(held if held is not None else answering.service.for_items(items, k, chosen))
