"""The test fold, used once: the shipped model, its parts, the serving one and the baselines."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from ..algorithms import ALS, NeighbourModel
from ..config import EvaluationSettings
from ..data.matrix import cap_history
from ..errors import DataError
from ..evaluation import next_item_metrics, top_k_blocks
from .choice import CUTS, SAVED_DEPTH, BlendChoice, build_item_knn, plain_ease
from .folds import Fold
from .scoring import FoldState, choice_top_k, fit_item, metrics


def measure(
    fold: Fold,
    choice: BlendChoice,
    settings: EvaluationSettings,
    current: dict[str, Any] | None,
    item_pages: bool = True,
    state: FoldState | None = None,
) -> dict[str, Any]:
    """Fit the choice, its parts, the current model's blend and the baselines; measure them all
    on the test fold (once, after every choice is made). ``state`` keeps what was fitted for
    a later measure on the same fold (the repeats-included question)."""
    state = FoldState(fold) if state is None else state
    results: dict[str, dict[str, Any]] = {}
    # Rankings are made a block of rows at a time (``choice_top_k``): no dense rows x items.
    shipped_top = choice_top_k(state, choice, settings, max(CUTS[-1], SAVED_DEPTH))
    if shipped_top is None:
        raise DataError("evaluation: the chosen model cannot be scored on the test fold")
    shipped_name = "shipped: " + choice.label()
    results[shipped_name] = metrics(fold, np.empty(0), settings, recommended=shipped_top)
    for part in choice.parts():
        if part != choice:
            top = choice_top_k(state, part, settings, max(CUTS))
            if top is not None:
                results["part: " + part.label()] = metrics(
                    fold, np.empty(0), settings, recommended=top
                )
    if current:
        try:
            previous = BlendChoice(**current)
        except TypeError:
            previous = None
        top = choice_top_k(state, previous, settings, max(CUTS)) if previous is not None else None
        if top is not None:
            results["current blend"] = metrics(fold, np.empty(0), settings, recommended=top)
    results.update(_baselines(fold, state, settings))
    out = headline_figures(results, shipped_name)
    if item_pages and fold.timed and fold.test is not None and "timestamp" in fold.test:
        out["item_to_item"] = _next_item(
            fold, fit_item(state, choice) if choice.item_part else None, settings
        )
    out["predictions"] = _predictions(fold, shipped_top)
    return out


def headline_figures(results: dict[str, dict[str, Any]], shipped_name: str) -> dict[str, Any]:
    """The test fold's table and its headline (the shipped model's NDCG, and the current
    model's for the gate), as either engine reports them."""
    out: dict[str, Any] = {
        "models": results,
        "shipped": shipped_name,
        "headline": "ndcg",
        "headline_value": results[shipped_name]["ndcg"],
        "headline_ci95": results[shipped_name]["ndcg_ci95"],
    }
    if "current blend" in results:
        out["current_headline_value"] = results["current blend"]["ndcg"]
    return out


def _predictions(fold: Fold, recommended: NDArray[np.int64]) -> dict[str, NDArray[Any]]:
    """The shipped model's test rankings and the targets, in external ids, so that anyone can
    recompute the reported figures from the saved model version."""
    item_ids = fold.interactions.item_ids.ids_
    targets = fold.held_out.targets.tocsr()
    targets.sort_indices()
    return {
        "row_ids": np.asarray(fold.row_ids, dtype=np.str_),
        "recommended": np.asarray(item_ids[recommended], dtype=np.str_),
        "targets.indptr": targets.indptr.astype(np.int64),
        "targets.items": np.asarray(item_ids[targets.indices], dtype=np.str_),
        "n_targets": fold.held_out.n_targets.astype(np.int64),
    }


