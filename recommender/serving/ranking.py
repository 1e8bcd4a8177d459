"""Candidates, scores and the top k: the personal blend, under a catalog mask.

One formula for every personal answer (``algorithms.blend.blend_scores``, the one training
measured): the personal item-to-item matrix applied to a shopper's items, ALS (their factors,
or folded in from the items), and trending, with the blend's weights. The matrix rows are
read straight from the memory-mapped CSR arrays, so a request builds no sparse objects.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from ..activity import Event
from ..algorithms.als import ALS
from ..algorithms.base import top_n, top_n_rows
from ..algorithms.blend import blend_rows, blend_scores
from ..data.idmap import IdMap
from .catalog import Catalog, Filters
from .inner_product import NormOrderedFactors, dot_rows
from .kernels import neighbour_blend
from .reasons import ReasonFinder

# How deep the trending ranking is kept for topping answers up.
POPULAR_DEPTH = 2000
# Which parts had evidence (1: item-to-item, 2: ALS, both: 3) -> the strategy responses name.
STRATEGIES = {0: "popular", 1: "item-knn", 2: "als", 3: "blend"}
# The ALS part of a blend without one (``kernels.neighbour_blend`` takes an array either way).
NO_ALS_PART = np.empty(0, dtype=np.float32)
# How much one event says about what a shopper wants, by type.
TYPE_WEIGHTS = {"view": 1.0, "cart": 2.0, "wishlist": 2.0, "purchase": 3.0}


@dataclass
class Ranked:
    """A ranking in internal indices, before it is turned into JSON."""

    items: list[int] = field(default_factory=list)
    scores: list[float | None] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    reasons: list[int] = field(default_factory=list)
    strategy: str = "popular"


@dataclass(frozen=True)
class BlendWeights:
    """The blend the training run chose (``model_selection.BlendChoice``'s weights)."""

    als: float = 0.0
    trend: float = 0.0
    item: float | None = None


class Ranker(ReasonFinder):
    """Scores and ranks for one model version; read-only, shared between threads.

    Parameters
    ----------
    catalog : the items, for the filter mask and diversity.
    matrix : items x items CSR, the personal item-to-item weights (row: a shopper's item).
    als : fitted ALS, or None when the model has none (a basket-only log).
    trending : (n_items,) trending weights, any scale.
    weights : the blend.
    incoming : the transpose of ``matrix`` (None: reasons are read off ``matrix``, which walks
        a shopper's whole history; with it they read only the chosen items' columns).
    """

    def __init__(
        self,
        catalog: Catalog,
        matrix: sp.csr_matrix,
        als: ALS | None,
        trending: NDArray[np.floating],
        weights: BlendWeights,
        incoming: sp.csr_matrix | None = None,
    ) -> None:
        self.catalog = catalog
        self.matrix = matrix
        self.incoming = incoming
        self.scratch = threading.local()
        self.als = als
        # The factors by length, so a pruned answer scores only the items that can matter.
        self.als_index = NormOrderedFactors(als.item_factors_) if als is not None else None
        trending = np.asarray(trending, dtype=np.float64)
        self.trend = trending / trending.max() if trending.max() > 0 else trending
        # The most any item's trending part can add (``pruned``'s bound), read once.
        self.trend_max = float(self.trend.max(initial=0.0))
        order = np.lexsort((np.arange(len(trending)), -trending))
        self.trending_ranking = order[:POPULAR_DEPTH]
        # Each item's place in the trending order (0: most bought lately), for catalog search.
        self.trending_order = np.empty(len(order), dtype=np.int64)
        self.trending_order[order] = np.arange(len(order))
        self.weights = (
            weights if als is not None else BlendWeights(0.0, weights.trend, weights.item)
        )

    def warm_up(self) -> None:
        """Compile the per-request loops for this model's array types now (``ReasonFinder``'s,
        the fold-in's, the neighbours' blend via a one-item ``pruned``), not at a request."""
        super().warm_up()
        self.vector(np.zeros(1, dtype=np.int64), np.ones(1))  # the fold-in's loop
        self.pruned(
            (np.zeros(1, dtype=np.int64), np.ones(1)), None, np.ones(len(self.trend), bool), 1
        )

    def vector(
        self, history: NDArray[np.int64], weights: NDArray[np.float64]
    ) -> NDArray[np.float32] | None:
        """ALS factors folded in from a list of items (a shopper the model has not seen)."""
        return self.als.fold_in(history, weights) if self.als is not None and len(history) else None

    def rank(
        self,
        history: NDArray[np.int64],
        weights: NDArray[np.float64],
        vector: NDArray[np.float32] | None,
        k: int,
        filters: Filters,
        exclude: NDArray[np.int64],
    ) -> Ranked:
        """Blend, filter, cut to k, top up with trending items, and find each result's reason."""
        allowed = self.catalog.allowed(filters, exclude_idx=exclude)
        depth = k if filters.max_per_category is None else min(len(allowed), 10 * k + 50)
        summed = self.neighbour_sums(history, weights) if len(history) else None
        found = self.pruned(summed, vector, allowed, depth) if summed is not None else None
        if found is None:
            scores, strategy = self.scores(history, weights, vector, summed)
            items = None if scores is None else np.arange(len(scores))
            if scores is not None:
                best, _ = top_n(np.where(allowed, scores, -np.inf), depth, positive_only=False)
        else:
            items, scores, strategy, cut = found
            best = best_at_or_above(items, scores, allowed, cut, depth)
        ranked = Ranked(strategy=strategy)
        if scores is not None:
            chosen = self.catalog.diversify(items[best].tolist(), k, filters)  # type: ignore[index]
            score_of = dict(zip(items[best].tolist(), scores[best].tolist()))  # type: ignore[index]
            ranked.items = chosen
            ranked.scores = [score_of[i] for i in chosen]
            ranked.sources = [strategy] * len(chosen)
        self.fill_popular(ranked, k, allowed, filters)
        ranked.reasons = self.reasons(history, weights, ranked.items)
        return ranked

    def pruned(
        self,
        summed: tuple[NDArray[np.int64], NDArray[np.float64]],
        vector: NDArray[np.float32] | None,
        allowed: NDArray[np.bool_],
        depth: int,
    ) -> tuple[NDArray[np.int64], NDArray[np.float64], str, float] | None:
        """The blend on a few candidates instead of the whole catalog, with the same result.

        Candidates: the neighbours of the shopper's items, then every other item whose best
        possible score (its ALS part, plus the largest trending part) reaches the
        ``depth``-th best allowed neighbour's score. Any item left out scores below that, so
        the top ``depth`` of the candidates is the exhaustive one. Returns (candidate items in
        ascending order, their blended scores, strategy, that bound), or None where none exists
        (no neighbours, fewer than ``depth`` allowed ones, item-to-item not weighted): the
        caller scores everything.
        """
        item_weight = self.weights.item if self.weights.item is not None else 1.0 - self.weights.als
        neighbours, knn = summed
        if item_weight <= 0 or not len(neighbours):
            return None
        scan = None
        als_scale = 0.0
        neighbour_als = NO_ALS_PART
        if (
            vector is not None
            and self.als_index is not None
            and self.weights.als > 0
            and vector.any()  # the method: np.any's dispatch cost a few microseconds
        ):
            scan = self.als_index.scan(vector)
            als_scale = scan.scale()
            # np.take: half the time of fancy indexing for a few hundred rows of factors.
            rows = np.take(self.als.item_factors_, neighbours, axis=0)  # type: ignore[union-attr]
            neighbour_als = dot_rows(rows, scan.vector)
        strategy = STRATEGIES[1 + 2 * (scan is not None)]
        scores, cut = neighbour_blend(
            neighbours,
            knn,
            neighbour_als,
            self.trend,
            allowed,
            float(item_weight),  # floats and an int always: one compiled signature
            float(self.weights.als),
            float(self.weights.trend),
            float(als_scale),
            int(depth),
        )
        if np.isnan(cut):  # no item-to-item evidence, or fewer than depth allowed neighbours
            return None
        # The most trending can add to an item that is not a neighbour; its ALS part must make up the rest.
        rest = float(cut) - self.weights.trend * self.trend_max
        if scan is not None and als_scale > 0:
            # A float32 comparison: the margin keeps an item at the cut inside (extra candidates
            # cost nothing). Only items whose factors are long enough to reach it are scored.
            threshold = rest * als_scale / self.weights.als
            others, others_als = scan.at_least(threshold - 1e-4 * (abs(threshold) + als_scale))
        elif rest > 0:
            others, others_als = np.empty(0, dtype=np.int64), None
        else:
            return None
        if len(others):  # mostly none: the neighbours are not even placed then
            with self._placed(neighbours, 0) as places:  # no catalog-long mask per request
                outside = places[others] < 0
            others = others[outside]
            others_als = None if others_als is None else others_als[outside]
        if not len(others):
            return neighbours, scores, strategy, float(cut)
        items = np.concatenate([neighbours, others])
        scales = (float(np.abs(knn).max()), als_scale)
        extra = self._blend_part(others, np.zeros(len(others)), others_als, scales)
        scores = np.concatenate([scores, extra])
        order = np.argsort(items, kind="stable")
        return items[order], scores[order], strategy, float(cut)

    def _blend_part(
        self,
        items: NDArray[np.int64],
        item_part: NDArray[np.float64],
        als_part: NDArray[np.float32] | None,
        scales: tuple[float, float],
    ) -> NDArray[np.float64]:
        """The blend of some items' parts, scaled as the whole catalog's would be."""
        return blend_scores(  # type: ignore[return-value]
            item_part,
            als_part,
            self.trend[items],
            self.weights.als,
            self.weights.trend,
            self.weights.item,
            scales=scales,
        )

    def scores(
        self,
        history: NDArray[np.int64],
        weights: NDArray[np.float64],
        vector: NDArray[np.float32] | None,
        summed: tuple[NDArray[np.int64], NDArray[np.float64]] | None = None,
    ) -> tuple[NDArray[np.float64] | None, str]:
        """Every item's blended score and the strategy that produced it (None: nothing personal)."""
        knn = None
        if len(history):
            neighbours, sums = (
                summed if summed is not None else self.neighbour_sums(history, weights)
            )
            if len(neighbours):
                knn = np.zeros(len(self.catalog), dtype=np.float64)
                knn[neighbours] = sums
                if not np.any(knn):
                    knn = None
        als = None
        if vector is not None and self.als is not None and self.weights.als > 0 and np.any(vector):
            als = dot_rows(self.als.item_factors_, np.asarray(vector, dtype=np.float32))
        if knn is None and als is None:
            return None, STRATEGIES[0]
        strategy = STRATEGIES[(knn is not None) + 2 * (als is not None)]
        return blend_scores(
            knn,
            als,
            self.trend,
            self.weights.als,
            self.weights.trend,
            self.weights.item,
        ), strategy

    def fill_popular(
        self, ranked: Ranked, k: int, allowed: NDArray[np.bool_], filters: Filters
    ) -> None:
        """Top a short ranking up with trending items that pass the same filters."""
        if len(ranked.items) >= k:
            return
        taken = set(ranked.items)
        candidates = [
            i
            for i in self.trending_ranking[allowed[self.trending_ranking]].tolist()
            if i not in taken
        ]
        if filters.max_per_category is not None:
            candidates = self.catalog.diversify(
                ranked.items + candidates, len(ranked.items) + len(candidates), filters
            )
            candidates = [i for i in candidates if i not in taken]
        for item in candidates[: k - len(ranked.items)]:
            ranked.items.append(item)
            ranked.scores.append(None)
            ranked.sources.append("popular")

    def popular(self, k: int, filters: Filters, exclude: Sequence[int] = ()) -> Ranked:
        """Trending items only."""
        ranked = Ranked(strategy="popular")
        self.fill_popular(ranked, k, self.catalog.allowed(filters, exclude), filters)
        return ranked

    def batch_with_strategy(
        self, rows: sp.csr_matrix, user_factors: NDArray[np.float32] | None, k: int
    ) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.int8]]:
        """Top-k items for many known customers at once, as ``rank`` ranks one (``rank_batch``)."""
        return rank_batch(self, rows, user_factors, k)


