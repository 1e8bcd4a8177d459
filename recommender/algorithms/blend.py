"""The personal recommender the shop shows: item-to-item, ALS and trending, blended.

``blend_scores`` is the one formula, used per request by the service, in batches by the
export, and by evaluation and tuning, so what is measured is what is served. Each part is
scaled to its largest absolute value per row, so the weights mean the same whatever the
models' scales.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray


def blend_scores(
    item_scores: NDArray[np.floating] | None,
    als_scores: NDArray[np.floating] | None,
    trend: NDArray[np.floating] | None,
    als_weight: float,
    trend_weight: float,
    item_weight: float | None = None,
    scales: tuple[float, float] | None = None,
) -> NDArray[np.float64] | None:
    """``item_weight * item + als_weight * als + trend_weight * trend``, parts scaled to 1.

    ``item_weight`` defaults to ``1 - als_weight``; 0 with ``als_weight`` 0 is "trending
    alone". Arrays are (n_items,) for one shopper or (n_rows, n_items) for a batch; a missing
    part (None) is left out. Returns None when there is no personal evidence at all (or no
    personal part is weighted): the caller ranks by trending alone.

    ``scales`` (item, ALS) are the parts' largest absolute values when the arrays hold only
    some of the catalog's items (pruned scoring): the scores are then those the whole rows give.
    """
    total = None
    if item_weight is None:
        item_weight = 1.0 - als_weight
    for position, (part, weight) in enumerate(
        ((item_scores, item_weight), (als_scores, als_weight))
    ):
        if part is None or weight == 0:
            continue
        scaled = _scaled(part, weight, None if scales is None else scales[position])
        if total is None:
            total = scaled
        else:
            total += scaled
    if total is None:
        return None
    if trend is not None and trend_weight:
        total += trend_weight * np.asarray(trend, dtype=np.float64)
    return total


def blend_rows(
    item_rows: sp.csr_matrix | None,
    als_scores: NDArray[np.floating] | None,
    trend: NDArray[np.floating] | None,
    als_weight: float,
    trend_weight: float,
    item_weight: float | None = None,
) -> NDArray[np.float64] | None:
    """``blend_scores`` for a batch whose item-to-item part is sparse (customers x items, as
    ``history @ neighbour matrix`` gives it), equal to ``blend_scores(item_rows.toarray(), ...)``
    bit for bit: the same operations on every value, but the item part is scaled on its
    stored values and added where it is non-zero, so the dense rows are passed over about a
    third as often (the precomputed lists score every customer against every item).
    """
    if item_weight is None:
        item_weight = 1.0 - als_weight
    use_item = item_rows is not None and item_weight != 0
    use_als = als_scores is not None and als_weight != 0
    if not use_item and not use_als:
        return None
    if use_als:
        total = _scaled(als_scores, als_weight)  # type: ignore[arg-type]  # use_als: not None
    else:
        total = np.zeros(item_rows.shape, dtype=np.float64)  # type: ignore[union-attr]
    if use_item:
        rows = item_rows.tocsr()  # type: ignore[union-attr]
        lengths = np.diff(rows.indptr)
        values = np.asarray(rows.data, dtype=np.float64)
        # Each row's largest |value|; a row with fewer stored values than columns has zeros too.
        peak = np.zeros(rows.shape[0])
        stored = lengths > 0
        if stored.any():
            starts = rows.indptr[:-1][stored]
            peak[stored] = np.maximum(
                np.maximum.reduceat(values, starts), -np.minimum.reduceat(values, starts)
            )
        peak = np.where(lengths < rows.shape[1], np.maximum(peak, 0.0), peak)
        row_of = np.repeat(np.arange(rows.shape[0]), lengths)
        row_scale = peak[row_of]
        scaled = np.divide(values, np.where(row_scale <= 0, 1.0, row_scale))
        scaled[row_scale <= 0] = 0.0
        scaled *= item_weight
        # Through the flat view (``total`` is a new C-ordered array): one index per value
        # instead of a pair, about twice as fast; a row's columns are distinct, so each value
        # is added once, as before.
        total.reshape(-1)[row_of * rows.shape[1] + rows.indices] += scaled
    if trend is not None and trend_weight:
        total += trend_weight * np.asarray(trend, dtype=np.float64)
    return total


def _scaled(
    part: NDArray[np.floating], weight: float, scale: float | None = None
) -> NDArray[np.float64]:
    """``weight * part / scale`` in a new float64 array, ``scale`` each row's largest absolute
    value unless given; a part whose scale is 0 (all zeros, or no known scale) adds 0.

    The largest value is taken on the part as given (exact once in float64) and the division
    writes float64 directly: one pass each and no |x| array, as a batch of rows is large.
    """
    part = np.asarray(part)
    if scale is not None:
        return _scaled_by(part, weight, scale)
    peak = np.maximum(part.max(axis=-1, keepdims=True), -part.min(axis=-1, keepdims=True)).astype(
        np.float64
    )
    empty = peak <= 0
    scaled = np.empty(part.shape, dtype=np.float64)
    np.divide(part, np.where(empty, 1.0, peak), out=scaled)
    if empty.any():
        scaled[np.broadcast_to(empty, scaled.shape)] = 0.0
    scaled *= weight
    return scaled


def _scaled_by(part: NDArray[np.floating], weight: float, scale: float) -> NDArray[np.float64]:
    """``_scaled`` with one known scale (pruned scoring's few hundred candidates): the same
    float64 division and product on every value, by a float64 scalar instead of a one-value
    array and its mask, which cost a pruned answer's four parts about as much as the arithmetic."""
    scaled = np.empty(part.shape, dtype=np.float64)
    if scale <= 0:
        scaled.fill(0.0)
    else:  # a float64 scalar, not a Python float: float32 parts are divided in float64 as before
        np.divide(part, np.float64(scale), out=scaled)
    scaled *= weight
    return scaled
