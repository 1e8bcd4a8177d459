"""The faster ingest and save steps of a training run give exactly what the slower ones gave.

Each replaced computation is checked against the plain one it replaced (``np.unique``,
``Series.duplicated``, a groupby, a COO round trip, ``np.save`` then a file hash), on small
arrays built to hit the edge cases: ties, missing values, keys too wide to pack, no repeats.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recommender import artifacts
from recommender.data.catalog import _few_distinct, _latest_prices, first_sold
from recommender.data.cleaning import _repeats_of_earlier
from recommender.data.idmap import IdMap
from recommender.data.matrix import cap_history, sort_with_order, unique_inverse


@pytest.mark.parametrize(
    "keys",
    [
        np.array([5, 3, 5, 1, 3, 3, 9], dtype=np.int64),
        np.array([], dtype=np.int64),
        np.array([7], dtype=np.int64),
        np.array([-4, 2**40, -4, 0], dtype=np.int64),
        # Too wide to pack beside the positions: the argsort path.
        np.array([2**62, -(2**62), 0, 2**62], dtype=np.int64),
    ],
)
def test_sort_with_order_and_unique_inverse_match_numpy(keys: np.ndarray) -> None:
    ordered, order = sort_with_order(keys)
    assert np.array_equal(ordered, np.sort(keys))
    assert np.array_equal(order, np.argsort(keys, kind="stable"))
    distinct, inverse = unique_inverse(keys)
    expected, expected_inverse = np.unique(keys, return_inverse=True)
    assert np.array_equal(distinct, expected)
    assert np.array_equal(inverse, expected_inverse.ravel())
    assert inverse.dtype == np.int32


def test_unique_inverse_random_keys() -> None:
    keys = np.random.default_rng(0).integers(0, 5_000, 100_000).astype(np.int64) * 1_000_003
    distinct, inverse = unique_inverse(keys)
    expected, expected_inverse = np.unique(keys, return_inverse=True)
    assert np.array_equal(distinct, expected)
    assert np.array_equal(inverse, expected_inverse.ravel())
    few, few_inverse = _few_distinct(keys)
    assert np.array_equal(few, expected)
    assert np.array_equal(few_inverse, expected_inverse.ravel())


@pytest.mark.parametrize("repeats", [0, 1, 50])
def test_repeats_of_earlier_is_series_duplicated(repeats: int) -> None:
    rng = np.random.default_rng(repeats)
    hashes = rng.integers(0, 2**63, 10_000, dtype=np.int64).astype(np.uint64)
    hashes[rng.integers(0, len(hashes), repeats)] = hashes[rng.integers(0, len(hashes), repeats)]
    expected = pd.Series(hashes).duplicated(keep="first").to_numpy()
    assert np.array_equal(_repeats_of_earlier(hashes), expected)


def _cap_by_coo(user_items: sp.csr_matrix, ages: sp.csr_matrix, cap: int) -> sp.csr_matrix:
    """The cap as it was computed before: through COO, row by row in Python."""
    rows, cols, values = [], [], []
    for row in range(user_items.shape[0]):
        start, stop = user_items.indptr[row], user_items.indptr[row + 1]
        cells = np.arange(start, stop)
        if len(cells) > cap:
            recent = cells[np.lexsort((user_items.indices[cells], ages.data[cells]))][:cap]
            cells = np.sort(recent)
        rows += [row] * len(cells)
        cols += list(user_items.indices[cells])
        values += list(user_items.data[cells])
    return sp.csr_matrix((values, (rows, cols)), shape=user_items.shape, dtype=np.float32)


def test_cap_history_matches_coo_construction() -> None:
    rng = np.random.default_rng(3)
    dense = (rng.random((30, 40)) < 0.4).astype(np.float32)
    dense[0] = 1.0  # one long row
    user_items = sp.csr_matrix(dense)
    ages = user_items.copy()
    ages.data = rng.integers(1, 5, user_items.nnz).astype(np.float32)  # ties in age
    before = user_items.copy()
    capped = cap_history(user_items, ages, 10)
    expected = _cap_by_coo(user_items, ages, 10)
    for field in ("indptr", "indices", "data"):
        assert np.array_equal(getattr(capped, field), getattr(expected, field)), field
    assert capped.indptr.dtype == user_items.indptr.dtype
    assert (user_items != before).nnz == 0  # the caller's matrix is untouched
    assert cap_history(user_items, ages, 40) is user_items


def test_first_sold_and_latest_prices_with_missing_values() -> None:
    item_ids = IdMap(np.array(["a", "b", "c"]))
    purchases = pd.DataFrame(
        {
            "item_id": pd.Categorical(["b", "a", None, "b", "a"]),
            "timestamp": pd.to_datetime(
                ["2024-01-03", "2024-01-02", "2024-01-01", "2024-01-01", "2024-01-05"]
            ),
        }
    )
    seconds = purchases["timestamp"].to_numpy(dtype="datetime64[s]").astype(np.int64)
    sold = first_sold(purchases, item_ids)
    assert sold[0] == seconds[1] and sold[1] == seconds[3] and np.isnan(sold[2])

    items = np.array([0, 1, 0, 1, -1, 0])
    times = np.array([5, 7, 9, 7, 9, 9], dtype=np.int64)
    position = np.array([0, 1, -1])
    priced = pd.Series([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    # The latest line per item, the first one in the log among equal times.
    assert np.array_equal(_latest_prices(items, priced, times, position, 2), [3.0, 2.0])
    gaps = pd.Series([1.0, 2.0, np.nan, 4.0, 5.0, np.nan])
    assert np.array_equal(_latest_prices(items, gaps, times, position, 2), [1.0, 2.0])
    assert np.array_equal(_latest_prices(items, gaps, None, position, 2), [1.0, 4.0])


def test_saved_checksums_are_those_of_the_files(tmp_path: Path) -> None:
    arrays = {
        "numbers": np.arange(100_000, dtype=np.float32).reshape(1000, 100),
        "empty": np.empty((0, 3), dtype=np.int64),
        "text": np.array(["x", "yz"]),
    }
    path = artifacts.save(tmp_path, arrays, {})
    manifest = artifacts.load(path).manifest
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == hashlib.sha256((path / name).read_bytes()).hexdigest()
        assert np.array_equal(np.load(path / name), arrays[name.removesuffix(".npy")])
    (path / "numbers.npy").write_bytes(b"corrupt")
    with pytest.raises(artifacts.ArtifactError, match="numbers.npy: checksum mismatch"):
        artifacts.load(path)
    (path / "empty.npy").unlink()
    with pytest.raises(artifacts.ArtifactError, match="empty.npy: cannot read"):
        artifacts.load(path)
