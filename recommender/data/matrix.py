"""From cleaned purchases to the interaction matrices the models fit on.

Two views of the same log share one item axis: ``user_items`` (customers x items: who
bought what) and ``order_items`` (orders x items: what was bought together). Both are CSR
float32, as ``implicit`` expects.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from numpy.typing import NDArray

from .idmap import IdMap

logger = logging.getLogger(__name__)


@dataclass
class Interactions:
    """The matrices of one log and the id maps of their axes."""

    item_ids: IdMap
    user_ids: IdMap
    user_items: sp.csr_matrix
    order_items: sp.csr_matrix
    n_orders: int
    user_counts: sp.csr_matrix
    purchase_age: sp.csr_matrix
    # One entry per distinct (customer, item, purchase time): its cell of ``user_items`` (CSR
    # order) and its age in days before the log's last purchase; what the repeat model counts.
    purchase_cells: NDArray[np.int64] | None = None
    purchase_days: NDArray[np.float32] | None = None


def build_interactions(
    purchases: pd.DataFrame, weighting: str = "binary", orders: bool = True
) -> Interactions:
    """Build the interaction matrices from a cleaned purchase frame.

    Parameters
    ----------
    purchases : output of ``clean``; ``user_id`` may be NA (guest lines count for baskets only).
    weighting : value of a ``user_items`` cell: ``binary`` (1), ``count`` (number of
        purchase lines) or ``log`` (1 + log of that count).
    orders : build ``order_items``. False (for a log with customers) leaves it empty (0 rows,
        ``n_orders`` 0): for whoever reads only the customers' matrices, such as the
        evaluation's time folds, all held through its search, where the orders' matrix would
        be a fifth of each fold.

    Returns
    -------
    Interactions with ``user_items`` (weighted), ``user_counts`` (purchase lines per customer
    and item), ``purchase_age`` (rows x items, 1 + age in days of the latest purchase; rows are
    customers, or orders for a log without customers; see ``trending_weights``) and
    ``order_items`` (binary).

    Notes
    -----
    Orders are the ``order_id`` column; where a log has none, a customer's purchases with
    the same timestamp form one order.
    """
    item_codes, item_ids = _factorize_sorted(purchases["item_id"])
    n_items = len(item_ids)
    times = (
        purchases["timestamp"].to_numpy(dtype="datetime64[s]").view(np.int64)
        if "timestamp" in purchases and len(purchases)
        else None
    )

    known = purchases["user_id"].notna().to_numpy()
    everyone = bool(known.all())  # the usual case: no copies of the per-line arrays
    user_codes, user_ids = _factorize_sorted(
        purchases["user_id"] if everyone else purchases["user_id"][known]
    )
    user_cells = _cells(
        user_codes, item_codes if everyone else item_codes[known], (len(user_ids), n_items)
    )
    del user_codes
    assert user_cells.inverse is not None
    counts = user_cells.matrix(
        np.bincount(user_cells.inverse, minlength=user_cells.nnz).astype(np.float32)
    )
    user_items = _weight(counts, weighting)
    purchase_cells, purchase_days, latest = _distinct_purchases(times, known, user_cells, counts)
    user_cells.order = None  # not held through the rest: its per-line index is enough
    purchase_age = (
        user_cells.matrix(_latest_age(times, known, user_cells, latest)) if len(user_ids) else None
    )
    del user_cells, latest  # its per-line index goes before the orders' is built

    if orders or purchase_age is None:
        order_items, n_orders, order_age = _order_matrices(
            purchases, times, item_codes, n_items, purchase_age is None
        )
        purchase_age = order_age if purchase_age is None else purchase_age
    else:
        order_items, n_orders = sp.csr_matrix((0, n_items), dtype=np.float32), 0
    _log_shapes(user_items, order_items)
    return Interactions(
        item_ids,
        user_ids,
        user_items,
        order_items,
        n_orders,
        counts,
        purchase_age,
        purchase_cells,
        purchase_days,
    )


def _order_matrices(
    purchases: pd.DataFrame,
    times: NDArray[np.int64] | None,
    item_codes: NDArray[np.intp],
    n_items: int,
    with_ages: bool,
) -> tuple[sp.csr_matrix, int, sp.csr_matrix | None]:
    """``order_items``, the number of orders and, ``with_ages`` (a log without customers,
    whose ages are per order), the orders' ``purchase_age``."""
    order_codes, n_orders, has_order = _order_codes(purchases)
    # Only a log without customers needs each line's order (its ages are per order).
    order_cells = _cells(
        order_codes,
        item_codes if has_order.all() else item_codes[has_order],
        (n_orders, n_items),
        with_inverse=with_ages,
    )
    del order_codes
    order_items = order_cells.matrix(np.ones(order_cells.nnz, dtype=np.float32))
    ages = order_cells.matrix(_latest_age(times, has_order, order_cells)) if with_ages else None
    return order_items, n_orders, ages


