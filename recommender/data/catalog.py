"""The product catalog: each item's display name and last seen price, from the log or a file."""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from .idmap import IdMap


def build_catalog(
    purchases: pd.DataFrame, item_ids: IdMap, override: pd.DataFrame | None = None
) -> dict[str, NDArray[np.generic]]:
    """Names and prices aligned with ``item_ids``: from the log, then the override file.

    The name is the one the log uses most often for the item (a one-off typo or a note such
    as "damaged" does not rename a product); the price is the last one seen.

    Returns
    -------
    ``names`` (<U, "" when unknown), ``prices`` (float32, NaN when unknown), ``categories``
    (<U, "" when unknown) and ``available`` (bool, True unless the catalog says otherwise),
    each of length n_items.
    """
    latest = pd.DataFrame(index=pd.Index(item_ids.ids_, name="item_id"))
    if "name" in purchases or "price" in purchases:
        # Per line only integer codes and one mask at a time: no column of the log is copied
        # into a frame of its own, grouped or sorted (a 20M-line log would be held twice).
        items, item_index = _codes(purchases["item_id"])
        position = np.append(item_ids.indices(item_index.astype(str)), -1)
        times = (
            purchases["timestamp"].to_numpy().view(np.int64) if "timestamp" in purchases else None
        )
        if "name" in purchases:
            latest["name"] = _most_used_names(
                items, item_index, purchases["name"], times, position, len(item_ids)
            )
        if "price" in purchases:
            latest["price"] = _latest_prices(
                items, purchases["price"], times, position, len(item_ids)
            )
    if override is not None:
        extra = override.set_index("item_id").reindex(latest.index)
        for column in ("name", "price", "category", "available"):
            if column in extra:
                latest[column] = (
                    extra[column].combine_first(latest[column])
                    if column in latest
                    else extra[column]
                )
    names = (
        latest["name"].astype("string").fillna("")
        if "name" in latest
        else pd.Series("", index=latest.index)
    )
    prices = (
        pd.to_numeric(latest["price"], errors="coerce")
        if "price" in latest
        else pd.Series(np.nan, index=latest.index)
    )
    categories = (
        latest["category"].astype("string").fillna("")
        if "category" in latest
        else pd.Series("", index=latest.index)
    )
    available = (
        latest["available"].astype("boolean").fillna(True)
        if "available" in latest
        else pd.Series(True, index=latest.index)
    )
    return {
        "names": np.asarray(names.to_numpy(dtype=str), dtype=np.str_),
        "prices": prices.to_numpy(dtype=np.float32, na_value=np.nan),
        "categories": np.asarray(categories.to_numpy(dtype=str), dtype=np.str_),
        "available": available.to_numpy(dtype=bool),
    }


def _codes(values: pd.Series) -> tuple[NDArray[np.integer], pd.Index]:
    """Integer codes of a column (-1 = missing) and the values they stand for, in the order
    pandas groups them: a categorical's category order, else sorted."""
    if not isinstance(values.dtype, pd.CategoricalDtype):
        values = values.astype("category")
    return values.cat.codes.to_numpy(), values.cat.categories


def _most_used_names(
    items: NDArray[np.integer],
    item_index: pd.Index,
    names: pd.Series,
    times: NDArray[np.int64] | None,
    position: NDArray[np.int64],
    n_items: int,
) -> NDArray[np.object_]:
    """Per item (aligned with the catalog), the name its lines use most; ties go to the name
    seen latest, then to the later name in grouping order (what a stable sort of the
    (item, name) groups by count and time, keeping each item's last, chooses)."""
    name_codes, name_index = _codes(names)
    named = (name_codes >= 0) & (items >= 0)
    width = max(len(name_index), 1)
    pair = items[named].astype(np.int64)
    pair *= width
    pair += name_codes[named]
    del name_codes
    pairs, inverse = _few_distinct(pair)
    del pair
    counts = np.bincount(inverse, minlength=len(pairs))
    seen = np.full(len(pairs), np.iinfo(np.int64).min, dtype=np.int64)
    if times is not None:
        np.maximum.at(seen, inverse, times[named])
    del inverse, named
    pair_items, pair_names = np.divmod(pairs, width)
    # Each item's best pair sorts last: by item, then count, time seen and name order.
    order = np.lexsort((pair_names, seen, counts, pair_items))
    last = np.append(pair_items[order][1:] != pair_items[order][:-1], True)
    best = order[last]
    out = np.full(n_items, None, dtype=object)
    target = position[pair_items[best]]
    found = target >= 0
    out[target[found]] = np.asarray(name_index, dtype=object)[pair_names[best][found]]
    return out


