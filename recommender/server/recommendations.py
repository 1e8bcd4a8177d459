"""``POST /v1/recommendations``: recommendations from any list of items the shop holds itself."""

from __future__ import annotations

from flask import Blueprint, Response

from .errors import ApiError
from .items import respond
from .params import filters, id_list, json_body, k_param
from .stores import current_service

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
}


@bp.post("")
def from_items() -> Response:
    """Body ``{"items": [...], "k": 10, "exclude": [...]}`` plus optional filters."""
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
    return respond(current_service().for_items(items, k, filters(body)))
