"""Per-request loops compiled by numba, where numpy's per-call cost is the cost.

A personal answer sums the item-to-item rows of a shopper's items per item reached, blends
those neighbours' parts and finds the bound of the pruned answer, then matches the dozen
chosen items against the history for their reasons: a few thousand entries each time. In
numpy that is a dozen calls of 2-30 µs each (gathers, a sort, a binary search, a lexsort),
most of it the calls' own overhead, not the work; one compiled pass over the same entries
takes a few microseconds. The loops read the matrices' arrays as they are (memory-mapped),
allocate only their small answers, and give exactly the numpy version's results: the same
float64 operations in the same order, the same tie rule.

Compiled once per process and cached on disk (``cache=True``); the service compiles them at
model load (``Ranker.warm_up``), so no request waits for the compiler.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit
from numpy.typing import NDArray


@njit(cache=True, nogil=True)
def _entries(indptr: NDArray[np.integer], rows: NDArray[np.int64]) -> int:
    """How many stored entries ``rows`` of a CSR matrix hold together."""
    total = 0
    for row in rows:
        total += indptr[row + 1] - indptr[row]
    return total


def _best_owners(
    indptr: NDArray[np.integer],
    indices: NDArray[np.integer],
    data: NDArray[np.floating],
    in_indptr: NDArray[np.integer],
    in_indices: NDArray[np.integer],
    in_data: NDArray[np.floating],
    history: NDArray[np.int64],
    weights: NDArray[np.float64],
    columns: NDArray[np.int64],
    places: NDArray[np.int64],
) -> NDArray[np.int64]:
    """For each of ``columns``, the position in ``history`` whose item-to-item entry towards
    it, times the position's weight, is largest and positive (ties: the earliest position);
    -1 where none is.

    ``indptr, indices, data``: the item-to-item matrix (CSR, row = source item); ``in_*``: its
    transpose (row = target item), or empty ``in_indptr`` when there is none. The shorter of
    the history's rows and the columns' entries is walked; a history that repeats an item
    (each occurrence weighs on its own) is walked by rows. ``places``: a catalog-long scratch
    array of -1, left as it was found.
    """
    k = len(columns)
    owner = np.full(k, -1, dtype=np.int64)
    best = np.zeros(k, dtype=np.float64)
    if len(in_indptr) and _entries(in_indptr, columns) < _entries(indptr, history):
        repeated = False
        for p in range(len(history)):
            if places[history[p]] >= 0:
                repeated = True
            places[history[p]] = p
        if not repeated:
            for j in range(k):
                for entry in range(in_indptr[columns[j]], in_indptr[columns[j] + 1]):
                    p = places[in_indices[entry]]
                    if p < 0:
                        continue
                    value = in_data[entry] * weights[p]
                    if value > 0 and (
                        owner[j] < 0 or value > best[j] or (value == best[j] and p < owner[j])
                    ):
                        owner[j], best[j] = p, value
        for p in range(len(history)):
            places[history[p]] = -1
        if not repeated:
            return owner
    for j in range(k):
        places[columns[j]] = j
    for p in range(len(history)):
        item = history[p]
        for entry in range(indptr[item], indptr[item + 1]):
            j = places[indices[entry]]
            if j < 0:
                continue
            value = data[entry] * weights[p]
            if value > 0 and (owner[j] < 0 or value > best[j]):
                owner[j], best[j] = p, value
    for j in range(k):  # a repeated chosen item: every occurrence gets the last one's owner
        owner[j] = owner[places[columns[j]]]
    for j in range(k):
        places[columns[j]] = -1
    return owner


def _neighbour_sums(
    indptr: NDArray[np.integer],
    indices: NDArray[np.integer],
    data: NDArray[np.floating],
    history: NDArray[np.int64],
    weights: NDArray[np.float64],
    places: NDArray[np.int64],
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """The items the history's rows of the item-to-item matrix reach, ascending, and for each
    the sum of its entries times their row's weight: ``np.bincount`` over the gathered
    entries, added in the same order (history position, then the row's), so bit for bit the
    same sums. ``places``: a catalog-long scratch array of -1, left as it was found."""
    total = _entries(indptr, history)
    reached = np.empty(total, dtype=np.int64)
    sums = np.zeros(total, dtype=np.float64)
    count = 0
    for p in range(len(history)):
        item = history[p]
        for entry in range(indptr[item], indptr[item + 1]):
            column = indices[entry]
            slot = places[column]
            if slot < 0:
                slot = places[column] = count
                reached[count] = column
                count += 1
            sums[slot] += data[entry] * weights[p]
    order = np.argsort(reached[:count])
    items = reached[:count][order]
    for slot in range(count):
        places[reached[slot]] = -1
    return items, sums[:count][order]


def _merged_neighbour_sums(
    indptr: NDArray[np.integer],
    indices: NDArray[np.integer],
    data: NDArray[np.floating],
    history: NDArray[np.int64],
    weights: NDArray[np.float64],
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """``_neighbour_sums`` over a matrix whose rows list their columns in ascending order:
    the history's rows are merged (pairwise, in rounds, like a merge sort that starts from
    sorted runs) instead of placed and then sorted, the sort having been most of the loop's
    time (8 of 12 µs for a page view's four rows of 200). The merge is stable, so an item's
    entries stay in history position order, then the row's, and are added in that order, as
    there: the same sums, bit for bit."""
    rows = len(history)
    total = _entries(indptr, history)
    columns = np.empty(total, dtype=np.int64)
    values = np.empty(total, dtype=np.float64)
    bounds = np.empty(rows + 1, dtype=np.int64)
    filled = 0
    for p in range(rows):
        bounds[p] = filled
        for entry in range(indptr[history[p]], indptr[history[p] + 1]):
            columns[filled] = indices[entry]
            values[filled] = data[entry] * weights[p]
            filled += 1
    bounds[rows] = filled
    spare_columns = np.empty(total, dtype=np.int64)
    spare_values = np.empty(total, dtype=np.float64)
    runs = rows
    while runs > 1:
        for run in range(0, runs, 2):
            low, middle = bounds[run], bounds[run + 1]
            high = bounds[run + 2] if run + 1 < runs else middle
            left, right, out = low, middle, low
            while left < middle and right < high:
                if columns[right] < columns[left]:  # ties: the left run (earlier rows) first
                    spare_columns[out], spare_values[out] = columns[right], values[right]
                    right += 1
                else:
                    spare_columns[out], spare_values[out] = columns[left], values[left]
                    left += 1
                out += 1
            for rest in range(left, middle):
                spare_columns[out], spare_values[out] = columns[rest], values[rest]
                out += 1
            for rest in range(right, high):
                spare_columns[out], spare_values[out] = columns[rest], values[rest]
                out += 1
            bounds[run // 2] = low
        bounds[(runs + 1) // 2] = filled
        runs = (runs + 1) // 2
        columns, spare_columns = spare_columns, columns
        values, spare_values = spare_values, values
    items = np.empty(total, dtype=np.int64)
    sums = np.empty(total, dtype=np.float64)
    count = -1
    for position in range(total):
        if count < 0 or columns[position] != items[count]:
            count += 1
            items[count] = columns[position]
            sums[count] = 0.0
        sums[count] += values[position]
    return items[: count + 1], sums[: count + 1]


def _neighbour_blend(
    neighbours: NDArray[np.int64],
    knn: NDArray[np.float64],
    neighbour_als: NDArray[np.float32],
    trend: NDArray[np.float64],
    allowed: NDArray[np.bool_],
    item_weight: float,
    als_weight: float,
    trend_weight: float,
    als_scale: float,
    depth: int,
) -> tuple[NDArray[np.float64], float]:
    """The neighbours' blended scores and the ``depth``-th best allowed one (NaN where fewer
    than ``depth`` are allowed, or the item-to-item part is all zeros).

    ``algorithms.blend.blend_scores`` with known scales, item by item: the item-to-item part
    over its largest absolute value, times its weight, plus the ALS part (``neighbour_als``,
    empty for none) over ``als_scale`` times its weight, plus the weighted trend; the same
    float64 operations in the same order as numpy's, so the same bits as the whole catalog's
    blend. One pass instead of a dozen numpy calls (the parts, the mask, the partition)."""
    count = len(neighbours)
    scores = np.empty(count, dtype=np.float64)
    knn_scale = 0.0
    for p in range(count):
        knn_scale = max(knn_scale, abs(knn[p]))
    if knn_scale == 0:
        return scores, np.nan
    kept = np.empty(count, dtype=np.float64)
    allowed_count = 0
    for p in range(count):
        score = knn[p] / knn_scale * item_weight
        if len(neighbour_als):
            score += neighbour_als[p] / als_scale * als_weight if als_scale > 0 else 0.0
        if trend_weight != 0:
            score += trend_weight * trend[neighbours[p]]
        scores[p] = score
        if allowed[neighbours[p]]:
            kept[allowed_count] = score
            allowed_count += 1
    if allowed_count < depth:
        return scores, np.nan
    cut = allowed_count - depth
    return scores, np.partition(kept[:allowed_count], cut)[cut]


best_owners: Callable[..., NDArray[np.int64]] = njit(cache=True, nogil=True)(_best_owners)
neighbour_sums: Callable[..., tuple[NDArray[np.int64], NDArray[np.float64]]] = njit(
    cache=True, nogil=True
)(_neighbour_sums)
neighbour_blend: Callable[..., tuple[NDArray[np.float64], float]] = njit(cache=True, nogil=True)(
    _neighbour_blend
)
merged_neighbour_sums: Callable[..., tuple[NDArray[np.int64], NDArray[np.float64]]] = njit(
    cache=True, nogil=True
)(_merged_neighbour_sums)
