"""What every item-to-item model shares: top-K neighbour tables and how they are used.

A subclass only says how to score item pairs (``_candidate_pairs``); this base keeps the
best K per item, drops items and pairs with too little support to be more than noise, and
records for every neighbour how many rows (customers or orders) contain both items, so that
any item-to-item answer can say "57 customers bought both".
"""

from __future__ import annotations

import logging
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from .base import Ranking, Recommender, check_csr, no_ranking, top_n

logger = logging.getLogger(__name__)

# Bound on the entries of one block of an items x items computation (dense, or the stored
# entries a sparse product can have at most), to bound memory.
BLOCK_ENTRIES = 4_000_000
# Rows longer than this many times K are first cut by a lower bound of their K-th score.
_BOUND_FACTOR = 4
Pairs = tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float32]]
# Scored pairs with the number of rows holding both items, where the search counted it anyway.
CountedPairs = tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float32], NDArray[np.int32]]


class NeighbourModel(Recommender):
    """Base of item-to-item models; subclasses implement ``_candidate_pairs``.

    Parameters (common to all)
    --------------------------
    neighbours : K, neighbours kept per item.
    min_support : items in fewer rows than this get no neighbours and are nobody's neighbour.
    min_pair_support : a pair must share at least this many rows to be neighbours.

    Attributes
    ----------
    neighbour_ids_ : int32 (n_items, K), -1 where an item has fewer than K neighbours.
    neighbour_scores_ : float32 (n_items, K), descending per row.
    neighbour_support_ : int32 (n_items, K), rows containing both items (-1: not counted,
        see ``fit``).
    item_support_ : int32 (n_items,), rows containing each item.
    """

    neighbours: int
    min_support: int
    min_pair_support: int

    @abstractmethod
    def _candidate_pairs(
        self, user_items: sp.csr_matrix, present: sp.csr_matrix
    ) -> Pairs | CountedPairs:
        """Scored item pairs (row item, neighbour item, score), at least the best K per row,
        and the rows holding both items when the search has them (``CountedPairs``)."""

    def describe(self) -> str:
        return type(self).__name__

    def _known_support(
        self,
        user_items: sp.csr_matrix,
        rows: NDArray[np.int64],
        cols: NDArray[np.int64],
        scores: NDArray[np.float32],
        item_support: NDArray[np.int32],
    ) -> NDArray[np.int32] | None:
        """Shared-row counts when the scores already determine them (None: count them)."""
        return None

    def candidate_pairs(self, user_items: sp.csr_matrix) -> Pairs | CountedPairs:
        """The scored pairs ``fit`` starts from; computed once, they can feed several models
        of the same kind that differ only in K and thresholds (``fit(..., pairs=...)``)."""
        user_items = check_csr(user_items)
        present = user_items.copy()
        present.data[:] = 1.0
        return self._candidate_pairs(user_items, present)

    def fit(
        self,
        user_items: sp.csr_matrix,
        pairs: Pairs | CountedPairs | None = None,
        count_support: bool = True,
        ranked: bool = True,
    ) -> NeighbourModel:
        """Keep the best ``neighbours`` per item among the scored pairs (computed here unless
        ``pairs`` from ``candidate_pairs`` of a model of the same kind on the same matrix).

        ``count_support=False`` (a model only scored, as in evaluation) skips counting the
        rows behind each neighbour when no threshold needs them: a scored pair always shares
        a row, so ``min_pair_support`` 1 or less keeps every pair, and ``neighbour_support_``
        is then -1 ("not counted"). Counting costs another items x items product.

        ``ranked=False`` (a model only scored through ``neighbour_matrix``, whose rows do not
        depend on the order of a row's neighbours) keeps the same neighbours but leaves them
        in the order the search gave them wherever no choice among them is needed (no more
        than ``neighbours`` candidates): ``neighbour_scores_`` is then not descending per row.
        Ordering them costs about a quarter of an implicit kNN fit.
        """
        user_items = check_csr(user_items)
        started = time.perf_counter()
        n_items = user_items.shape[1]
        present = user_items.copy()
        present.data[:] = 1.0
        # Rows holding each item: its stored entries, counted from the column indices (a CSC
        # copy of a 20M-entry matrix only to read its column lengths costs ~0.5 s a fit).
        item_support = np.bincount(present.indices, minlength=n_items).astype(np.int32)
        if pairs is None:
            pairs = self._candidate_pairs(user_items, present)
        rows, cols, scores, support = self._supported_pairs(
            user_items, present, pairs, item_support, count_support
        )
        if np.any(rows[1:] < rows[:-1]):
            by_row = np.argsort(rows, kind="stable")
            rows, cols, scores, support = (
                rows[by_row],
                cols[by_row],
                scores[by_row],
                support[by_row],
            )
        # The best ``neighbours`` of each row, ties to the lower column, without sorting all
        # pairs (unranked: only in rows with more, the others as they are).
        order = (
            largest_per_row(rows, cols, scores, n_items, self.neighbours)
            if ranked
            else _best_of_long_rows(rows, cols, scores, n_items, self.neighbours)
        )
        if order is not None:
            rows, cols, scores, support = rows[order], cols[order], scores[order], support[order]
        rank = places_in_rows(rows, n_items)
        kept = rank < self.neighbours
        shape = (n_items, self.neighbours)
        self.neighbour_ids_ = np.full(shape, -1, dtype=np.int32)
        self.neighbour_scores_ = np.zeros(shape, dtype=np.float32)
        self.neighbour_support_ = np.zeros(shape, dtype=np.int32)
        at = (rows[kept], rank[kept])
        self.neighbour_ids_[at] = cols[kept]
        self.neighbour_scores_[at] = scores[kept]
        self.neighbour_support_[at] = support[kept]
        self.item_support_ = item_support
        self.__dict__.pop("_neighbour_matrix", None)
        logger.info(
            "%s (K=%d) on %d x %d: %d items with neighbours, %d pairs, %.2fs",
            self.describe(),
            self.neighbours,
            *user_items.shape,
            int((self.neighbour_ids_[:, 0] >= 0).sum()),
            int(kept.sum()),
            time.perf_counter() - started,
        )
        return self

    def _supported_pairs(
        self,
        user_items: sp.csr_matrix,
        present: sp.csr_matrix,
        pairs: Pairs | CountedPairs,
        item_support: NDArray[np.int32],
        count_support: bool,
    ) -> CountedPairs:
        """The scored pairs between distinct items with enough support, with their shared-row
        counts (-1 where not counted, see ``fit``)."""
        rows, cols, scores = pairs[0], pairs[1], pairs[2]
        keep = (rows != cols) & np.isfinite(scores) & (scores != 0)
        eligible = item_support >= self.min_support
        if not eligible.all():
            keep &= eligible[rows] & eligible[cols]
        rows, cols, scores = rows[keep], cols[keep], scores[keep]
        if len(pairs) == 4:
            support = pairs[3][keep]
        else:
            support = self._known_support(user_items, rows, cols, scores, item_support)
        if support is None and not count_support and self.min_pair_support <= 1:
            return rows, cols, scores, np.full(len(rows), -1, dtype=np.int32)
        if support is None:
            support = pair_support(present, rows, cols)
        support = np.asarray(support, dtype=np.int32)
        strong = (support >= self.min_pair_support) | (support < 0)
        if strong.all():
            return rows, cols, scores, support
        return rows[strong], cols[strong], scores[strong], support[strong]

    def similar_items(self, item_idx: int, n: int = 10) -> Ranking:
        self._check_fitted()
        if not 0 <= item_idx < len(self.neighbour_ids_):
            return no_ranking()
        ids = self.neighbour_ids_[item_idx]
        valid = ids >= 0
        return ids[valid][:n].astype(np.int64), self.neighbour_scores_[item_idx][valid][:n]

    def recommend(
        self, user_idx: int, user_row: sp.csr_matrix, n: int = 10, exclude_seen: bool = True
    ) -> Ranking:
        """Sum the neighbour scores of the row's items (weighted by the row's values)."""
        self._check_fitted()
        scores = np.asarray((user_row @ self.neighbour_matrix()).todense()).ravel()
        return top_n(scores, n, user_row.indices if exclude_seen else None)

    def score_rows(self, user_items: sp.csr_matrix) -> NDArray[np.float32]:
        """Scores of every item for a batch of rows: ``user_items @ neighbour_matrix`` (dense)."""
        return (user_items @ self.neighbour_matrix()).toarray()

    def neighbour_matrix(self) -> sp.csr_matrix:
        """The neighbour table as an items x items CSR matrix (built once, then cached)."""
        cached = self.__dict__.get("_neighbour_matrix")
        if cached is None:
            cached = self._neighbour_matrix = table_matrix(
                self.neighbour_ids_, self.neighbour_scores_
            )
        return cached

    def to_arrays(self) -> dict[str, NDArray[Any]]:
        self._check_fitted()
        return {
            "neighbour_ids": self.neighbour_ids_,
            "neighbour_scores": self.neighbour_scores_,
            "neighbour_support": self.neighbour_support_,
            "item_support": self.item_support_,
        }


