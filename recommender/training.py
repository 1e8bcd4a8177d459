"""One training run: read, clean, evaluate and choose, fit, save, gate, promote.

``run`` is what ``train.py`` and ``make train`` call. It either promotes a complete, verified
model version, or writes it without promoting (refused by the gate, exit code 3), or raises
before writing anything; in every case the current model keeps serving until a better one
is promoted.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
from numpy.typing import NDArray

from . import artifacts, report
from .bundle import CsrArrays, ModelBundle, NeighbourArrays, build_manifest
from .activity import ActivityStore, describe
from .algorithms import ItemKNN, Popular
from .config import TrainConfig
from .data.catalog import build_catalog, first_sold
from .data.cleaning import CleaningRules, clean
from .data.loading import PRESET_EXCLUDED_ITEMS, PRESET_ITEM_PATTERNS, fingerprint, read_catalog, read_log
from .data.matrix import binarize, build_interactions, cap_history, decayed, trending_weights
from .errors import DataError, GateRefusedError, StoreError
from .model_selection import BlendChoice, build_als, build_item_knn, default_choice, select_and_evaluate

logger = logging.getLogger(__name__)


def train(config: TrainConfig) -> Path:
    """One training run on the configured engine: what ``train.py`` and the nightly job call.

    The local engine runs with BLAS capped to one thread: implicit parallelises its fits with
    OpenMP itself, and a multithreaded BLAS under it oversubscribes the cores. The Spark engine
    is imported only when asked for (pyspark is an optional dependency). Raises as ``run``.
    """
    if config.engine == "spark":
        from .spark import training as spark_training

        return spark_training.run(config)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return run(config)


def run(config: TrainConfig) -> Path:
    """Train on ``config.data`` and promote the result if it passes the gate; return its directory.

    Raises
    ------
    DataError
        The log (or catalog) is unusable; the message names the file and the problem.
    ArtifactError
        The model could not be written; the current model is untouched.
    GateRefusedError
        The new model measured worse than the current one beyond ``gate_tolerance`` (and
        ``force`` was not set); it is on disk, not promoted.
    """
    started = time.perf_counter()
    purchases, report_of_cleaning = load_purchases(config)
    interactions = build_interactions(purchases, config.weighting)
    has_customers = interactions.user_items.nnz > 0

    current_version = artifacts.current_version(config.models_dir)
    current_manifest = artifacts.read_manifest(config.models_dir, current_version) if current_version else None
    current_blend = (current_manifest or {}).get("blend")
    evaluation: dict[str, Any] = {}
    notes: list[str] = []
    predictions: dict[str, Any] = {}
    choice = default_choice(len(interactions.item_ids), config.evaluation_settings, has_customers)
    if config.evaluate:
        try:
            selection = select_and_evaluate(purchases, config.evaluation_settings, current_blend)
            choice, evaluation, notes = selection.choice, selection.evaluation, selection.notes
            predictions = selection.predictions
        except DataError as exc:
            notes.append(f"not evaluated: {exc}")
            logger.warning("not evaluated (%s); using the default blend", exc)
    else:
        notes.append("not evaluated (--no-evaluate); using the default blend")

    catalog_override = read_catalog(config.catalog, config.encoding) if config.catalog else None
    catalog = build_catalog(purchases, interactions.item_ids, catalog_override)
    catalog["first_sold"] = first_sold(purchases, interactions.item_ids)
    if catalog_override is not None:
        record_catalog(config.activity_db, catalog_override, config.activity_db_password)
    signature = data_signature(config)
    del purchases  # everything below works on the matrices; a large log is not held while fitting
    bundle = fit_components(interactions, config, choice, catalog)
    # The shipped model's rankings of the test fold and their targets: the reported figure
    # can be recomputed from the version itself.
    bundle.predictions = predictions
    blend = asdict(choice)
    bundle.manifest = build_manifest(
        components=bundle.manifest["components"],
        blend=blend if has_customers else {**blend, "als_weight": 0.0},
        params=jsonable(vars(config)),
        data={"path": str(config.data), "sha256": signature["log_sha256"], "signature": signature},
        cleaning=report_of_cleaning,
        counts={
            "customers": len(interactions.user_ids),
            "items": len(interactions.item_ids),
            "orders": interactions.n_orders,
            "customer_item_pairs": int(interactions.user_items.nnz),
            "purchase_lines": report_of_cleaning["rows_kept"],
        },
        evaluation=headline(evaluation),
        gate=gate_decision(evaluation, current_version, current_blend is not None, config),
        notes=notes,
        libraries={name: metadata.version(name) for name in ("implicit", "numpy", "scipy", "pandas")},
    )
    if config.personal_list_depth and has_customers:
        # Ranked by the serving code itself, so that a list answers exactly as scoring would;
        # computed while the version is written, block by block, never whole in memory.
        from .serving.service import RecommendationService

        lists_entry: dict[str, Any] = {}
        bundle.manifest["components"]["personal_lists"] = lists_entry

        def lists_done(seconds: float) -> None:
            # Called while the version is written, before its manifest is: both figures include the lists.
            lists_entry["seconds"] = round(seconds, 2)
            bundle.manifest["training_seconds"] = round(time.perf_counter() - started, 3)
            logger.info("personal lists: %d customers x %d items in %.2fs", len(interactions.user_ids),
                        lists_entry["depth"], seconds)

        jobs = config.num_threads or os.cpu_count() or 1
        bundle.lists = RecommendationService(bundle).stream_lists(config.personal_list_depth, jobs, lists_done)
        lists_entry["depth"] = bundle.lists.depth
    return save_version(config, bundle, evaluation, current_version, started)


def save_version(config: TrainConfig, bundle: ModelBundle, evaluation: dict[str, Any],
                 current_version: str | None, started: float) -> Path:
    """The end of a training run, whichever engine trained it: write the bundle with its
    report, promote it unless the gate refused it or ``--no-promote`` was given.

    The bundle's manifest (``bundle.build_manifest``) carries the run's ``gate``, ``notes``,
    ``cleaning`` and ``data``; the training time is added here.
    """
    manifest = bundle.manifest
    gate, notes = manifest["gate"], manifest["notes"]
    manifest["training_seconds"] = round(time.perf_counter() - started, 3)
    summary = {"created_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "data": manifest["data"]["path"],
               "gate": gate["status"] + (f": {gate['reason']}" if gate.get("reason") else ""),
               "notes": notes, "cleaning": manifest["cleaning"], "version": "(this run)"}
    documents = {
        "evaluation.json": json.dumps(evaluation, indent=2, sort_keys=False).encode(),
        "report.html": report.render(evaluation, summary),
    }
    if not config.promote:
        gate = {**gate, "status": "not promoted", "reason": "--no-promote (evaluation run)"}
    promote_it = gate["status"] not in ("refused", "not promoted")
    path = artifacts.save(config.models_dir, bundle.arrays(), manifest, config.keep_versions, documents, promote_it)
    logger.info("training finished in %.1fs: %s (%s)", time.perf_counter() - started, path, gate["status"])
    if gate["status"] == "refused":
        raise GateRefusedError(f"model {path.name} not promoted: {gate['reason']}; {current_version} keeps serving "
                               f"(see {path / 'report.html'}; --force overrides)")
    return path


def load_purchases(config: TrainConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read and clean the log (plus purchases recorded through the API, if asked)."""
    log = read_log(config.data, config.format, config.preset, config.columns, config.encoding)
    if config.include_activity:
        log = _with_activity_purchases(log, config.include_activity, config.activity_db_password)
    rules = cleaning_rules(config, log.attrs.get("preset", ""))
    purchases, cleaning = clean(log, rules, source=str(config.data))
    report = cleaning.to_dict()
    forgotten = forgotten_customers(config)
    if forgotten:
        gone = purchases["user_id"].isin(forgotten).to_numpy()
        if gone.any():
            purchases = purchases[~gone].reset_index(drop=True)
            report["dropped"]["forgotten_customer"] = int(gone.sum())
            report["rows_kept"] = len(purchases)
            if purchases.empty:
                raise DataError(f"{config.data}: no purchases left once forgotten customers are removed")
    return purchases, report


