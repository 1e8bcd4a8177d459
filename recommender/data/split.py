"""Held-out splits for evaluation beyond a plain cut-off in time (``model_selection`` cuts
those): each customer's last order, and random held-out customers or baskets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError
from .matrix import Interactions, order_keys


@dataclass(frozen=True)
class BasketSplit:
    """Baskets to train on, and held-out baskets each with one hidden item."""

    train: pd.DataFrame
    queries: list[list[str]]
    hidden: list[str]


def basket_split(purchases: pd.DataFrame, test_share: float = 0.2, seed: int = 42) -> BasketSplit:
    """Hold out a share of orders (shuffled by ``seed``); in each held-out order of two or
    more items, one random item is hidden and the rest is the query."""
    baskets = purchases.groupby("order_id", sort=True, observed=True)["item_id"].agg(
        lambda s: list(dict.fromkeys(s))
    )
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(baskets))
    n_test = int(len(baskets) * test_share)
    test_ids = set(baskets.index[order[:n_test]])
    queries, hidden = [], []
    for items in baskets.iloc[order[:n_test]]:
        if len(items) >= 2:
            position = int(rng.integers(len(items)))
            hidden.append(items[position])
            queries.append(items[:position] + items[position + 1 :])
    train = purchases[~purchases["order_id"].isin(test_ids)]
    if train.empty or not queries:
        raise DataError("evaluation: too few baskets to hold any out")
    return BasketSplit(train, queries, hidden)


@dataclass(frozen=True)
class NextPurchaseSplit:
    """Each held-out customer's last order (``test``) and everything else (``train``)."""

    train: pd.DataFrame
    test: pd.DataFrame
    customers: int


def next_purchase_split(
    purchases: pd.DataFrame,
    min_orders: int = 2,
    after: pd.Timestamp | None = None,
    share: float = 1.0,
    seed: int = 0,
) -> NextPurchaseSplit:
    """Hold out each customer's last order by time, for customers with ``min_orders`` or more
    (and, with ``after``, only last orders placed from that time on; with ``share`` below 1,
    only for that share of them, drawn with ``seed``).

    A validation fold nested in a test fold holds out half the customers: the model it fits
    then loses half an order per customer rather than a whole one more than the test fold's,
    so the settings it prefers (how much to regularise, which model wins) are those of a log
    the size of the one that ships. With customers active in short bursts, a whole order is
    a large part of the log.

    An order is the ``order_id`` (or, without one, a purchase time). Everybody else's lines,
    including those later in time, stay on the training side: the question is what *this*
    customer buys next, whenever that was, which measures every customer whatever the
    calendar of their activity.

    Raises
    ------
    DataError
        No timestamps, or no customer with two orders at different times.
    """
    if "timestamp" not in purchases:
        raise DataError("evaluation: a next-purchase split needs a timestamp column")
    customers = purchases[purchases["user_id"].notna()]
    order = order_keys(customers).astype("string").fillna("").to_numpy(dtype=object)
    frame = pd.DataFrame(
        {
            "user": customers["user_id"].to_numpy(),
            "order": order,
            "time": customers["timestamp"].to_numpy(),
        }
    )
    order_times = (
        frame.groupby(["user", "order"], observed=True, sort=False)["time"].max().reset_index()
    )
    order_times = order_times.sort_values(["user", "time", "order"], kind="stable")
    n_orders = order_times.groupby("user", observed=True, sort=False)["order"].transform("size")
    last = order_times.drop_duplicates("user", keep="last")
    last = last[n_orders.loc[last.index] >= min_orders]
    # A customer whose "last order" shares its time with an earlier one has no earlier side.
    first_time = order_times.groupby("user", observed=True, sort=False)["time"].min()
    last = last[last["time"].to_numpy() > first_time.loc[last["user"]].to_numpy()]
    if after is not None:
        last = last[last["time"] >= after]
    if share < 1.0:
        drawn = np.random.default_rng(seed).random(len(last)) < share
        last = last[drawn]
    if last.empty:
        raise DataError(
            "evaluation: no customer has two orders at different times"
            + (f" with the last from {after:%Y-%m-%d}" if after is not None else "")
        )
    key = pd.MultiIndex.from_arrays([frame["user"], frame["order"]])
    held = key.isin(pd.MultiIndex.from_arrays([last["user"], last["order"]]))
    held_lines = np.zeros(len(purchases), dtype=bool)
    held_lines[np.flatnonzero(purchases["user_id"].notna().to_numpy())[held]] = True
    return NextPurchaseSplit(purchases[~held_lines], purchases[held_lines], len(last))


@dataclass(frozen=True)
class HoldoutSplit:
    """Rows (customers or baskets) to train on, and held-out rows each with one hidden item."""

    train: pd.DataFrame
    queries: list[list[str]]
    hidden: list[str]
    unit: str