def table_matrix(ids: NDArray[np.integer], scores: NDArray[np.floating]) -> sp.csr_matrix:
    """A dense top-K table (-1 padded) as an items x items CSR matrix, indices sorted.

    Built directly from each row's entries ordered by column (a row's neighbours are
    distinct): the COO route sorts every entry of the table again, about twice the cost,
    and evaluation builds one per fitted model and fold.
    """
    ids, scores = np.asarray(ids), np.asarray(scores)
    n_items = ids.shape[0]
    valid = ids >= 0
    by_column = np.argsort(np.where(valid, ids, np.iinfo(ids.dtype).max), axis=1, kind="stable")
    kept = np.take_along_axis(valid, by_column, axis=1)
    indptr = np.concatenate(([0], np.cumsum(valid.sum(axis=1))))
    return sp.csr_matrix(
        (
            np.take_along_axis(scores, by_column, axis=1)[kept].astype(np.float32),
            np.take_along_axis(ids, by_column, axis=1)[kept],
            indptr,
        ),
        shape=(n_items, n_items),
    )


def top_per_row(block: NDArray[np.floating], first_row: int, k: int) -> Pairs:
    """The k largest entries of each row of a dense block (rows numbered from ``first_row``)."""
    k = min(k, block.shape[1])
    cols = np.argpartition(-block, k - 1, axis=1)[:, :k]
    scores = np.take_along_axis(block, cols, axis=1)
    rows = np.broadcast_to(np.arange(first_row, first_row + len(block))[:, None], cols.shape)
    return (
        rows.ravel().astype(np.int64),
        cols.ravel().astype(np.int64),
        scores.ravel().astype(np.float32),
    )


