"""The item-to-item models search only co-occurring pairs: the same neighbours as the dense search.

The reference below is the dense computation the models used before (every item against
every item, block by block), with ties broken by the lower column as ``fit`` ranks them.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recommender.algorithms import Cooccurrence, RP3beta
from recommender.algorithms.cooccurrence import log_likelihood_ratio
from recommender.algorithms.neighbours import NeighbourModel, sparse_top_pairs


def _random_matrix(n_rows: int, n_items: int, density: float, seed: int) -> sp.csr_matrix:
    """Binary rows with a skewed item popularity, so that rows and items differ in degree."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    keep = rng.random((n_rows, n_items)) < density * n_items * popularity / popularity.sum()
    return sp.csr_matrix(keep.astype(np.float32))


def _dense_scores(model: NeighbourModel, user_items: sp.csr_matrix) -> np.ndarray:
    """Every item pair's score, as the dense search computed it."""
    present = user_items.copy()
    present.data[:] = 1.0
    if isinstance(model, RP3beta):
        user_degree = np.maximum(np.asarray(present.sum(axis=1)).ravel(), 1.0)
        item_degree = np.maximum(np.asarray(present.sum(axis=0)).ravel(), 1.0)
        user_to_item = sp.diags(1.0 / user_degree) @ present
        item_to_user = (sp.diags(1.0 / item_degree) @ present.T).tocsr()
        if model.alpha != 1.0:
            user_to_item = user_to_item.power(model.alpha)
            item_to_user = item_to_user.power(model.alpha)
        return (item_to_user @ user_to_item).toarray() * np.power(item_degree, -model.beta)
    total = float(present.shape[0])
    counts = np.asarray(present.sum(axis=0)).ravel().astype(np.float64)
    both = (present.T @ present).toarray().astype(np.float64)
    first = counts[:, None]
    llr = log_likelihood_ratio(both, first, counts[None, :], total)
    expected = first * counts[None, :] / total
    # A pair sharing fewer rows than ``min_pair_support`` is no candidate (it cannot be kept).
    candidate = (both > expected) & (both >= model.min_pair_support)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(candidate, llr, 0.0) * both / (both + model.shrinkage)


def _dense_pairs(scores: np.ndarray, k: int):
    """The k best entries of each dense row (zeros included), ties to the lower column."""
    n_items = scores.shape[0]
    cols = np.lexsort((np.broadcast_to(np.arange(n_items), scores.shape), -scores), axis=1)
    cols = cols[:, :k]
    rows = np.broadcast_to(np.arange(n_items)[:, None], cols.shape)
    return (
        rows.ravel().astype(np.int64),
        cols.ravel().astype(np.int64),
        np.take_along_axis(scores, cols, axis=1).ravel().astype(np.float32),
    )


MODELS = [
    lambda: RP3beta(neighbours=5),
    lambda: RP3beta(alpha=0.7, beta=0.3, neighbours=8, min_pair_support=2),
    lambda: Cooccurrence(neighbours=5, min_support=1, min_pair_support=1),
    lambda: Cooccurrence(shrinkage=3.0, neighbours=10),
    lambda: Cooccurrence(shrinkage=0.0, neighbours=4, min_support=3, min_pair_support=3),
]


@pytest.mark.parametrize("build", MODELS)
@pytest.mark.parametrize(
    "shape, density, seed", [((12, 9), 0.3, 0), ((60, 40), 0.15, 1), ((300, 500), 0.02, 2)]
)
def test_sparse_candidates_match_the_dense_search(build, shape, density, seed) -> None:
    user_items = _random_matrix(*shape, density, seed)
    sparse = build().fit(user_items)
    reference = build()
    dense = reference.fit(
        user_items,
        pairs=_dense_pairs(_dense_scores(reference, user_items), reference.neighbours + 1),
    )
    # The same neighbours; RP3beta's walk now factors the first item's weight out of the sum
    # over customers, which can move a score by a rounding error, no more.
    np.testing.assert_array_equal(sparse.neighbour_ids_, dense.neighbour_ids_)
    np.testing.assert_allclose(sparse.neighbour_scores_, dense.neighbour_scores_, rtol=1e-6)
    np.testing.assert_array_equal(sparse.neighbour_support_, dense.neighbour_support_)


def test_pairs_sharing_too_few_rows_do_not_take_a_neighbours_place() -> None:
    """Item 0 (rows 0-2) shares one row with item 1 (row 0) and two with item 3 (rows 1-3).
    Without shrinkage the scores are the LLR of the 2 x 2 tables over 10 rows: 2.683 for the
    pair (0, 1), 2.657 for (0, 3). With one neighbour and pairs needing two shared rows,
    item 3 is item 0's neighbour, not nobody (the pair (0, 1) outranks it but cannot be kept).
    """
    columns = {0: [0, 1, 2], 1: [0], 2: [4, 5], 3: [1, 2, 3]}
    matrix = np.zeros((10, 4), dtype=np.float32)
    for item, rows in columns.items():
        matrix[rows, item] = 1.0
    assert log_likelihood_ratio(1.0, 3.0, 1.0, 10.0) > log_likelihood_ratio(2.0, 3.0, 3.0, 10.0)
    model = Cooccurrence(shrinkage=0.0, neighbours=1, min_support=1, min_pair_support=2)
    model.fit(sp.csr_matrix(matrix))
    assert model.neighbour_ids_[:, 0].tolist() == [3, -1, -1, 0]
    np.testing.assert_allclose(
        model.neighbour_scores_[[0, 3], 0], log_likelihood_ratio(2.0, 3.0, 3.0, 10.0), rtol=1e-6
    )
    assert model.neighbour_support_[[0, 3], 0].tolist() == [2, 2]


