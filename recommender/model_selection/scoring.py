"""Fitting a choice's parts on a fold (once each) and scoring the fold's evaluated rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..algorithms import EASE, NeighbourModel
from ..algorithms.blend import blend_scores
from ..algorithms.ease import gram_matrix
from ..config import EvaluationSettings
from ..data.matrix import trending_weights
from ..errors import ModelSkippedError
from ..evaluation import HeldOut, bootstrap_interval, ranking_metrics, row_ndcg, top_k
from .choice import CUTS, BlendChoice, build_als
from .folds import Fold


@dataclass
class FoldState:
    """What the search fitted on one fold, kept between its stages."""

    fold: Fold
    items: dict[tuple[Any, ...], NeighbourModel] = field(default_factory=dict)
    item_scores: dict[tuple[Any, ...], NDArray[np.float32]] | None = None
    grams: dict[float, NDArray[np.float64]] = field(default_factory=dict)
    als: NDArray[np.float32] | None = None
    trends: dict[float, NDArray[np.float64]] = field(default_factory=dict)
    # Fitted on the fold's training side, so shared with a sibling state (``sibling``).
    fitted: dict[str, Any] = field(default_factory=dict)

    def sibling(self, fold: Fold) -> FoldState:
        """A state for other rows of the same training side (``Fold.everything``): the models
        fitted here are reused, only the scoring of rows is redone."""
        return FoldState(fold, self.items, None, self.grams, None, self.trends, self.fitted)


def fit_item(state: FoldState, choice: BlendChoice) -> NeighbourModel | None:
    """Fit (once per fold) the item model of ``choice``; None when it is skipped."""
    # RP3beta and LLR co-occurrence read only who bought what: decay changes their query, not their fit.
    fit_decay = choice.decay_days if choice.item_model in ("ease", "item_knn") else 0.0
    key = choice.item_key(fit_decay)
    if key in state.items:
        return state.items[key]
    fold = state.fold
    matrix = fold.weighted(fit_decay)
    model = choice.build_item_model(num_threads=1)
    try:
        if isinstance(model, EASE):
            model.check_catalog(
                len(fold.interactions.item_ids)
            )  # before any dense Gram matrix is built
            for decay in dict.fromkeys((0.0, fit_decay)):
                if decay not in state.grams:
                    state.grams[decay] = gram_matrix(fold.weighted(decay))  # type: ignore[assignment]
            model.fit(matrix, gram=state.grams[fit_decay], counts=state.grams[0.0])
        else:
            model.fit(matrix)
    except ModelSkippedError:
        model = None  # type: ignore[assignment]
    state.items[key] = model
    return model


def _als_scores(state: FoldState, settings: EvaluationSettings) -> NDArray[np.float32] | None:
    fold = state.fold
    if fold.basket or not fold.interactions.user_items.nnz:
        return None
    if state.als is None:
        if "als" not in state.fitted:
            state.fitted["als"] = build_als(settings.als, num_threads=1).fit(
                fold.interactions.user_counts
            )
        als = state.fitted["als"]
        factors = (
            als.user_factors_[fold.held_out.rows]
            if fold.timed
            else als.fold_in_rows(fold.held_out.seen)
        )
        state.als = (factors @ als.item_factors_.T).astype(np.float32)
    return state.als


def _trend(state: FoldState, half_life: float) -> NDArray[np.float64]:
    if half_life not in state.trends:
        fold = state.fold
        if fold.timed:
            weights = trending_weights(fold.interactions.purchase_age, half_life)
            trend = np.asarray(weights.sum(axis=0), dtype=np.float64).ravel()
        else:
            trend = fold.held_out.popularity.astype(np.float64)
        state.trends[half_life] = trend / trend.max() if trend.max() > 0 else trend
    return state.trends[half_life]


def choice_scores(
    state: FoldState, choice: BlendChoice, settings: EvaluationSettings
) -> NDArray[np.float64] | None:
    """Scores of every item for the fold's evaluated rows under ``choice`` (None: cannot be
    scored on this fold, e.g. EASE on a catalog too large or ALS on baskets)."""
    fold = state.fold
    item = als = None
    if choice.item_part > 0:
        key = choice.item_key()
        item = state.item_scores.get(key) if state.item_scores is not None else None
        if item is None:
            model = fit_item(state, choice)
            if model is None:
                return None
            item = model.score_rows(fold.query())
            if state.item_scores is not None:
                state.item_scores[key] = item
    if choice.als_weight > 0:
        als = _als_scores(state, settings)
        if als is None:
            return None
    trend = _trend(state, choice.trend_half_life_days)
    scores = blend_scores(
        item, als, trend, choice.als_weight, choice.trend_weight, choice.item_weight
    )
    if scores is None:
        scores = np.tile(trend, (len(fold.held_out.rows), 1))
    return scores


def metrics(
    fold: Fold,
    scores: NDArray[np.floating],
    settings: EvaluationSettings,
    recommended: NDArray[np.int64] | None = None,
) -> dict[str, Any]:
    return held_out_metrics(fold.held_out, scores, settings, recommended)


def held_out_metrics(
    held_out: HeldOut,
    scores: NDArray[np.floating],
    settings: EvaluationSettings,
    recommended: NDArray[np.int64] | None = None,
) -> dict[str, Any]:
    """Every metric of the report for ``scores`` (or the rankings ``recommended``) of the
    held-out rows, with NDCG's bootstrap interval and standard error: what either engine reports."""
    if recommended is None:
        recommended = top_k(scores, held_out.seen, max(CUTS))
    result: dict[str, Any] = ranking_metrics(
        recommended[:, : settings.eval_k], held_out, settings.eval_k
    )
    low, high, error = bootstrap_interval(
        row_ndcg(recommended[:, : settings.eval_k], held_out), seed=settings.random_state
    )
    result["ndcg_ci95"] = [round(low, 5), round(high, 5)]
    result["ndcg_se"] = round(error, 5)
    result["by_k"] = {
        str(cut): {
            name: ranking_metrics(recommended[:, :cut], held_out, cut)[name]
            for name in ("ndcg", "recall", "hit_rate")
        }
        for cut in CUTS
    }
    return result