def sparse_top_pairs(
    n_items: int,
    k: int,
    product_rows: Callable[[int, int], sp.csr_matrix],
    score: Callable[
        [NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]], NDArray[np.floating]
    ],
    min_count: int = 1,
) -> CountedPairs:
    """The best k pairs per item of an items x items score that is zero wherever the sparse
    product ``product_rows(start, stop)`` (rows ``start:stop``) has no entry, with the number
    of rows holding both items of each pair.

    Co-occurrence, LLR and RP3beta score a pair of items only through the rows (customers,
    baskets) that hold both, so a pair that never co-occurs scores exactly 0, and ``fit``
    drops zero scores anyway: searching the product's stored entries instead of the dense
    rows gives the same neighbours at a cost that grows with the co-occurring pairs, not with
    the catalog squared. ``score(rows, cols, values)`` maps the product's (real) values to
    scores. Each row keeps its k largest non-zero scores, ties broken by the lower column
    (the order ``fit`` ranks in), so the result does not depend on how the product is blocked.

    The shared-row counts are the product's values, or its imaginary part when it is complex:
    a walk's weights ``w`` with ``w + 1j`` as the right operand give the walk and the counts
    in one sparse product, sparing ``fit`` a second pass over every co-occurring pair.
    Entries counting fewer than ``min_count`` rows are no candidates at all: a pair must
    share that many rows to be a neighbour, and most co-occurring pairs of a large catalog
    share one.
    """
    starts = row_blocks(n_items, n_items)
    parts = []
    for start in starts:
        stop = min(start + starts.step, n_items)
        block = _with_count(product_rows(start, stop).tocsr(), min_count)
        lengths = np.diff(block.indptr)
        rows = np.repeat(np.arange(start, stop, dtype=np.int64), lengths)
        cols = block.indices.astype(np.int64)
        values = block.data.real.astype(np.float64, copy=False)
        counts = block.data.imag if np.iscomplexobj(block.data) else block.data
        scores = np.asarray(score(rows, cols, values), dtype=np.float64)
        valid = (scores != 0) & np.isfinite(scores)
        if not valid.all():  # copies of every entry only when some are dropped
            stored = np.flatnonzero(valid)
            rows, cols, scores, counts = rows[stored], cols[stored], scores[stored], counts[stored]
        # Rows numbered from 0, those before ``start`` empty: no renumbered copy of them.
        kept = largest_per_row(rows, cols, scores, stop, k)
        parts.append(
            (
                rows[kept],
                cols[kept],
                scores[kept].astype(np.float32),
                np.rint(counts[kept]).astype(np.int32),
            )
        )
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int32)
    return tuple(np.concatenate(column) for column in zip(*parts))  # type: ignore[return-value]