def _log_shapes(user_items: sp.csr_matrix, order_items: sp.csr_matrix) -> None:
    logger.info(
        "interactions: %d customers x %d items (nnz %d), %d orders (nnz %d)",
        user_items.shape[0],
        user_items.shape[1],
        user_items.nnz,
        order_items.shape[0],
        order_items.nnz,
    )


@dataclass
class _Cells:
    """The distinct (row, item) cells of a list of lines, in CSR order, and each line's cell."""

    indptr: NDArray[np.integer]
    indices: NDArray[np.int32]
    inverse: NDArray[np.integer] | None  # None when not asked for
    shape: tuple[int, int]
    # The lines in cell order (a cell's lines in line order), with ``inverse``: the lines'
    # purchase times are then gathered already grouped by cell (``_distinct_purchases``).
    order: NDArray[np.integer] | None = None

    @property
    def nnz(self) -> int:
        return len(self.indices)

    def matrix(self, data: NDArray[np.float32]) -> sp.csr_matrix:
        return sp.csr_matrix((data, self.indices, self.indptr), shape=self.shape)


def _cells(
    row_codes: NDArray[np.integer],
    item_codes: NDArray[np.integer],
    shape: tuple[int, int],
    with_inverse: bool = True,
) -> _Cells:
    """One sort of one 64-bit key per line (row * n_items + item) gives the cells in CSR order
    and each line's cell, from which counts and latest purchases are reductions: no sparse
    matrix of lines is built and summed, and no multi-key sort of the log is needed.

    The line-to-cell index is int32 (``unique_inverse``): half the size of ``np.unique``'s,
    and it is kept for the later reductions, with the sort's order of the lines. Without
    ``with_inverse`` the keys are sorted in place and no per-line index is made at all.
    """
    key = row_codes.astype(np.int64)
    key *= shape[1]
    key += item_codes
    inverse: NDArray[np.integer] | None = None
    order: NDArray[np.integer] | None = None
    if with_inverse:
        ordered, order = sort_with_order(key)
        del key
        cells, inverse = _distinct_and_inverse(ordered, order)
        del ordered
    else:
        # Stable: a log's lines usually come order by order, so these keys arrive nearly
        # sorted, and merging runs beats a quicksort (at 20M lines, and no slower otherwise).
        key.sort(kind="stable")
        cells = _sorted_distinct(key)
        del key
    indices = (cells % shape[1]).astype(np.int32)
    rows = cells
    rows //= shape[1]  # in place: the cells are not needed any more
    del cells
    # int32 row pointers when they fit, as scipy makes them: mixed index dtypes make every
    # later sparse product convert the whole matrix to int64.
    indptr: NDArray[np.integer] = np.zeros(
        shape[0] + 1, dtype=np.int32 if len(indices) < np.iinfo(np.int32).max else np.int64
    )
    np.cumsum(np.bincount(rows, minlength=shape[0]), out=indptr[1:])
    return _Cells(indptr, indices, inverse, shape, order)


def _sorted_distinct(ordered: NDArray[np.int64]) -> NDArray[np.int64]:
    """The distinct values of a sorted array."""
    starts = np.empty(len(ordered), dtype=bool)
    starts[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    return ordered[starts]


def unique_inverse(keys: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.integer]]:
    """``np.unique(keys, return_inverse=True)`` in less memory and time: the distinct keys,
    sorted, and each key's position among them, int32 when the keys fit.

    ``np.unique`` holds five 8-byte arrays per key at its peak; this holds three (the keys,
    the sorted keys and the order), and the inverse is half the size. ``keys`` is left as it
    was.
    """
    ordered, order = sort_with_order(keys)
    return _distinct_and_inverse(ordered, order)


# Lines packed with their key per sort of one 64-bit word: a key may span this many bits
# beside the line number.
_WORD_BITS = 63


