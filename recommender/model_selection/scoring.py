"""Fitting a choice's parts on a fold (once each) and scoring the fold's evaluated rows."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from ..algorithms import EASE, NeighbourModel
from ..algorithms.blend import blend_rows
from ..algorithms.ease import gram_matrix
from ..algorithms.neighbours import table_matrix
from ..config import EvaluationSettings
from ..data.matrix import trending_weights
from ..errors import ModelSkippedError
from ..evaluation import (
    HeldOut,
    bootstrap_interval,
    ranking_metrics,
    row_ndcg,
    top_k,
    top_k_blocks,
)
from ..memory import release_freed_memory
from .choice import CUTS, BlendChoice, build_als
from .folds import Fold


@dataclass
class FoldState:
    """What the search fitted on one fold, kept between its stages."""

    fold: Fold
    items: dict[tuple[Any, ...], NeighbourModel] = field(default_factory=dict)
    item_scores: dict[tuple[Any, ...], sp.csr_matrix] | None = None
    grams: dict[float, NDArray[np.float64]] = field(default_factory=dict)
    # The evaluated rows' ALS factors and the item factors: their product, dense rows x
    # items, is formed when scored rather than kept for every fold.
    als: tuple[NDArray[np.float32], NDArray[np.float32]] | None = None
    trends: dict[float, NDArray[np.float64]] = field(default_factory=dict)
    # Fitted on the fold's training side, so shared with a sibling state (``sibling``).
    fitted: dict[str, Any] = field(default_factory=dict)
    # A sibling's (its rows are not those of the state that made it; ``_RowFactors``).
    shared: bool = False

    def sibling(self, fold: Fold) -> FoldState:
        """A state for other rows of the same training side (``Fold.everything``): the models
        fitted here are reused, only the scoring of rows is redone."""
        return FoldState(
            fold, self.items, None, self.grams, None, self.trends, self.fitted, shared=True
        )


def fit_decay(choice: BlendChoice) -> float:
    """The decay ``choice``'s item model is fitted with. RP3beta and LLR co-occurrence read only
    who bought what: decay changes their query, not their fit."""
    return choice.decay_days if choice.item_model in ("ease", "item_knn") else 0.0


def forget(state: FoldState, dropped: Iterable[BlendChoice], kept: Iterable[BlendChoice]) -> None:
    """Drop the item models of ``dropped`` that no choice in ``kept`` uses (pruned choices)."""
    keys = {choice.item_key(fit_decay(choice)) for choice in kept if choice.item_part > 0}
    for choice in dropped:
        key = choice.item_key(fit_decay(choice))
        if choice.item_part > 0 and key not in keys:
            state.items.pop(key, None)


def release(
    state: FoldState,
    keep: Iterable[BlendChoice],
    fitted: bool = False,
    spare: Iterable[BlendChoice] = (),
) -> None:
    """Drop the fitted item models (and EASE Gram matrices) that no choice in ``keep`` uses;
    with ``fitted``, ALS too when none of them blends it (the caller scores no other choice
    on this training side: the search's blends need ALS after its item stages released).
    The item models of ``spare`` stay too, but not their Gram or decayed matrices, which only
    a refit would read.

    A search fits many item models per fold and needs few of them later (the best decay's,
    the finalists', the choice's); on a large catalog each holds its items x K tables, and
    an EASE Gram matrix is dense items x items, so keeping them all multiplies the peak
    memory by the number of configurations. The fold's decayed matrices go the same way, and
    ALS's customer factors (every training customer's) when no later stage reads them.
    """
    keep = list(keep)
    if fitted and not any(choice.als_weight > 0 for choice in keep):
        state.fitted.pop("als", None)
        state.als = None
    needed = [choice for choice in keep if choice.item_part > 0]
    keys = {choice.item_key(fit_decay(choice)) for choice in [*needed, *spare]}
    for key in [key for key in state.items if key not in keys]:
        del state.items[key]
    decays = {0.0} | {fit_decay(choice) for choice in needed if choice.item_model == "ease"}
    for decay in [decay for decay in state.grams if decay not in decays]:
        del state.grams[decay]
    state.fold.forget_weights({0.0} | {fit_decay(choice) for choice in needed})


def fit_item(state: FoldState, choice: BlendChoice) -> NeighbourModel | None:
    """Fit (once per fold) the item model of ``choice``; None when it is skipped."""
    fit_decay_days = fit_decay(choice)
    key = choice.item_key(fit_decay_days)
    if key in state.items:
        return state.items[key]
    fold = state.fold
    matrix = fold.weighted(fit_decay_days)
    model = choice.build_item_model(num_threads=1)
    try:
        if isinstance(model, EASE):
            model.check_catalog(
                len(fold.interactions.item_ids)
            )  # before any dense Gram matrix is built
            for decay in dict.fromkeys((0.0, fit_decay_days)):
                if decay not in state.grams:
                    state.grams[decay] = gram_matrix(fold.weighted(decay))  # type: ignore[assignment]
            model.fit(matrix, gram=state.grams[fit_decay_days], counts=state.grams[0.0])
        else:
            # Only scored here, through its neighbour matrix: the shared-row counts of its
            # neighbours and their order in a row are never read. Nor is the support table
            # kept (all "not counted"): the fold holds the model through later stages, and a
            # stage fits several per fold (4 MiB each at 10,000 items).
            model.fit(matrix, count_support=False, ranked=False)
            del model.neighbour_support_
    except ModelSkippedError:
        model = None  # type: ignore[assignment]
    state.items[key] = model
    return model


def _als_factors(
    state: FoldState, settings: EvaluationSettings
) -> tuple[NDArray[np.float32], NDArray[np.float32]] | None:
    """The evaluated rows' ALS factors and the item factors (fitted once per training side)."""
    fold = state.fold
    if fold.basket or not fold.interactions.user_items.nnz:
        return None
    if state.als is None:
        if "als" not in state.fitted:
            als = build_als(settings.als, num_threads=1).fit(fold.interactions.user_counts)
            # Cut to the rows read when a fold's own state fits it; a sibling's keeps all.
            cut = fold.timed and not state.shared
            state.fitted["als"] = _RowFactors.of(als, fold) if cut else als
        als = state.fitted["als"]
        if isinstance(als, _RowFactors):
            factors = als.rows_factors(fold.held_out.rows)
        elif fold.timed:
            factors = als.user_factors_[fold.held_out.rows]
        else:
            factors = als.fold_in_rows(fold.held_out.seen)
        state.als = (np.asarray(factors), np.asarray(als.item_factors_))
    return state.als


