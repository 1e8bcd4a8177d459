"""Scoring many known customers at once, as ``RecommendationService.for_user`` ranks each:
the precomputed lists a training run writes into the version, the campaign export and the
"new for you" alerts. Matrix products over blocks of customers, never a Python loop over
customers.

The blocks are ranked by ``TopScorer``: one ALS product per block (as implicit's own batch
``recommend`` does), then only the items that can reach a customer's top k are scored with
the served blend (``Ranker.pruned``'s bound, applied to a block), so the dense part of the
work is the product and one comparison, not the blend over every item.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from ..artifacts import StreamedArray
from ..bundle import StreamedLists
from .inner_product import NormOrderedFactors, dot_pairs
from .ranking import Ranker
from .service import RecommendationService

# Customers x items scored at once: about 8 MB of float32 scores per block, so that the
# passes over a block after its product (scale, comparison) read it from cache.
BLOCK_ENTRIES = 2_000_000
# Items per customer whose exact blend bounds the k-th best score from below (the items with
# the largest ALS factors, plus up to this many of the customer's item-to-item neighbours).
SAMPLE_ITEMS = 1024
NEIGHBOUR_SAMPLE = 1024
# Two float32 sums of a dot product's n terms in different orders (BLAS's block product here,
# ``dot_rows``' einsum per request) differ by at most about n eps |u| |v| (eps: float32's
# machine epsilon, twice the unit roundoff); twice that is the slack the block's scores get.
DOT_ERROR_PER_FACTOR = 2 * float(np.finfo(np.float32).eps)


def top_k_for_users(
    service: RecommendationService, user_indices: NDArray[np.int64], k: int
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Top-k items (-1 where fewer) and their scores for many known customers at once."""
    best, best_scores, _ = TopScorer(service).top(np.asarray(user_indices, dtype=np.int64), k)
    return best, best_scores


