"""Item pages: "customers who bought this also bought" and "frequently bought together"."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from ..serving import responses
from .observability import note_strategy
from .params import check_id, filters, k_param, query_value
from .stores import current_service
from .tracing import arm, holdout, trace

bp = Blueprint("items", __name__, url_prefix="/v1/items")


@bp.get("/<item_id>/also-bought")
def also_bought(item_id: str) -> Response:
    """Items that customers who bought ``item_id`` also bought (item-to-item over customers)."""
    return _neighbours("also_bought", item_id)


@bp.get("/<item_id>/bought-together")
def bought_together(item_id: str) -> Response:
    """Items most often in the same order as ``item_id`` (item-to-item over orders)."""
    return _neighbours("bought_together", item_id)


def _neighbours(component: str, item_id: str) -> Response:
    """``shopper_id`` (a customer or session id, optional) places the page view in a
    running experiment; without one, the current model answers."""
    item_id, k, chosen = check_id("item_id", item_id), k_param(), filters()
    shopper_id = query_value("shopper_id")
    answering = arm(
        current_service(), None if shopper_id is None else check_id("shopper_id", shopper_id)
    )
    held = holdout(answering, k, chosen)
    if held is not None:
        service = answering.service
        item_idx = service.items.index(item_id, missing="none")
        return respond({"item": responses.item(service.catalog, item_idx, item_id), **held})
    return respond(answering.service.item_neighbours(component, item_id, k, chosen))


def respond(body: dict) -> Response:
    """A recommendation response: its strategy noted for the metrics and the request log,
    its list signed into a ``recommendation_id`` and counted as an impression."""
    note_strategy(body)
    trace(body)
    return jsonify(body)