def random_holdout_split(
    purchases: pd.DataFrame, test_share: float = 0.2, seed: int = 42
) -> HoldoutSplit:
    """For a log without a usable time order: hold out a share of customers (or, without
    customers, of baskets); in each held-out one with two or more items, one random item is
    hidden and the rest is the query."""
    if purchases["user_id"].notna().any():
        customers = purchases[purchases["user_id"].notna()]
        split = basket_split(customers.assign(order_id=customers["user_id"]), test_share, seed)
        return HoldoutSplit(
            purchases[~purchases["user_id"].isin(_held_ids(customers, split))],
            split.queries,
            split.hidden,
            "customers",
        )
    split = basket_split(purchases, test_share, seed)
    return HoldoutSplit(split.train, split.queries, split.hidden, "baskets")


def _held_ids(customers: pd.DataFrame, split: BasketSplit) -> pd.Index:
    kept = pd.Index(split.train["user_id"].unique())
    everyone = pd.Index(customers["user_id"].unique())
    return everyone.difference(kept)


@dataclass(frozen=True)
class ProtocolFigures:
    """What the validation protocol's rule (``protocols.decide``) reads from a log: customers,
    those who bought at two different times, and each period's evaluable customers and
    coverage (newest first; counted only with ``min_repeat`` repeat customers or more).
    ``missing`` names what the log lacks for a time split (customers, timestamps, times)."""

    customers: int = 0
    repeat: int = 0
    periods: list[dict[str, Any]] | None = None
    missing: str | None = None


def protocol_figures(
    purchases: pd.DataFrame, test_days: float, periods: int, min_repeat: int
) -> ProtocolFigures:
    """``ProtocolFigures`` of a cleaned purchase log (``user_id`` NA for guest lines)."""
    customers = purchases[purchases["user_id"].notna()]
    if customers.empty:
        return ProtocolFigures(missing="customers")
    if "timestamp" not in purchases:
        return ProtocolFigures(missing="timestamps")
    times = customers["timestamp"]
    if times.nunique() < 2:
        return ProtocolFigures(missing="times")
    user_codes, _ = pd.factorize(customers["user_id"])
    time_codes = times.to_numpy(dtype="datetime64[s]").astype(np.int64)
    distinct = pd.DataFrame({"user": user_codes, "time": time_codes}).drop_duplicates()
    times_per_customer = np.bincount(distinct["user"].to_numpy())
    repeat = int((times_per_customer >= 2).sum())
    coverage = (
        _period_coverage(customers, user_codes, time_codes, test_days, periods, repeat)
        if repeat >= min_repeat
        else None
    )
    return ProtocolFigures(int(len(times_per_customer)), repeat, coverage)


def period_cutoffs(
    end: pd.Timestamp, test_days: float, periods: int
) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """``periods`` consecutive (start, stop) windows of ``test_days`` ending at the log's end,
    newest first; starts at midnight. The first is the test period."""
    windows = []
    stop = end + pd.Timedelta(seconds=1)
    for _ in range(periods):
        start = (stop - pd.Timedelta(days=test_days)).normalize()
        windows.append((start, stop))
        stop = start
    return windows


def _period_coverage(
    customers: pd.DataFrame,
    user_codes: np.ndarray,
    time_codes: np.ndarray,
    test_days: float,
    periods: int,
    repeat: int,
) -> list[dict[str, Any]]:
    """For each period: customers who bought before it and bought an item new to them in it."""
    item_codes, _ = pd.factorize(customers["item_id"])
    first_bought = (
        pd.DataFrame({"user": user_codes, "item": item_codes, "time": time_codes})
        .groupby(["user", "item"], sort=False)["time"]
        .min()
    )
    first_seen = pd.Series(time_codes).groupby(user_codes).min()
    pair_users = first_bought.index.get_level_values("user").to_numpy()
    pair_first = first_bought.to_numpy()
    end = pd.Timestamp(int(time_codes.max()), unit="s")
    out = []
    for start, stop in period_cutoffs(end, test_days, periods):
        lo, hi = int(start.value // 10**9), int(stop.value // 10**9)
        new_in_period = (pair_first >= lo) & (pair_first < hi)
        candidates = np.unique(pair_users[new_in_period])
        evaluable = (
            int((first_seen.loc[candidates].to_numpy() < lo).sum()) if len(candidates) else 0
        )
        out.append(
            {
                "start": f"{start:%Y-%m-%d}",
                "evaluable_customers": evaluable,
                "coverage": round(evaluable / repeat, 4),
            }
        )
    return out


def new_purchase_pairs(
    interactions: Interactions, test: pd.DataFrame, repeats: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (customer row, item index) pairs of ``test`` whose customer is known to
    ``interactions`` and had not bought the item there (``repeats``: bought before or not); an
    item it does not know has index -1 (a target no model can reach). What a time fold measures."""
    test = test[test["user_id"].notna()]
    users = interactions.user_ids.indices(test["user_id"])
    known = users >= 0
    pairs = pd.DataFrame(
        {"user": users[known], "item": test["item_id"].to_numpy()[known]}
    ).drop_duplicates()
    items = interactions.item_ids.indices(pairs["item"])
    pair_users = pairs["user"].to_numpy()
    already = np.zeros(len(pairs), dtype=bool)
    reachable = items >= 0
    if repeats:
        return pair_users.astype(np.int64), items.astype(np.int64)
    already[reachable] = (
        np.asarray(interactions.user_items[pair_users[reachable], items[reachable]]).ravel() > 0
    )
    return pair_users[~already].astype(np.int64), items[~already].astype(np.int64)
