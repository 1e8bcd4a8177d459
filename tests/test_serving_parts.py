"""The serving parts on tiny hand-made bundles: catalog mask, ranking, response shaping, and
the bundle's own layout, each with answers worked out by hand."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recommender.activity import Event
from recommender.bundle import CsrArrays, ModelBundle, NeighbourArrays, build_manifest
from recommender.errors import ArtifactError
from recommender.serving import responses
from recommender.serving.batch import stream_lists, top_k_for_users
from recommender.serving.catalog import Catalog, Filters
from recommender.serving.ranking import (
    BlendWeights,
    Ranker,
    activity_weights,
    best_at_or_above,
)
from recommender.serving.service import RecommendationService

from helpers import collect_lists

ITEMS = np.array(["A", "B", "C", "D"])
CATALOG = {
    "names": np.array(["Apple", "Bread", "Cheese", "Dates"]),
    "prices": np.array([1.0, 2.0, np.nan, 4.0]),
    "categories": np.array(["x", "x", "y", "y"]),
    "available": np.array([True, True, False, True]),
}
# Personal weights, row = a shopper's item: A -> B 0.5, A -> C 0.25, B -> C 1.0, D -> A 0.3.
PERSONAL = sp.csr_matrix(
    np.array([[0, 0.5, 0.25, 0], [0, 0, 1.0, 0], [0, 0, 0, 0], [0.3, 0, 0, 0]], dtype=np.float32)
)
TRENDING = np.array([1.0, 3.0, 2.0, 0.0])


def catalog() -> Catalog:
    return Catalog(ITEMS, CATALOG)


def uniform_catalog(n_items: int) -> Catalog:
    """Items i0..i{n-1}, all in stock, one category, price 1: for random-matrix tests."""
    return Catalog(
        np.array([f"i{n}" for n in range(n_items)]),
        {
            "names": np.array([f"n{n}" for n in range(n_items)]),
            "prices": np.ones(n_items),
            "categories": np.array(["c"] * n_items),
            "available": np.ones(n_items, dtype=bool),
        },
    )


def ranker(weights: BlendWeights = BlendWeights()) -> Ranker:
    return Ranker(catalog(), PERSONAL, None, TRENDING, weights)


def test_filters_are_one_mask_over_the_catalog() -> None:
    shop = catalog()
    assert shop.allowed(Filters()).tolist() == [True, True, True, True]
    assert shop.allowed(Filters(available_only=True)).tolist() == [True, True, False, True]
    assert shop.allowed(Filters(category="y")).tolist() == [False, False, True, True]
    # An item without a price never passes a price bound.
    assert shop.allowed(Filters(min_price=2.0)).tolist() == [False, True, False, True]
    assert shop.allowed(Filters(max_price=2.0, exclude=frozenset({"A", "nope"}))).tolist() == [
        False,
        True,
        False,
        False,
    ]
    assert shop.allowed(Filters(), exclude_idx=[3]).tolist() == [True, True, True, False]
    assert shop.diversify([0, 1, 2, 3], 3, Filters(max_per_category=1)) == [0, 2]
    assert shop.diversify([0, 1, 2, 3], 3, Filters()) == [0, 1, 2]
    assert shop.search("e", np.array([3, 0, 1, 2])).tolist() == [1, 2, 3, 0]  # all match; by place
    assert shop.search("CHEESE", np.arange(4)).tolist() == [2]


def test_a_catalog_that_does_not_match_the_items_is_refused() -> None:
    with pytest.raises(ValueError, match="catalog"):
        Catalog(ITEMS[:3], CATALOG)


def test_personal_scores_sum_the_weighted_rows_then_scale_to_one() -> None:
    scores, strategy = ranker().scores(np.array([0, 1]), np.array([1.0, 2.0]), None)
    # A's row + 2 x B's row = [0, 0.5, 0.25 + 2.0, 0], scaled by its maximum 2.25.
    assert strategy == "item-knn"
    np.testing.assert_allclose(scores, [0, 0.5 / 2.25, 1.0, 0])
    # With trending x0.5: trending scaled to its maximum (3) is added.
    blended, _ = ranker(BlendWeights(trend=0.5)).scores(np.array([0]), np.array([1.0]), None)
    np.testing.assert_allclose(blended, [0 + 0.5 / 3, 1.0 + 0.5, 0.5 + 0.5 * 2 / 3, 0])
    assert ranker().scores(np.array([2]), np.array([1.0]), None) == (
        None,
        "popular",
    )  # C has no row


def test_rank_masks_cuts_tops_up_with_trending_and_names_reasons() -> None:
    ranked = ranker().rank(np.array([0]), np.array([1.0]), None, 2, Filters(), np.array([0]))
    assert (ranked.items, ranked.sources, ranked.reasons) == ([1, 2], ["item-knn"] * 2, [0, 0])
    assert ranked.scores == pytest.approx([1.0, 0.5])
    # C is not available: B, then D, the only item left (A is excluded), at score 0.
    ranked = ranker().rank(
        np.array([0]), np.array([1.0]), None, 2, Filters(available_only=True), np.array([0])
    )
    assert (ranked.items, ranked.scores) == ([1, 3], [1.0, 0.0])
    assert ranked.reasons == [0, -1]  # D was not led to by A
    # Nothing personal (C has no neighbours): trending items that pass the filters.
    ranked = ranker().rank(
        np.array([2]), np.array([1.0]), None, 2, Filters(available_only=True), np.array([2])
    )
    assert (ranked.items, ranked.sources, ranked.scores, ranked.strategy) == (
        [1, 0],
        ["popular", "popular"],
        [None, None],
        "popular",
    )
    popular = ranker().popular(3, Filters())
    assert popular.items == [1, 2, 0] and popular.strategy == "popular"


def test_batch_ranks_as_one_request_does() -> None:
    rows = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 1, 0, 1]], dtype=np.float32))
    best, scores, _ = ranker().batch_with_strategy(rows, None, 2)
    for row, history in enumerate(([0], [1, 3])):
        one = ranker().rank(
            np.array(history), np.ones(len(history)), None, 2, Filters(), np.array(history)
        )
        assert best[row].tolist() == one.items[:2]
    # Customer 2 (B and D): [0.3, 0, 1.0, 0] -> C, then A; nothing else scores but -inf is kept out.
    assert best[1].tolist() == [2, 0] and scores[1].tolist() == pytest.approx([1.0, 0.3])


def test_recent_events_weigh_by_type_and_halve_every_half_life() -> None:
    now = 1_000_000.0
    events = [
        Event("s", "B", "view", now),
        Event("s", "B", "cart", now - 3600),
        Event("s", "Z", "view", now),
        Event("s", "D", "purchase", now - 7200),
    ]
    history, weights = activity_weights(events, catalog().items, half_life_hours=1.0, now=now)
    assert dict(zip(history.tolist(), weights.tolist())) == pytest.approx(
        {1: 1.0 + 2.0 * 0.5, 3: 3.0 * 0.25}
    )


def test_recent_events_sum_bit_for_bit_as_numpy_unique_and_bincount() -> None:
    """The weights are summed in a dict in the events' order; the numpy formulation they
    replace (``np.unique``'s inverse into ``np.bincount``, items by first event) must give
    the same bits and order, repeated items and unknown ones included."""
    from recommender.data.idmap import IdMap
    from recommender.serving.ranking import TYPE_WEIGHTS

    items = IdMap([f"i{n:03d}" for n in range(60)])
    rng = np.random.default_rng(7)
    now = 1_700_000_000.0
    for size in (1, 3, 17, 80):
        events = [
            Event(
                "s",
                f"i{int(rng.integers(0, 70)):03d}",
                str(rng.choice(list(TYPE_WEIGHTS))),
                now - float(rng.random() * 9 * 86400 - 3600),
            )
            for _ in range(size)
        ]
        history, weights = activity_weights(events, items, 72.0, now)
        indices = items.indices([event.item_id for event in events])
        known = np.flatnonzero(indices >= 0)
        terms = [
            TYPE_WEIGHTS[events[i].type]
            * 0.5 ** (max(0.0, now - events[i].timestamp) / 3600.0 / 72.0)
            for i in known.tolist()
        ]
        unique, first, where = np.unique(indices[known], return_index=True, return_inverse=True)
        sums = np.bincount(where, weights=terms, minlength=len(unique))
        order = np.argsort(first, kind="stable")
        assert history.dtype == np.int64 and weights.dtype == np.float64
        assert history.tolist() == unique[order].tolist()
        assert weights.tobytes() == sums[order].tobytes()


def test_responses_carry_names_prices_scores_and_reasons() -> None:
    ranked = ranker().rank(np.array([0]), np.array([1.0]), None, 3, Filters(), np.array([0]))
    body = responses.ranking(ranked, catalog(), "v1", extra={"bought_both": {1: 7}})
    assert body["strategy"] == "item-knn" and body["model_version"] == "v1"
    first, second, third = body["recommendations"]
    assert first == {
        "item_id": "B",
        "name": "Bread",
        "price": 2.0,
        "score": 1.0,
        "source": "item-knn",
        "bought_both": 7,
        "because": {"item_id": "A", "name": "Apple"},
    }
    assert second["price"] is None and second["score"] == 0.5  # Cheese has no price
    assert third == {
        "item_id": "D",
        "name": "Dates",
        "price": 4.0,
        "score": 0.0,
        "source": "item-knn",
    }
    popular = responses.ranking(ranker().popular(1, Filters()), catalog(), "v1")
    assert popular["strategy"] == "popular" and popular["recommendations"] == [
        {"item_id": "B", "name": "Bread", "price": 2.0, "score": None, "source": "popular"}
    ]
    assert responses.item(catalog(), None, "Q") == {"item_id": "Q", "known": False}


def bundle() -> ModelBundle:
    user_items = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 1, 0, 1]], dtype=np.float32))
    table = NeighbourArrays(
        ids=np.array([[1, 2], [2, -1], [-1, -1], [0, -1]], dtype=np.int32),
        scores=np.array([[0.5, 0.25], [1.0, 0], [0, 0], [0.3, 0]], dtype=np.float32),
        support=np.array([[4, 2], [3, 0], [0, 0], [1, 0]], dtype=np.int32),
        item_support=np.array([5, 4, 3, 1], dtype=np.int32),
    )
    components = {
        "also_bought": {"model": "item_knn", "basis": "customers"},
        "personal": {"model": "item_knn", "basis": "customers"},
    }
    return ModelBundle(
        item_ids=ITEMS,
        user_ids=np.array(["u1", "u2"]),
        user_items=CsrArrays.of(user_items),
        catalog=CATALOG,
        tables={"also_bought": table, "personal": table},
        trending=TRENDING,
        personal_matrix=CsrArrays.of(PERSONAL),
        manifest={
            **build_manifest(
                components=components,
                blend={"als_weight": 0.0, "trend_weight": 0.0},
                params={},
                data={},
                cleaning={},
                counts={},
                evaluation={},
                gate={},
                notes=[],
                libraries={},
            ),
            "version": "v7",
        },
    )


def test_bundle_layout_round_trips_and_names_what_is_missing() -> None:
    original = bundle()
    arrays = original.arrays()
    assert "personal.matrix.indptr" in arrays and "also_bought.neighbour_support" in arrays
    assert not any(name.startswith("als.") for name in arrays)  # no ALS in this bundle
    again = ModelBundle.from_arrays(arrays, original.manifest)
    np.testing.assert_array_equal(
        again.tables["personal"].scores, original.tables["personal"].scores
    )
    assert (again.personal_matrix.matrix((4, 4)) != PERSONAL).nnz == 0
    assert again.version == "v7" and again.components["also_bought"]["basis"] == "customers"
    del arrays["catalog.prices"]
    with pytest.raises(ArtifactError, match="catalog.prices"):
        ModelBundle.from_arrays(arrays, original.manifest)
    spark = build_manifest(
        components={},
        blend={},
        params={},
        data={},
        cleaning={},
        counts={},
        evaluation={},
        gate={},
        notes=[],
        libraries={},
        engine={"name": "spark"},
    )
    assert list(spark)[0] == "engine" and set(spark) - {"engine"} == set(original.manifest) - {
        "version"
    }


def test_the_service_puts_the_parts_together_in_external_ids() -> None:
    service = RecommendationService(bundle())
    picks = service.for_user("u1", 2)
    assert [r["item_id"] for r in picks["recommendations"]] == ["B", "C"] and picks[
        "known_customer"
    ] is True
    # u2 owns B and D: A (0.3 from D) and C (1.0 from B), C first.
    assert [r["item_id"] for r in service.for_user("u2", 2)["recommendations"]] == ["C", "A"]
    page = service.item_neighbours("also_bought", "A", 3)
    assert [(r["item_id"], r.get("bought_both")) for r in page["recommendations"]] == [
        ("B", 4),
        ("C", 2),
        ("D", None),
    ]
    assert page["basis"] == "customers" and page["item"]["name"] == "Apple"
    assert service.item_neighbours("also_bought", "nope", 1)["fallback_reason"] == "unknown_item"
    assert service.purchased_items("u2") == ["B", "D"] and service.purchased_items("u9") == []
    best, _ = top_k_for_users(service, np.array([0, 1]), 2)
    assert best.tolist() == [[1, 2], [2, 0]]
    assert math.isclose(service.for_items(["D"], 1)["recommendations"][0]["score"], 1.0)


def test_item_pages_without_masking_filters_answer_as_the_catalog_mask_does() -> None:
    """Without filters that take items out, an item page tests its neighbours against the
    item itself instead of a catalog-long mask; an exclusion of an unknown id goes through
    the mask and allows the same items, so every answer must be the same."""
    service = RecommendationService(bundle())
    for component in ("also_bought", "bought_together"):
        for item_id in (*service.catalog.ids, "nope"):
            for k in (1, 2, 3, 10):
                for per_category in (None, 1):
                    plain = Filters(max_per_category=per_category)
                    masked = Filters(exclude=frozenset({"nope"}), max_per_category=per_category)
                    assert not plain.masks_items() and masked.masks_items()
                    assert service.item_neighbours(
                        component, item_id, k, plain
                    ) == service.item_neighbours(component, item_id, k, masked)


def test_precomputed_lists_answer_as_scoring_everything_does(shared_models: Path) -> None:
    from recommender import artifacts

    bundle = artifacts.load_current_bundle(shared_models)
    scored = RecommendationService(bundle)
    scored.lists = None  # every request scores the whole catalog
    listed = RecommendationService(bundle)
    listed.lists = collect_lists(
        stream_lists(listed, depth=2)
    )  # short lists: filters often exhaust them
    cases = [
        Filters(),
        Filters(available_only=True),
        Filters(exclude=frozenset({"B", "C"})),
        Filters(max_per_category=1),
        Filters(min_price=1.0),
    ]
    bought_since = [Event("x", "C", "purchase", 0.0)]
    for user in listed.users.ids_.tolist():
        for k in (1, 2, 3):
            for filters in cases:
                for recent in ((), bought_since):
                    want = scored.for_user(user, k, filters, recent=recent)
                    got = listed.for_user(user, k, filters, recent=recent)
                    assert [
                        (r["item_id"], r["source"], r.get("because"))
                        for r in got["recommendations"]
                    ] == [
                        (r["item_id"], r["source"], r.get("because"))
                        for r in want["recommendations"]
                    ]
                    assert [r["score"] for r in got["recommendations"]] == pytest.approx(
                        [r["score"] for r in want["recommendations"]], abs=1e-6
                    )
                    assert got["strategy"] == want["strategy"]


def test_a_list_answers_without_scoring_when_it_holds_k_that_pass(
    shared_models: Path, monkeypatch
) -> None:
    from recommender import artifacts

    service = RecommendationService(artifacts.load_current_bundle(shared_models))
    assert service.lists is not None and service.lists.depth == 4  # the tiny catalog: every item
    monkeypatch.setattr(
        service.ranker, "rank", lambda *args: pytest.fail("scored the whole catalog")
    )
    assert len(service.for_user("u1", 2)["recommendations"]) == 2


def test_reasons_from_the_chosen_items_columns_equal_those_from_the_history_rows() -> None:
    rng = np.random.default_rng(4)
    matrix = sp.random(40, 40, density=0.2, format="csr", random_state=5, dtype=np.float32)
    matrix.data = np.round(matrix.data * 4) / 4 - 0.25  # ties and negative weights
    shop = uniform_catalog(40)
    by_rows = Ranker(shop, matrix, None, np.ones(40), BlendWeights())
    by_columns = Ranker(shop, matrix, None, np.ones(40), BlendWeights(), incoming=matrix.T.tocsr())
    for _ in range(200):
        history = rng.choice(
            40, int(rng.integers(1, 12)), replace=bool(rng.integers(2))
        )  # repeats: rows' walk
        weights = rng.choice([0.5, 1.0, 2.0], len(history))
        chosen = rng.choice(40, 6, replace=False).tolist()
        assert by_columns.reasons(history, weights, chosen) == by_rows.reasons(
            history, weights, chosen
        )


def test_pruned_scoring_ranks_exactly_as_scoring_every_item() -> None:
    """Random signed item-to-item weights, ALS factors, trending, blends, filters and k: the
    answer from the pruned candidates (ids, scores, order, reasons) equals the one from the
    whole catalog, and pruning does happen on most requests."""
    from recommender.algorithms.als import ALS

    rng = np.random.default_rng(7)
    n_items = 80
    ids = np.array([f"i{i}" for i in range(n_items)])
    shop = Catalog(
        ids,
        {
            "names": ids,
            "prices": rng.uniform(1, 10, n_items),
            "categories": rng.choice(["x", "y", "z"], n_items),
            "available": rng.random(n_items) < 0.8,
        },
    )
    dense = rng.normal(size=(n_items, n_items)) * (rng.random((n_items, n_items)) < 0.12)
    matrix = sp.csr_matrix(dense.astype(np.float32))
    als = ALS.from_arrays(
        {
            "user_factors": np.zeros((1, 6), np.float32),
            "item_factors": rng.normal(size=(n_items, 6)).astype(np.float32),
        },
        regularization=0.1,
        alpha=1.0,
    )
    als.gram()
    pruned_requests = 0
    for case in range(300):
        weights = [
            BlendWeights(0.25, 0.0),
            BlendWeights(0.5, 0.3),
            BlendWeights(0.0, 0.5),
            BlendWeights(0.25, 0.0, 0.75),
            BlendWeights(0.7, 1.0),
        ][case % 5]
        trending = rng.random(n_items) * (rng.random(n_items) < 0.7)
        pruning = Ranker(
            shop, matrix, als if case % 7 else None, trending, weights, matrix.T.tocsr()
        )
        exhaustive = Ranker(
            shop, matrix, als if case % 7 else None, trending, weights, matrix.T.tocsr()
        )
        exhaustive.pruned = lambda *args: None  # type: ignore[method-assign]
        history = rng.choice(n_items, size=int(rng.integers(1, 7)), replace=False)
        history_weights = rng.uniform(0.5, 3.0, len(history))
        vector = pruning.vector(history, history_weights)
        filters = [
            Filters(),
            Filters(available_only=True),
            Filters(category="y"),
            Filters(max_per_category=2),
            Filters(min_price=5.0),
        ][case % 5 if case % 3 else 0]
        k = int(rng.integers(1, 12))
        exclude = np.union1d(history, rng.choice(n_items, 5))
        summed = pruning.neighbour_sums(history, history_weights)
        allowed = shop.allowed(filters, exclude_idx=exclude)
        depth = k if filters.max_per_category is None else 10 * k + 50
        pruned_requests += pruning.pruned(summed, vector, allowed, depth) is not None
        fast = pruning.rank(history, history_weights, vector, k, filters, exclude)
        slow = exhaustive.rank(history, history_weights, vector, k, filters, exclude)
        assert (fast.items, fast.scores, fast.sources, fast.reasons, fast.strategy) == (
            slow.items,
            slow.scores,
            slow.sources,
            slow.reasons,
            slow.strategy,
        ), case
    assert pruned_requests > 150


def test_best_at_or_above_ranks_as_top_n_with_ties_at_the_cut() -> None:
    """A pruned answer's top ``depth`` read off the scores at or above its bound equals
    ``top_n`` of the allowed candidates, ties (at the cut too) broken by lower position; by
    hand: scores 3, 2, 2, 2, 1 with the second not allowed and depth 2 give positions 0, 2."""
    from recommender.algorithms.base import top_n

    items = np.array([4, 7, 9, 12, 20])
    allowed = np.ones(21, dtype=bool)
    allowed[7] = False
    scores = np.array([3.0, 2.0, 2.0, 2.0, 1.0])
    assert best_at_or_above(items, scores, allowed, 2.0, 2).tolist() == [0, 2]
    rng = np.random.default_rng(3)
    for _ in range(300):
        count = int(rng.integers(1, 40))
        items = np.sort(rng.choice(60, count, replace=False))
        scores = rng.integers(0, 5, count).astype(np.float64)  # many ties
        allowed = rng.random(60) < 0.7
        depth = int(rng.integers(1, 12))
        kept = np.sort(scores[allowed[items]])[::-1]
        if len(kept) < depth:
            continue
        expected, _ = top_n(np.where(allowed[items], scores, -np.inf), depth, positive_only=False)
        found = best_at_or_above(items, scores, allowed, float(kept[depth - 1]), depth)
        assert found.tolist() == expected.tolist()


def test_blend_rows_equals_blend_scores_on_dense_rows_bit_for_bit() -> None:
    """The batch blend (sparse item part) must score exactly as the per-request blend, or a
    precomputed list could rank differently from the scored answer."""
    import scipy.sparse as sp

    from recommender.algorithms.blend import blend_rows, blend_scores

    rng = np.random.default_rng(7)
    compared = 0
    for trial in range(300):
        n, m = int(rng.integers(1, 10)), int(rng.integers(1, 25))
        item = sp.random(
            n, m, density=float(rng.random()), format="csr", random_state=trial, dtype=np.float32
        )
        if rng.random() < 0.3:
            item.data *= -1
        als = rng.standard_normal((n, m)).astype(np.float32) if rng.random() < 0.8 else None
        if als is not None and rng.random() < 0.2:
            als[0] = 0.0
        trend = rng.random(m) if rng.random() < 0.8 else None
        als_weight, trend_weight = (
            float(rng.choice([0.0, 0.25, 1.0])),
            float(rng.choice([0.0, 0.1])),
        )
        item_weight = None if rng.random() < 0.7 else float(rng.choice([0.0, 0.5]))
        dense = blend_scores(item.toarray(), als, trend, als_weight, trend_weight, item_weight)
        batch = blend_rows(item, als, trend, als_weight, trend_weight, item_weight)
        assert (dense is None) == (batch is None)
        if dense is not None:
            assert np.array_equal(dense, batch)
            compared += 1
    assert compared > 150


def test_a_length_ordered_scan_finds_the_scale_and_every_item_over_a_threshold() -> None:
    """The scan's scale and hits equal the whole catalog's, bit for bit, while reading only
    the longest factors when the bound allows (power-law lengths, as ALS gives)."""
    from recommender.serving.inner_product import NormOrderedFactors, dot_rows

    rng = np.random.default_rng(3)
    lengths = rng.pareto(1.5, 5000) + 0.01
    factors = (rng.normal(size=(5000, 16)) * lengths[:, None]).astype(np.float32)
    index = NormOrderedFactors(factors)
    for _ in range(30):
        vector = rng.normal(size=16).astype(np.float32)
        every = dot_rows(factors, vector)
        scan = index.scan(vector)
        assert scan.scale() == float(np.abs(every).max())
        threshold = float(np.sort(every)[-int(rng.integers(1, 200))])
        items, scores = scan.at_least(threshold)
        assert np.array_equal(items, np.flatnonzero(every >= threshold))
        assert np.array_equal(scores, every[items])
        assert scan.done < len(factors)  # the short factors were never read
        for above in (scan.largest, np.nextafter(scan.largest, np.inf), 2 * scan.largest):
            assert np.array_equal(scan.at_least(above)[0], np.flatnonzero(every >= above))
    assert np.array_equal(index.scan(vector).at_least(-1.0)[0], np.flatnonzero(every >= -1.0))


def test_neighbour_sums_equal_numpys_bincount_bit_for_bit() -> None:
    """The compiled sums against what they replace: every entry of the history's rows
    gathered, times its row's weight, summed per item by ``np.bincount``; with a hand-made
    case first (A and B both reach C: 0.25 x 2 + 1.0 x 0.5). Short histories (up to
    ``MERGED_ROWS``) have their rows merged, longer ones are placed and sorted; a matrix whose
    rows are not in column order (the reversed copy) is always placed and sorted."""
    from recommender.serving.reasons import MERGED_ROWS

    ranker = Ranker(uniform_catalog(4), PERSONAL, None, TRENDING, BlendWeights())
    items, sums = ranker.neighbour_sums(np.array([0, 1]), np.array([2.0, 0.5]))
    assert items.tolist() == [1, 2] and sums.tolist() == [1.0, 1.0]
    items, sums = ranker.neighbour_sums(np.array([2]), np.array([1.0]))  # C reaches nothing
    assert items.tolist() == [] and sums.tolist() == []
    rng = np.random.default_rng(3)
    merged = 0
    for dtype, reverse in ((np.float32, False), (np.float64, False), (np.float64, True)):
        matrix = sp.random(300, 300, density=0.05, format="csr", random_state=4, dtype=dtype)
        matrix.data = matrix.data * 7 - 3.5
        if reverse:  # the same matrix, each row's entries stored in descending column order
            order = np.lexsort((-matrix.indices, np.repeat(np.arange(300), np.diff(matrix.indptr))))
            matrix = sp.csr_matrix(
                (matrix.data[order], matrix.indices[order], matrix.indptr), shape=matrix.shape
            )
            assert not matrix.has_sorted_indices
        ranker = Ranker(uniform_catalog(300), matrix, None, np.ones(300), BlendWeights())
        for _ in range(200):
            length = int(rng.integers(1, 40 if rng.integers(2) else MERGED_ROWS + 1))
            merged += not reverse and length <= MERGED_ROWS
            history = rng.choice(300, length, replace=bool(rng.integers(2)))
            weights = rng.uniform(0.1, 3.0, len(history))
            rows = matrix[history]
            owners = np.repeat(np.arange(len(history)), np.diff(rows.indptr))
            expected = np.bincount(rows.indices, weights=rows.data * weights[owners], minlength=300)
            items, sums = ranker.neighbour_sums(history, weights)
            assert items.tolist() == np.unique(rows.indices).tolist()
            assert sums.tobytes() == expected[items].tobytes()
            assert (ranker._places() == -1).all()  # the scratch array is left as it was
    assert merged > 100


def test_blend_scores_with_known_scales_equal_the_whole_rows_bit_for_bit() -> None:
    """Pruned scoring blends a few items with the catalog's scales: each value must be the one
    the whole row gives (float32 parts divided in float64, a zero scale adding 0)."""
    from recommender.algorithms.blend import blend_scores

    parts = blend_scores(
        np.array([2.0, -1.0]),
        np.array([0.5, 0.25], dtype=np.float32),
        None,
        0.5,
        0.0,
        scales=(4.0, 0.0),
    )
    assert parts is not None and parts.tolist() == [0.25, -0.125]
    rng = np.random.default_rng(11)
    for _ in range(200):
        size = int(rng.integers(1, 60))
        item = rng.standard_normal(size) * (rng.random(size) < 0.5)
        als = (rng.standard_normal(size) * 10 ** rng.uniform(-4, 4)).astype(np.float32)
        trend = rng.random(size)
        weights = (float(rng.choice([0.25, 0.6])), float(rng.choice([0.0, 0.1])))
        whole = blend_scores(item, als, trend, *weights)
        some = rng.random(size) < 0.5
        scales = (float(np.abs(item).max()), float(np.abs(als).max()))
        part = blend_scores(item[some], als[some], trend[some], *weights, scales=scales)
        assert whole is not None and part is not None
        assert whole[some].tobytes() == part.tobytes()


def test_the_compiled_neighbour_blend_is_blend_scores_bit_for_bit_and_cuts_at_depth() -> None:
    """``kernels.neighbour_blend`` against what it replaces: ``blend_scores`` over the whole
    catalog (the neighbours' values, byte for byte) and the depth-th best allowed score by
    ``np.partition``; NaN where fewer than depth are allowed or the item part is all zeros.
    By hand first: item part [2, -1] / 2 x 0.75, ALS [0.5, 0.25] / 0.5 x 0.25, trend [0.2, 0.4]
    x 0.5, added in that order."""
    from recommender.algorithms.blend import blend_scores
    from recommender.serving.kernels import neighbour_blend
    from recommender.serving.ranking import NO_ALS_PART

    neighbours, trend, allowed = np.array([0, 2]), np.array([0.2, 0.0, 0.4]), np.ones(3, bool)
    knn, als = np.array([2.0, -1.0]), np.array([0.5, 0.25], dtype=np.float32)
    scores, cut = neighbour_blend(neighbours, knn, als, trend, allowed, 0.75, 0.25, 0.5, 0.5, 2)
    assert scores.tolist() == [0.75 + 0.25 + 0.1, -0.375 + 0.125 + 0.2] and cut == scores.min()
    assert np.isnan(
        neighbour_blend(neighbours, knn, als, trend, allowed, 0.75, 0.25, 0.5, 0.5, 3)[1]
    )
    zeros = np.zeros(2)
    assert np.isnan(
        neighbour_blend(neighbours, zeros, als, trend, allowed, 1.0, 0.0, 0.0, 0.0, 1)[1]
    )
    rng = np.random.default_rng(13)
    for case in range(300):
        size = 200
        item = rng.standard_normal(size) * (rng.random(size) < 0.3)
        als = (rng.standard_normal(size) * 10 ** rng.uniform(-4, 4)).astype(np.float32)
        trend = rng.random(size) * (rng.random(size) < 0.7)
        als_weight = float(rng.choice([0.0, 0.25, 0.6]))
        trend_weight = float(rng.choice([0.0, 0.1, 1.0]))
        with_als = als_weight > 0 and case % 4 != 0
        whole = blend_scores(item, als if with_als else None, trend, als_weight, trend_weight)
        neighbours = np.flatnonzero(item)
        if not len(neighbours):
            continue
        allowed = rng.random(size) < 0.8
        depth = int(rng.integers(1, 12))
        scores, cut = neighbour_blend(
            neighbours,
            item[neighbours],
            als[neighbours] if with_als else NO_ALS_PART,
            trend,
            allowed,
            1.0 - als_weight,
            als_weight,
            trend_weight,
            float(np.abs(als).max()),
            depth,
        )
        assert whole is not None and scores.tobytes() == whole[neighbours].tobytes(), case
        kept = whole[neighbours][allowed[neighbours]]
        if len(kept) < depth:
            assert np.isnan(cut)
        else:
            assert cut == np.sort(kept)[len(kept) - depth]


def test_reasons_are_the_history_item_contributing_most_the_earliest_on_ties() -> None:
    """The compiled loop (``kernels.best_owners``) against its definition written out: for
    each chosen item, the history item whose entry towards it times its weight is largest
    and positive, the earliest on ties, -1 (no ALS here) where none is; by the history's
    rows and by the chosen items' columns alike."""
    matrix = sp.csr_matrix(
        np.array([[0, 2, 0, 1], [3, 0, 0, 0], [0, 0, 0, 0], [0, 2, 4, 0]], dtype=np.float32)
    )
    shop = uniform_catalog(4)
    for ranker in (
        Ranker(shop, matrix, None, np.ones(4), BlendWeights()),
        Ranker(shop, matrix, None, np.ones(4), BlendWeights(), incoming=matrix.T.tocsr()),
    ):
        history = np.array([3, 0])
        # item 1: 2 from item 3 and 2 from item 0, a tie (item 3 comes first); item 2: 4 from
        # item 3; item 3: 1 from item 0; item 0: nothing from either.
        assert ranker.reasons(history, np.array([1.0, 1.0]), [1, 2, 3, 0]) == [3, 3, 0, -1]
        # Item 3 weighs half: 1 against item 0's 2 for item 1.
        assert ranker.reasons(history, np.array([0.5, 1.0]), [1, 2, 3, 0]) == [0, 3, 0, -1]
        assert ranker.reasons(history, np.array([0.0, 1.0]), [2]) == [-1]  # zero adds nothing

    rng = np.random.default_rng(9)
    random = sp.random(60, 60, density=0.3, format="csr", random_state=2, dtype=np.float32)
    random.data = np.round(random.data * 4) / 4 - 0.25  # ties and negative weights
    dense = random.toarray()
    shop = uniform_catalog(60)
    rankers = (
        Ranker(shop, random, None, np.ones(60), BlendWeights()),
        Ranker(shop, random, None, np.ones(60), BlendWeights(), incoming=random.T.tocsr()),
    )
    for _ in range(300):
        history = rng.choice(60, int(rng.integers(1, 15)), replace=bool(rng.integers(2)))
        weights = rng.choice([0.0, 0.5, 1.0, 2.0], len(history))
        chosen = rng.choice(60, int(rng.integers(1, 12)), replace=False).tolist()
        expected = []
        for item in chosen:
            best, owner = 0.0, -1
            for position, source in enumerate(history.tolist()):
                value = float(dense[source, item]) * float(weights[position])
                if value > best:
                    best, owner = value, position
            expected.append(int(history[owner]) if owner >= 0 else -1)
        for ranker in rankers:
            assert ranker.reasons(history, weights, chosen) == expected


def test_a_reason_without_item_to_item_evidence_is_the_closest_history_item_by_als() -> None:
    """By hand: item 3 reaches item 4 (the only entry); items 1 and 2 have no item-to-item
    evidence, so their reason is the history item whose factors give the largest dot product
    (item 1 with item 0's [1, 0]: 1.0 against 0.1; item 2 with item 3's [0, 1])."""
    from recommender.algorithms.als import ALS

    matrix = sp.csr_matrix(([1.0], ([3], [4])), shape=(5, 5), dtype=np.float32)
    factors = np.array([[1, 0], [1, 0.1], [0.1, 1], [0, 1], [1, 1]], dtype=np.float32)
    als = ALS.from_arrays(
        {"user_factors": np.zeros((1, 2), np.float32), "item_factors": factors},
        regularization=0.1,
        alpha=1.0,
    )
    ranker = Ranker(uniform_catalog(5), matrix, als, np.ones(5), BlendWeights(0.5))
    assert ranker.reasons(np.array([0, 3]), np.ones(2), [1, 4, 2]) == [0, 3, 3]
    assert ranker.reasons(np.array([3, 0]), np.ones(2), [2, 1]) == [3, 0]


def test_top_n_keeps_every_tie_at_the_nth_score_and_breaks_them_by_index() -> None:
    """The cut at the n-th largest value keeps all items tied with it; the lower index wins."""
    from recommender.algorithms.base import top_n

    scores = np.array([0.5, 0.9, 0.5, -np.inf, 0.5, 0.7, 0.1])
    best, values = top_n(scores, 3, positive_only=False)
    assert best.tolist() == [1, 5, 0] and values.tolist() == [0.9, 0.7, 0.5]
    assert top_n(scores, 4, exclude=np.array([0]))[0].tolist() == [1, 5, 2, 4]
    assert top_n(scores.astype(np.float32), 2)[1].dtype == np.float32
    assert top_n(np.array([-1.0, -np.inf, -2.0]), 5, positive_only=False)[0].tolist() == [0, 2]


def test_the_compiled_loops_are_ready_before_the_first_request(shared_models: Path) -> None:
    """Loading a model compiles (or reads from numba's cache) the five loops for its array types:
    answering a known customer, a cart and a page-you-made then compiles nothing more."""
    from recommender import artifacts
    from recommender.activity import Event
    from recommender.algorithms import fold_in
    from recommender.serving import kernels

    service = RecommendationService(artifacts.load_current_bundle(shared_models))
    loops = (
        kernels.neighbour_sums,
        kernels.merged_neighbour_sums,
        kernels.best_owners,
        kernels.neighbour_blend,
        fold_in.fold_in_few,
    )
    compiled = tuple(len(loop.signatures) for loop in loops)
    assert min(compiled) >= 1
    now = time.time()
    recent = [Event("visitor", "A", "view", now - 60), Event("visitor", "B", "cart", now - 30)]
    assert service.for_user("u1", 2)["recommendations"]
    assert service.for_items(["A", "B"], 2)["recommendations"]
    assert service.page_you_made("visitor", recent, 2)["recommendations"]
    assert tuple(len(loop.signatures) for loop in loops) == compiled