def cleaning_rules(config: TrainConfig, preset: str) -> CleaningRules:
    """The cleaning rules of a run: the configured ones plus those of the log's preset."""
    return CleaningRules(
        excluded_items=config.excluded_items + PRESET_EXCLUDED_ITEMS.get(preset, ()),
        item_pattern=config.item_pattern or PRESET_ITEM_PATTERNS.get(preset),
        cancel_prefix=config.cancel_prefix,
        drop_zero_price=config.drop_zero_price,
        future_tolerance_days=config.future_tolerance_days,
        max_quantity=config.max_quantity,
    )


def record_catalog(database: Path | str, catalog: pd.DataFrame, password: str | None = None) -> None:
    """A catalog file's prices and availability, recorded in the activity store where they
    differ from the last recorded state: the history the e-mail alerts compare against."""
    store = ActivityStore(database, password=password)
    try:
        store.create_schema()
        prices = catalog["price"] if "price" in catalog else [None] * len(catalog)
        available = catalog["available"] if "available" in catalog else [None] * len(catalog)
        changed = store.record_catalog(
            (str(item), None if pd.isna(price) else float(price), None if pd.isna(flag) else bool(flag))
            for item, price, flag in zip(catalog["item_id"], prices, available))
    except StoreError as exc:
        raise DataError(f"cannot record the catalog's prices: {exc}") from None
    finally:
        store.close()
    logger.info("catalog: %d price or availability changes recorded in %s", changed, describe(database))