def sort_with_order(keys: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.integer]]:
    """The keys sorted, and the positions that sort them (equal keys in position order; int32
    positions when they fit).

    Where the key's range and the position fit one 63-bit word together (a log's cells,
    (item, name) pairs), each key is shifted up and its position put in the low bits, and
    the words are sorted by value: numpy sorts 64-bit integers several times faster than it
    argsorts them (a 20M-line log: 1.5 s against 3.3 to 8.6 s), and the same sort gives both
    the sorted keys and the order. Otherwise, a stable ``argsort``.
    """
    n = len(keys)
    index_type = np.int32 if n < np.iinfo(np.int32).max else np.int64
    if not n:
        return keys.copy(), np.empty(0, dtype=index_type)
    low, high = int(keys.min()), int(keys.max())
    bits = max(1, (n - 1).bit_length())
    if (high - low).bit_length() + bits > _WORD_BITS:
        order = np.argsort(keys, kind="stable")
        return keys[order], order.astype(index_type)
    words = keys - low
    words <<= bits
    block = 1 << 22  # the positions added a block at a time: no 8-byte array of them whole
    for start in range(0, n, block):
        words[start : start + block] |= np.arange(start, min(start + block, n), dtype=np.int64)
    words.sort()
    ordered = words >> bits
    ordered += low
    words &= (1 << bits) - 1
    order = words.astype(index_type)
    return ordered, order


def _distinct_and_inverse(
    ordered: NDArray[np.int64], order: NDArray[np.integer]
) -> tuple[NDArray[np.int64], NDArray[np.integer]]:
    """The distinct values of sorted keys, and each original key's position among them
    (``order``: the positions that sorted the keys)."""
    starts = np.empty(len(ordered), dtype=bool)
    starts[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    distinct = ordered[starts]
    index_type = np.int32 if len(starts) < np.iinfo(np.int32).max else np.int64
    inverse: NDArray[np.integer] = np.empty(len(starts), dtype=index_type)
    inverse[order] = np.cumsum(starts, dtype=index_type) - 1
    return distinct, inverse


def _latest_age(
    times: NDArray[np.int64] | None,
    lines: NDArray[np.bool_],
    cells: _Cells,
    latest: NDArray[np.int64] | None = None,
) -> NDArray[np.float32]:
    """Per cell, 1 + the age in days of its latest purchase, relative to the log's last one.

    Stored plus one so that a purchase on the last day is not an explicit zero (which sparse
    matrices drop); without timestamps every age is 0. ``latest``: each cell's latest time
    when the caller has it (``_distinct_purchases``), else found here from the lines.
    """
    if times is None:
        return np.ones(cells.nnz, dtype=np.float32)
    chosen = times if lines.all() else times[lines]
    if latest is None:
        assert cells.inverse is not None
        # The latest time per cell, then its age: the same float64 arithmetic as taking the
        # smallest age per line, on one value per cell instead of one per line.
        latest = np.full(cells.nnz, np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(latest, cells.inverse, chosen)
    ages = (chosen.max(initial=0) - latest) / 86400.0
    ages += 1.0
    return ages.astype(np.float32)


def _distinct_purchases(
    times: NDArray[np.int64] | None, lines: NDArray[np.bool_], cells: _Cells, counts: sp.csr_matrix
) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.int64] | None]:
    """Each cell's distinct purchase times (an order is one purchase time), as (cell, age in
    days before the log's last purchase) pairs: one sort of one 64-bit key per line. Without
    timestamps each line is a purchase, all of age 0.

    Also each cell's latest purchase time (the last of its distinct times), which
    ``_latest_age`` would otherwise find with another pass over the lines; None when a log
    spans more than the 136 years the key holds (or has no times).
    """
    if times is None:
        cell = np.repeat(np.arange(cells.nnz, dtype=np.int64), counts.data.astype(np.int64))
        return cell, np.zeros(len(cell), dtype=np.float32), None
    chosen = times if lines.all() else times[lines]
    if not len(chosen):
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32), None
    assert cells.inverse is not None
    start, stop = int(chosen.min()), int(chosen.max())
    # Cell in the high bits, seconds since the log's first purchase in the low 32 (136 years),
    # built and sorted in place: one 8-byte array per line. Built in the cells' order of the
    # lines when there is one: then only each cell's few lines can be out of time order, and
    # a stable sort (runs merged, not a quicksort) finishes it in about one pass.
    order = cells.order
    if order is not None:
        # The cell of each line, in cell order (ascending).
        keys = cells.inverse[order].astype(np.int64)
    else:
        keys = cells.inverse.astype(np.int64)
    keys <<= 32
    block = 1 << 22  # the lines' times gathered a block at a time: no second per-line array
    for begin in range(0, len(keys), block):
        part = slice(begin, begin + block)
        seconds = chosen[order[part]] if order is not None else chosen[part]
        if stop - start <= np.iinfo(np.uint32).max:
            keys[part] += seconds - start
        else:
            keys[part] |= np.minimum(seconds - start, np.iinfo(np.uint32).max)
    del chosen
    keys.sort(kind="stable" if order is not None else "quicksort")
    keys = _sorted_distinct(keys)
    cell = keys >> 32
    seconds = keys
    seconds &= 0xFFFFFFFF
    seconds += start
    del keys
    latest = None
    if stop - start <= np.iinfo(np.uint32).max:
        # Sorted by cell, then time: a cell's latest time is its last entry.
        last = np.append(cell[1:] != cell[:-1], True)
        latest = seconds[last]
    np.subtract(stop, seconds, out=seconds)
    ages = (seconds / 86400.0).astype(np.float32)
    return cell, ages, latest


