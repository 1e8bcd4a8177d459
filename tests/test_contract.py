"""The estimator contract every model in ``recommender.algorithms`` keeps (``algorithms.base``).

Each model runs the same checks, small and deterministic, on two logs: the hand-worked one of
``test_item_knn`` and two "tribes" joined by one customer, where EASE has negative weights.
Where a model's documented semantics differ, the check says so next to the difference.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recommender.algorithms import (
    ALS,
    EASE,
    MODELS,
    Cooccurrence,
    ItemKNN,
    Popular,
    RP3beta,
)
from recommender.errors import NotFittedError

from helpers import USER_ITEMS

# Items 0-2 and 3-5 are two tribes; the last customer bought 0 and 3.
TRIBES = sp.csr_matrix(
    np.array(
        [
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [0, 1, 1, 0, 0, 0],
            [1, 0, 1, 0, 0, 0],
            [0, 0, 0, 1, 1, 0],
            [0, 0, 0, 1, 1, 1],
            [0, 0, 0, 0, 1, 1],
            [0, 0, 0, 1, 0, 1],
            [1, 0, 0, 1, 0, 0],
        ],
        dtype=np.float32,
    )
)
LOGS = {"hand": USER_ITEMS, "tribes": TRIBES}

SIGNED_EASE = "ease-signed"
MAKERS = {
    "item_knn": lambda: ItemKNN(num_threads=1, min_support=1, min_pair_support=1),
    "popular": Popular,
    "als": lambda: ALS(factors=2, iterations=3, random_state=0, num_threads=1),
    "ease": lambda: EASE(l2=2.0, neighbours=3),
    SIGNED_EASE: lambda: EASE(l2=2.0, neighbours=3, signed=True, min_pair_support=0),
    "rp3beta": lambda: RP3beta(neighbours=3),
    "cooccurrence": lambda: Cooccurrence(neighbours=3, min_support=1, min_pair_support=1),
}
MODEL_CASES = [pytest.param(make, id=name) for name, make in MAKERS.items()]


def test_every_registered_model_runs_the_contract() -> None:
    """A model added to ``algorithms.MODELS`` must be added here too."""
    assert set(MODELS.values()) <= {type(make()) for make in MAKERS.values()}


@pytest.mark.parametrize("make", MODEL_CASES)
def test_an_unfitted_model_says_so(make) -> None:
    model = make()
    assert not model.is_fitted()
    with pytest.raises(NotFittedError):
        model.similar_items(0)
    with pytest.raises(NotFittedError):
        model.recommend(0, USER_ITEMS[0])
    with pytest.raises(NotFittedError):
        model.to_arrays()


@pytest.mark.parametrize("make", MODEL_CASES)
def test_parameters_round_trip_through_the_constructor(make) -> None:
    model = make()
    assert type(model)(**model.get_params()).get_params() == model.get_params()


@pytest.mark.parametrize("log", list(LOGS), ids=list(LOGS))
@pytest.mark.parametrize("make", MODEL_CASES)
def test_model_contract(make, log: str) -> None:
    user_items = LOGS[log]
    n_users, n_items = user_items.shape
    model = make()
    assert model.fit(user_items) is model
    assert model.is_fitted()
    signed = model.get_params().get("signed", False)

    answered = 0
    for item in range(n_items):
        ids, scores = model.similar_items(item, n=3)
        assert len(ids) == len(scores) <= 3
        assert item not in ids.tolist()
        assert len(set(ids.tolist())) == len(ids) and all(0 <= i < n_items for i in ids.tolist())
        assert (np.diff(scores) <= 0).all()
        if not signed:
            assert (scores > 0).all()
        # Signed EASE keeps the strongest weights by magnitude: negative ones ("who bought
        # this does not buy that") may follow the positive ones, the order still descending.
        answered += len(ids) > 0
    assert answered >= n_items - 1  # only D of the hand log has no neighbour (one buyer, alone)

    for user in range(n_users):
        row = user_items[user]
        ids, scores = model.recommend(user, row, n=3)
        assert len(ids) == len(scores) <= 3
        assert not set(ids.tolist()) & set(row.indices.tolist())
        assert len(set(ids.tolist())) == len(ids)
        assert np.isfinite(scores).all() and (np.diff(scores) <= 0).all()

    arrays = model.to_arrays()
    assert arrays and all(
        isinstance(a, np.ndarray) and a.dtype.kind in "biuf" for a in arrays.values()
    )
    rebuilt = type(model).from_arrays(arrays, **model.get_params())
    for user in range(n_users):
        ids, scores = model.recommend(user, user_items[user], n=3)
        again, again_scores = rebuilt.recommend(user, user_items[user], n=3)
        assert ids.tolist() == again.tolist() and np.allclose(scores, again_scores)
    for item in range(n_items):
        ids, scores = model.similar_items(item, n=3)
        again, again_scores = rebuilt.similar_items(item, n=3)
        assert ids.tolist() == again.tolist() and np.allclose(scores, again_scores)


@pytest.mark.parametrize("make", MODEL_CASES)
def test_the_same_data_and_parameters_give_the_same_model(make) -> None:
    first, second = make().fit(TRIBES).to_arrays(), make().fit(TRIBES).to_arrays()
    assert first.keys() == second.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


def test_signed_ease_ranks_negative_weights_last() -> None:
    """On the tribes log the signed variant does return negative scores (so the contract's
    exception above is exercised), after the positive ones; unsigned EASE returns none there."""
    signed = MAKERS[SIGNED_EASE]().fit(TRIBES)
    rows = [signed.similar_items(item, n=3)[1] for item in range(TRIBES.shape[1])]
    assert any((scores < 0).any() for scores in rows)
    for scores in rows:
        assert (np.diff(np.sign(scores)) <= 0).all()
    plain = MAKERS["ease"]().fit(TRIBES)
    assert all((plain.similar_items(item, n=3)[1] > 0).all() for item in range(TRIBES.shape[1]))


@pytest.mark.parametrize("make", MODEL_CASES)
@pytest.mark.parametrize(
    "matrix",
    [USER_ITEMS.toarray(), USER_ITEMS.tocsc(), USER_ITEMS.tocoo()],
    ids=["dense", "csc", "coo"],
)
def test_anything_but_csr_is_refused(make, matrix) -> None:
    with pytest.raises(ValueError, match="CSR"):
        make().fit(matrix)


@pytest.mark.parametrize("make", MAKERS.values(), ids=MAKERS.keys())
def test_an_index_outside_the_catalog_gets_an_empty_ranking(make) -> None:
    model = make().fit(USER_ITEMS)
    for item in (-1, USER_ITEMS.shape[1], 99):
        ids, scores = model.similar_items(item, n=3)
        assert ids.tolist() == [] and len(scores) == 0, item
