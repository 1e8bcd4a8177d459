"""Item-to-item collaborative filtering (Linden, Smith and York 2003) over ``implicit``'s kNN.

``implicit`` computes the item x item similarity (cosine, BM25 or TF-IDF weighted), keeping
the top K per item in its multithreaded Cython code; ``NeighbourModel`` turns it into tables.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from .neighbours import NeighbourModel, Pairs

_IMPLICIT_MODELS = {
    "cosine": "CosineRecommender",
    "bm25": "BM25Recommender",
    "tfidf": "TFIDFRecommender",
}


class ItemKNN(NeighbourModel):
    """Top-K item neighbours by similarity of the rows that contain them.

    Parameters
    ----------
    similarity : ``cosine``, ``bm25`` or ``tfidf`` (``implicit``'s nearest-neighbour models).
    neighbours, min_support, min_pair_support : see ``NeighbourModel``.
    num_threads : threads for ``implicit`` (0 = all cores).
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

    def describe(self) -> str:
        return f"item-knn ({self.similarity})"

    def _known_support(
        self,
        user_items: sp.csr_matrix,
        rows: NDArray[np.int64],
        cols: NDArray[np.int64],
        scores: NDArray[np.float32],
        item_support: NDArray[np.int32],
    ) -> NDArray[np.int32] | None:
        """On a binary matrix, cosine = shared / sqrt(n_i * n_j): the count is in the score, so
        the blocked co-occurrence product (as costly as the fit itself) is not needed."""
        if self.similarity != "cosine" or not np.all(user_items.data == 1):
            return None
        product = item_support[rows].astype(np.float64) * item_support[cols]
        return np.rint(scores * np.sqrt(product)).astype(np.int32)

    def _candidate_pairs(self, user_items: sp.csr_matrix, present: sp.csr_matrix) -> Pairs:
        # Imported here so that the server, which only reads the fitted tables, never loads implicit.
        from implicit import nearest_neighbours
        from implicit.utils import ParameterWarning

        if self.similarity not in _IMPLICIT_MODELS:
            raise ValueError(
                f"similarity must be one of {tuple(_IMPLICIT_MODELS)}, got {self.similarity!r}"
            )
        # Room for the pairs ``fit`` drops for too little support; with no threshold only the
        # item itself is dropped (a pair with a similarity shares a row), so K + 1 suffice.
        filtered = self.min_support > 1 or self.min_pair_support > 1
        k = 2 * self.neighbours + 1 if filtered else self.neighbours + 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ParameterWarning)
            similarity = nearest_neighbours.all_pairs_knn(
                _implicit_weights(self.similarity, user_items),
                k,
                show_progress=False,
                num_threads=self.num_threads,
            )
        # implicit's own ``fit`` makes this a CSR matrix (a sort of its indices and a sum of the
        # zero entries padding rows with fewer than K neighbours, which ``fit`` drops anyway);
        # its entries come row by row, so dropping the padding leaves them in row order.
        found = np.flatnonzero(similarity.data)
        return (
            similarity.row[found].astype(np.int64, copy=False),
            similarity.col[found].astype(np.int64, copy=False),
            similarity.data[found].astype(np.float32),
        )


def _implicit_weights(similarity: str, user_items: sp.csr_matrix) -> sp.spmatrix:
    """The matrix implicit's ``CosineRecommender``, ``BM25Recommender`` (its default K1 and
    B) or ``TFIDFRecommender`` passes to ``all_pairs_knn``: their ``fit`` is that weighting
    then the search (tests/test_item_knn.py checks the two agree)."""
    from implicit import nearest_neighbours

    if similarity == "cosine":
        return nearest_neighbours.normalize(user_items.T).T
    if similarity == "bm25":
        return nearest_neighbours.bm25_weight(user_items.T, 1.2, 0.75).T
    return nearest_neighbours.normalize(nearest_neighbours.tfidf_weight(user_items.T)).T