def forgotten_customers(config: TrainConfig) -> set[str]:
    """Customers erased through ``DELETE /v1/users/<id>``: their purchases never reach a model.
    Read from the activity store the server writes (and the one given to --include-activity)."""
    forgotten: set[str] = set()
    for database in {str(config.activity_db), str(config.include_activity or "")} - {""}:
        store = ActivityStore(database, password=config.activity_db_password)
        try:
            if store.exists():
                forgotten.update(store.suppressed("forgotten"))
        except StoreError as exc:
            raise DataError(f"cannot read the suppression list: {exc}") from None
        finally:
            store.close()
    return forgotten


def fit_components(interactions: Any, config: TrainConfig, choice: BlendChoice,
                   catalog: dict[str, NDArray[Any]]) -> ModelBundle:
    """Fit every model the server needs on all the data: a bundle whose manifest holds only
    the ``components`` (the run adds the rest with ``build_manifest``)."""
    has_customers = interactions.user_items.nnz > 0
    # The personal item model is fitted on purchases weighted by recency (all 1 without decay);
    # the server scores a customer's whole history unweighted (``BlendChoice``).
    personal_rows = (decayed(interactions.purchase_age, choice.decay_days) if has_customers
                     else binarize(interactions.user_items))
    components: dict[str, Any] = {}
    tables: dict[str, NeighbourArrays] = {}
    basis_matrix = interactions.user_items if has_customers else interactions.order_items
    basis = "customers" if has_customers else "orders"
    # When the personal model is the same kNN as "also bought" (catalogs too large for EASE),
    # implicit's similarity is computed once for both.
    shared = None
    knn_basis = cap_history(interactions.user_items, interactions.purchase_age, config.max_history)
    if (knn_basis is interactions.user_items and has_customers and choice.item_model == "item_knn"
            and config.weighting == "binary" and choice.item_params.get("similarity") == config.similarity
            and not choice.decay_days):
        widest = max(config.neighbours, int(choice.item_params.get("neighbours", 0)))
        shared = ItemKNN(similarity=config.similarity, neighbours=widest,
                         num_threads=config.num_threads).candidate_pairs(interactions.user_items)
    als = None
    if has_customers:
        also_bought = build_item_knn(config.neighbour_settings).fit(knn_basis, pairs=shared)
        tables["also_bought"] = NeighbourArrays.of(also_bought.to_arrays())
        components["also_bought"] = {"model": "item_knn", "basis": basis, "max_history": config.max_history,
                                     **also_bought.get_params()}
        als = build_als(config.als).fit(interactions.user_counts)
        components["als"] = {"model": "als", "basis": basis, **als.get_params()}
    if interactions.order_items.nnz > 0:
        bought_together = build_item_knn(config.neighbour_settings).fit(interactions.order_items)
        tables["bought_together"] = NeighbourArrays.of(bought_together.to_arrays())
        components["bought_together"] = {"model": "item_knn", "basis": "orders", **bought_together.get_params()}
    personal = choice.build_item_model(config.num_threads).fit(
        personal_rows if has_customers else binarize(basis_matrix), pairs=shared)
    tables["personal"] = NeighbourArrays.of(personal.to_arrays())
    components["personal"] = {"model": choice.item_model, "basis": basis, "decay_days": choice.decay_days,
                              **personal.get_params()}
    trending = trending_weights(interactions.purchase_age, choice.trend_half_life_days)
    components["trending"] = {"model": "popular", "basis": basis, "half_life_days": choice.trend_half_life_days}
    scoring = personal.neighbour_matrix()
    return ModelBundle(
        item_ids=interactions.item_ids.ids_, user_ids=interactions.user_ids.ids_,
        # A customer is scored from the whole history, unweighted: every stored value is 1.
        user_items=CsrArrays.of(binarize(interactions.user_items)),
        catalog=catalog, tables=tables,
        trending=Popular().fit(trending).popularity_,
        manifest={"components": components},
        # The scoring matrix itself, so that server workers memory-map one shared copy.
        personal_matrix=CsrArrays.of(scoring),
        personal_incoming=CsrArrays.of(scoring.T.tocsr()),
        als_user_factors=None if als is None else als.user_factors_,
        als_item_factors=None if als is None else als.item_factors_,
    )