def _with_count(block: sp.csr_matrix, min_count: int) -> sp.csr_matrix:
    """``block`` without the entries counting fewer than ``min_count`` rows (the count is the
    real value, or the imaginary part of a complex one), dropped before any per-entry array
    is made."""
    if min_count <= 1:
        return block
    counts = block.data.imag if np.iscomplexobj(block.data) else block.data
    enough = np.flatnonzero(counts >= min_count)
    return sp.csr_matrix(
        (block.data[enough], block.indices[enough], np.searchsorted(enough, block.indptr)),
        shape=block.shape,
    )


def largest_per_row(
    rows: NDArray[np.int64],
    cols: NDArray[np.int64],
    scores: NDArray[np.floating],
    n_rows: int,
    k: int,
) -> NDArray[np.int64]:
    """Positions of the k largest scores of each row (``rows`` sorted, numbered from 0), ties
    broken by the lower column, ordered by row and then best first: the order
    ``np.lexsort((cols, -scores, rows))`` gives, cut to k per row.

    A row with more than k entries finds its k-th largest score by ``np.partition`` on a
    padded array of rows of similar length (lengths within a factor of 2, so padding at most
    doubles the work), all rows at once. The entries at or above it are then ordered the same
    way, each row of a padded array sorted on its own: one lexsort over millions of entries
    moves them through memory three times, in random order (3 s for 4.7M pairs against
    0.2 s by rows), and it ran for every fitted model.
    """
    lengths = np.bincount(rows, minlength=n_rows)
    if lengths.max(initial=0) > _BOUND_FACTOR * k:
        # Rows far longer than k (a co-occurrence row holds thousands of items) are first cut
        # to the entries reaching a lower bound of their k-th largest score: the same best k.
        near = np.flatnonzero(scores >= _lower_bounds(lengths, scores, k)[rows])
        if len(near) <= len(scores) // 2:
            return near[largest_per_row(rows[near], cols[near], scores[near], n_rows, k)]
    threshold = np.full(n_rows, -np.inf)
    long_rows = np.flatnonzero(lengths > k)
    if len(long_rows):
        row_starts = np.concatenate(([0], np.cumsum(lengths)))
        for members, slot, offsets in _similar_lengths(lengths, long_rows):
            width = int(lengths[members].max())
            padded = np.full(len(members) * width, -np.inf)
            padded[slot * width + offsets] = scores[row_starts[members][slot] + offsets]
            threshold[members] = np.partition(
                padded.reshape(len(members), width), width - k, axis=1
            )[:, width - k]
    candidates = np.flatnonzero(scores >= threshold[rows])
    if not len(candidates):
        return candidates
    counts = np.bincount(rows[candidates], minlength=n_rows)
    kept = np.minimum(counts, k)
    out_starts = np.concatenate(([0], np.cumsum(kept)))
    candidate_starts = np.concatenate(([0], np.cumsum(counts)))
    out = np.empty(int(out_starts[-1]), dtype=np.int64)
    for members, slot, offsets in _similar_lengths(counts, np.flatnonzero(counts)):
        shape = (len(members), int(counts[members].max()))
        first = candidate_starts[members]
        at = candidates[first[slot] + offsets]
        order = _padded_order(scores[at], cols[at], slot * shape[1] + offsets, shape)[:, :k]
        # The first ``kept`` of each row are real entries (padding sorted after them).
        rank = np.arange(order.shape[1])
        keep = rank[None, :] < kept[members][:, None]
        slots = np.broadcast_to(np.arange(len(members))[:, None], order.shape)[keep]
        out[out_starts[members][slots] + np.broadcast_to(rank, order.shape)[keep]] = candidates[
            first[slots] + order[keep]
        ]
    return out


