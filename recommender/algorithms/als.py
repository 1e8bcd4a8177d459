"""Matrix factorisation for implicit feedback (Hu, Koren and Volinsky 2008) over ``implicit``'s ALS.

``implicit`` fits the factors (CPU unless ``use_gpu``); recommending and folding in a new
shopper are plain numpy (one matrix-vector product, one small solve), so the server needs
neither ``implicit`` nor a GPU to answer.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.linalg.lapack import dgesv

from ..config import CONFIDENCES
from .base import Ranking, Recommender, check_csr, no_ranking, top_n
from .fold_in import fold_in_few

logger = logging.getLogger(__name__)


class ALS(Recommender):
    """Implicit-feedback ALS.

    Parameters
    ----------
    factors : latent dimensions.
    regularization : L2 penalty on the factors.
    alpha : confidence scale; a cell with weight w counts with confidence ``alpha * w``.
    iterations : ALS sweeps.
    confidence : how purchase counts become weights before ``alpha``: ``binary`` (1),
        ``log`` (1 + log count) or ``bm25`` (BM25 weighting of the customers x items matrix).
    random_state : seed of the initial factors (the same data and seed give the same model).
    num_threads : threads for ``implicit`` (0 = all cores).
    use_gpu : fit with ``implicit``'s CUDA ALS (needs a GPU build of implicit).

    Attributes
    ----------
    user_factors_ : float32 (n_users, factors)
    item_factors_ : float32 (n_items, factors)
    """

    # Y'Y, Y'Y + reg I and its inverse, of the item factors, for fold-ins (``gram``).
    _gram: NDArray[np.float64] | None = None
    _regularized_gram: NDArray[np.float64] | None = None
    _gram_inverse: NDArray[np.float64] | None = None

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.05,
        alpha: float = 1.0,
        iterations: int = 15,
        confidence: str = "binary",
        random_state: int | None = 42,
        num_threads: int = 0,
        use_gpu: bool = False,
    ) -> None:
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.confidence = confidence
        self.random_state = random_state
        self.num_threads = num_threads
        self.use_gpu = use_gpu

    def fit(self, user_items: sp.csr_matrix) -> ALS:
        """Fit on a customers x items matrix of purchase counts (any positive weights)."""
        user_items = check_csr(user_items)
        if self.confidence not in CONFIDENCES:
            raise ValueError(f"confidence must be one of {CONFIDENCES}, got {self.confidence!r}")
        started = time.perf_counter()
        weights = self.weigh(user_items)
        if self.use_gpu:
            from implicit.gpu.als import AlternatingLeastSquares as Backend
        else:
            from implicit.cpu.als import AlternatingLeastSquares as Backend
        kwargs = dict(
            factors=self.factors,
            regularization=self.regularization,
            alpha=self.alpha,
            iterations=self.iterations,
            random_state=self.random_state,
        )
        if not self.use_gpu:
            kwargs["num_threads"] = self.num_threads
        from threadpoolctl import threadpool_limits

        # implicit parallelises over users itself; a multithreaded BLAS underneath would
        # oversubscribe the cores (implicit warns about it), so BLAS gets one thread here.
        with threadpool_limits(limits=1, user_api="blas"):
            model = Backend(**kwargs)
            model.fit(weights, show_progress=False)
        if self.use_gpu:
            model = model.to_cpu()
        self.user_factors_ = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        self._gram = self._regularized_gram = self._gram_inverse = None  # a refit's own
        if not np.isfinite(self.item_factors_).all() or not np.isfinite(self.user_factors_).all():
            raise ValueError("ALS produced non-finite factors; lower alpha or raise regularization")
        logger.info(
            "als (%d factors, %d iterations, %s) on %d x %d (nnz %d): %.2fs",
            self.factors,
            self.iterations,
            self.confidence,
            *user_items.shape,
            user_items.nnz,
            time.perf_counter() - started,
        )
        return self

    def weigh(self, user_items: sp.csr_matrix) -> sp.csr_matrix:
        """Purchase counts to confidence weights (before ``alpha``), as chosen by ``confidence``."""
        if self.confidence == "bm25":
            from implicit.nearest_neighbours import bm25_weight

            weights = bm25_weight(user_items, K1=100, B=0.8).tocsr().astype(np.float32)
            # An item bought by most customers gets a negative idf, which ALS would read as
            # "disliked"; a purchase is never evidence of dislike, so floor the weights.
            weights.data = np.maximum(weights.data, 1e-3)
            return weights
        weights = user_items.astype(np.float32, copy=True)
        if self.confidence == "binary":
            weights.data[:] = 1.0
        else:
            weights.data = (1.0 + np.log(np.maximum(weights.data, 1.0))).astype(np.float32)
        return weights

    def similar_items(self, item_idx: int, n: int = 10) -> Ranking:
        """Items whose factors point the same way (cosine of item factors)."""
        self._check_fitted()
        if not 0 <= item_idx < len(self.item_factors_):
            return no_ranking()
        norms = np.linalg.norm(self.item_factors_, axis=1)
        norms[norms == 0] = 1.0
        scores = (self.item_factors_ @ self.item_factors_[item_idx]) / (norms * norms[item_idx])
        return top_n(scores, n, np.array([item_idx]))

    def recommend(
        self, user_idx: int, user_row: sp.csr_matrix, n: int = 10, exclude_seen: bool = True
    ) -> Ranking:
        """Top items by ``item_factors @ user_factor``; ``user_idx`` < 0 folds ``user_row`` in."""
        self._check_fitted()
        vector = (
            self.user_factors_[user_idx]
            if user_idx >= 0
            else self.fold_in(user_row.indices, user_row.data)
        )
        return top_n(
            self.item_factors_ @ vector,
            n,
            user_row.indices if exclude_seen else None,
            positive_only=False,
        )

    def fold_in(
        self, item_indices: NDArray[np.integer], weights: NDArray[np.floating] | None = None
    ) -> NDArray[np.float32]:
        """A user vector for a shopper the model has not seen, from the items they touched.

        The same least-squares step ALS takes for a user (``implicit``'s
        ``recalculate_user``): with confidences ``c = alpha * w`` for the given items,
        solve ``(Y'Y + Y_I'(C - 1)Y_I + reg I) x = Y_I' c``.
        """
        self._check_fitted()
        item_indices = np.asarray(item_indices, dtype=np.int64)
        if not len(item_indices):
            return np.zeros(self.item_factors_.shape[1], dtype=np.float32)
        weights = (
            np.ones(len(item_indices)) if weights is None else np.asarray(weights, dtype=np.float64)
        )
        confidence = self.alpha * weights
        if len(item_indices) < self.item_factors_.shape[1]:
            # Fewer items than factors: an items x items system through the kept inverse of
            # ``Y'Y + reg I`` (Woodbury; ``fold_in.fold_in_few``), one compiled pass.
            solution, solved = fold_in_few(  # a plain array: the loop takes no memmap subclass
                np.asarray(self.item_factors_), item_indices, confidence, self.gram_inverse()
            )
            if solved:
                return solution
        chosen = np.take(self.item_factors_, item_indices, axis=0).astype(np.float64)
        system = self.regularized_gram() + (chosen.T * (confidence - 1.0)) @ chosen
        rhs = chosen.T @ confidence
        # LAPACK's dgesv, as np.linalg.solve calls it, without numpy's generalised-ufunc
        # wrapper: half the time of np.linalg.solve for 64 factors (about 30 µs of 60).
        _, _, solution, info = dgesv(system, rhs)
        if info != 0:  # singular: numpy says so in its own words
            solution = np.linalg.solve(system, rhs)
        return np.asarray(solution).astype(np.float32)

    def fold_in_rows(self, rows: sp.csr_matrix) -> NDArray[np.float32]:
        """``fold_in`` for each row of a rows x items matrix (offline evaluation of held-out
        customers or baskets: one small solve per row, a loop of a few thousand at most)."""
        rows = check_csr(rows)
        vectors = np.zeros((rows.shape[0], self.item_factors_.shape[1]), dtype=np.float32)
        for row in range(rows.shape[0]):
            start, stop = rows.indptr[row], rows.indptr[row + 1]
            if stop > start:
                vectors[row] = self.fold_in(rows.indices[start:stop], rows.data[start:stop])
        return vectors

    def gram(self) -> NDArray[np.float64]:
        """``Y'Y`` of the item factors, computed once per model (with ``regularized_gram``:
        the server calls this before its workers fork)."""
        cached = self._gram
        if cached is None:
            factors = np.asarray(self.item_factors_, dtype=np.float64)
            cached = self._gram = factors.T @ factors
            regularized = cached + self.regularization * np.eye(len(cached))
            inverse = np.linalg.inv(regularized)
            self._regularized_gram = regularized
            self._gram_inverse = (inverse + inverse.T) / 2.0  # symmetric, as G is
        return cached

    def regularized_gram(self) -> NDArray[np.float64]:
        """``Y'Y + reg I``, the part of every fold-in's system that does not depend on the
        shopper: kept, where adding the identity per request cost a fold-in about 25 us."""
        if self._regularized_gram is None:
            self.gram()
        assert self._regularized_gram is not None
        return self._regularized_gram

    def gram_inverse(self) -> NDArray[np.float64]:
        """``(Y'Y + reg I)^-1``, for fold-ins of a few items (``fold_in.fold_in_few``)."""
        if self._gram_inverse is None:
            self.gram()
        assert self._gram_inverse is not None
        return self._gram_inverse

    def to_arrays(self) -> dict[str, NDArray[Any]]:
        self._check_fitted()
        return {"user_factors": self.user_factors_, "item_factors": self.item_factors_}