def _few_distinct(keys: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.integer]]:
    """``unique_inverse`` of keys with few distinct values (a log's (item, name) pairs: about
    one per item, against millions of lines): hashed, then only the distinct keys sorted.
    Linear in the lines, where a sort of every line costs several seconds at 20M lines."""
    codes, distinct = pd.factorize(keys, sort=False)
    order = np.argsort(distinct, kind="stable")
    index_type = np.int32 if len(keys) < np.iinfo(np.int32).max else np.int64
    rank = np.empty(len(order), dtype=index_type)
    rank[order] = np.arange(len(order), dtype=index_type)
    return distinct[order], rank[codes]


def _latest_prices(
    items: NDArray[np.integer],
    prices: pd.Series,
    times: NDArray[np.int64] | None,
    position: NDArray[np.int64],
    n_items: int,
) -> NDArray[np.float64]:
    """Per item (aligned with the catalog), the price of its latest priced line (the first
    such line in the log among equal times); without times, its last priced line."""
    values = prices.to_numpy(dtype=np.float64, na_value=np.nan)
    priced = ~np.isnan(values) & (items >= 0)
    # The usual case, every line priced: the per-line arrays are used as they are, not copied.
    every = bool(priced.all())
    lines = None if every else np.flatnonzero(priced)
    line_items = items if lines is None else items[lines]
    line_times = times if lines is None or times is None else times[lines]
    del priced
    chosen = np.full(len(position) - 1, -1, dtype=np.int64)
    if line_times is None:
        np.maximum.at(chosen, line_items, np.arange(len(values)) if lines is None else lines)
    else:
        latest = np.full(len(position) - 1, np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(latest, line_items, line_times)
        at_latest = np.flatnonzero(line_times == latest[line_items])
        del line_times
        lines, line_items = (
            at_latest if lines is None else lines[at_latest],
            line_items[at_latest],
        )
        chosen[:] = len(values)
        np.minimum.at(chosen, line_items, lines)
        chosen[chosen == len(values)] = -1
    out = np.full(n_items, np.nan)
    has = np.flatnonzero(chosen >= 0)
    target = position[has]
    found = target >= 0
    out[target[found]] = values[chosen[has[found]]]
    return out


def first_sold(purchases: pd.DataFrame, item_ids: IdMap) -> NDArray[np.float64]:
    """When each item (aligned with ``item_ids``) was first bought, in seconds since the epoch
    (NaN without timestamps): what "new for you" alerts call new."""
    if "timestamp" not in purchases or not len(purchases):
        return np.full(len(item_ids), np.nan)
    seconds = (
        purchases["timestamp"].to_numpy(dtype="datetime64[s]").astype(np.int64).astype(np.float64)
    )
    items = purchases["item_id"]
    if isinstance(items.dtype, pd.CategoricalDtype):  # looked up once per distinct item
        codes = items.cat.codes.to_numpy()
        index = item_ids.indices(items.cat.categories.astype(str))[np.maximum(codes, 0)]
        index[codes < 0] = -1
    else:
        index = item_ids.indices(items)
    # Per item, the smallest time of its lines: one unbuffered ``minimum.at`` pass (a groupby
    # hashes and sorts the lines' item numbers first).
    known = index >= 0
    out = np.full(len(item_ids), np.inf)
    np.minimum.at(out, index[known], seconds[known])
    out[np.isinf(out)] = np.nan
    return out


def catalog_states(catalog: pd.DataFrame) -> list[tuple[str, float | None, bool | None]]:
    """A catalog file's ``(item_id, price, available)`` per item (None where not given), as
    the activity store records them."""
    prices = catalog["price"] if "price" in catalog else [None] * len(catalog)
    available = catalog["available"] if "available" in catalog else [None] * len(catalog)
    return [
        (str(item), None if pd.isna(price) else float(price), None if pd.isna(flag) else bool(flag))
        for item, price, flag in zip(catalog["item_id"], prices, available)
    ]
