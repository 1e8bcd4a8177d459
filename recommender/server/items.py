"""Item pages: "customers who bought this also bought" and "frequently bought together"."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify

from .model import current_service
from .params import check_id, k_param

bp = Blueprint("items", __name__, url_prefix="/v1/items")


@bp.get("/<item_id>/also-bought")
def also_bought(item_id: str) -> Response:
    """Items that customers who bought ``item_id`` also bought (item-to-item over customers)."""
    k = k_param()
    return jsonify(current_service().item_neighbours("also_bought", check_id("item_id", item_id), k))


@bp.get("/<item_id>/bought-together")
def bought_together(item_id: str) -> Response:
    """Items most often in the same order as ``item_id`` (item-to-item over orders)."""
    k = k_param()
    return jsonify(current_service().item_neighbours("bought_together", check_id("item_id", item_id), k))
