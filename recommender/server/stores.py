"""Per-request access to the process's resources: the loaded model and the activity store."""
from __future__ import annotations

from flask import Flask, current_app

from ..activity import ActivityStore
from ..serving.service import RecommendationService
from .errors import ApiError


def current_service() -> RecommendationService:
    """The loaded service, or a 503 when no model has been trained (or none loads)."""
    service = current_app.extensions["recommender"].get()
    if service is None:
        raise ApiError(503, "no_model", "no trained model is loaded yet; run make train")
    return service


def activity_store() -> ActivityStore:
    """The process's activity store; each serving thread keeps its own SQLite connection."""
    return current_app.extensions["recommender_activity"]


def init_app(app: Flask) -> None:
    config = app.extensions["recommender_config"]
    store = ActivityStore(config.activity_db, config.history_limit, config.history_days)
    store.create_schema()
    store.close()  # a connection must not cross a fork (gunicorn preloads the app in its master)
    app.extensions["recommender_activity"] = store