def data_signature(config: TrainConfig) -> dict[str, Any]:
    """What the training input is: the log's SHA-256 and the activity store's purchases, so the
    nightly job can tell that nothing changed."""
    # A log on HDFS or S3, or a directory of parts (Spark engine), has no one file to hash: None,
    # which the nightly job reads as "cannot tell, train".
    local = Path(config.data) if "://" not in str(config.data) else None
    signature: dict[str, Any] = {"log_sha256": fingerprint(local) if local and local.is_file() else None}
    if config.include_activity:
        store = ActivityStore(config.include_activity, password=config.activity_db_password)
        try:
            purchases = store.purchases() if store.exists() else []
        except StoreError as exc:
            raise DataError(f"include_activity: {exc}") from None
        finally:
            store.close()
        signature["activity_purchases"] = len(purchases)
        signature["activity_latest"] = max((e.timestamp for e in purchases), default=None)
    return signature


def gate_decision(evaluation: dict[str, Any], current_version: str | None, current_has_blend: bool,
          config: TrainConfig) -> dict[str, Any]:
    """Promote only if the headline metric is not worse than the current model's (same test period)."""
    if current_version is None:
        return {"status": "promoted", "reason": "first model"}
    new, old = evaluation.get("headline_value"), evaluation.get("current_headline_value")
    if new is None or old is None:
        reason = "not evaluated" if new is None else "the current model has no comparable blend"
        return {"status": "promoted", "reason": f"gate not applied: {reason}"}
    floor = old * (1 - config.gate_tolerance)
    detail = {"metric": f"ndcg@{config.eval_k}", "new": round(new, 5), "current": round(old, 5),
              "current_version": current_version, "tolerance": config.gate_tolerance}
    if new >= floor:
        return {"status": "promoted", **detail}
    reason = (f"ndcg@{config.eval_k} {new:.4f} is more than {config.gate_tolerance:.0%} below the current "
              f"model's {old:.4f} on the same test period")
    if config.force:
        logger.warning("promotion forced (--force) although %s", reason)
        return {"status": "forced", "reason": reason, **detail}
    return {"status": "refused", "reason": reason, **detail}


def headline(evaluation: dict[str, Any]) -> dict[str, Any]:
    models = evaluation.get("models", {})
    return {
        "headline": evaluation.get("headline"),
        "value": evaluation.get("headline_value"),
        "k": evaluation.get("k"),
        "ci95": evaluation.get("headline_ci95"),
        "shipped": evaluation.get("shipped"),
        "protocol": {key: protocol[key] for key in ("name", "reason", "also_measured") if key in protocol}
        if (protocol := evaluation.get("protocol")) else None,
        "ndcg_by_model": {name: round(values["ndcg"], 5) for name, values in models.items()},
    }


def _with_activity_purchases(log: pd.DataFrame, database: Path | str, password: str | None) -> pd.DataFrame:
    """Append the purchases recorded through the API (``POST /v1/events``) to the log."""
    recorded = recorded_purchases(database, password)
    if recorded is None:
        return log
    keep = [column for column in recorded.columns if column in log.columns or column in ("user_id", "item_id")]
    combined = pd.concat([log, recorded[keep]], ignore_index=True)
    combined.attrs.update(log.attrs)
    return combined


def recorded_purchases(database: Path | str, password: str | None = None) -> pd.DataFrame | None:
    """The purchases recorded through the API as log lines (one order per purchase event;
    None when there are none), for either engine to append to its log."""
    store = ActivityStore(database, password=password)
    try:
        if not store.exists():
            raise DataError(f"include_activity: {store.where}: activity database not found")
        events = store.purchases()
    except StoreError as exc:
        raise DataError(f"include_activity: cannot read purchases: {exc}") from None
    finally:
        store.close()
    if not events:
        return None
    logger.info("adding %d purchases from the activity store %s", len(events), describe(database))
    return pd.DataFrame({
        "user_id": pd.array([e.user_id for e in events], dtype="string"),
        "item_id": pd.array([e.item_id for e in events], dtype="string"),
        "timestamp": pd.to_datetime([e.timestamp for e in events], unit="s"),
        "quantity": 1.0,
        "order_id": pd.array([f"api:{e.user_id}:{int(e.timestamp)}" for e in events], dtype="string"),
    })


def jsonable(values: dict[str, Any]) -> dict[str, Any]:
    """Settings as the manifest keeps them: no password, a database URL without its own."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key.endswith("password"):
            continue
        if key in ("activity_db", "include_activity") and value is not None:
            value = describe(value)
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, dict) or hasattr(value, "items"):
            value = dict(value)
        out[key] = value
    return out
