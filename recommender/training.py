"""The local engine's training run: read, clean, evaluate and choose, fit, save, gate, promote.

``run`` is what ``runner.train`` calls for ``--engine local``. It either promotes a complete, verified
model version, or writes it without promoting (refused by the gate, exit code 3), or raises
before writing anything; in every case the current model keeps serving until a better one
is promoted.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from . import artifacts
from .algorithms import ItemKNN, Popular
from .bundle import CsrArrays, ModelBundle, NeighbourArrays, RepeatArrays, build_manifest
from .config import AlsSettings, NeighbourSettings, TrainConfig
from .data.catalog import build_catalog, catalog_states, first_sold
from .data.cleaning import clean, drop_customers
from .data.loading import read_catalog, read_log, with_recorded_purchases
from .data.matrix import (
    Interactions,
    binarize,
    build_interactions,
    cap_history,
    decayed,
    last_purchase_seconds,
    trending_weights,
)
from .errors import DataError
from .memory import share_one_arena
from .model_selection import (
    BlendChoice,
    RepeatChoice,
    build_als,
    build_item_knn,
    default_choice,
    repeat_cells,
    select_and_evaluate,
)
from .run_steps import (
    cleaning_rules,
    data_signature,
    forgotten_customers,
    gate_decision,
    headline,
    jsonable,
    record_catalog,
    recorded_purchases,
    repeat_parts,
    save_version,
)

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)


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

    Long because it is the run's sequence, step by step, as the module docstring lists it.
    """
    started = time.perf_counter()
    if config.evaluate:
        # Before the checksum's thread takes an arena of its own (``memory``).
        share_one_arena()
    # The log's checksum (a read of the whole file) is taken while the log is parsed: hashing
    # releases the GIL, so it costs a second core's time, not the run's.
    with ThreadPoolExecutor(max_workers=1) as background:
        signature_of_data = background.submit(data_signature, config)
        purchases, report_of_cleaning = load_purchases(config)
        signature = signature_of_data.result()

    current_version = artifacts.current_version(config.models_dir)
    current_manifest = (
        artifacts.read_manifest(config.models_dir, current_version) if current_version else None
    )
    current_blend = (current_manifest or {}).get("blend")
    evaluation: dict[str, Any] = {}
    notes: list[str] = []
    predictions: dict[str, Any] = {}
    choice: BlendChoice | None = None
    repeat = RepeatChoice()
    if config.evaluate:
        try:
            selection = select_and_evaluate(purchases, config.evaluation_settings, current_blend)
            choice, evaluation, notes = selection.choice, selection.evaluation, selection.notes
            predictions = selection.predictions
            repeat = selection.repeat or repeat
        except DataError as exc:
            notes.append(f"not evaluated: {exc}")
            logger.warning("not evaluated (%s); using the default blend", exc)
    else:
        notes.append("not evaluated (--no-evaluate); using the default blend")
    # The whole log's matrices are built once the evaluation (which builds its folds' own) is
    # done, so that they are not held through its peak.
    interactions = build_interactions(purchases, config.weighting)
    has_customers = interactions.user_items.nnz > 0
    if choice is None:
        choice = default_choice(
            len(interactions.item_ids), config.evaluation_settings, has_customers
        )

    catalog_override = read_catalog(config.catalog, config.encoding) if config.catalog else None
    catalog = build_catalog(purchases, interactions.item_ids, catalog_override)
    catalog["first_sold"] = first_sold(purchases, interactions.item_ids)
    if catalog_override is not None:
        record_catalog(
            config.activity_db, catalog_states(catalog_override), config.activity_db_password
        )
    as_of = last_purchase_seconds(purchases)
    del purchases  # everything below works on the matrices; a large log is not held while fitting
    bundle = fit_components(
        interactions, config.neighbour_settings, config.als, config.weighting, choice, catalog
    )
    if has_customers and as_of is not None:
        bundle.repeat, bundle.manifest["components"]["repeat"] = fit_repeat(
            interactions, repeat, config.test_days, as_of
        )
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
        gate=gate_decision(evaluation, current_version, current_blend is not None, config.gate),
        notes=notes,
        libraries={
            name: metadata.version(name) for name in ("implicit", "numpy", "scipy", "pandas")
        },
    )
    if config.personal_list_depth and has_customers:
        # Ranked by the serving code itself, so that a list answers exactly as scoring would;
        # computed while the version is written, block by block, never whole in memory. Only
        # customers active lately get one: a list pays where a request is likely.
        from .serving.batch import stream_lists
        from .serving.service import RecommendationService

        listed = active_customers(interactions.purchase_age, config.personal_list_days)
        lists_entry: dict[str, Any] = {
            "days": config.personal_list_days,
            "customers": len(listed),
        }
        bundle.manifest["components"]["personal_lists"] = lists_entry

        def lists_done(seconds: float) -> None:
            # Called while the version is written, before its manifest is: both figures include the lists.
            lists_entry["seconds"] = round(seconds, 2)
            bundle.manifest["training_seconds"] = round(time.perf_counter() - started, 3)
            logger.info(
                "personal lists: %d customers x %d items in %.2fs",
                len(listed),
                lists_entry["depth"],
                seconds,
            )

        jobs = config.num_threads or os.cpu_count() or 1
        bundle.lists = stream_lists(
            RecommendationService(bundle), config.personal_list_depth, jobs, lists_done, listed
        )
        lists_entry["depth"] = bundle.lists.depth
    return save_version(config, bundle, evaluation, current_version, started)