@dataclass(frozen=True)
class _RowFactors:
    """A time fold's ALS, cut to the customers it and its sibling score (``Fold.everything``):
    the whole fit holds every training customer's factors (22 MiB a fold on the bench 1M log,
    kept through the search and the buy-again validation for every validation fold), of
    which a few thousand rows are ever read."""

    rows: NDArray[np.int64]
    user_factors_: NDArray[np.float32]
    item_factors_: NDArray[np.float32]

    @classmethod
    def of(cls, als: Any, fold: Fold) -> _RowFactors:
        wanted = [fold.held_out.rows]
        if fold.everything is not None:
            wanted.append(fold.everything.held_out.rows)
        rows = np.unique(np.concatenate(wanted))
        return cls(rows, np.asarray(als.user_factors_)[rows], als.item_factors_)

    def rows_factors(self, rows: NDArray[np.int64]) -> NDArray[np.float32]:
        """The factors of training rows ``rows`` (each one of those kept)."""
        at = np.searchsorted(self.rows, rows)
        if not np.array_equal(self.rows[np.minimum(at, len(self.rows) - 1)], rows):
            raise ValueError("ALS factors asked for rows its fold did not keep")
        return self.user_factors_[at]


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
    parts = _choice_parts(state, choice, settings)
    if parts is None:
        return None
    return _blend(parts, choice, slice(0, len(state.fold.held_out.rows)))


def choice_top_k(
    state: FoldState, choice: BlendChoice, settings: EvaluationSettings, k: int
) -> NDArray[np.int64] | None:
    """``top_k`` of ``choice_scores`` (seen items excluded), row for row the same, scored a
    block of rows at a time: the dense rows x items scores of a fold (and the copies ranking
    makes) are never held whole, so scoring folds in parallel does not multiply the peak."""
    blocks = choice_blocks(state, choice, settings)
    if blocks is None:
        return None
    try:
        return top_k_blocks(blocks, state.fold.held_out.seen, k)
    finally:
        # The blocks' memory freed in a thread's arena goes back before the next choice's fit.
        release_freed_memory()


def choice_blocks(
    state: FoldState, choice: BlendChoice, settings: EvaluationSettings
) -> Callable[[slice], NDArray[np.float64]] | None:
    """``choice_scores`` of a block of the fold's evaluated rows at a time (a slice of them;
    row for row the same values): for whoever scores a fold's rows more than once without
    keeping them dense (the buy-again validation). None: cannot be scored on this fold."""
    parts = _choice_parts(state, choice, settings)
    if parts is None:
        return None
    return partial(_blend, parts, choice)


Parts = tuple[
    sp.csr_matrix | None,
    tuple[NDArray[np.float32], NDArray[np.float32]] | None,
    NDArray[np.float64],
    int,
]


def _choice_parts(
    state: FoldState, choice: BlendChoice, settings: EvaluationSettings
) -> Parts | None:
    """What ``choice`` blends on this fold: the item-to-item scores (sparse), the ALS factors,
    the trend, and the number of rows; None when a part cannot be scored here."""
    fold = state.fold
    item = als = None
    if choice.item_part > 0:
        key = choice.item_key()
        item = state.item_scores.get(key) if state.item_scores is not None else None
        if item is None:
            model = fit_item(state, choice)
            if model is None:
                return None
            # Sparse (history x neighbour table): a fraction of the dense rows x items. The
            # table's matrix is built here and not cached on the model, which the fold keeps.
            item = (
                fold.query() @ table_matrix(model.neighbour_ids_, model.neighbour_scores_)
            ).tocsr()
            if state.item_scores is not None:
                state.item_scores[key] = item
    if choice.als_weight > 0:
        als = _als_factors(state, settings)
        if als is None:
            return None
    trend = _trend(state, choice.trend_half_life_days)
    return item, als, trend, len(fold.held_out.rows)


def _blend(parts: Parts, choice: BlendChoice, rows: slice) -> NDArray[np.float64]:
    """``blend_rows`` of the parts for the evaluated rows ``rows``."""
    item, als, trend, n_rows = parts
    count = len(range(*rows.indices(n_rows)))
    als_scores = None
    if als is not None:
        row_factors, item_factors = als
        als_scores = (row_factors[rows] @ item_factors.T).astype(np.float32)
    scores = blend_rows(
        None if item is None else item[rows],
        als_scores,
        trend,
        choice.als_weight,
        choice.trend_weight,
        choice.item_weight,
    )
    if scores is None:
        scores = np.tile(trend, (count, 1))
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