class TopScorer:
    """``Ranker.batch_with_strategy`` for blocks of known customers, with the same result,
    without blending every item: built once per pass (the float64 copy of the item-to-item
    matrix and the sample items are shared by every block).

    Exact because every item outside a customer's candidates scores below a lower bound of
    their k-th best score: the bound is the k-th best exact score over some items (the sample
    items and some of their neighbours), and an item without item-to-item evidence scores its
    ALS part plus at most the largest trending part, so its ALS score alone decides whether it
    can reach the bound. The candidates are then blended exactly as ``blend_rows`` blends them
    (the item-to-item part summed in float64 in history order, as serving's ``bincount`` sums
    it) and ranked with ties to the lower index, as ``top_n_rows`` ranks.

    The block's ALS product (BLAS) rounds each score differently from a request's row-by-row
    ``dot_rows`` and from another block's shape, so it only bounds: the bounds are lowered by
    twice the largest such difference, and each row's ALS scale and the entries that can
    still make its top k are rescored with ``dot_rows``' arithmetic before the final ranking.
    """

    def __init__(self, service: RecommendationService) -> None:
        self.ranker: Ranker = service.ranker
        self.user_items: sp.csr_matrix = service.user_items
        als = service.als
        weights = self.ranker.weights
        # The shortcut needs an ALS part to bound by; otherwise the whole-row blend answers.
        self.fast = als is not None and weights.als > 0
        if als is None:
            return
        self.user_factors = als.user_factors_
        self.item_factors = np.ascontiguousarray(als.item_factors_, dtype=np.float32)
        # The block product's right operand stored as it is read (factors x items): BLAS
        # packs the whole of it for every block, and from a transposed view that made the
        # product of 40 customers x 50,000 items 5.5 ms instead of 3.7. The product only
        # bounds, and any summation order is within the bound's slack.
        self.item_factors_by_factor = np.ascontiguousarray(self.item_factors.T)
        self.als_weight = float(weights.als)
        self.item_weight = float(weights.item if weights.item is not None else 1.0 - weights.als)
        self.matrix = self.ranker.matrix.astype(np.float64).tocsr()
        n_items = self.item_factors.shape[0]
        trend = self.ranker.trend
        self.trend_part = weights.trend * trend if weights.trend and len(trend) else None
        self.trend_top = float(self.trend_part.max()) if self.trend_part is not None else 0.0
        sample_size = min(n_items, SAMPLE_ITEMS)
        # The longest factors, as the serving scan orders them (any sample gives an exact bound).
        longest = self.ranker.als_index.order[:sample_size]  # type: ignore[union-attr]
        self.sample = np.sort(longest)
        self.sample_place = np.full(n_items, -1, dtype=np.int64)
        self.sample_place[self.sample] = np.arange(sample_size)
        self.index: NormOrderedFactors = self.ranker.als_index  # type: ignore[assignment]
        self.longest_item = float(self.index.lengths[0]) if n_items else 0.0
        self.negated_lengths = -self.index.lengths  # ascending, for searchsorted per block

    def top(
        self, user_indices: NDArray[np.int64], k: int
    ) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.int8]]:
        """(n, k) item indices best first (-1 where fewer qualify), their scores (-inf where
        -1), and each customer's strategy (a key of ``ranking.STRATEGIES``)."""
        if not self.fast:
            factors = self.user_factors[user_indices] if self.ranker.als is not None else None
            return self.ranker.batch_with_strategy(self.user_items[user_indices], factors, k)
        n_items = self.item_factors.shape[0]
        step = max(1, BLOCK_ENTRIES // max(1, n_items))
        parts = [
            self._block(user_indices[start : start + step], k)
            for start in range(0, len(user_indices), step)
        ]
        if not parts:
            k = min(k, n_items)
            return (
                np.empty((0, k), np.int64),
                np.empty((0, k), np.float64),
                np.empty(0, np.int8),
            )
        return tuple(np.concatenate(column) for column in zip(*parts))  # type: ignore[return-value]

    def _block(
        self, users: NDArray[np.int64], k: int
    ) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.int8]]:
        """``top`` for one block of customers.

        Long because it is the block's sequence, each step feeding the next: the item-to-item
        part, the ALS product, the bound, the candidates, their exact blend and ranking.
        """
        n_rows, n_items = len(users), self.item_factors.shape[0]
        k = min(k, n_items)
        if k == 0:
            return np.empty((n_rows, 0), np.int64), np.empty((n_rows, 0)), np.zeros(n_rows, np.int8)
        # In stored order: serving sums a history's neighbours in that order.
        history = self.user_items[users]
        owned = np.sort(_keys(history, n_items))

        # The item-to-item part: float64 sums in history order, as serving's bincount sums.
        knn = (history.astype(np.float64) @ self.matrix).tocsr()
        lengths = np.diff(knn.indptr)
        knn_rows = np.repeat(np.arange(n_rows), lengths)
        knn_cols = knn.indices.astype(np.int64)
        values = knn.data
        has_knn = np.bincount(knn_rows[values != 0], minlength=n_rows) > 0
        peak = np.zeros(n_rows)
        stored = lengths > 0
        if stored.any():
            starts = knn.indptr[:-1][stored]
            peak[stored] = np.maximum(
                np.maximum.reduceat(values, starts), -np.minimum.reduceat(values, starts)
            )
        peak = np.where(lengths < n_items, np.maximum(peak, 0.0), peak)
        knn_peak = peak[knn_rows]
        knn_part = np.divide(values, np.where(knn_peak <= 0, 1.0, knn_peak))
        knn_part[knn_peak <= 0] = 0.0
        knn_part *= self.item_weight

        # The ALS part: one product, each row's largest |score| for its scale.
        factors = np.asarray(self.user_factors[users], dtype=np.float32)
        als = factors @ self.item_factors_by_factor
        als_peak = np.maximum(als.max(axis=1), -als.min(axis=1)).astype(np.float64)
        has_als = (factors != 0).any(axis=1)
        als_divisor = np.where(als_peak <= 0, 1.0, als_peak)

        knn_owned = _member(knn_rows * n_items + knn_cols, owned)
        knn_scores = self._blended(als[knn_rows, knn_cols], als_peak, knn_rows, knn_cols, knn_part)
        knn_scores[knn_owned] = -np.inf
        # The block product's scores are within ``slack`` of serving's (``dot_rows``): the
        # bound is lowered by it twice, so no item of a row's exact top k is dropped.
        user_length = np.sqrt(np.einsum("ij,ij->i", factors, factors, dtype=np.float64))
        error = DOT_ERROR_PER_FACTOR * factors.shape[1] * self.longest_item * user_length
        slack = np.where(als_peak > 0, 2.0 * self.als_weight * error / als_divisor, 0.0)
        cut = self._cut(
            n_rows, k, history, als, als_divisor, als_peak, knn_rows, knn_cols, knn_part, knn_scores
        )
        cut -= 2.0 * slack

        # Items without item-to-item evidence: only an ALS score at the bound can reach it.
        # A float32 comparison: the margin keeps an item at the bound inside.
        rest = cut - self.trend_top
        threshold = np.full(n_rows, -np.inf)
        bounded = np.isfinite(rest)
        scaled = bounded & (als_peak > 0)
        level = rest[scaled] / self.als_weight * als_peak[scaled]
        threshold[scaled] = level - 1e-5 * (np.abs(level) + als_peak[scaled])
        # A row without ALS scores: every other item scores the trending part alone.
        threshold[bounded & (als_peak <= 0) & (rest > 0)] = np.inf
        candidate = als >= threshold.astype(np.float32)[:, None]
        candidate[knn_rows, knn_cols] = False
        candidate[_rows_of(history), history.indices] = False
        rows, cols = np.divmod(np.flatnonzero(candidate), n_items)
        scores = self._blended(als[rows, cols], als_peak, rows, cols)
        keep = scores >= cut[rows]
        keep_knn = knn_scores >= cut[knn_rows]
        keep_knn &= ~knn_owned
        rows = np.concatenate([rows[keep], knn_rows[keep_knn]])
        cols = np.concatenate([cols[keep], knn_cols[keep_knn]])
        scores = np.concatenate([scores[keep], knn_scores[keep_knn]])

        if self.als_weight > 0 and (als_peak > 0).any():
            # Rescored as a request scores them: the ALS values and each row's scale by
            # ``dot_rows``' arithmetic, for the entries that can still be in the top k.
            item_part = np.concatenate([np.zeros(int(keep.sum())), knn_part[keep_knn]])
            from_knn = np.arange(len(rows)) >= int(keep.sum())
            near = scores >= (_kth_best(n_rows, k, rows, scores) - 2.0 * slack)[rows]
            rows, cols = rows[near], cols[near]
            scale = _exact_scale(
                self.index,
                self.negated_lengths,
                self.item_factors,
                factors,
                user_length,
                als,
                als_peak,
                error,
            )
            values = dot_pairs(factors, self.item_factors, rows, cols)
            scores = self._blended(values, scale, rows, cols, item_part[near], from_knn[near])
        best, best_scores = _ranked_rows(n_rows, k, rows, cols, scores)
        strategy = has_knn.astype(np.int8) + 2 * has_als.astype(np.int8)
        return best, best_scores, strategy

    def _blended(
        self,
        values: NDArray[np.floating],
        peak: NDArray[np.float64],
        rows: NDArray[np.int64],
        cols: NDArray[np.int64],
        item_part: NDArray[np.float64] | None = None,
        item_at: NDArray[np.bool_] | None = None,
    ) -> NDArray[np.float64]:
        """The served blend of entries (rows, cols) with ALS scores ``values``, each row's
        scaled by its ``peak`` (0 where that is not positive), plus ``item_part`` (only at
        ``item_at`` when given) and the trending part, in ``blend_rows``' order."""
        total = np.divide(values, np.where(peak <= 0, 1.0, peak)[rows], dtype=np.float64)
        total[peak[rows] <= 0] = 0.0
        total *= self.als_weight
        if item_part is not None:
            if item_at is None:
                total += item_part
            else:
                total[item_at] += item_part[item_at]
        if self.trend_part is not None:
            total += self.trend_part[cols]
        return total

    def _cut(
        self,
        n_rows: int,
        k: int,
        history: sp.csr_matrix,
        als: NDArray[np.float32],
        als_divisor: NDArray[np.float64],
        als_peak: NDArray[np.float64],
        knn_rows: NDArray[np.int64],
        knn_cols: NDArray[np.int64],
        knn_part: NDArray[np.float64],
        knn_scores: NDArray[np.float64],
    ) -> NDArray[np.float64]:
        """Each row's k-th best exact score over the sample items and up to
        ``NEIGHBOUR_SAMPLE`` other neighbours (not bought): a lower bound of its k-th best
        over every item (-inf where these are fewer than k)."""
        sample = self.sample
        sampled = np.divide(als[:, sample], als_divisor[:, None], dtype=np.float64)
        sampled[als_peak <= 0] = 0.0
        sampled *= self.als_weight
        place = self.sample_place[knn_cols]
        in_sample = place >= 0
        sampled[knn_rows[in_sample], place[in_sample]] += knn_part[in_sample]
        if self.trend_part is not None:
            sampled += self.trend_part[sample]
        history_rows = _rows_of(history)
        owned_place = self.sample_place[history.indices]
        bought = owned_place >= 0
        sampled[history_rows[bought], owned_place[bought]] = -np.inf
        # Neighbours outside the sample, at most NEIGHBOUR_SAMPLE a row (any subset bounds).
        others = ~in_sample & np.isfinite(knn_scores)
        rows = knn_rows[others]
        first = np.searchsorted(rows, np.arange(n_rows))
        rank = np.arange(len(rows)) - first[rows]
        kept = rank < NEIGHBOUR_SAMPLE
        width = int(rank[kept].max()) + 1 if kept.any() else 0
        neighbours = np.full((n_rows, width), -np.inf)
        neighbours[rows[kept], rank[kept]] = knn_scores[others][kept]
        pool = np.concatenate([sampled, neighbours], axis=1)
        if pool.shape[1] < k:
            return np.full(n_rows, -np.inf)
        return np.partition(pool, pool.shape[1] - k, axis=1)[:, pool.shape[1] - k]


