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
    ordered = purchases.sort_values("timestamp", kind="stable") if "timestamp" in purchases else purchases
    latest = pd.DataFrame(index=pd.Index(item_ids.ids_, name="item_id"))
    if "name" in ordered:
        named = ordered.dropna(subset=["name"])
        counts = named.groupby(["item_id", "name"], observed=True).size().reset_index(name="n")
        counts = counts.sort_values(["item_id", "n"], kind="stable")
        latest["name"] = counts.groupby("item_id", observed=True)["name"].last()
    if "price" in ordered:
        latest["price"] = ordered.dropna(subset=["price"]).groupby("item_id", observed=True)["price"].last()
    if override is not None:
        extra = override.set_index("item_id").reindex(latest.index)
        for column in ("name", "price", "category", "available"):
            if column in extra:
                latest[column] = extra[column].combine_first(latest[column]) if column in latest else extra[column]
    names = latest["name"].astype("string").fillna("") if "name" in latest else pd.Series("", index=latest.index)
    prices = pd.to_numeric(latest["price"], errors="coerce") if "price" in latest else pd.Series(np.nan, index=latest.index)
    categories = (
        latest["category"].astype("string").fillna("") if "category" in latest else pd.Series("", index=latest.index)
    )
    available = (
        latest["available"].astype("boolean").fillna(True) if "available" in latest
        else pd.Series(True, index=latest.index)
    )
    return {
        "names": np.asarray(names.to_numpy(dtype=str), dtype=np.str_),
        "prices": prices.to_numpy(dtype=np.float32, na_value=np.nan),
        "categories": np.asarray(categories.to_numpy(dtype=str), dtype=np.str_),
        "available": available.to_numpy(dtype=bool),
    }
