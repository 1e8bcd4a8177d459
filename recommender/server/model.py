"""``GET /v1/model``: which model version is serving, when it was trained and on what."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from .stores import current_service

bp = Blueprint("model", __name__, url_prefix="/v1/model")


@bp.get("")
def model_info() -> Response:
    return jsonify(current_service().info())