def _exact_scale(
    index: NormOrderedFactors,
    negated_lengths: NDArray[np.float64],
    item_factors: NDArray[np.float32],
    factors: NDArray[np.float32],
    user_length: NDArray[np.float64],
    als: NDArray[np.float32],
    als_peak: NDArray[np.float64],
    error: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Each row's largest |ALS score| as ``dot_rows`` computes it (serving's scale): the
    largest is among the items whose block-product score ``als`` is within twice the
    product's ``error`` of the block's largest ``als_peak``, which are rescored."""
    level = np.where(als_peak > 0, als_peak - 2.0 * error, np.inf)
    # Only items whose factors are long enough can score near the largest (|u.v| is at most
    # |u| |v|): a prefix of the items by length, as the serving scan reads them.
    shortest = np.where(
        user_length > 0, (level - 3.0 * error) / np.maximum(user_length, 1e-300), np.inf
    )
    prefix = np.searchsorted(negated_lengths, -shortest * (1.0 - 1e-6), side="right")
    candidates = index.order[: int(prefix.max(initial=0))]
    rows, places = np.nonzero(np.abs(als[:, candidates]) >= level[:, None])
    cols = candidates[places]
    values = dot_pairs(factors, item_factors, rows, cols)
    scale = np.zeros(len(factors))
    np.maximum.at(scale, rows, np.abs(values).astype(np.float64))
    return scale


def _ranked_rows(
    n_rows: int,
    k: int,
    rows: NDArray[np.int64],
    cols: NDArray[np.int64],
    scores: NDArray[np.float64],
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Each row's k best (row, column, score) entries, best first, ties to the lower column
    (``top_n_rows``' order): (n_rows, k) columns (-1 where fewer) and their scores (-inf).

    One row per line of a padded matrix sorted along its lines (a multi-key sort of every
    entry costs several times more); equal scores are put in column order afterwards, on the
    few lines that have them."""
    grouped, rows, place, width = _lines(n_rows, k, rows)
    negated = np.full((n_rows, width), np.inf)
    negated[rows, place] = -scores[grouped]
    columns = np.full((n_rows, width), np.iinfo(np.int64).max)
    columns[rows, place] = cols[grouped]
    order = np.argsort(negated, axis=1)
    negated = np.take_along_axis(negated, order, axis=1)
    columns = np.take_along_axis(columns, order, axis=1)
    tied = ((negated[:, 1:] == negated[:, :-1]) & (columns[:, 1:] < columns[:, :-1])).any(axis=1)
    if tied.any():
        lines = np.flatnonzero(tied)
        fixed = np.lexsort((columns[lines], negated[lines]), axis=-1)
        negated[lines] = np.take_along_axis(negated[lines], fixed, axis=1)
        columns[lines] = np.take_along_axis(columns[lines], fixed, axis=1)
    found = np.isfinite(negated[:, :k])
    return np.where(found, columns[:, :k], -1), np.where(found, -negated[:, :k], -np.inf)