def _baselines(
    fold: Fold, state: FoldState, settings: EvaluationSettings
) -> dict[str, dict[str, Any]]:
    """Popularity, ``implicit``'s own recommenders at their defaults (called directly) and
    plain EASE, on the same rows."""
    import warnings

    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.nearest_neighbours import BM25Recommender, CosineRecommender
    from implicit.utils import ParameterWarning
    from threadpoolctl import threadpool_limits

    matrix = fold.fit_matrix
    held_out = fold.held_out

    def ranked(score_block: Callable[[slice], NDArray[np.floating]]) -> dict[str, Any]:
        """Metrics of scores formed a block of rows at a time (``top_k_blocks``): no
        baseline's dense rows x items scores are held whole."""
        recommended = top_k_blocks(score_block, held_out.seen, max(CUTS))
        return metrics(fold, np.empty(0), settings, recommended=recommended)

    results = {
        "baseline: popularity": ranked(
            lambda part: np.tile(held_out.popularity, (part.stop - part.start, 1))
        )
    }
    query = fold.query()
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("ignore", ParameterWarning)
        for name, model in (
            ("cosine K=100", CosineRecommender(K=100)),
            ("BM25 K=100", BM25Recommender(K=100)),
        ):
            model.fit(matrix, show_progress=False)
            results[f"baseline: implicit {name}"] = ranked(
                partial(_product, query, model.similarity)
            )
        if not fold.basket:
            als = AlternatingLeastSquares(
                factors=100, regularization=0.01, iterations=15, random_state=settings.random_state
            )
            als.fit(matrix, show_progress=False)
            if fold.timed:
                factors = als.user_factors[held_out.rows]
            else:
                factors = ALS.from_arrays(
                    {"user_factors": als.user_factors, "item_factors": als.item_factors},
                    regularization=0.01,
                    alpha=1.0,
                ).fold_in_rows(held_out.seen)
            item_factors = als.item_factors
            results["baseline: implicit ALS factors=100 reg=0.01"] = ranked(
                lambda part: factors[part] @ item_factors.T
            )
    if len(fold.interactions.item_ids) <= settings.ease_max_items:
        top = choice_top_k(state, plain_ease(settings), settings, max(CUTS))
        if top is not None:
            results["baseline: EASE l2=250"] = metrics(fold, np.empty(0), settings, recommended=top)
    return results


def _product(query: sp.csr_matrix, similarity: sp.spmatrix, part: slice) -> NDArray[np.float64]:
    """Dense scores of some query rows through an item x item similarity matrix."""
    return np.asarray((query[part] @ similarity).toarray())


def _next_item(
    fold: Fold, shipped_item: NeighbourModel | None, settings: EvaluationSettings
) -> dict[str, Any]:
    """ "Customers who bought this also bought", measured on what customers bought next."""
    assert fold.test is not None
    test = fold.test.sort_values(["user_id", "timestamp"], kind="stable")
    test = test.drop_duplicates(["user_id", "item_id"])
    same_user = test["user_id"].to_numpy()[1:] == test["user_id"].to_numpy()[:-1]
    later_order = test["order_id"].to_numpy()[1:] != test["order_id"].to_numpy()[:-1]
    follow = np.flatnonzero(same_user & later_order)
    queries = fold.interactions.item_ids.indices(test["item_id"].to_numpy()[follow])
    targets = fold.interactions.item_ids.indices(test["item_id"].to_numpy()[follow + 1])
    valid = (queries >= 0) & (targets >= 0)
    queries, targets = queries[valid], targets[valid]
    shipped = build_item_knn(settings.neighbours).fit(
        cap_history(
            fold.fit_matrix, fold.interactions.purchase_age, settings.neighbours.max_history
        )
    )
    results = {
        "also-bought as served (item-knn "
        + settings.neighbours.similarity
        + ")": next_item_metrics(shipped.neighbour_ids_, queries, targets, settings.eval_k)
    }
    if shipped_item is not None:
        results[f"{shipped_item.describe()}"] = next_item_metrics(
            shipped_item.neighbour_ids_, queries, targets, settings.eval_k
        )
    popular = np.argsort(-fold.held_out.popularity, kind="stable")[: settings.eval_k + 1]
    table = np.tile(popular, (len(fold.held_out.popularity), 1))
    results["baseline: popularity"] = next_item_metrics(table, queries, targets, settings.eval_k)
    return {
        "task": "the next item a customer bought (a later order), among the first item's top k",
        **results,
    }


def factor_metrics(
    fold: Fold,
    user_factors: NDArray[np.floating],
    item_factors: NDArray[np.floating],
    settings: EvaluationSettings,
) -> dict[str, float]:
    """Metrics at ``eval_k`` of a factor model (fitted on ``fold``'s training side) on ``fold``."""
    rows = np.asarray(user_factors)[fold.held_out.rows]
    items = np.asarray(item_factors).T
    recommended = top_k_blocks(
        lambda part: (rows[part] @ items).astype(np.float32), fold.held_out.seen, max(CUTS)
    )
    return metrics(fold, np.empty(0), settings, recommended=recommended)
