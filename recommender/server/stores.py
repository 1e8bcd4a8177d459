"""Per-request access to the process's resources: the loaded model and the activity store."""
from __future__ import annotations

import logging

from flask import Flask, current_app

from ..activity import ActivityStore, Event
from ..errors import StoreUnavailable
from ..serving.service import RecommendationService
from .errors import ApiError

logger = logging.getLogger(__name__)


def current_service() -> RecommendationService:
    """The loaded service, or a 503 when no model has been trained (or none loads)."""
    service = current_app.extensions["recommender"].get()
    if service is None:
        raise ApiError(503, "no_model", "no trained model is loaded yet; run make train")
    return service


def activity_store() -> ActivityStore:
    """The process's activity store (SQLite: a connection per thread; PostgreSQL: a pool per process)."""
    return current_app.extensions["recommender_activity"]


def recent_activity(user_id: str) -> tuple[list[Event], dict[str, str]]:
    """A shopper's recent events for a personal answer, and what the response should say of
    them: nothing normally, ``{"activity": "unavailable"}`` when the store cannot be reached
    (the answer then comes from the model alone, and says so)."""
    try:
        return activity_store().recent_events(user_id), {}
    except StoreUnavailable:
        return [], {"activity": "unavailable"}


def init_app(app: Flask) -> None:
    from .observability import note_store_state

    config = app.extensions["recommender_config"]
    store = ActivityStore(config.activity_db, config.history_limit, config.history_days,
                          password=config.activity_db_password, pool_size=config.threads + 1)
    store.backend.on_state = note_store_state
    try:
        store.create_schema()
    except StoreUnavailable as exc:  # the server starts anyway; the schema is checked on first use
        logger.warning("activity store not reachable at start: %s", exc)
    finally:
        store.close()  # a connection must not cross a fork (gunicorn preloads the app in its master)
    app.extensions["recommender_activity"] = store
