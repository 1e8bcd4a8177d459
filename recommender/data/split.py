"""Held-out splits for evaluation: by time for customer logs, by basket for basket-only logs.

A temporal split mimics production: train on everything before a cut-off, then ask what each
customer bought afterwards that they had not bought before.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import DataError


@dataclass(frozen=True)
class TemporalSplit:
    """Purchases before ``cutoff`` (train) and from it to ``end`` (test)."""

    train: pd.DataFrame
    test: pd.DataFrame
    cutoff: pd.Timestamp
    end: pd.Timestamp


def temporal_split(purchases: pd.DataFrame, test_days: float = 30.0, cutoff: str | None = None) -> TemporalSplit:
    """Split at ``cutoff`` (default: midnight ``test_days`` before the last purchase).

    Raises
    ------
    DataError
        The log has no timestamps, or one side of the split is empty.
    """
    if "timestamp" not in purchases:
        raise DataError("evaluation: a temporal split needs a timestamp column")
    end = purchases["timestamp"].max()
    cut = pd.Timestamp(cutoff) if cutoff else (end - pd.Timedelta(days=test_days)).normalize()
    before = purchases["timestamp"] < cut
    if not before.any() or before.all():
        raise DataError(f"evaluation: no purchases on one side of the cut-off {cut:%Y-%m-%d %H:%M}")
    return TemporalSplit(purchases[before], purchases[~before], cut, end)


@dataclass(frozen=True)
class BasketSplit:
    """Baskets to train on, and held-out baskets each with one hidden item."""

    train: pd.DataFrame
    queries: list[list[str]]
    hidden: list[str]


def basket_split(purchases: pd.DataFrame, test_share: float = 0.2, seed: int = 42) -> BasketSplit:
    """Hold out a share of orders (shuffled by ``seed``); in each held-out order of two or
    more items, one random item is hidden and the rest is the query."""
    baskets = purchases.groupby("order_id", sort=True, observed=True)["item_id"].agg(lambda s: list(dict.fromkeys(s)))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(baskets))
    n_test = int(len(baskets) * test_share)
    test_ids = set(baskets.index[order[:n_test]])
    queries, hidden = [], []
    for items in baskets.iloc[order[:n_test]]:
        if len(items) >= 2:
            position = int(rng.integers(len(items)))
            hidden.append(items[position])
            queries.append(items[:position] + items[position + 1:])
    train = purchases[~purchases["order_id"].isin(test_ids)]
    if train.empty or not queries:
        raise DataError("evaluation: too few baskets to hold any out")
    return BasketSplit(train, queries, hidden)
