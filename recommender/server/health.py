"""Liveness (``/health``: the process answers) and readiness (``/ready``: a model is loaded)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from .errors import error_response

bp = Blueprint("health", __name__)


@bp.get("/health")
def health() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/ready")
def ready() -> Response | tuple[Response, int]:
    service = current_app.extensions["recommender"].get()
    if service is None:
        return error_response(503, "no_model", "no trained model is loaded yet; run make train")
    return jsonify({"status": "ready", "model_version": service.version})
