"""Per-request access to the process's resources: the loaded model and the activity store."""
from __future__ import annotations

from flask import Flask, current_app, g

from ..activity import ActivityStore
from ..service import RecommendationService
from .errors import ApiError


def current_service() -> RecommendationService:
    """The loaded service, or a 503 when no model has been trained (or none loads)."""
    service = current_app.extensions["recommender"].get()
    if service is None:
        raise ApiError(503, "no_model", "no trained model is loaded yet; run make train")
    return service


def activity_store() -> ActivityStore:
    """This request's connection to the activity store (opened on first use, closed at teardown)."""
    if "activity_store" not in g:
        config = current_app.extensions["recommender_config"]
        g.activity_store = ActivityStore(config.activity_db, config.history_limit, config.history_days)
    return g.activity_store


def init_app(app: Flask) -> None:
    config = app.extensions["recommender_config"]
    store = ActivityStore(config.activity_db, config.history_limit, config.history_days)
    try:
        store.create_schema()
    finally:
        store.close()

    @app.teardown_appcontext
    def close_store(exception: BaseException | None) -> None:
        store = g.pop("activity_store", None)
        if store is not None:
            store.close()
