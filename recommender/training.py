"""One training run: read, clean, build matrices, fit, save a new model version.

``run`` is what ``train.py`` and ``make train`` call. It either promotes a complete, verified
model version or raises, leaving the current model untouched.
"""
from __future__ import annotations

import logging
import sqlite3
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from . import artifacts
from .activity import ActivityStore
from .algorithms import ALS, ItemKNN, Popular
from .config import TrainConfig
from .errors import DataError
from .data.catalog import build_catalog
from .data.cleaning import CleaningRules, clean
from .data.loading import PRESET_EXCLUDED_ITEMS, fingerprint, read_catalog, read_log
from .data.matrix import build_interactions

logger = logging.getLogger(__name__)


def run(config: TrainConfig) -> Path:
    """Train every model on ``config.data`` and promote the result; return the version directory.

    Raises
    ------
    DataError
        The log (or catalog) is unusable; the message names the file and the problem.
    ArtifactError
        The model could not be written; the current model is untouched.
    """
    started = time.perf_counter()
    log = read_log(config.data, config.format, config.preset, config.columns, config.encoding)
    if config.include_activity:
        log = _with_activity_purchases(log, config.include_activity)
    rules = CleaningRules(
        excluded_items=config.excluded_items + PRESET_EXCLUDED_ITEMS.get(log.attrs.get("preset", ""), ()),
        item_pattern=config.item_pattern,
        cancel_prefix=config.cancel_prefix,
        drop_zero_price=config.drop_zero_price,
        future_tolerance_days=config.future_tolerance_days,
    )
    purchases, report = clean(log, rules, source=str(config.data))
    interactions = build_interactions(purchases, config.weighting, config.trending_half_life_days)
    catalog_override = read_catalog(config.catalog, config.encoding) if config.catalog else None
    catalog = build_catalog(purchases, interactions.item_ids, catalog_override)

    knn_params = dict(
        similarity=config.similarity,
        neighbours=config.neighbours,
        min_support=config.min_support,
        min_pair_support=config.min_pair_support,
        num_threads=config.num_threads,
    )
    arrays: dict[str, NDArray[Any]] = {
        "item_ids": interactions.item_ids.ids_,
        "user_ids": interactions.user_ids.ids_,
        "user_items.indptr": interactions.user_items.indptr.astype(np.int64),
        "user_items.indices": interactions.user_items.indices.astype(np.int32),
        **_prefixed("catalog", catalog),
    }
    components: dict[str, Any] = {}
    has_customers = interactions.user_items.nnz > 0
    if has_customers:
        also_bought = ItemKNN(**knn_params).fit(interactions.user_items)
        arrays.update(_prefixed("also_bought", also_bought.to_arrays()))
        components["also_bought"] = {"model": "item_knn", "basis": "customers", **also_bought.get_params()}
        als = ALS(
            factors=config.als_factors, regularization=config.als_regularization, alpha=config.als_alpha,
            iterations=config.als_iterations, confidence=config.als_confidence,
            random_state=config.random_state, num_threads=config.num_threads, use_gpu=config.use_gpu,
        ).fit(interactions.user_counts)
        arrays.update(_prefixed("als", als.to_arrays()))
        components["als"] = {"model": "als", "basis": "customers", **als.get_params()}
    if interactions.order_items.nnz > 0:
        bought_together = ItemKNN(**knn_params).fit(interactions.order_items)
        arrays.update(_prefixed("bought_together", bought_together.to_arrays()))
        components["bought_together"] = {"model": "item_knn", "basis": "orders", **bought_together.get_params()}
    popularity_basis = interactions.user_items if has_customers else interactions.order_items
    basis = "customers" if has_customers else "orders"
    popularity_basis = popularity_basis.copy()
    popularity_basis.data[:] = 1.0
    arrays.update(_prefixed("popular", Popular().fit(popularity_basis).to_arrays()))
    arrays.update(_prefixed("trending", Popular().fit(interactions.recency).to_arrays()))
    components["popular"] = {"model": "popular", "basis": basis}
    components["trending"] = {"model": "popular", "basis": basis, "half_life_days": config.trending_half_life_days}

    manifest = {
        "components": components,
        "params": _jsonable(vars(config)),
        "data": {"path": str(config.data), "sha256": fingerprint(config.data)},
        "cleaning": report.to_dict(),
        "counts": {
            "customers": len(interactions.user_ids),
            "items": len(interactions.item_ids),
            "orders": interactions.n_orders,
            "customer_item_pairs": int(interactions.user_items.nnz),
            "purchase_lines": report.rows_kept,
        },
        "libraries": {name: metadata.version(name) for name in ("implicit", "numpy", "scipy", "pandas")},
        "training_seconds": round(time.perf_counter() - started, 3),
    }
    path = artifacts.save(config.models_dir, arrays, manifest, config.keep_versions)
    logger.info("training finished in %.1fs: %s", time.perf_counter() - started, path)
    return path


def _with_activity_purchases(log: pd.DataFrame, database: Path) -> pd.DataFrame:
    """Append the purchases recorded through the API (``POST /v1/events``) to the log."""
    if not Path(database).is_file():
        raise DataError(f"{database}: activity database not found")
    store = ActivityStore(database)
    try:
        events = store.purchases()
    except sqlite3.Error as exc:
        raise DataError(f"{database}: cannot read purchases: {exc}") from None
    finally:
        store.close()
    if not events:
        return log
    recorded = pd.DataFrame({
        "user_id": pd.array([e.user_id for e in events], dtype="string"),
        "item_id": pd.array([e.item_id for e in events], dtype="string"),
        "timestamp": pd.to_datetime([e.timestamp for e in events], unit="s"),
        "quantity": 1.0,
        "order_id": pd.array([f"api:{e.user_id}:{int(e.timestamp)}" for e in events], dtype="string"),
    })
    combined = pd.concat([log, recorded[[c for c in recorded.columns if c in log.columns or c in ("user_id", "item_id")]]],
                         ignore_index=True)
    combined.attrs.update(log.attrs)
    logger.info("added %d purchases from the activity store %s", len(events), database)
    return combined


def _prefixed(prefix: str, arrays: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
    return {f"{prefix}.{name}": array for name, array in arrays.items()}


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, dict) or hasattr(value, "items"):
            value = dict(value)
        out[key] = value
    return out


__all__ = ["run"]
