"""The catalog a model version serves, and the business filters over it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..data.idmap import IdMap


@dataclass(frozen=True)
class Filters:
    """Business filters, applied before the top-k cut so that k results come back when k qualify."""

    exclude: frozenset[str] = frozenset()
    available_only: bool = False
    category: str | None = None
    min_price: float | None = None
    max_price: float | None = None
    max_per_category: int | None = None

    def masks_items(self) -> bool:
        """Whether any filter takes items out of the catalog (``max_per_category`` does not:
        it only thins a ranking): without one, ``Catalog.allowed`` is every item but the
        excluded indices."""
        return bool(
            self.exclude
            or self.available_only
            or self.category is not None
            or self.min_price is not None
            or self.max_price is not None
        )


class Catalog:
    """Items in model order: ids, names, prices, categories and availability.

    Ids, names and prices are kept as Python lists too, because a response reads a handful
    of them and a list index is cheaper than a numpy scalar conversion (more so on a
    memory-mapped array, whose every indexing goes through numpy's memmap subclass).
    """

    def __init__(self, item_ids: NDArray[Any], arrays: dict[str, NDArray[Any]]) -> None:
        self.items = IdMap(item_ids)
        self.ids: list[str] = self.items.as_list()
        self.names: list[str] = arrays["names"].tolist()
        self.prices_array = np.asarray(arrays["prices"], dtype=np.float64)
        self.prices: list[float | None] = [
            None if math.isnan(p) else round(p, 2) for p in self.prices_array.tolist()
        ]
        self.categories = np.asarray(arrays["categories"])
        self.category_names: list[str] = self.categories.tolist()
        self.available = np.asarray(arrays["available"], dtype=bool)
        if (
            not len(self.names)
            == len(self.prices)
            == len(self.categories)
            == len(self.available)
            == len(self.items)
        ):
            raise ValueError("catalog arrays do not match the item list")

    def __len__(self) -> int:
        return len(self.items)

    def allowed(
        self, filters: Filters, exclude_idx: Sequence[int] | NDArray[np.int64] = ()
    ) -> NDArray[np.bool_]:
        """The items a response may hold: a mask over the catalog."""
        allowed = np.ones(len(self.items), dtype=bool)
        if filters.available_only:
            allowed &= self.available
        if filters.category is not None:
            allowed &= self.categories == filters.category
        if filters.min_price is not None:
            allowed &= self.prices_array >= filters.min_price
        if filters.max_price is not None:
            allowed &= self.prices_array <= filters.max_price
        if filters.exclude:
            excluded = self.items.indices(filters.exclude)
            allowed[excluded[excluded >= 0]] = False
        if len(exclude_idx):
            allowed[np.asarray(exclude_idx, dtype=np.int64)] = False
        return allowed

    def diversify(self, candidates: list[int], k: int, filters: Filters) -> list[int]:
        """The first k candidates, at most ``max_per_category`` from one category."""
        if filters.max_per_category is None:
            return candidates[:k]
        return [candidates[i] for i in self._diverse(candidates, k, filters.max_per_category)]

    def diversify_places(
        self, items: NDArray[np.integer], places: NDArray[np.int64], k: int, filters: Filters
    ) -> NDArray[np.int64]:
        """``diversify`` of ``items[places]``, as the places it keeps: a caller holding other
        arrays in the order of ``items`` (scores, support) reads the chosen ones' by them."""
        if filters.max_per_category is None:
            return places[:k]
        chosen = self._diverse(items[places].tolist(), k, filters.max_per_category)
        return places[np.asarray(chosen, dtype=np.int64)]

    def _diverse(self, candidates: list[int], k: int, per_category_limit: int) -> list[int]:
        """Positions in ``candidates`` of the first k, at most ``per_category_limit`` from one
        category. A sequential greedy pick by nature; it walks only the candidates already
        ranked."""
        chosen: list[int] = []
        per_category: dict[str, int] = {}
        for position, item in enumerate(candidates):
            category = self.category_names[item]
            if per_category.get(category, 0) < per_category_limit:
                per_category[category] = per_category.get(category, 0) + 1
                chosen.append(position)
                if len(chosen) == k:
                    break
        return chosen

    def search(self, query: str, order: NDArray[np.int64]) -> NDArray[np.int64]:
        """Items whose id or name contains ``query`` (case-insensitive), sorted by ``order``
        (each item's place; lower first)."""
        if not hasattr(self, "_search_keys"):
            self._search_keys = [
                f"{item_id}\t{name}".lower() for item_id, name in zip(self.ids, self.names)
            ]
        needle = query.strip().lower()
        matches = np.array(
            [i for i, key in enumerate(self._search_keys) if needle in key], dtype=np.int64
        )
        return matches[np.argsort(order[matches], kind="stable")] if len(matches) else matches
