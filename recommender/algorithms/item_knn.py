"""Item-to-item collaborative filtering (Linden, Smith and York 2003) over ``implicit``'s kNN.

``implicit`` computes the item x item similarity (cosine, BM25 or TF-IDF weighted); this
wrapper turns it into dense top-K neighbour tables, drops what has too little support to
be more than noise, and records for every neighbour how many rows (customers or orders)
contain both items, so an answer can say "57 customers bought both".
"""
from __future__ import annotations

import logging
import time
import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from .base import Ranking, Recommender, check_csr, top_n

logger = logging.getLogger(__name__)

_IMPLICIT_MODELS = {"cosine": "CosineRecommender", "bm25": "BM25Recommender", "tfidf": "TFIDFRecommender"}
# Bound on the entries of one block of the co-occurrence product, to bound memory.
_BLOCK_ENTRIES = 4_000_000


class ItemKNN(Recommender):
    """Top-K item neighbours by similarity of the rows that contain them.

    Parameters
    ----------
    similarity : ``cosine``, ``bm25`` or ``tfidf`` (``implicit``'s nearest-neighbour models).
    neighbours : K, neighbours kept per item.
    min_support : items in fewer rows than this get no neighbours and are nobody's neighbour.
    min_pair_support : a pair must share at least this many rows to be neighbours.
    num_threads : threads for ``implicit`` (0 = all cores).

    Attributes
    ----------
    neighbour_ids_ : int32 (n_items, K), -1 where an item has fewer than K neighbours.
    neighbour_scores_ : float32 (n_items, K), descending per row.
    neighbour_support_ : int32 (n_items, K), rows containing both items.
    item_support_ : int32 (n_items,), rows containing each item.
    """

    def __init__(
        self,
        similarity: str = "cosine",
        neighbours: int = 50,
        min_support: int = 3,
        min_pair_support: int = 2,
        num_threads: int = 0,
    ) -> None:
        self.similarity = similarity
        self.neighbours = neighbours
        self.min_support = min_support
        self.min_pair_support = min_pair_support
        self.num_threads = num_threads

    def fit(self, user_items: sp.csr_matrix) -> ItemKNN:
        user_items = check_csr(user_items)
        started = time.perf_counter()
        n_items = user_items.shape[1]
        present = user_items.copy()
        present.data[:] = 1.0
        item_support = np.diff(present.tocsc().indptr).astype(np.int32)

        # Imported here so that the server, which only reads the fitted tables, never loads implicit.
        from implicit import nearest_neighbours
        from implicit.utils import ParameterWarning

        backend = getattr(nearest_neighbours, _IMPLICIT_MODELS[self.similarity])
        model = backend(K=2 * self.neighbours + 1, num_threads=self.num_threads)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ParameterWarning)
            model.fit(user_items, show_progress=False)
        similarity = sp.coo_matrix(model.similarity)
        eligible = item_support >= self.min_support
        keep = (
            (similarity.row != similarity.col)
            & eligible[similarity.row]
            & eligible[similarity.col]
            & (similarity.data > 0)
        )
        rows, cols, scores = similarity.row[keep], similarity.col[keep], similarity.data[keep]
        support = _pair_support(present, rows, cols)
        strong = support >= self.min_pair_support
        rows, cols, scores, support = rows[strong], cols[strong], scores[strong], support[strong]

        order = np.lexsort((cols, -scores, rows))
        rows, cols, scores, support = rows[order], cols[order], scores[order], support[order]
        rank = np.arange(len(rows)) - np.searchsorted(rows, rows, side="left")
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
        logger.info(
            "item-knn (%s, K=%d) on %d x %d: %d items with neighbours, %d pairs, %.2fs",
            self.similarity, self.neighbours, *user_items.shape,
            int((self.neighbour_ids_[:, 0] >= 0).sum()), int(kept.sum()), time.perf_counter() - started,
        )
        return self

    def similar_items(self, item_idx: int, n: int = 10) -> Ranking:
        self._check_fitted()
        if not 0 <= item_idx < len(self.neighbour_ids_):
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
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

    def neighbour_matrix(self) -> sp.csr_matrix:
        """The neighbour table as an items x items CSR matrix (built once, then cached)."""
        cached = getattr(self, "_neighbour_matrix", None)
        if cached is None:
            n_items, k = self.neighbour_ids_.shape
            valid = self.neighbour_ids_ >= 0
            rows = np.repeat(np.arange(n_items), k).reshape(n_items, k)[valid]
            cached = sp.csr_matrix(
                (self.neighbour_scores_[valid], (rows, self.neighbour_ids_[valid])),
                shape=(n_items, n_items),
            )
            self._neighbour_matrix = cached
        return cached

    def to_arrays(self) -> dict[str, NDArray[Any]]:
        self._check_fitted()
        return {
            "neighbour_ids": self.neighbour_ids_,
            "neighbour_scores": self.neighbour_scores_,
            "neighbour_support": self.neighbour_support_,
            "item_support": self.item_support_,
        }


def _pair_support(
    present: sp.csr_matrix, rows: NDArray[np.int32], cols: NDArray[np.int32]
) -> NDArray[np.int32]:
    """For each pair (rows[i], cols[i]) of items, the number of matrix rows containing both.

    Computed block by block as ``present.T[block] @ present`` so that memory stays bounded
    however many customers there are.
    """
    support = np.zeros(len(rows), dtype=np.int32)
    if not len(rows):
        return support
    item_rows = present.T.tocsr()
    by_item = present.tocsc()
    n_items = item_rows.shape[0]
    block = max(1, _BLOCK_ENTRIES // n_items)
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    for start in range(0, n_items, block):
        lo, hi = np.searchsorted(sorted_rows, [start, start + block])
        if lo == hi:
            continue
        product = (item_rows[start : start + block] @ by_item).tocsr()
        picked = order[lo:hi]
        support[picked] = np.asarray(product[rows[picked] - start, cols[picked]]).ravel()
    return support
