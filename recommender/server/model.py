"""``GET /v1/model``: which model version is serving, when it was trained and on what."""
from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from ..service import RecommendationService
from .errors import ApiError

bp = Blueprint("model", __name__, url_prefix="/v1/model")


def current_service() -> RecommendationService:
    """The loaded service, or a 503 when no model has been trained (or none loads)."""
    service = current_app.extensions["recommender"].get()
    if service is None:
        raise ApiError(503, "no_model", "no trained model is loaded yet; run make train")
    return service


@bp.get("")
def model_info() -> Response:
    return jsonify(current_service().info())