def item_id_map(purchases: pd.DataFrame) -> IdMap:
    """The item axis ``build_interactions`` gives ``purchases`` (its ``item_ids``), without
    the matrices: what the catalog is aligned with, so that it can be built (and the log's
    prices and names let go) before the matrices are."""
    return _factorize_sorted(purchases["item_id"])[1]


def _factorize_sorted(values: pd.Series) -> tuple[NDArray[np.intp], IdMap]:
    """Codes of the values and an IdMap of the distinct values in string order.

    String order (not a categorical's category order) so that the IdMap can look ids up by
    binary search; the sort is over distinct values only (a categorical's used categories).
    """
    if isinstance(values.dtype, pd.CategoricalDtype):
        codes = values.cat.codes.to_numpy()
        used = np.flatnonzero(np.bincount(codes[codes >= 0], minlength=len(values.cat.categories)))
        text = np.asarray(np.asarray(values.cat.categories[used]).astype(str), dtype=np.str_)
        order = np.argsort(text, kind="stable")
        rank = np.full(len(values.cat.categories), -1, dtype=np.int32)
        rank[used[order]] = np.arange(len(order), dtype=np.int32)
        return rank[codes], IdMap(text[order])
    codes, uniques = pd.factorize(values)
    text = np.asarray(np.asarray(uniques).astype(str), dtype=np.str_)
    order = np.argsort(text, kind="stable")
    rank = np.empty(len(order), dtype=np.intp)
    rank[order] = np.arange(len(order))
    return rank[codes], IdMap(text[order])


def last_purchase_seconds(purchases: pd.DataFrame) -> float | None:
    """The log's latest purchase time in seconds since the epoch (None without timestamps):
    the moment the repeat model's ages count back from."""
    if "timestamp" not in purchases or not len(purchases):
        return None
    latest = purchases["timestamp"].max()
    return None if pd.isna(latest) else float(pd.Timestamp(latest).timestamp())