def places_in_rows(rows: NDArray[np.int64], n_rows: int) -> NDArray[np.int64]:
    """Each entry's place in its row (``rows`` sorted, numbered from 0): its distance from its
    row's first entry (a binary search per entry for that start costs as much as ranking
    the entries did)."""
    per_row = np.bincount(rows, minlength=n_rows)
    return np.arange(len(rows)) - (np.cumsum(per_row) - per_row)[rows]


def _best_of_long_rows(
    rows: NDArray[np.int64],
    cols: NDArray[np.int64],
    scores: NDArray[np.floating],
    n_rows: int,
    k: int,
) -> NDArray[np.int64] | None:
    """Positions of the entries ``largest_per_row`` keeps, in their own order (rows sorted):
    every entry of a row with k or fewer, the best k of the others. None: all of them."""
    longer = np.bincount(rows, minlength=n_rows) > k
    if not longer.any():
        return None
    keep = ~longer[rows]
    inside = np.flatnonzero(~keep)
    keep[inside[largest_per_row(rows[inside], cols[inside], scores[inside], n_rows, k)]] = True
    return np.flatnonzero(keep)


def _padded_order(
    scores: NDArray[np.floating],
    cols: NDArray[np.int64],
    flat: NDArray[np.int64],
    shape: tuple[int, int],
) -> NDArray[np.int64]:
    """Each row of a padded array (entries at positions ``flat``) ordered by score
    descending, then column, then position; the padding last.

    Float32 scores and their columns make one int64 key (the score's bits, ordered as the
    numbers, above the column's), so one stable sort of it replaces the two of a lexsort.
    """
    size = shape[0] * shape[1]
    col_bits = int(cols.max(initial=0)).bit_length()
    if scores.dtype == np.float32 and col_bits <= 30 and cols.min(initial=0) >= 0:
        # ``+ 0`` makes -0.0 the key of 0.0: equal numbers, equal keys.
        bits = (-scores + np.float32(0)).view(np.int32).astype(np.int64)
        ordered = np.where(bits < 0, bits ^ 0x7FFFFFFF, bits) + 2**31
        keys = np.full(size, np.iinfo(np.int64).max)
        keys[flat] = (ordered << col_bits) | cols
        return np.argsort(keys.reshape(shape), axis=1, kind="stable")
    # Padding sorts last: +inf after every negated score, then a column past every column.
    negated = np.full(size, np.inf)
    negated[flat] = -scores
    columns = np.full(size, np.iinfo(np.int64).max)
    columns[flat] = cols
    return np.lexsort((columns.reshape(shape), negated.reshape(shape)), axis=1)


