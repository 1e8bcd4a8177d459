"""Item pages: "customers who bought this also bought" and "frequently bought together"."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from .observability import note_strategy
from .params import check_id, filters, k_param
from .stores import current_service

bp = Blueprint("items", __name__, url_prefix="/v1/items")


@bp.get("/<item_id>/also-bought")
def also_bought(item_id: str) -> Response:
    """Items that customers who bought ``item_id`` also bought (item-to-item over customers)."""
    item_id, k, chosen = check_id("item_id", item_id), k_param(), filters()
    return respond(current_service().item_neighbours("also_bought", item_id, k, chosen))


@bp.get("/<item_id>/bought-together")
def bought_together(item_id: str) -> Response:
    """Items most often in the same order as ``item_id`` (item-to-item over orders)."""
    item_id, k, chosen = check_id("item_id", item_id), k_param(), filters()
    return respond(current_service().item_neighbours("bought_together", item_id, k, chosen))


def respond(body: dict) -> Response:
    """A recommendation response, its strategy noted for the metrics and the request log."""
    note_strategy(body)
    return jsonify(body)
