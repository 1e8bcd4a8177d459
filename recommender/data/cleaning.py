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
from collections.abc import Callable
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


@dataclass(frozen=True)
class Step:
    """One cleaning rule: the reason it reports and whether it rejects or drops the row."""

    reason: str
    bucket: str  # "rejected" (malformed) or "dropped" (well-formed, not a purchase to learn from)
    meaning: str


# The rules, in the order they apply: a row is counted under the first rule that removes it.
# Both engines iterate over this table (pandas here, Spark SQL in ``recommender.spark.cleaning``)
# and each must implement every reason in it, so the two cannot drift apart unnoticed.
STEPS: tuple[Step, ...] = (
    Step("missing_item", "rejected", "no item id"),
    Step("unparseable_timestamp", "rejected", "a time that does not parse"),
    Step("future_timestamp", "rejected", "a time more than future_tolerance_days ahead of now"),
    Step("unparseable_quantity", "rejected", "a quantity that is not a finite number"),
    Step("missing_user_and_order", "rejected", "neither a customer nor an order id"),
    Step("duplicate", "dropped", "equal to an earlier row in every column"),
    Step(
        "excluded_item",
        "dropped",
        "a non-product code (excluded_items, or not matching item_pattern)",
    ),
    Step(
        "netted_out_by_return",
        "dropped",
        "a purchase the same customer returned in full (summed over the item)",
    ),
    Step(
        "return_or_cancellation",
        "dropped",
        "negative quantity, or an order id with the cancel prefix",
    ),
    Step("non_positive_quantity", "dropped", "quantity 0"),
    Step("implausible_quantity", "dropped", "quantity above max_quantity"),
    Step("zero_or_negative_price", "dropped", "price 0 or below (when drop_zero_price)"),
)


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
            frame[column] = pd.Series(
                pd.Categorical([None] * len(frame), categories=pd.Index([], dtype=object)),
                index=frame.index,
            )

    if "timestamp" in frame and not pd.api.types.is_datetime64_dtype(frame["timestamp"]):
        # (Naive times are UTC already: kept as they are, not assigned again, which copies.)
        frame["timestamp"] = per_value(frame["timestamp"], _parse_timestamps)
    if "quantity" in frame:
        frame["quantity"] = per_value(frame["quantity"], _numbers).astype("float64")
    else:
        frame["quantity"] = 1.0
    if "price" in frame:
        frame["price"] = per_value(frame["price"], _numbers)
    limit = (now or pd.Timestamp.now(tz="UTC").tz_localize(None)) + pd.Timedelta(
        days=rules.future_tolerance_days
    )
    # Each rule sees the rows no earlier rule removed; the frame itself is cut once, at the
    # end, rather than copied at every rule that removes something.
    alive = np.ones(len(frame), dtype=bool)
    for step in STEPS:
        mask = _PANDAS_PREDICATES[step.reason](frame, rules, limit, alive)
        if mask is None:
            continue
        mask = np.asarray(mask, dtype=bool) & alive
        count = int(mask.sum())
        if count:
            bucket = report.rejected if step.bucket == "rejected" else report.dropped
            bucket[step.reason] = bucket.get(step.reason, 0) + count
            alive &= ~mask
    if not alive.all():
        frame = _kept_rows(frame, alive)
    frame.reset_index(drop=True, inplace=True)
    _release_arrow_memory()
    report.rows_kept = len(frame)
    report.guest_rows = int(frame["user_id"].isna().sum())
    logger.info(
        "cleaning %s: %d rows read, %d kept, rejected %s, dropped %s",
        source,
        report.rows_read,
        report.rows_kept,
        report.rejected,
        report.dropped,
    )
    if frame.empty:
        reasons = {**report.rejected, **report.dropped}
        top = ", ".join(f"{k}={v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])[:3])
        raise DataError(
            f"{source}: no purchases left after cleaning ({report.rows_read} rows read; {top})"
        )
    return frame, report


def _release_arrow_memory() -> None:
    """Give back what Arrow's allocator kept of the memory the rules freed (the order ids'
    Arrow-backed strings are worked on through Arrow): otherwise it stays resident while the
    matrices are built, about 160 MB at 20M lines, and raises the run's peak by as much."""
    try:
        import pyarrow as pa
    except ImportError:
        return
    pa.default_memory_pool().release_unused()


def _kept_rows(frame: pd.DataFrame, alive: NDArray[np.bool_]) -> pd.DataFrame:
    """``frame[alive]``, column by column, each old column released once cut (``frame`` is
    emptied): the log is never held twice, as it is while ``frame[alive]`` copies it whole."""
    attrs = dict(frame.attrs)
    kept: dict[str, pd.Series] = {}
    for name in list(frame.columns):
        # The column's array cut, under a new default index: masking the Series would also
        # mask its index into 8 bytes per kept line, only for ``reset_index`` to drop it.
        kept[name] = pd.Series(frame.pop(name).array[alive], copy=False)
    out = pd.DataFrame(kept, copy=False)
    out.attrs.update(attrs)
    return out


def _is_return(frame: pd.DataFrame, rules: CleaningRules) -> NDArray[np.bool_]:
    is_return = (frame["quantity"] < 0).to_numpy()
    if rules.cancel_prefix:
        is_return |= _starts_with(frame["order_id"], rules.cancel_prefix)
    return is_return


def _starts_with(values: pd.Series, prefix: str) -> NDArray[np.bool_]:
    """Lines whose value starts with ``prefix`` (missing: no), tested once per distinct value
    of a categorical (in Arrow, for Arrow-backed categories: no Python string per order)."""
    if not isinstance(values.dtype, pd.CategoricalDtype):
        return values.str.startswith(prefix, na=False).astype(bool).to_numpy()
    categories = values.cat.categories
    if not pd.api.types.is_string_dtype(categories):
        categories = categories.astype(str)
    flags = np.asarray(categories.str.startswith(prefix), dtype=bool)
    return np.append(flags, False)[values.cat.codes.to_numpy()]


def _excluded(frame: pd.DataFrame, rules: CleaningRules) -> pd.Series:
    excluded = frame["item_id"].isin(rules.excluded_items)
    if rules.item_pattern:
        excluded |= ~frame["item_id"].str.fullmatch(
            re.compile(rules.item_pattern), na=False
        ).astype(bool)
    return excluded


Predicate = Callable[
    [pd.DataFrame, CleaningRules, pd.Timestamp, NDArray[np.bool_]],
    "pd.Series | NDArray[np.bool_] | None",
]
_PANDAS_PREDICATES: dict[str, Predicate] = {
    "missing_item": lambda f, r, limit, alive: f["item_id"].isna(),
    "unparseable_timestamp": lambda f, r, limit, alive: (
        f["timestamp"].isna() if "timestamp" in f else None
    ),
    "future_timestamp": lambda f, r, limit, alive: (
        f["timestamp"] > limit if "timestamp" in f else None
    ),
    "unparseable_quantity": lambda f, r, limit, alive: ~np.isfinite(f["quantity"]),
    "missing_user_and_order": lambda f, r, limit, alive: f["user_id"].isna() & f["order_id"].isna(),
    "duplicate": lambda f, r, limit, alive: _duplicated(
        f
    ),  # an earlier equal row is alive iff this one is
    "excluded_item": lambda f, r, limit, alive: _excluded(f, r),
    "netted_out_by_return": lambda f, r, limit, alive: _netted_out(f, r, alive),
    "return_or_cancellation": lambda f, r, limit, alive: _is_return(f, r),
    "non_positive_quantity": lambda f, r, limit, alive: f["quantity"] <= 0,
    "implausible_quantity": lambda f, r, limit, alive: f["quantity"] > r.max_quantity,
    "zero_or_negative_price": lambda f, r, limit, alive: (
        f["price"] <= 0 if r.drop_zero_price and "price" in f else None
    ),
}
if set(_PANDAS_PREDICATES) != {step.reason for step in STEPS}:
    raise ImportError("recommender.data.cleaning does not implement every rule of STEPS in pandas")


def _duplicated(frame: pd.DataFrame) -> NDArray[np.bool_]:
    """Rows equal to an earlier row in every column, found through one 64-bit hash per row
    (a few hundred MB for 20M lines, where ``DataFrame.duplicated``'s group index of seven
    columns needs several GB). A categorical column is hashed by its codes: equal codes are
    equal values (the categories are distinct), and no category is turned into a Python
    object to be hashed."""
    codes = pd.DataFrame(
        {
            name: column.cat.codes if isinstance(column.dtype, pd.CategoricalDtype) else column
            for name, column in frame.items()
        },
        copy=False,
    )
    # A block of rows at a time: hashing a column makes several temporaries of its length.
    hashes = np.empty(len(codes), dtype=np.uint64)
    block = 1 << 21
    for start in range(0, len(codes), block):
        hashes[start : start + block] = pd.util.hash_pandas_object(
            codes.iloc[start : start + block], index=False
        ).to_numpy()
    del codes
    return _repeats_of_earlier(hashes)


def _repeats_of_earlier(hashes: NDArray[np.uint64]) -> NDArray[np.bool_]:
    """``pd.Series(hashes).duplicated(keep="first")``: each value equal to an earlier one.

    A log has few duplicates: one sort finds the values that occur more than once (numpy
    sorts 64-bit integers fast), and only the lines holding one of those go through a hash
    table, in line order. At 20M lines 1.7 s against 4 s for the hash table of every line,
    which is also larger than the sorted copy.
    """
    ordered = np.sort(hashes)
    again = ordered[1:] == ordered[:-1]
    repeated = np.zeros(len(hashes), dtype=bool)
    if not again.any():
        return repeated
    values = np.unique(ordered[1:][again])
    del ordered, again
    candidates = np.flatnonzero(pd.Series(hashes).isin(values).to_numpy())
    repeated[candidates] = pd.Series(hashes[candidates]).duplicated(keep="first").to_numpy()
    return repeated


def _netted_out(
    frame: pd.DataFrame, rules: CleaningRules, alive: NDArray[np.bool_]
) -> NDArray[np.bool_]:
    """Purchases that the same customer's returns of the item cancel in full.

    A customer who bought 6 and returned 6 did not want the item; one who bought 6 and
    returned 2 still did, so those purchases stay. Guest returns cannot be matched to a
    buyer and are only removed themselves (``return_or_cancellation``). Only ``alive`` rows
    (not removed by an earlier rule) count on either side.
    """
    is_return = np.asarray(_is_return(frame, rules), dtype=bool)
    known = frame["user_id"].notna().to_numpy() & alive
    netted_out = np.zeros(len(frame), dtype=bool)
    if not (is_return & known).any():
        return netted_out
    # One integer per (customer, item), from the two columns' codes.
    users = _codes(frame["user_id"])
    items = _codes(frame["item_id"])
    pair = users * (int(items.max(initial=-1)) + 2) + items
    quantity = frame["quantity"].to_numpy()
    returns, purchases = is_return & known, ~is_return & known
    returned = pd.Series(np.abs(quantity[returns])).groupby(pair[returns]).sum()
    bought = pd.Series(quantity[purchases]).groupby(pair[purchases]).sum()
    fully_returned = returned.reindex(bought.index) >= bought  # NaN (no return) compares False
    cancelled_pairs = fully_returned.index[fully_returned.to_numpy()]
    if len(cancelled_pairs):
        netted_out = np.isin(pair, cancelled_pairs.to_numpy()) & purchases
    return netted_out


def _codes(values: pd.Series) -> NDArray[np.int64]:
    """Integer codes of a column's values (-1 = missing): a categorical's own, else factorized
    (a log with purchases recorded through the API appended has plain object columns)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return values.cat.codes.to_numpy().astype(np.int64)
    return pd.factorize(values)[0].astype(np.int64)


def per_value(values: pd.Series, convert: Callable[[pd.Series], pd.Series]) -> pd.Series:
    """``convert`` applied once per distinct value of a categorical column (to every value otherwise).

    A log's quantities, prices and times repeat across millions of lines; parsing each
    distinct text once and spreading the result by the integer codes is exact and cheap.
    """
    if not isinstance(values.dtype, pd.CategoricalDtype):
        return convert(values)
    codes = values.cat.codes.to_numpy()
    converted = convert(pd.Series(values.cat.categories, dtype=values.cat.categories.dtype))
    if len(converted) == 0:
        return convert(pd.Series([None] * len(values), index=values.index, dtype=object))
    spread = converted.iloc[np.maximum(codes, 0)].reset_index(drop=True)
    spread.index = values.index
    missing = codes < 0
    return spread.mask(missing) if missing.any() else spread


def _numbers(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values, errors="coerce")


def _parse_timestamps(values: pd.Series) -> pd.Series:
    """Parse times to naive UTC; unparseable values become NaT (and are then rejected)."""
    if pd.api.types.is_datetime64_dtype(values):
        return values  # naive times are UTC already: kept as they are, not copied twice
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = pd.to_datetime(values, utc=True)
    else:
        text = values.astype("string")
        parsed = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
        retry = parsed.isna() & text.notna()
        if retry.any():
            parsed[retry] = pd.to_datetime(text[retry], errors="coerce", utc=True, format="mixed")
    return parsed.dt.tz_localize(None)


def drop_customers(purchases: pd.DataFrame, customers: set[str]) -> tuple[pd.DataFrame, int]:
    """``purchases`` without the lines of ``customers`` (forgotten ones), and how many went."""
    if not customers:
        return purchases, 0
    gone = purchases["user_id"].isin(customers).to_numpy()
    if not gone.any():
        return purchases, 0
    return purchases[~gone].reset_index(drop=True), int(gone.sum())