def _kth_best(
    n_rows: int, k: int, rows: NDArray[np.int64], scores: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Each row's k-th largest score (-inf where it has fewer entries): ``_ranked_rows``'
    last column, by a partition instead of a sort."""
    grouped, rows, place, width = _lines(n_rows, k, rows)
    negated = np.full((n_rows, width), np.inf)
    negated[rows, place] = -scores[grouped]
    return -np.partition(negated, k - 1, axis=1)[:, k - 1]


def _lines(
    n_rows: int, k: int, rows: NDArray[np.int64]
) -> tuple[NDArray[np.intp], NDArray[np.int64], NDArray[np.int64], int]:
    """Where each entry goes in a padded (n_rows, width) matrix with a line per row: the
    entries' order grouped by row (stable), their rows in that order, their places in their
    line, and the width (at least k)."""
    grouped = np.argsort(rows.astype(np.int16 if n_rows < 2**15 else np.int64), kind="stable")
    rows = rows[grouped]
    first = np.searchsorted(rows, np.arange(n_rows))
    place = np.arange(len(rows)) - first[rows]
    width = max(k, int(place.max()) + 1 if len(place) else 0)
    return grouped, rows, place, width


def _rows_of(matrix: sp.csr_matrix) -> NDArray[np.int64]:
    """The row of each stored value."""
    return np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))


def _keys(matrix: sp.csr_matrix, n_columns: int) -> NDArray[np.int64]:
    """Each stored cell as row * n_columns + column."""
    return _rows_of(matrix) * n_columns + matrix.indices


def _member(keys: NDArray[np.int64], sorted_keys: NDArray[np.int64]) -> NDArray[np.bool_]:
    """Whether each key is in ``sorted_keys`` (ascending)."""
    if not len(sorted_keys):
        return np.zeros(len(keys), dtype=bool)
    where = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[where] == keys


def stream_lists(
    service: RecommendationService,
    depth: int,
    jobs: int = 1,
    finished: Callable[[float], None] | None = None,
    users: NDArray[np.int64] | None = None,
) -> StreamedLists:
    """The best ``depth`` candidates of each of ``users`` (ascending customer indices; None:
    every known customer), ranked exactly as ``for_user`` ranks them, computed as the version
    is written: in blocks of customers (``TopScorer``), ``jobs`` blocks at a time (threads:
    numpy and BLAS release the GIL for the heavy part, BLAS one thread each), each block handed
    to the writer in order and dropped. The others have no list (strategy 0): the server scores
    them when asked. ``finished`` gets the seconds the whole pass took."""
    from joblib import Parallel, delayed
    from threadpoolctl import threadpool_limits

    n_users, depth = len(service.users), min(depth, len(service.items))
    users = np.arange(n_users) if users is None else np.asarray(users, dtype=np.int64)
    rows = np.full(n_users, -1, dtype=np.int32)
    rows[users] = np.arange(len(users), dtype=np.int32)
    strategy = np.zeros(n_users, dtype=np.int8)
    scorer = TopScorer(service)
    step = max(1, BLOCK_ENTRIES // max(1, len(service.items)))

    def block(start: int) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.int8]]:
        chosen = users[start : start + step]
        best, best_scores, kinds = scorer.top(chosen, depth)
        packed = np.empty((len(chosen), 2, depth), dtype=np.int32)
        packed[:, 0] = best
        packed[:, 1] = np.where(best >= 0, best_scores, 0.0).astype(np.float32).view(np.int32)
        return chosen, packed, kinds

    def packed_blocks() -> Iterator[NDArray[np.int32]]:
        started = time.perf_counter()
        # The blocks run side by side: a product each, not one product on every core.
        with threadpool_limits(1 if jobs > 1 else None, "blas"):
            for chosen, packed, kinds in Parallel(
                n_jobs=jobs, prefer="threads", return_as="generator"
            )(delayed(block)(start) for start in range(0, len(users), step)):
                strategy[chosen] = kinds
                yield packed
        if finished is not None:
            finished(time.perf_counter() - started)

    def strategy_blocks() -> Iterator[NDArray[np.int8]]:
        yield strategy

    return StreamedLists(
        StreamedArray((len(users), 2, depth), np.int32, packed_blocks()),
        StreamedArray((n_users,), np.int8, strategy_blocks()),
        rows,
        depth,
    )
