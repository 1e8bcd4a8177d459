"""Per-request access to the process's resources: the loaded model and the activity store."""

from __future__ import annotations

import logging
from dataclasses import dataclass

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


@dataclass(frozen=True)
class ShopperState:
    """A personal request's view of the shopper: why nothing personal may be used (the
    suppression list, or the customers file's opt-out), their recent events and wish list,
    and ``activity``: ``{"activity": "unavailable"}`` for the response when the store could
    not be reached (the answer then comes from the model alone), else empty."""

    personalisation_off: str | None
    recent: list[Event]
    wishlist: list[tuple[str, float]]
    activity: dict[str, str]


def shopper_state(user_id: str, wishlist: bool = False) -> ShopperState:
    """Everything a personal answer reads from the store, in one round trip."""
    store = activity_store()
    try:
        shopper = store.shopper(user_id, wishlist=wishlist)
        reason, recent, wished, activity = shopper.suppression, shopper.recent, shopper.wishlist, {}
    except StoreUnavailable:
        if wishlist:
            raise  # a wish list's answer is the wish list: 503, the shop retries
        reason, recent, wished, activity = (
            store.suppression(user_id),
            [],
            [],
            {"activity": "unavailable"},
        )
    return ShopperState(with_customers_file(user_id, reason), recent, wished, activity)


def with_customers_file(user_id: str, suppression: str | None) -> str | None:
    """The store's suppression, or ``opted_out`` from the customers file: why nothing
    personal may be used for this id (None: it may)."""
    if suppression is None and user_id in current_app.extensions["recommender_customers"].opted_out:
        return "opted_out"
    return suppression


def init_app(app: Flask) -> None:
    from .observability import note_store_state

    config = app.extensions["recommender_config"]
    store = ActivityStore(
        config.activity_db,
        config.history_limit,
        config.history_days,
        password=config.activity_db_password,
        pool_size=config.threads + 1,
    )
    store.backend.on_state = note_store_state
    try:
        store.create_schema()
    except StoreUnavailable as exc:  # the server starts anyway; the schema is checked on first use
        logger.warning("activity store not reachable at start: %s", exc)
    finally:
        store.close()  # a connection must not cross a fork (gunicorn preloads the app in its master)
    app.extensions["recommender_activity"] = store
