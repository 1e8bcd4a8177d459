"""The estimator interface every model follows, and the top-n selection they share.

As in scikit-learn: hyperparameters are stored by ``__init__`` unchanged, ``fit`` returns
``self`` and sets attributes ending in ``_``. As in ``implicit``: queries take internal
indices and return ``(ids, scores)`` arrays sorted by descending score, never containing the
query item. A model hands its learned state out as named arrays (``to_arrays``) and is
rebuilt from them (``from_arrays``); it never reads or writes a file itself.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import Any, TypeVar

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from ..errors import NotFittedError

ModelT = TypeVar("ModelT", bound="Recommender")
Ranking = tuple[NDArray[np.int64], NDArray[np.float32]]


class Recommender(ABC):
    """Base class: parameters in the constructor, learned state in ``*_`` attributes."""

    @abstractmethod
    def fit(self: ModelT, user_items: sp.csr_matrix) -> ModelT:
        """Learn from a rows x items CSR matrix (rows are customers or orders); return self."""

    @abstractmethod
    def similar_items(self, item_idx: int, n: int = 10) -> Ranking:
        """Items most related to ``item_idx``, best first, without ``item_idx`` itself."""

    @abstractmethod
    def recommend(
        self, user_idx: int, user_row: sp.csr_matrix, n: int = 10, exclude_seen: bool = True
    ) -> Ranking:
        """Items for one row (``user_row``: 1 x items), excluding its items when ``exclude_seen``."""

    @abstractmethod
    def to_arrays(self) -> dict[str, NDArray[Any]]:
        """The learned state as named numpy arrays (no objects), for ``artifacts`` to save."""

    @classmethod
    def from_arrays(cls: type[ModelT], arrays: dict[str, NDArray[Any]], **params: Any) -> ModelT:
        """Rebuild a fitted model from ``to_arrays`` output (arrays may be memory-mapped)."""
        model = cls(**params)
        for name, value in arrays.items():
            setattr(model, name + "_", value)
        model._check_fitted()
        return model

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters by name, as scikit-learn's ``get_params``."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def is_fitted(self) -> bool:
        """Whether ``fit`` (or ``from_arrays``) has set learned attributes."""
        return any(name.endswith("_") and not name.startswith("_") for name in vars(self))

    def _check_fitted(self) -> None:
        if not self.is_fitted():
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit first")


def top_n(
    scores: NDArray[np.floating],
    n: int,
    exclude: NDArray[np.integer] | None = None,
    positive_only: bool = True,
) -> Ranking:
    """Indices of the ``n`` highest finite scores, best first, ties broken by lower index.

    A partial sort (``argpartition``) keeps this O(items) rather than O(items log items).
    Excluded indices and -inf scores are never returned, nor (with ``positive_only``, for
    similarity sums where 0 means "no evidence") scores of 0 or less.
    """
    # float64 stays float64: rounding to float32 would make ties the batch paths do not see.
    scores = np.array(
        scores,
        dtype=np.float64 if np.asarray(scores).dtype == np.float64 else np.float32,
        copy=True,
    )
    if exclude is not None and len(exclude):
        scores[np.asarray(exclude, dtype=np.int64)] = -np.inf
    candidates = (
        np.flatnonzero(scores > 0) if positive_only else np.flatnonzero(np.isfinite(scores))
    )
    if len(candidates) > n:
        # The n-th largest value itself (np.partition: no index array, a gather and min less
        # than argpartition's, a few microseconds of a request's ranking).
        values = scores[candidates]
        threshold = np.partition(values, len(values) - n)[len(values) - n]
        candidates = candidates[values >= threshold]
    order = np.lexsort((candidates, -scores[candidates]))[:n]
    best = candidates[order]
    return best.astype(np.int64), scores[best]


def no_ranking() -> Ranking:
    """The answer for an item index outside the catalog: nothing (never numpy's wrap-around)."""
    return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)


# ``top_n_rows`` bounds each row's n-th largest score from below by the maxima of this many
# interleaved column groups (at least 4n): on wide rows few scores reach the bound, so only
# they are sorted, instead of partitioning every score of the block.
BOUND_GROUPS = 1024
# A row with more candidates than this (or 4n; many scores tied at its bound: a sparse part with
# few non-zero values) is ranked by the partition of all its scores, cheaper than sorting
# them.
CANDIDATE_LIMIT = 2048


