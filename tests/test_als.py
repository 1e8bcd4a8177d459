"""ALS on logs whose answers are obvious, fold-in against implicit's own solver, and the weighting."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recommender.algorithms import ALS

# Two groups of customers: 0-5 buy from items 0-3, 6-11 from items 4-7. Customer 0 lacks item 3.
ROWS = [
    [0, 1, 2],
    [0, 1, 3],
    [0, 2, 3],
    [1, 2, 3],
    [0, 1, 2, 3],
    [0, 1, 2, 3],
    [4, 5, 6],
    [4, 5, 7],
    [4, 6, 7],
    [5, 6, 7],
    [4, 5, 6, 7],
    [4, 5, 6, 7],
]
USER_ITEMS = sp.csr_matrix(
    (
        np.ones(sum(map(len, ROWS)), dtype=np.float32),
        (np.repeat(np.arange(len(ROWS)), [len(r) for r in ROWS]), np.concatenate(ROWS)),
    ),
    shape=(12, 8),
)


@pytest.fixture(scope="module")
def model() -> ALS:
    """Two factors for two groups: the structure is exactly rank 2."""
    return ALS(factors=2, iterations=20, regularization=0.05, num_threads=1, random_state=7).fit(
        USER_ITEMS
    )


def test_the_missing_item_of_the_group_comes_first(model: ALS) -> None:
    ids, scores = model.recommend(0, USER_ITEMS[0], n=3)
    assert ids[0] == 3
    assert not {0, 1, 2} & set(ids.tolist())  # already bought
    assert (np.diff(scores) <= 0).all()
    ids, _ = model.recommend(6, USER_ITEMS[6], n=1)
    assert ids.tolist() == [7]


def test_purchases_come_back_only_when_asked(model: ALS) -> None:
    ids, _ = model.recommend(0, USER_ITEMS[0], n=4, exclude_seen=False)
    assert set(ids.tolist()) == {0, 1, 2, 3}


def test_fold_in_of_an_unseen_shopper(model: ALS) -> None:
    basket = sp.csr_matrix((np.ones(2, dtype=np.float32), ([0, 0], [4, 6])), shape=(1, 8))
    ids, _ = model.recommend(-1, basket, n=2)
    assert set(ids.tolist()) == {5, 7}  # the rest of the kitchen group, not the garden one


@pytest.mark.parametrize("alpha", [1.0, 4.0])
def test_fold_in_is_implicits_least_squares_step(alpha: float) -> None:
    from implicit.cpu.als import AlternatingLeastSquares

    model = ALS(factors=4, iterations=5, alpha=alpha, num_threads=1).fit(USER_ITEMS)
    reference = AlternatingLeastSquares(factors=4, alpha=alpha, regularization=0.05, num_threads=1)
    reference.item_factors = np.array(model.item_factors_)
    reference.user_factors = np.array(model.user_factors_)
    row = USER_ITEMS[4]
    np.testing.assert_allclose(
        model.fold_in(row.indices, row.data),
        reference.recalculate_user(4, row),
        rtol=1e-4,
        atol=1e-5,
    )


@pytest.mark.parametrize("alpha", [0.5, 1.0, 40.0])
def test_fold_in_of_few_items_solves_the_whole_system(alpha: float) -> None:
    """Fewer items than factors go through the kept inverse (Woodbury), more through the
    whole system; both give the solution of ``(Y'Y + Y_I'(C - 1)Y_I + reg I) x = Y_I' c``
    (alpha 0.5 makes ``C - 1`` negative, 1.0 zero for weight 1)."""
    rng = np.random.default_rng(5)
    model = ALS(factors=16, regularization=0.01, alpha=alpha)
    model.item_factors_ = rng.normal(size=(200, 16)).astype(np.float32)
    model.user_factors_ = np.zeros((1, 16), dtype=np.float32)
    factors = model.item_factors_.astype(np.float64)
    for n_items in (1, 2, 3, 8, 15, 16, 40):
        items = rng.choice(200, n_items, replace=False)
        weights = rng.choice([0.2, 1.0, 2.0, 3.0], n_items)
        chosen, confidence = factors[items], alpha * weights
        system = factors.T @ factors + 0.01 * np.eye(16)
        system += chosen.T @ np.diag(confidence - 1.0) @ chosen
        expected = np.linalg.solve(system, chosen.T @ confidence)
        folded = model.fold_in(items, weights)
        assert folded.dtype == np.float32
        np.testing.assert_allclose(folded, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


def test_same_data_and_seed_give_the_same_factors() -> None:
    first = ALS(factors=4, iterations=3, num_threads=1, random_state=3).fit(USER_ITEMS)
    second = ALS(factors=4, iterations=3, num_threads=1, random_state=3).fit(USER_ITEMS)
    np.testing.assert_array_equal(first.item_factors_, second.item_factors_)
    assert first.item_factors_.dtype == np.float32 and first.item_factors_.shape == (8, 4)


def test_confidence_weighting() -> None:
    counts = sp.csr_matrix(np.array([[1, 3, 0], [0, 1, 2]], dtype=np.float32))
    assert ALS(confidence="binary").weigh(counts).toarray().tolist() == [[1, 1, 0], [0, 1, 1]]
    np.testing.assert_allclose(
        ALS(confidence="log").weigh(counts).toarray(),
        [[1, 1 + np.log(3), 0], [0, 1, 1 + np.log(2)]],
        rtol=1e-6,
    )
    # BM25's idf turns negative for an item most customers bought; ALS would read a negative
    # weight as "disliked", so weights are floored at a small positive value.
    bm25 = ALS(confidence="bm25").weigh(counts)
    assert bm25.nnz == 4 and (bm25.data > 0).all()
    with pytest.raises(ValueError, match="confidence"):
        ALS(confidence="square").fit(counts)


def test_from_arrays_answers_like_the_fitted_model(model: ALS) -> None:
    rebuilt = ALS.from_arrays(model.to_arrays(), regularization=0.05)
    for user in (0, 6):
        assert (
            rebuilt.recommend(user, USER_ITEMS[user], 3)[0].tolist()
            == model.recommend(user, USER_ITEMS[user], 3)[0].tolist()
        )
    assert rebuilt.similar_items(4, 3)[0].tolist() == model.similar_items(4, 3)[0].tolist()
    assert set(model.similar_items(4, 3)[0].tolist()) == {5, 6, 7}