def active_customers(purchase_age: sp.csr_matrix, days: int) -> NDArray[np.int64]:
    """The customers (rows of ``purchase_age``, 1 + age in days of each item's latest purchase)
    who bought within ``days`` of the log's last purchase; every customer for 0."""
    n_users = purchase_age.shape[0]
    if days <= 0:
        return np.arange(n_users, dtype=np.int64)
    lengths = np.diff(purchase_age.indptr)
    latest = np.full(n_users, np.inf)
    bought = lengths > 0
    if bought.any():
        latest[bought] = np.minimum.reduceat(purchase_age.data, purchase_age.indptr[:-1][bought])
    return np.flatnonzero(latest - 1.0 <= days).astype(np.int64)


def load_purchases(config: TrainConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read and clean the log (plus purchases recorded through the API, if asked)."""
    log = read_log(config.data, config.format, config.preset, config.columns, config.encoding)
    if config.include_activity:
        log = with_recorded_purchases(
            log, recorded_purchases(config.include_activity, config.activity_db_password)
        )
    rules = cleaning_rules(config, log.attrs.get("preset", ""))
    purchases, cleaning = clean(log, rules, source=str(config.data))
    report = cleaning.to_dict()
    purchases, dropped = drop_customers(purchases, forgotten_customers(config))
    if dropped:
        report["dropped"]["forgotten_customer"] = dropped
        report["rows_kept"] = len(purchases)
        if purchases.empty:
            raise DataError(
                f"{config.data}: no purchases left once forgotten customers are removed"
            )
    return purchases, report


def fit_repeat(
    interactions: Interactions, repeat: RepeatChoice, horizon_days: float, as_of: float
) -> tuple[RepeatArrays, dict[str, Any]]:
    """The repeat model ("buy it again") on all the data: each cell's facts and each item's
    cycle and rate (sums over the log), with its manifest entry; ``as_of`` is the log's last
    purchase, the moment the ages count back from."""
    started = time.perf_counter()
    cells = repeat_cells(interactions)
    model = repeat.build(horizon_days).fit_items(cells)
    facts = {
        "frequency": cells.frequency(repeat.decay_days),
        "times": cells.times,
        "first_age": cells.first_age,
        "last_age": cells.last_age,
    }
    arrays, entry = repeat_parts(model, repeat, facts, as_of)
    entry["seconds"] = round(time.perf_counter() - started, 3)
    logger.info(
        "repeat model: %d cells, %d items with a cycle, in %.2fs",
        len(cells.times),
        int(np.isfinite(model.cycle_days_).sum()),
        entry["seconds"],
    )
    return arrays, entry


def fit_components(
    interactions: Interactions,
    neighbours: NeighbourSettings,
    als_settings: AlsSettings,
    weighting: str,
    choice: BlendChoice,
    catalog: dict[str, NDArray[Any]],
) -> ModelBundle:
    """Fit every model the server needs on all the data: a bundle whose manifest holds only
    the ``components`` (the run adds the rest with ``build_manifest``). ``weighting`` is how
    the interaction cells were counted (implicit's similarity is shared only for binary).

    Long because each component's fit and its manifest entry sit together.
    """
    has_customers = interactions.user_items.nnz > 0
    # The personal item model is fitted on purchases weighted by recency (all 1 without decay);
    # the server scores a customer's whole history unweighted (``BlendChoice``).
    personal_rows = (
        decayed(interactions.purchase_age, choice.decay_days)
        if has_customers
        else binarize(interactions.user_items)
    )
    components: dict[str, Any] = {}
    tables: dict[str, NeighbourArrays] = {}
    basis_matrix = interactions.user_items if has_customers else interactions.order_items
    basis = "customers" if has_customers else "orders"
    # When the personal model is the same kNN as "also bought" (catalogs too large for EASE),
    # implicit's similarity is computed once for both.
    shared = None
    knn_basis = cap_history(
        interactions.user_items, interactions.purchase_age, neighbours.max_history
    )
    if (
        knn_basis is interactions.user_items
        and has_customers
        and choice.item_model == "item_knn"
        and weighting == "binary"
        and choice.item_params.get("similarity") == neighbours.similarity
        and not choice.decay_days
    ):
        widest = max(neighbours.neighbours, int(choice.item_params.get("neighbours", 0)))
        shared = ItemKNN(
            similarity=neighbours.similarity, neighbours=widest, num_threads=neighbours.num_threads
        ).candidate_pairs(interactions.user_items)
    als = None
    if has_customers:
        also_bought = build_item_knn(neighbours).fit(knn_basis, pairs=shared)
        tables["also_bought"] = NeighbourArrays.of(also_bought.to_arrays())
        components["also_bought"] = {
            "model": "item_knn",
            "basis": basis,
            "max_history": neighbours.max_history,
            **also_bought.get_params(),
        }
        als = build_als(als_settings).fit(interactions.user_counts)
        components["als"] = {"model": "als", "basis": basis, **als.get_params()}
    if interactions.order_items.nnz > 0:
        bought_together = build_item_knn(neighbours).fit(interactions.order_items)
        tables["bought_together"] = NeighbourArrays.of(bought_together.to_arrays())
        components["bought_together"] = {
            "model": "item_knn",
            "basis": "orders",
            **bought_together.get_params(),
        }
    personal = choice.build_item_model(neighbours.num_threads).fit(
        personal_rows if has_customers else binarize(basis_matrix), pairs=shared
    )
    tables["personal"] = NeighbourArrays.of(personal.to_arrays())
    components["personal"] = {
        "model": choice.item_model,
        "basis": basis,
        "decay_days": choice.decay_days,
        **personal.get_params(),
    }
    trending = trending_weights(interactions.purchase_age, choice.trend_half_life_days)
    components["trending"] = {
        "model": "popular",
        "basis": basis,
        "half_life_days": choice.trend_half_life_days,
    }
    scoring = personal.neighbour_matrix()
    return ModelBundle(
        item_ids=interactions.item_ids.ids_,
        user_ids=interactions.user_ids.ids_,
        # A customer is scored from the whole history, unweighted: every stored value is 1.
        user_items=CsrArrays.of(binarize(interactions.user_items)),
        catalog=catalog,
        tables=tables,
        trending=Popular().fit(trending).popularity_,  # type: ignore[arg-type]
        manifest={"components": components},
        # The scoring matrix itself, so that server workers memory-map one shared copy.
        personal_matrix=CsrArrays.of(scoring),
        personal_incoming=CsrArrays.of(scoring.T.tocsr()),
        als_user_factors=None if als is None else als.user_factors_,
        als_item_factors=None if als is None else als.item_factors_,
    )