def binarize(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """A copy with every stored value set to 1 (who bought what, not how much)."""
    matrix = matrix.copy()
    matrix.data[:] = 1.0
    return matrix


def cap_history(
    user_items: sp.csr_matrix, purchase_age: sp.csr_matrix, max_items: int
) -> sp.csr_matrix:
    """Each row cut to its ``max_items`` most recently bought items (0 keeps everything).

    Large recommenders bound a customer's history before counting item pairs: pairs grow with
    the square of a history, so one buyer of 2,000 items would otherwise cost as much as
    thousands of ordinary customers, and say little about any one pair. Recency comes from
    ``purchase_age`` (same cells as ``user_items``); equal ages keep the lower item index.
    """
    lengths = np.diff(user_items.indptr)
    if max_items <= 0 or lengths.max(initial=0) <= max_items:
        return user_items
    items, ages = _sorted(user_items), _sorted(purchase_age.tocsr())
    if not (
        np.array_equal(ages.indptr, items.indptr) and np.array_equal(ages.indices, items.indices)
    ):
        raise ValueError("purchase_age must have the cells of user_items")
    # Only the cells of the few customers over the cap are sorted by recency.
    long_rows = np.flatnonzero(lengths > max_items)
    starts, stops = items.indptr[long_rows], items.indptr[long_rows + 1]
    cells = np.concatenate([np.arange(start, stop) for start, stop in zip(starts, stops)])
    rows = np.repeat(long_rows, lengths[long_rows])
    order = cells[np.lexsort((items.indices[cells], ages.data[cells], rows))]
    rank = np.arange(len(order)) - np.repeat(
        np.cumsum(lengths[long_rows]) - lengths[long_rows], lengths[long_rows]
    )
    keep = np.ones(items.nnz, dtype=bool)
    keep[cells] = False
    keep[order[rank < max_items]] = True
    # The kept cells stay in CSR order, so the rows' new lengths give the row pointers (no
    # per-cell row numbers, no conversion through COO).
    kept_lengths = lengths.copy()
    kept_lengths[long_rows] = max_items
    indptr = np.zeros(len(lengths) + 1, dtype=items.indptr.dtype)
    np.cumsum(kept_lengths, out=indptr[1:])
    capped = sp.csr_matrix(
        (items.data[keep], items.indices[keep], indptr), shape=items.shape, copy=False
    )
    logger.info(
        "history cap %d: %d of %d customers cut, %d of %d cells kept",
        max_items,
        int((lengths > max_items).sum()),
        items.shape[0],
        capped.nnz,
        items.nnz,
    )
    return capped


def _sorted(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """``matrix`` itself when its indices are sorted (as ``build_interactions`` makes them),
    else a copy with sorted indices: the caller's matrix is never changed."""
    if matrix.has_sorted_indices:
        return matrix
    matrix = matrix.copy()
    matrix.sort_indices()
    return matrix


def trending_weights(purchase_age: sp.csr_matrix, half_life_days: float) -> sp.csr_matrix:
    """``0.5 ** (age / half_life)`` of each (row, item)'s latest purchase (see ``purchase_age``)."""
    weights = purchase_age.copy()
    weights.data = np.power(0.5, (weights.data - 1.0) / half_life_days).astype(np.float32)
    return weights


def _weight(counts: sp.csr_matrix, weighting: str) -> sp.csr_matrix:
    weighted = counts.astype(np.float32)
    if weighting == "binary":
        weighted.data[:] = 1.0
    elif weighting == "log":
        weighted.data = (1.0 + np.log(weighted.data)).astype(np.float32)
    return weighted


def _order_codes(purchases: pd.DataFrame) -> tuple[NDArray[np.integer], int, NDArray[np.bool_]]:
    """Each line's order as 0..n_orders-1 in the order orders first appear (``pd.factorize``
    of ``order_keys``), for the lines that have one, with the count and which lines those are.

    An ``order_id`` categorical is numbered from its integer codes (no per-line hash table, int32
    codes): the first line of each category ranks the categories.
    """
    orders = order_keys(purchases)
    if not isinstance(orders.dtype, pd.CategoricalDtype):
        has_order = orders.notna().to_numpy()
        codes, uniques = pd.factorize(orders if has_order.all() else orders[has_order])
        return codes, len(uniques), has_order
    codes = orders.cat.codes.to_numpy()
    has_order = codes >= 0
    every = bool(has_order.all())
    present = codes if every else codes[has_order]
    first = np.full(len(orders.cat.categories), len(present), dtype=np.int64)
    block = 1 << 22  # line numbers made a block at a time, not one 8-byte array per line
    for begin in range(0, len(present), block):
        piece = present[begin : begin + block]
        np.minimum.at(first, piece, np.arange(begin, begin + len(piece), dtype=np.int64))
    used = np.flatnonzero(first < len(present))
    rank = np.full(len(first), -1, dtype=np.int32)
    rank[used[np.argsort(first[used], kind="stable")]] = np.arange(len(used), dtype=np.int32)
    return rank[present], len(used), has_order


def order_keys(purchases: pd.DataFrame) -> pd.Series:
    """The order of each line: ``order_id``, or (a log without one) the customer and purchase time."""
    orders = purchases["order_id"]
    if orders.notna().any() or "timestamp" not in purchases:
        return orders
    return purchases["user_id"].astype("string") + "|" + purchases["timestamp"].astype("string")


def decayed(purchase_age: sp.csr_matrix, days: float) -> sp.csr_matrix:
    """Who bought what, each cell weighted ``exp(-age / days)`` by the age of its latest purchase
    (``days`` 0: no decay, every cell 1).

    Purchases a customer made long ago say less about what they want now, and recent baskets
    say more about which items go together now; the evaluation chooses ``days`` (or none).
    """
    weights = purchase_age.tocsr(copy=True)
    weights.sort_indices()
    if days > 0:
        weights.data = np.exp(-(weights.data - 1.0) / days).astype(np.float32)
    else:
        weights.data = np.ones(weights.nnz, dtype=np.float32)
    return weights
