"""EASE (Steck, WWW 2019): a closed-form item x item model, strong on small catalogs.

``B = -P / diag(P)`` with ``P = (X'X + l2 I)^-1``, zero diagonal. ``X`` is the matrix as
given: binary purchases, or purchases weighted by recency (``data.matrix.decayed``), which
makes recent baskets count more in the item-item weights. It needs a dense items x items
matrix (and its inverse), so it is only fitted up to ``max_items``; beyond that ``fit`` raises
``ModelSkippedError`` and training says so.

The inverse is taken by Cholesky (the regularised Gram matrix is symmetric positive
definite), about three times faster than a general inverse; ``ease_pairs`` takes a Gram
matrix computed once, so a search over ``l2`` does not recompute it.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from numpy.typing import NDArray

from ..errors import ModelSkippedError
from .neighbours import CountedPairs, NeighbourModel, Pairs, top_per_row


class EASE(NeighbourModel):
    """Embarrassingly shallow autoencoder, kept as its top-K weights per item.

    Parameters
    ----------
    l2 : regularisation added to the diagonal of the Gram matrix.
    scale_l2 : when true, ``l2`` is a multiple of the mean diagonal of the Gram matrix (the
        average item's weight), so one setting means the same on a small log and a large one,
        binary or time-decayed; the value added is kept in ``l2_``.
    signed : keep each item's ``neighbours`` strongest weights by magnitude, negative ones
        included, instead of the largest. EASE's negative weights say "customers who bought
        this do not buy that"; on logs of distinct tastes they carry much of its accuracy (on
        others the positive ones alone rank as well). Scores then sum signed weights.
    max_items : larger catalogs are skipped (a dense float64 items x items matrix: 8,000
        items take 512 MB, twice over while inverting).
    neighbours, min_support, min_pair_support : see ``NeighbourModel``.
    """

    def __init__(
        self,
        l2: float = 250.0,
        neighbours: int = 200,
        min_support: int = 1,
        min_pair_support: int = 1,
        max_items: int = 8000,
        scale_l2: bool = False,
        signed: bool = False,
    ) -> None:
        self.l2 = l2
        self.scale_l2 = scale_l2
        self.signed = signed
        self.neighbours = neighbours
        self.min_support = min_support
        self.min_pair_support = min_pair_support
        self.max_items = max_items

    def describe(self) -> str:
        return f"ease (l2={self.l2:g}{' x mean' if self.scale_l2 else ''}{', signed' if self.signed else ''})"

    def fit(
        self,
        user_items: sp.csr_matrix,
        pairs: Pairs | CountedPairs | None = None,
        count_support: bool = True,
        ranked: bool = True,
        gram: NDArray[np.floating] | None = None,
        counts: NDArray[np.floating] | None = None,
    ) -> EASE:
        """As ``NeighbourModel.fit``; ``gram`` (``gram_matrix`` of ``user_items``) and ``counts``
        (``gram_matrix`` of the binary matrix: rows holding both items) may be given when a
        search fits several models on one matrix, so they are computed once."""
        self._gram, self._counts = gram, counts
        try:
            super().fit(user_items, pairs, count_support, ranked)
        finally:
            del self._gram, self._counts
        return self

    def check_catalog(self, n_items: int) -> None:
        """Raise ``ModelSkippedError`` when the catalog is too large for dense items x items matrices."""
        if n_items > self.max_items:
            raise ModelSkippedError(
                f"EASE skipped: {n_items} items exceed max_items={self.max_items} "
                f"(a dense {n_items} x {n_items} matrix would need {n_items * n_items * 8 / 2**30:.1f} GiB)"
            )

    def _candidate_pairs(self, user_items: sp.csr_matrix, present: sp.csr_matrix) -> Pairs:
        self.check_catalog(present.shape[1])
        gram = getattr(self, "_gram", None)
        gram = gram_matrix(user_items) if gram is None else gram
        self.l2_ = absolute_l2(gram, self.l2, self.scale_l2)
        # The zero diagonal is among the largest weights of a row, never among the strongest.
        return ease_pairs(gram, self.l2_, self.neighbours + (0 if self.signed else 1), self.signed)

    def _known_support(
        self,
        user_items: sp.csr_matrix,
        rows: NDArray[np.int64],
        cols: NDArray[np.int64],
        scores: NDArray[np.float32],
        item_support: NDArray[np.int32],
    ) -> NDArray[np.int32] | None:
        """Rows holding both items, read off the binary Gram matrix (one sparse product)."""
        counts = getattr(self, "_counts", None)
        if counts is None:
            present = user_items.copy()
            present.data[:] = 1.0
            counts = gram_matrix(present)
        return np.rint(counts[rows, cols]).astype(np.int32)


def gram_matrix(user_items: sp.csr_matrix) -> NDArray[np.float32]:
    """``X'X`` as a dense float32 items x items array (the input of ``ease_pairs``)."""
    return np.asarray((user_items.T @ user_items).toarray(), dtype=np.float32)


def absolute_l2(gram: NDArray[np.floating], l2: float, scale: bool) -> float:
    """The value added to the diagonal: ``l2`` itself, or ``l2`` times the mean diagonal."""
    if not scale:
        return float(l2)
    mean_diagonal = float(np.trace(gram, dtype=np.float64)) / max(1, len(gram))
    return float(l2) * max(mean_diagonal, 1e-12)


def ease_weights(gram: NDArray[np.floating], l2: float) -> NDArray[np.float32]:
    """EASE's item x item weights ``B = -P / diag(P)``, ``P = (G + l2 I)^-1``, zero diagonal.

    Inverted in float32 by LAPACK's Cholesky routines (``potrf``/``potri``): half the work of
    a general inverse, and with ``l2`` on the diagonal the system is well conditioned (the
    weights agree with a float64 inverse to about 1e-7).
    """
    system = np.array(gram, dtype=np.float32, copy=True)
    system[np.diag_indices(len(system))] += l2
    factor, info = scipy.linalg.lapack.spotrf(system, lower=1, overwrite_a=1, clean=0)
    if info != 0:
        raise ValueError(
            f"EASE: the Gram matrix plus l2={l2:g} is not positive definite (LAPACK info {info})"
        )
    inverse, info = scipy.linalg.lapack.spotri(factor, lower=1, overwrite_c=1)
    if info != 0:
        raise ValueError(f"EASE: cannot invert the Gram matrix plus l2={l2:g} (LAPACK info {info})")
    inverse = np.tril(inverse) + np.tril(inverse, -1).T
    weights = -inverse / np.diag(inverse)
    np.fill_diagonal(weights, 0.0)
    return weights


def ease_pairs(gram: NDArray[np.floating], l2: float, k: int, signed: bool = False) -> Pairs:
    """The ``k`` largest EASE weights of each item (``signed``: the ``k`` largest in magnitude),
    from a Gram matrix (see ``gram_matrix``)."""
    weights = ease_weights(gram, l2)
    if not signed:
        return top_per_row(weights, 0, k)
    rows, cols, _ = top_per_row(np.abs(weights), 0, k)
    return rows, cols, weights[rows, cols]