def _lower_bounds(
    lengths: NDArray[np.int64], scores: NDArray[np.floating], k: int
) -> NDArray[np.float64]:
    """For each row (entries contiguous, in row order) longer than ``_BOUND_FACTOR * k``, a
    lower bound of its k-th largest score; -inf for the others.

    The row is cut into 2k consecutive runs: the k-th largest of their maxima is reached by
    at least k entries (one per run), so it is at most the k-th largest score, and typically
    about 1.4k entries reach it. One ``maximum.reduceat`` pass replaces copying every entry
    of the row into a padded array to partition it.
    """
    bounds = np.full(len(lengths), -np.inf)
    long_rows = np.flatnonzero(lengths > _BOUND_FACTOR * k)
    runs = 2 * k
    starts = (np.cumsum(lengths) - lengths)[long_rows]
    # Each row's run starts, then its end, so that no run reaches into the next rows.
    edges = starts[:, None] + (np.arange(runs + 1) * lengths[long_rows][:, None]) // runs
    edges = edges.ravel()
    maxima = np.empty(len(edges))
    inside = edges < len(scores)
    maxima[inside] = np.maximum.reduceat(scores, edges[inside])
    maxima = maxima.reshape(len(long_rows), runs + 1)[:, :runs]
    bounds[long_rows] = np.partition(maxima, runs - k, axis=1)[:, runs - k]
    return bounds


def _similar_lengths(
    lengths: NDArray[np.int64], members: NDArray[np.int64]
) -> Iterator[tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]]:
    """Groups of ``members`` (rows) whose ``lengths`` are within a factor of 2, as the rows of
    a padded array: for each group, the rows, and for each of their entries in order the
    padded row (``slot``) and column (``offsets``) it goes to."""
    bucket = np.log2(lengths[members]).astype(np.int64)
    for size in np.unique(bucket):
        group = members[bucket == size]
        group_lengths = lengths[group]
        offsets = np.arange(int(group_lengths.sum())) - np.repeat(
            np.cumsum(group_lengths) - group_lengths, group_lengths
        )
        yield group, np.repeat(np.arange(len(group)), group_lengths), offsets


def row_blocks(n_rows: int, n_columns: int) -> range:
    """Starts of row blocks whose dense size stays under ``BLOCK_ENTRIES``."""
    return range(0, n_rows, max(1, BLOCK_ENTRIES // max(1, n_columns)))


def pair_support(
    present: sp.csr_matrix, rows: NDArray[np.integer], cols: NDArray[np.integer]
) -> NDArray[np.int32]:
    """For each pair (rows[i], cols[i]) of items, the number of matrix rows containing both.

    Computed block by block as ``present.T[block] @ present`` so that memory stays bounded
    however many customers there are; each block's pairs are read from the block made dense
    (``BLOCK_ENTRIES`` at most), as indexing the sparse block pair by pair scans its rows.
    """
    support = np.zeros(len(rows), dtype=np.int32)
    if not len(rows):
        return support
    present = sp.csr_matrix(present)
    item_rows = present.T.tocsr()
    n_items = item_rows.shape[0]
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    starts = row_blocks(n_items, n_items)
    for start in starts:
        stop = start + starts.step
        lo, hi = np.searchsorted(sorted_rows, [start, stop])
        if lo == hi:
            continue
        product = (item_rows[start:stop] @ present).toarray()
        picked = order[lo:hi]
        support[picked] = product[rows[picked] - start, cols[picked]]
    return support
