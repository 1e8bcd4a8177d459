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
        backend = getattr(nearest_neighbours, _IMPLICIT_MODELS[self.similarity])
        # Room for the pairs ``fit`` drops for too little support; with no threshold only the
        # item itself is dropped (a pair with a similarity shares a row), so K + 1 suffice.
        filtered = self.min_support > 1 or self.min_pair_support > 1
        k = 2 * self.neighbours + 1 if filtered else self.neighbours + 1
        model = backend(K=k, num_threads=self.num_threads)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ParameterWarning)
            model.fit(user_items, show_progress=False)
        similarity = sp.coo_matrix(model.similarity)
        return (
            similarity.row.astype(np.int64),
            similarity.col.astype(np.int64),
            similarity.data.astype(np.float32),
        )