def test_sparse_top_pairs_keeps_the_largest_with_ties_to_the_lower_column() -> None:
    product = sp.csr_matrix(
        np.array([[0.0, 2.0, 5.0, 2.0, 1.0], [0.0, 0.0, 0.0, 0.0, 3.0], [1.0, 1.0, 1.0, 0.0, 0.0]])
    )
    rows, cols, scores, support = sparse_top_pairs(
        3, 2, lambda start, stop: product[start:stop], lambda r, c, v: 2 * v
    )
    assert list(zip(rows.tolist(), cols.tolist(), scores.tolist(), support.tolist())) == [
        (0, 2, 10.0, 5),
        (0, 1, 4.0, 2),
        (1, 4, 6.0, 3),
        (2, 0, 2.0, 1),
        (2, 1, 2.0, 1),
    ]


def test_sparse_top_pairs_is_the_same_whatever_the_blocks(monkeypatch) -> None:
    user_items = _random_matrix(200, 300, 0.03, 3)
    whole = RP3beta(neighbours=6).fit(user_items)
    monkeypatch.setattr("recommender.algorithms.neighbours.BLOCK_ENTRIES", 7 * 300)
    blocked = RP3beta(neighbours=6).fit(user_items)
    np.testing.assert_array_equal(whole.neighbour_ids_, blocked.neighbour_ids_)
    np.testing.assert_array_equal(whole.neighbour_scores_, blocked.neighbour_scores_)


def _choice(weight: float):
    from recommender.model_selection import BlendChoice

    return BlendChoice("item_knn", {"similarity": "cosine"}, weight, 0.0, 14.0)


def test_survivors_are_within_noise_of_the_best_and_at_most_half() -> None:
    from recommender.model_selection.search import survivors_of

    rng = np.random.default_rng(0)
    base = rng.random(400)
    screened = {
        _choice(0.0): {"rolling": base + 0.10},
        _choice(0.25): {"rolling": base + 0.10 + rng.normal(0, 0.05, 400)},
        _choice(0.5): {"rolling": base + 0.099 + rng.normal(0, 0.05, 400)},
        _choice(0.75): {"rolling": base - 0.2},
        _choice(1.0): {"rolling": base - 0.3},
    }
    survivors = survivors_of(screened)
    # The two clearly worse are pruned; of the three within noise, the better half (3 of 5) stay.
    assert set(survivors) == {_choice(0.0), _choice(0.25), _choice(0.5)}
    assert survivors[0] in (_choice(0.0), _choice(0.25))
    # However clear the gap, the best two go on.
    assert len(survivors_of({c: screened[c] for c in list(screened)[2:]})) == 2


@pytest.mark.parametrize("similarity", ["cosine", "bm25"])
def test_item_knn_without_thresholds_asks_implicit_for_k_plus_one(similarity) -> None:
    from implicit import nearest_neighbours

    from recommender.algorithms import ItemKNN

    user_items = _random_matrix(300, 200, 0.05, 4)
    user_items.data = np.random.default_rng(5).random(user_items.nnz).astype(np.float32) + 0.5
    params = {"similarity": similarity, "neighbours": 6, "min_support": 1, "min_pair_support": 1}
    fitted = ItemKNN(num_threads=1, **params).fit(user_items)
    backend = {
        "cosine": nearest_neighbours.CosineRecommender,
        "bm25": nearest_neighbours.BM25Recommender,
    }
    everything = backend[similarity](K=200, num_threads=1)
    everything.fit(user_items, show_progress=False)
    similarity_matrix = sp.coo_matrix(everything.similarity)
    reference = ItemKNN(num_threads=1, **params).fit(
        user_items,
        pairs=(
            similarity_matrix.row.astype(np.int64),
            similarity_matrix.col.astype(np.int64),
            similarity_matrix.data.astype(np.float32),
        ),
    )
    np.testing.assert_array_equal(fitted.neighbour_scores_, reference.neighbour_scores_)
    np.testing.assert_array_equal(fitted.neighbour_ids_, reference.neighbour_ids_)


def test_a_model_only_scored_skips_counting_support_but_keeps_its_neighbours() -> None:
    from recommender.algorithms import ItemKNN

    user_items = _random_matrix(200, 150, 0.05, 6)
    user_items.data = np.random.default_rng(7).random(user_items.nnz).astype(np.float32) + 0.5
    counted = ItemKNN(neighbours=5, min_support=1, min_pair_support=1, num_threads=1).fit(
        user_items
    )
    scored = ItemKNN(neighbours=5, min_support=1, min_pair_support=1, num_threads=1).fit(
        user_items, count_support=False
    )
    np.testing.assert_array_equal(scored.neighbour_ids_, counted.neighbour_ids_)
    np.testing.assert_array_equal(scored.neighbour_scores_, counted.neighbour_scores_)
    valid = counted.neighbour_ids_ >= 0
    assert (counted.neighbour_support_[valid] >= 1).all()
    assert (scored.neighbour_support_[valid] == -1).all()
    # A threshold needs the counts: they are counted whatever is asked.
    strict = ItemKNN(neighbours=5, min_support=1, min_pair_support=2, num_threads=1)
    np.testing.assert_array_equal(
        strict.fit(user_items, count_support=False).neighbour_support_,
        ItemKNN(neighbours=5, min_support=1, min_pair_support=2, num_threads=1)
        .fit(user_items)
        .neighbour_support_,
    )
