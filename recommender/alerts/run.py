"""One alerts run (``python -m recommender alerts``, ``make alerts``): record a catalog file's
prices if given, take the store's alerts lock (one run per shop, on any host: overlapping runs
would send a digest twice), find the alerts due and deliver them."""

from __future__ import annotations

import logging
from pathlib import Path

from .. import artifacts
from ..activity import ActivityStore
from ..config import AlertsConfig, ServeConfig
from ..customers import read_customers
from ..serving.service import RecommendationService
from .delivery import deliver
from .rules import find_alerts

logger = logging.getLogger(__name__)


def run(
    config: ServeConfig,
    settings: AlertsConfig,
    out: Path | None,
    catalog: list[tuple[str, float | None, bool | None]] | None = None,
) -> dict[str, int]:
    """Find and deliver the alerts due; returns ``deliver``'s counts. ``catalog``: states
    (``data.catalog.catalog_states``) to record first, so a restock or a price change in the
    shop's catalog file is an alert in this same run.

    Raises ``BusyError`` (another run holds the lock), ``DeliveryError`` (the mail server),
    ``StoreError`` (the store)."""
    customers = read_customers(config.customers_file)
    store = ActivityStore(
        config.activity_db,
        config.history_limit,
        config.history_days,
        password=config.activity_db_password,
    )
    try:
        with store.run_lock("alerts"):
            if catalog:
                changed = store.record_catalog(catalog)
                logger.info("catalog: %d price or availability changes recorded", changed)
            service = (
                RecommendationService(artifacts.load_current_bundle(config.models_dir))
                if artifacts.current_version(config.models_dir)
                else None
            )
            excluded = customers.opted_out | frozenset(store.suppressed())
            found = find_alerts(store, service, settings, excluded)
            return deliver(found, store, settings, customers.emails, out, excluded=excluded)
    finally:
        store.close()