def best_at_or_above(
    items: NDArray[np.int64],
    scores: NDArray[np.float64],
    allowed: NDArray[np.bool_],
    cut: float,
    depth: int,
) -> NDArray[np.int64]:
    """``top_n`` of the allowed candidates (positions in ``items``, best first, ties by lower
    position), read off those scoring ``cut`` or more: ``Ranker.pruned``'s bound, which at
    least ``depth`` allowed candidates reach, so the top ``depth`` are among them. A lexsort
    of a few dozen instead of ``top_n``'s copy, mask and partition of every candidate."""
    places = np.flatnonzero(allowed[items] & (scores >= cut))
    return places[np.lexsort((places, -scores[places]))[:depth]]


def activity_weights(
    recent: Sequence[Event], items: IdMap, half_life_hours: float, now: float | None = None
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Known items of recent events, each weighted by type (``TYPE_WEIGHTS``) and recency
    (halved every ``half_life_hours``), summed per item; items in the order of their first
    event (newest first).

    Summed in a dict in the events' order: the same additions, in the same order, as
    ``np.bincount`` over ``np.unique``'s inverse, without the sort and the three numpy calls
    (a shopper has a few dozen events at most; the weights are computed in Python anyway)."""
    now = time.time() if now is None else now
    indices = items.indices([event.item_id for event in recent]).tolist()
    sums: dict[int, float] = {}
    for event, index in zip(recent, indices):
        if index < 0:
            continue
        term = TYPE_WEIGHTS[event.type] * 0.5 ** (
            max(0.0, now - event.timestamp) / 3600.0 / half_life_hours
        )
        sums[index] = sums.get(index, 0.0) + term
    return (
        np.fromiter(sums.keys(), dtype=np.int64, count=len(sums)),
        np.fromiter(sums.values(), dtype=np.float64, count=len(sums)),
    )


def rank_batch(
    ranker: Ranker, rows: sp.csr_matrix, user_factors: NDArray[np.float32] | None, k: int
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.int8]]:
    """Top-k items for many known customers at once, as ``rank`` ranks one (same blend,
    their items excluded), with matrix products over the batch instead of a loop.

    Returns (n, k) item indices (-1 where fewer qualify), their scores, and for each row
    which parts had evidence (a key of ``STRATEGIES``; 0: ``rank`` answers with trending
    items)."""
    item_scores = (rows @ ranker.matrix).tocsr()  # sparse: blend_rows adds it where it is non-zero
    als_scores = user_factors @ ranker.als.item_factors_.T if ranker.als is not None else None  # type: ignore[operator]
    evidence = item_scores.data != 0
    has_knn = (
        np.bincount(
            np.repeat(np.arange(rows.shape[0]), np.diff(item_scores.indptr))[evidence],
            minlength=rows.shape[0],
        )
        > 0
    )
    has_als = (
        np.zeros(rows.shape[0], dtype=bool)
        if als_scores is None or ranker.weights.als <= 0
        else (np.asarray(user_factors) != 0).any(axis=1)
    )
    strategy = has_knn.astype(np.int8) + 2 * has_als.astype(np.int8)
    scores = blend_rows(
        item_scores,
        als_scores,
        ranker.trend,
        ranker.weights.als,
        ranker.weights.trend,
        ranker.weights.item,
    )
    if scores is None:
        scores = np.tile(ranker.trend, (rows.shape[0], 1))
    scores[rows.nonzero()] = -np.inf
    best = top_n_rows(scores, k)
    best_scores = np.take_along_axis(scores, best, axis=1)
    return np.where(np.isfinite(best_scores), best, -1), best_scores, strategy
