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
    # Grouped without sorting the whole log: a 20M-line log is not copied to order it by time.
    timed = ["timestamp"] if "timestamp" in purchases else []
    latest = pd.DataFrame(index=pd.Index(item_ids.ids_, name="item_id"))
    if "name" in purchases:
        named = purchases[["item_id", "name", *timed]].dropna(subset=["name"])
        grouped = named.groupby(["item_id", "name"], observed=True)
        counts = grouped.size().rename("n").to_frame()
        if timed:
            counts["seen"] = grouped["timestamp"].max()
        counts = counts.reset_index().sort_values(
            ["item_id", "n", *(["seen"] if timed else [])], kind="stable"
        )
        latest["name"] = counts.groupby("item_id", observed=True)["name"].last()
    if "price" in purchases:
        priced = purchases[["item_id", "price", *timed]].dropna(subset=["price"])
        if timed:
            rows = priced.groupby("item_id", observed=True)["timestamp"].idxmax()
            latest["price"] = pd.Series(
                priced.loc[rows.to_numpy(), "price"].to_numpy(), index=rows.index.astype(str)
            )
        else:
            latest["price"] = priced.groupby("item_id", observed=True)["price"].last()
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
    earliest = pd.Series(seconds).groupby(index).min()
    out = np.full(len(item_ids), np.nan)
    known = earliest.index.to_numpy() >= 0
    out[earliest.index.to_numpy()[known]] = earliest.to_numpy()[known]
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
