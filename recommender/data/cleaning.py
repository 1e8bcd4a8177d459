"""Cleaning rules for purchase logs, applied explicitly and counted by reason.

Every row read ends in exactly one place: kept, rejected (malformed: missing item,
unparseable time or quantity, no customer and no order) or dropped (well-formed but not a
purchase to learn from: duplicate, non-product code, return or cancellation, purchase netted
out by a later return, zero quantity, zero price). ``CleaningReport`` holds the counts, and
``rows_read == rows_kept + sum(rejected) + sum(dropped)`` always holds.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ..errors import DataError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CleaningRules:
    """What counts as a purchase; the same rules whatever engine applies them."""

    excluded_items: tuple[str, ...] = ()
    item_pattern: str | None = None
    cancel_prefix: str = "C"
    drop_zero_price: bool = True
    future_tolerance_days: float = 1.0
    max_quantity: float = 100_000.0


@dataclass
class CleaningReport:
    """Counts of what cleaning did, by reason; serialised into the model manifest."""

    rows_read: int = 0
    rows_kept: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    guest_rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "rejected": dict(self.rejected),
            "dropped": dict(self.dropped),
            "guest_rows_kept_for_baskets_only": self.guest_rows,
        }


def clean(
    log: pd.DataFrame, rules: CleaningRules, source: str = "log", now: pd.Timestamp | None = None
) -> tuple[pd.DataFrame, CleaningReport]:
    """Apply ``rules`` to a log from ``read_log``, in place: ``log`` is consumed (it becomes the
    returned frame), so that a log of millions of lines is never held twice in memory.

    Returns
    -------
    purchases : DataFrame with ``item_id`` (str), ``user_id`` / ``order_id`` (str or NA),
        ``quantity`` (float, > 0), and ``timestamp`` (UTC, naive), ``price``, ``name`` when present.
    report : CleaningReport

    Raises
    ------
    DataError
        Nothing is left after cleaning; the message names ``source`` and the main reasons.
    """
    repeated_headers = int(log.attrs.get("repeated_header_rows", 0))
    report = CleaningReport(rows_read=len(log) + repeated_headers)
    if repeated_headers:
        report.rejected["repeated_header"] = repeated_headers
    frame = log
    for column in ("user_id", "order_id"):
        if column not in frame:
            frame[column] = pd.Series(pd.Categorical([None] * len(frame), categories=pd.Index([], dtype=object)),
                                      index=frame.index)

    def remove(mask: pd.Series, bucket: dict[str, int], reason: str) -> None:
        count = int(mask.sum())
        if count:
            bucket[reason] = bucket.get(reason, 0) + count
            frame.drop(index=frame.index[np.asarray(mask, dtype=bool)], inplace=True)

    remove(frame["item_id"].isna(), report.rejected, "missing_item")
    if "timestamp" in frame:
        frame["timestamp"] = _parse_timestamps(frame["timestamp"])
        remove(frame["timestamp"].isna(), report.rejected, "unparseable_timestamp")
        limit = (now or pd.Timestamp.now(tz="UTC").tz_localize(None)) + pd.Timedelta(
            days=rules.future_tolerance_days
        )
        remove(frame["timestamp"] > limit, report.rejected, "future_timestamp")
    if "quantity" in frame:
        frame["quantity"] = pd.to_numeric(frame["quantity"], errors="coerce").astype("float64")
        remove(~np.isfinite(frame["quantity"]), report.rejected, "unparseable_quantity")
    else:
        frame["quantity"] = 1.0
    if "price" in frame:
        frame["price"] = pd.to_numeric(frame["price"], errors="coerce")
    remove(frame["user_id"].isna() & frame["order_id"].isna(), report.rejected, "missing_user_and_order")

    remove(_duplicated(frame), report.dropped, "duplicate")
    excluded = frame["item_id"].isin(rules.excluded_items)
    if rules.item_pattern:
        excluded |= ~frame["item_id"].str.fullmatch(re.compile(rules.item_pattern), na=False).astype(bool)
    remove(excluded, report.dropped, "excluded_item")
    is_return, netted_out = _returns(frame, rules)
    remove(is_return, report.dropped, "return_or_cancellation")
    remove(netted_out[~is_return], report.dropped, "netted_out_by_return")
    remove(frame["quantity"] <= 0, report.dropped, "non_positive_quantity")
    remove(frame["quantity"] > rules.max_quantity, report.dropped, "implausible_quantity")
    if rules.drop_zero_price and "price" in frame:
        remove(frame["price"] <= 0, report.dropped, "zero_or_negative_price")

    frame.reset_index(drop=True, inplace=True)
    report.rows_kept = len(frame)
    report.guest_rows = int(frame["user_id"].isna().sum())
    logger.info(
        "cleaning %s: %d rows read, %d kept, rejected %s, dropped %s",
        source, report.rows_read, report.rows_kept, report.rejected, report.dropped,
    )
    if frame.empty:
        reasons = {**report.rejected, **report.dropped}
        top = ", ".join(f"{k}={v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])[:3])
        raise DataError(f"{source}: no purchases left after cleaning ({report.rows_read} rows read; {top})")
    return frame, report


def _duplicated(frame: pd.DataFrame) -> NDArray[np.bool_]:
    """Rows equal to an earlier row in every column, found through one 64-bit hash per row
    (a few hundred MB for 20M lines, where ``DataFrame.duplicated``'s group index of seven
    columns needs several GB)."""
    hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return pd.Series(hashes).duplicated(keep="first").to_numpy()


def _returns(frame: pd.DataFrame, rules: CleaningRules) -> tuple[pd.Series, pd.Series]:
    """Mark return rows, and the purchases they fully cancel for the same customer and item.

    A customer who bought 6 and returned 6 did not want the item; one who bought 6 and
    returned 2 still did, so those purchases stay. Guest returns cannot be matched to a
    buyer and are only removed themselves.
    """
    is_return = frame["quantity"] < 0
    if rules.cancel_prefix:
        is_return |= frame["order_id"].str.startswith(rules.cancel_prefix, na=False).astype(bool)
    netted_out = pd.Series(False, index=frame.index)
    known = frame["user_id"].notna()
    if not (is_return & known).any():
        return is_return, netted_out
    keys = ["user_id", "item_id"]
    returned = frame.loc[is_return & known].groupby(keys, observed=True)["quantity"].agg(
        lambda q: q.abs().sum()
    )
    bought = frame.loc[~is_return & known].groupby(keys, observed=True)["quantity"].sum()
    fully_returned = returned.reindex(bought.index) >= bought  # NaN (no return) compares False
    cancelled_pairs = fully_returned[fully_returned].index
    if len(cancelled_pairs):
        pairs = pd.MultiIndex.from_frame(frame[keys])
        netted_out = pd.Series(pairs.isin(cancelled_pairs), index=frame.index) & ~is_return & known
    return is_return, netted_out


def _parse_timestamps(values: pd.Series) -> pd.Series:
    """Parse times to naive UTC; unparseable values become NaT (and are then rejected)."""
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = pd.to_datetime(values, utc=True)
    else:
        text = values.astype("string")
        parsed = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
        retry = parsed.isna() & text.notna()
        if retry.any():
            parsed[retry] = pd.to_datetime(text[retry], errors="coerce", utc=True, format="mixed")
    return parsed.dt.tz_localize(None)
