"""The merchandiser's explorer: an HTML page (``/``, ``/explore``) over the read-only JSON API,
plus the few read-only endpoints it needs: catalog search, a customer's purchase history and
the current model's evaluation report. Its one exception is the Performance view, which
calls the admin endpoints of ``performance.py`` with a token the merchandiser types in (kept in
the tab's session storage, sent as the ``Authorization`` header, never in a URL)."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, current_app, jsonify, send_from_directory

from .. import artifacts
from .errors import ApiError
from .params import check_id, query_int, query_value
from .stores import activity_store, current_service

bp = Blueprint("explorer", __name__)
STATIC = Path(__file__).parent / "static"


@bp.get("/")
@bp.get("/explore")
def page() -> Response:
    response = send_from_directory(STATIC, "explorer.html", mimetype="text/html")
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; style-src 'self' 'unsafe-inline'"
    )
    return response


@bp.get("/v1/catalog/search")
def search() -> Response:
    """Items whose id or name contains ``q``, most bought first, ``per_page`` at a time."""
    query = check_id("q", query_value("q") or "")
    page = query_int("page", 1, 1, 10_000)
    per_page = query_int("per_page", 20, 1, 100)
    return jsonify(current_service().search(query, page, per_page))  # type: ignore[arg-type]


@bp.get("/v1/users/<user_id>/history")
def history(user_id: str) -> Response:
    """What the model holds as bought by this customer, and their recent activity."""
    user_id = check_id("user_id", user_id)
    store = activity_store()
    if store.suppression(user_id) == "forgotten":
        return jsonify(
            {"user_id": user_id, "purchases": [], "recent": [], "fallback_reason": "forgotten"}
        )
    recent = [
        {"item_id": e.item_id, "type": e.type, "timestamp": e.timestamp}
        for e in store.recent_events(user_id)
    ]
    return jsonify(
        {"user_id": user_id, "purchases": current_service().history(user_id), "recent": recent}
    )


@bp.get("/v1/model/report")
def report() -> Response:
    """The evaluation report of the model being served (self-contained HTML)."""
    service = current_service()
    models_dir = current_app.extensions["recommender_config"].models_dir
    page_bytes = artifacts.read_document(models_dir, service.version, "report.html")
    if page_bytes is None:
        raise ApiError(404, "no_report", "this model version has no evaluation report")
    return Response(page_bytes, mimetype="text/html")