def top_n_rows(scores: NDArray[np.floating], n: int) -> NDArray[np.int64]:
    """``top_n`` for every row of a dense score matrix: (rows, n) indices, best first, ties
    broken by lower index (at the cut too), so that a batch (evaluation, the export) ranks
    exactly as one request does. -inf scores are returned last only when a row has fewer than
    ``n`` finite ones (callers mask them).

    The result is the first n columns of each row in the order (score descending, column
    ascending). Ranking every score is the cost of an evaluation on a wide catalog, so rows
    are cut first: the n-th largest of the maxima of g >= n disjoint column groups is a lower
    bound of the row's n-th largest score (n distinct columns reach it), so the row's n best
    are among the columns at or above it, a few times n on real scores, and only those are
    sorted. Rows with too many (ties at the bound) are ranked by a partition of the row.
    """
    scores = np.asarray(scores)
    n_rows, columns = scores.shape
    n = min(n, columns)
    if n == 0:
        return np.empty((n_rows, 0), dtype=np.int64)
    groups = max(BOUND_GROUPS, 4 * n)
    if columns < 2 * groups or n_rows == 0:
        return _top_n_rows_partition(scores, n)
    # Group j holds columns j, j + g, j + 2g, ... (interleaved: popular items bunched at low
    # indices still fall in different groups); columns past the last whole turn are left out
    # of the bound, which stays a bound, but not out of the candidates.
    span = columns // groups
    maxima = scores[:, : span * groups].reshape(n_rows, span, groups).max(axis=1)
    bound = np.partition(maxima, groups - n, axis=1)[:, groups - n : groups - n + 1]
    flat = np.flatnonzero(scores >= bound)
    rows = flat // columns
    cols = flat - rows * columns
    counts = np.bincount(rows, minlength=n_rows)
    best = np.empty((n_rows, n), dtype=np.int64)
    crowded = counts > max(CANDIDATE_LIMIT, 4 * n)
    if crowded.any():
        best[crowded] = _top_n_rows_partition(scores[crowded], n)
        kept = ~crowded[rows]
        rows, cols = rows[kept], cols[kept]
        counts = counts[~crowded]
    order = np.lexsort((cols, -scores[rows, cols], rows))
    starts = np.cumsum(counts) - counts
    best[~crowded] = cols[order[starts[:, None] + np.arange(n)]]
    return best


def _top_n_rows_partition(scores: NDArray[np.floating], n: int) -> NDArray[np.int64]:
    """``top_n_rows`` of rows too narrow for the bound to pay, or with too many scores tied at
    it: each row's n-th largest score by a partition of all of them, then the columns above it
    and the lowest ones at it."""
    columns = scores.shape[1]
    threshold = np.partition(scores, columns - n, axis=1)[:, columns - n : columns - n + 1]
    above = scores > threshold
    at = scores == threshold
    places = n - above.sum(axis=1, keepdims=True)
    chosen = above | at
    # Of the items tied at the cut, the lowest indices fill the places left (rows with more
    # tied items than places only: counting along a row is a pass of its own).
    crowded = np.flatnonzero(at.sum(axis=1, keepdims=True) > places)
    if len(crowded):
        chosen[crowded] = above[crowded] | (
            at[crowded] & (np.cumsum(at[crowded], axis=1, dtype=np.int32) <= places[crowded])
        )
    best = np.flatnonzero(chosen).reshape(len(scores), n) % columns
    best_scores = np.take_along_axis(scores, best, axis=1)
    order = np.lexsort((best, -best_scores), axis=1)
    return np.take_along_axis(best, order, axis=1).astype(np.int64)


def check_csr(matrix: sp.spmatrix, name: str = "user_items") -> sp.csr_matrix:
    """Models take CSR float32 and say so when given anything else (as ``implicit`` does)."""
    if not sp.issparse(matrix) or matrix.format != "csr":
        raise ValueError(f"{name} needs to be a CSR sparse matrix")
    return matrix.astype(np.float32) if matrix.dtype != np.float32 else matrix
