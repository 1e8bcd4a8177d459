"""RecommendationService: a loaded model version answering in external ids, with fallbacks.

Built once per model version from an ``artifacts.Artifact``; everything a request needs
(id dicts, names as Python strings, the neighbour matrix, the trending ranking, ALS factors)
is prepared here so that a request does one or two BLAS calls and a partial sort. Imports
no pandas and knows nothing of HTTP.

Strategies, as each response names them:
``item-knn`` (item-to-item neighbours), ``als`` (matrix factorisation alone), ``blend``
(both, plus trending, mixed by ``algorithms.blend.blend_scores`` with the weights the training
run chose and stored in the manifest), ``popular`` (time-decayed popularity, the fallback
when nothing personal is known).
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from . import artifacts
from .activity import Event
from .algorithms.als import ALS
from .algorithms.base import top_n, top_n_rows
from .algorithms.blend import blend_scores
from .algorithms.neighbours import table_matrix
from .data.idmap import IdMap
from .errors import ArtifactError

logger = logging.getLogger(__name__)

_POPULAR_DEPTH = 2000
# How much one event says about what a shopper wants, by type.
TYPE_WEIGHTS = {"view": 1.0, "cart": 2.0, "wishlist": 2.0, "purchase": 3.0}
EVENT_VERBS = {"view": "viewed", "cart": "added to cart", "wishlist": "wished for", "purchase": "bought"}


@dataclass(frozen=True)
class Filters:
    """Business filters, applied before the top-k cut so that k results come back when k qualify."""

    exclude: frozenset[str] = frozenset()
    available_only: bool = False
    category: str | None = None
    min_price: float | None = None
    max_price: float | None = None
    max_per_category: int | None = None


@dataclass
class Ranked:
    """A ranking in internal indices, before it is turned into JSON."""

    items: list[int] = field(default_factory=list)
    scores: list[float | None] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    reasons: list[int] = field(default_factory=list)
    strategy: str = "popular"


class NeighbourTable:
    """Dense top-K neighbour arrays of one item-to-item component, as saved by ``ItemKNN``."""

    def __init__(self, arrays: dict[str, NDArray[Any]], prefix: str, basis: str) -> None:
        self.ids = arrays[f"{prefix}.neighbour_ids"]
        self.scores = arrays[f"{prefix}.neighbour_scores"]
        self.support = arrays[f"{prefix}.neighbour_support"]
        self.basis = basis

    def matrix(self) -> sp.csr_matrix:
        """The table as an items x items CSR matrix (row: item, columns: its neighbours)."""
        return table_matrix(self.ids, self.scores)


class RecommendationService:
    """Answers for one model version; read-only and safe to share between threads.

    Parameters
    ----------
    artifact : a loaded, verified model version.
    activity_half_life_hours : an event this old counts half as much as one just now.
    """

    def __init__(self, artifact: artifacts.Artifact, activity_half_life_hours: float = 72.0) -> None:
        arrays = artifact.arrays
        self.activity_half_life_hours = activity_half_life_hours
        try:
            self.version = artifact.version
            self.manifest = artifact.manifest
            components = artifact.manifest.get("components", {})
            self.items = IdMap(arrays["item_ids"])
            self.users = IdMap(arrays["user_ids"])
            self.names: list[str] = arrays["catalog.names"].tolist()
            self.prices_array = np.asarray(arrays["catalog.prices"], dtype=np.float64)
            self.prices: list[float | None] = [
                None if math.isnan(price) else round(price, 2) for price in self.prices_array.tolist()
            ]
            self.categories = np.asarray(arrays["catalog.categories"])
            self.category_names: list[str] = self.categories.tolist()
            self.available = np.asarray(arrays["catalog.available"], dtype=bool)
            self.tables = {
                name: NeighbourTable(arrays, name, components[name]["basis"])
                for name in ("also_bought", "bought_together") if name in components
            }
            self.user_items = _shared_csr(arrays, "user_items", (len(self.users), len(self.items)))
            trending = np.asarray(arrays["trending.popularity"], dtype=np.float64)
            self.trending_ranking = np.lexsort((np.arange(len(trending)), -trending))[:_POPULAR_DEPTH]
            self.trend = trending / trending.max() if trending.max() > 0 else trending
            blend = artifact.manifest.get("blend") or {}
            self.als_weight = float(blend.get("als_weight", 0.5)) if "als" in components else 0.0
            self.trend_weight = float(blend.get("trend_weight", 0.0))
            item_weight = blend.get("item_weight")
            self.item_weight = None if item_weight is None else float(item_weight)
            self.als: ALS | None = None
            if "als" in components:
                params = {k: components["als"][k] for k in ("regularization", "alpha")}
                self.als = ALS.from_arrays(
                    {"user_factors": arrays["als.user_factors"], "item_factors": arrays["als.item_factors"]},
                    **params,
                )
                self.als.gram()
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{artifact.path}: incomplete model: {exc}") from None
        n_items = len(self.items)
        for table in self.tables.values():
            if table.ids.shape[0] != n_items:
                raise ArtifactError(f"{artifact.path}: neighbour table does not match the item list")
        if not self.tables:
            raise ArtifactError(f"{artifact.path}: model has no item-to-item component")
        # Personal scores use the item-to-item model the training run chose ("personal"); a
        # model without one uses the neighbours over customers, else over orders.
        if "personal" in components:
            self.personal_table = NeighbourTable(arrays, "personal", components["personal"]["basis"])
        else:
            self.personal_table = self.tables.get("also_bought") or self.tables["bought_together"]
        if "personal.matrix.data" in arrays:
            self.knn_matrix = _shared_csr(arrays, "personal.matrix", (n_items, n_items))
        else:
            self.knn_matrix = self.personal_table.matrix()

    # ----------------------------------------------------------------- item pages
    def item_neighbours(
        self, component: str, item_id: str, k: int, filters: Filters = Filters()
    ) -> dict[str, Any]:
        """Top-k neighbours of an item from ``also_bought`` or ``bought_together``.

        Falls back to the other component when a log had no customers, and tops the list
        up with popular items when the item has fewer than k neighbours that pass the
        filters (or none, or is unknown); ``strategy`` and each entry's ``source`` say which.
        """
        table = self.tables.get(component) or next(iter(self.tables.values()))
        item_idx = self.items.index(item_id, missing="none")
        allowed = self._allowed(filters, exclude_idx=() if item_idx is None else (item_idx,))
        ranked = Ranked(strategy="item-knn")
        support: dict[int, int] = {}
        fallback = None
        if item_idx is None:
            fallback = "unknown_item"
        else:
            ids = np.asarray(table.ids[item_idx])
            keep = (ids >= 0) & allowed[np.maximum(ids, 0)]
            kept_ids = ids[keep].tolist()
            scores = dict(zip(kept_ids, np.asarray(table.scores[item_idx])[keep].tolist()))
            support = dict(zip(kept_ids, np.asarray(table.support[item_idx])[keep].tolist()))
            for item in self._diversify(kept_ids, k, filters):
                ranked.items.append(item)
                ranked.scores.append(scores[item])
                ranked.sources.append("item-knn")
            if not ranked.items:
                fallback = "too_few_buyers"
        self._fill_popular(ranked, k, allowed, filters)
        if fallback:
            ranked.strategy = "popular"
        response = self._response(ranked, extra={"bought_both": support})
        response = {"item": self._item(item_idx, item_id), "basis": table.basis, **response}
        if fallback:
            response["fallback_reason"] = fallback
        return response

    # ----------------------------------------------------------------- customers
    def for_user(
        self,
        user_id: str,
        k: int,
        filters: Filters = Filters(),
        exclude_purchased: bool = True,
        recent: Sequence[Event] = (),
    ) -> dict[str, Any]:
        """Personal picks: ALS for a customer in the model, blended with the neighbours of
        their purchases; a shopper the model has not seen is folded in from ``recent``
        activity; one with neither gets trending items (``strategy: popular``)."""
        user_idx = self.users.index(user_id, missing="none")
        owned = self._owned(user_idx, recent)
        if user_idx is not None:
            history, weights = self._purchase_row(user_idx)
            vector = self.als.user_factors_[user_idx] if self.als is not None else None
        else:
            history, weights = self._activity_weights(recent)
            vector = self.als.fold_in(history, weights) if self.als is not None and len(history) else None
        exclude = owned if exclude_purchased else np.empty(0, dtype=np.int64)
        ranked = self._rank(history, weights, vector, k, filters, exclude)
        response = self._response(ranked)
        if not len(history):
            response["fallback_reason"] = "new_customer"
        response["known_customer"] = user_idx is not None
        return response

    def for_items(
        self,
        item_ids: Sequence[str],
        k: int,
        filters: Filters = Filters(),
        weights: Sequence[float] | None = None,
        exclude_idx: NDArray[np.int64] | None = None,
    ) -> dict[str, Any]:
        """Recommendations from a list of items (a cart, a wish list): ALS fold-in blended
        with the items' neighbours; each result names the listed item that led to it."""
        indices = self.items.indices(item_ids)
        known = indices >= 0
        history = indices[known]
        history_weights = np.ones(len(history)) if weights is None else np.asarray(weights, dtype=float)[known]
        vector = self.als.fold_in(history, history_weights) if self.als is not None and len(history) else None
        exclude = history if exclude_idx is None else np.union1d(history, exclude_idx)
        ranked = self._rank(history, history_weights, vector, k, filters, exclude)
        response = self._response(ranked)
        response["unknown_items"] = [item for item, ok in zip(item_ids, known.tolist()) if not ok]
        if not len(history):
            response["fallback_reason"] = "no_known_items"
        return response

    def for_wishlist(
        self, user_id: str, wished: Sequence[str], recent: Sequence[Event], k: int, filters: Filters = Filters()
    ) -> dict[str, Any]:
        """What customers who wanted these items also bought, without the wish list itself
        and without what the shopper already bought; ``because`` names the wished item."""
        owned = self._owned(self.users.index(user_id, missing="none"), recent)
        response = self.for_items(wished, k, filters, exclude_idx=owned)
        response.pop("unknown_items", None)
        if not wished:
            response["fallback_reason"] = "empty_wishlist"
        return response

    def page_you_made(
        self, user_id: str, recent: Sequence[Event], k: int, filters: Filters = Filters()
    ) -> dict[str, Any]:
        """Recommendations from a shopper's recent activity, grouped by the item that led to them.

        Events weigh by type (``TYPE_WEIGHTS``) and recency (half-life
        ``activity_half_life_hours``). Items already bought (in the model or since) and the
        items of the activity itself are not recommended.
        """
        user_idx = self.users.index(user_id, missing="none")
        history, weights = self._activity_weights(recent)
        if not len(history):
            response = self.for_user(user_id, k, filters, recent=recent)
            response["fallback_reason"] = "no_recent_activity"
            response["groups"] = []
            return response
        vector = self.als.fold_in(history, weights) if self.als is not None else None
        exclude = np.union1d(self._owned(user_idx, recent), history)
        ranked = self._rank(history, weights, vector, k, filters, exclude)
        response = self._response(ranked)
        last_event = {}
        for event in recent:  # newest first: keep each item's latest event
            last_event.setdefault(event.item_id, event)
        groups: dict[int, dict[str, Any]] = {}
        for entry, reason in zip(response["recommendations"], ranked.reasons):
            if reason < 0:
                continue
            event = last_event[self.items.ids_[reason]]
            entry["because"]["event"] = event.type
            entry["because"]["text"] = f"because you {EVENT_VERBS[event.type]} {self.names[reason] or event.item_id}"
            group = groups.setdefault(reason, {"because": entry["because"], "recommendations": []})
            group["recommendations"].append({key: v for key, v in entry.items() if key != "because"})
        response["groups"] = list(groups.values())
        response["known_customer"] = user_idx is not None
        return response

    def batch_for_users(self, user_indices: NDArray[np.int64], k: int) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """Top-k items for many known customers at once, as ``for_user`` ranks them (same blend,
        purchases excluded), with matrix products over the batch instead of a loop.

        Returns (n, k) item indices (-1 where fewer qualify) and their scores.
        """
        rows = self.user_items[user_indices]
        item_scores = (rows @ self.knn_matrix).toarray()
        als_scores = self.als.user_factors_[user_indices] @ self.als.item_factors_.T if self.als is not None else None
        scores = blend_scores(item_scores, als_scores, self.trend, self.als_weight, self.trend_weight,
                              self.item_weight)
        if scores is None:
            scores = np.tile(self.trend, (len(user_indices), 1))
        scores[rows.nonzero()] = -np.inf
        best = top_n_rows(scores, k)
        best_scores = np.take_along_axis(scores, best, axis=1)
        return np.where(np.isfinite(best_scores), best, -1), best_scores

    def purchased(self, user_id: str) -> bool:
        """Whether the model was trained on purchases of this customer."""
        return self.users.index(user_id, missing="none") is not None

    def purchased_items(self, user_id: str) -> list[str]:
        """The items the model holds as bought by this customer (for a subject access request)."""
        user_idx = self.users.index(user_id, missing="none")
        return [] if user_idx is None else self.items.ids(self._purchases(user_idx))

    def not_personal(self, user_id: str, k: int, filters: Filters, reason: str) -> dict[str, Any]:
        """Trending items only, for a customer who opted out or was forgotten; flagged as such."""
        ranked = Ranked(strategy="popular")
        self._fill_popular(ranked, k, self._allowed(filters), filters)
        response = self._response(ranked)
        response["fallback_reason"] = reason
        return response

    def search(self, query: str, page: int, per_page: int) -> dict[str, Any]:
        """Catalog items whose id or name contains ``query`` (case-insensitive), most bought first."""
        if not hasattr(self, "_search_keys"):
            self._search_keys = [f"{item_id}\t{name}".lower() for item_id, name in
                                 zip(self.items.ids_.tolist(), self.names)]
            self._popularity = np.argsort(np.argsort(-np.asarray(self.trend), kind="stable"), kind="stable")
        needle = query.strip().lower()
        matches = np.array([i for i, key in enumerate(self._search_keys) if needle in key], dtype=np.int64)
        if len(matches):
            matches = matches[np.argsort(self._popularity[matches], kind="stable")]
        start = (page - 1) * per_page
        return {
            "query": query, "page": page, "per_page": per_page, "total": int(len(matches)),
            "items": [self._item(int(i), str(self.items.ids_[i])) for i in matches[start : start + per_page]],
        }

    def history(self, user_id: str) -> list[dict[str, Any]]:
        """The items the model holds as bought by this customer, with names and prices."""
        user_idx = self.users.index(user_id, missing="none")
        if user_idx is None:
            return []
        return [self._item(int(i), str(self.items.ids_[i])) for i in self._purchases(user_idx)]

    def info(self) -> dict[str, Any]:
        """What a caller may want to know about the loaded model (no file paths)."""
        manifest = self.manifest
        return {
            "version": self.version,
            "created_at": manifest.get("created_at"),
            "data_fingerprint": manifest.get("data", {}).get("sha256"),
            "counts": manifest.get("counts", {}),
            "components": manifest.get("components", {}),
            "cleaning": manifest.get("cleaning", {}),
            "training_seconds": manifest.get("training_seconds"),
            "evaluation": manifest.get("evaluation", {}),
            "blend": manifest.get("blend", {}),
        }

    # ----------------------------------------------------------------- internals
    def _rank(
        self,
        history: NDArray[np.int64],
        weights: NDArray[np.float64],
        vector: NDArray[np.float32] | None,
        k: int,
        filters: Filters,
        exclude: NDArray[np.int64],
    ) -> Ranked:
        """Blend, filter, cut to k, top up with trending items, and find each result's reason."""
        allowed = self._allowed(filters, exclude_idx=exclude)
        scores, strategy = self._scores(history, weights, vector)
        ranked = Ranked(strategy=strategy)
        if scores is not None:
            masked = np.where(allowed, scores, -np.inf)
            depth = k if filters.max_per_category is None else min(len(masked), 10 * k + 50)
            candidates, _ = top_n(masked, depth, positive_only=False)
            chosen = self._diversify(candidates.tolist(), k, filters)
            ranked.items = chosen
            ranked.scores = [float(scores[i]) for i in chosen]
            ranked.sources = [strategy] * len(chosen)
        self._fill_popular(ranked, k, allowed, filters)
        ranked.reasons = self._reasons(history, weights, ranked.items)
        return ranked

    def _scores(
        self, history: NDArray[np.int64], weights: NDArray[np.float64], vector: NDArray[np.float32] | None
    ) -> tuple[NDArray[np.float64] | None, str]:
        knn = None
        if len(history):
            _, columns, contributions = self._contributions(history, weights)
            if len(columns):
                knn = np.bincount(columns, weights=contributions, minlength=len(self.items))
                if not np.any(knn):
                    knn = None
        als = None
        if vector is not None and self.als is not None and self.als_weight > 0 and np.any(vector):
            als = self.als.item_factors_ @ vector
        if knn is None and als is None:
            return None, "popular"
        strategy = "blend" if knn is not None and als is not None else ("item-knn" if als is None else "als")
        return blend_scores(knn, als, self.trend, self.als_weight, self.trend_weight, self.item_weight), strategy

    def _contributions(
        self, history: NDArray[np.int64], weights: NDArray[np.float64]
    ) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.float64]]:
        """Every (history position, neighbour, weighted score) entry of the history's rows of the
        item-to-item matrix, gathered with numpy from the memory-mapped CSR arrays (no sparse
        objects built per request)."""
        matrix = self.knn_matrix
        starts = np.asarray(matrix.indptr[history], dtype=np.int64)
        lengths = np.asarray(matrix.indptr[history + 1], dtype=np.int64) - starts
        offsets = np.cumsum(lengths) - lengths
        positions = np.arange(lengths.sum()) - np.repeat(offsets - starts, lengths)
        owners = np.repeat(np.arange(len(history)), lengths)
        return owners, matrix.indices[positions], matrix.data[positions] * np.asarray(weights)[owners]

    def _reasons(self, history: NDArray[np.int64], weights: NDArray[np.float64], chosen: list[int]) -> list[int]:
        """For each chosen item, the history item that contributed most (-1 when none did).

        The item-to-item contribution decides; where there is none, the history item whose
        ALS factors are closest does.
        """
        if not len(history) or not chosen:
            return [-1] * len(chosen)
        columns = np.asarray(chosen)
        owners, neighbours, contributions = self._contributions(history, weights)
        relevant = np.isin(neighbours, columns) & (contributions > 0)
        owners, neighbours, contributions = owners[relevant], neighbours[relevant], contributions[relevant]
        order = np.lexsort((-contributions, neighbours))
        first = np.r_[True, np.diff(neighbours[order]) != 0]
        best_owner = dict(zip(neighbours[order][first].tolist(), owners[order][first].tolist()))
        closest = None
        if self.als is not None and len(best_owner) < len(chosen):
            factors = self.als.item_factors_
            closest = (factors[history] @ factors[columns].T).argmax(axis=0)
        reasons = []
        for position, item in enumerate(chosen):
            owner = best_owner.get(item)
            if owner is None and closest is not None:
                owner = int(closest[position])
            reasons.append(int(history[owner]) if owner is not None else -1)
        return reasons

    def _allowed(self, filters: Filters, exclude_idx: Sequence[int] | NDArray[np.int64] = ()) -> NDArray[np.bool_]:
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

    def _diversify(self, candidates: list[int], k: int, filters: Filters) -> list[int]:
        """The first k candidates, at most ``max_per_category`` from one category.

        A sequential greedy pick by nature; it walks only the candidates already ranked.
        """
        if filters.max_per_category is None:
            return candidates[:k]
        chosen: list[int] = []
        per_category: dict[str, int] = {}
        for item in candidates:
            category = self.category_names[item]
            if per_category.get(category, 0) < filters.max_per_category:
                per_category[category] = per_category.get(category, 0) + 1
                chosen.append(item)
                if len(chosen) == k:
                    break
        return chosen

    def _fill_popular(self, ranked: Ranked, k: int, allowed: NDArray[np.bool_], filters: Filters) -> None:
        """Top a short ranking up with trending items that pass the same filters."""
        if len(ranked.items) >= k:
            return
        taken = set(ranked.items)
        candidates = [i for i in self.trending_ranking[allowed[self.trending_ranking]].tolist() if i not in taken]
        if filters.max_per_category is not None:
            candidates = self._diversify(ranked.items + candidates, len(ranked.items) + len(candidates), filters)
            candidates = [i for i in candidates if i not in taken]
        for item in candidates[: k - len(ranked.items)]:
            ranked.items.append(item)
            ranked.scores.append(None)
            ranked.sources.append("popular")

    def _purchases(self, user_idx: int) -> NDArray[np.int64]:
        """Items a customer bought in the model's data (a slice of the memory-mapped arrays)."""
        return self._purchase_row(user_idx)[0]

    def _purchase_row(self, user_idx: int) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """A known customer's items and how much each counts (the model's recency weights)."""
        start, stop = self.user_items.indptr[user_idx], self.user_items.indptr[user_idx + 1]
        return (np.asarray(self.user_items.indices[start:stop], dtype=np.int64),
                np.asarray(self.user_items.data[start:stop], dtype=np.float64))

    def _owned(self, user_idx: int | None, recent: Sequence[Event]) -> NDArray[np.int64]:
        """Items a shopper bought: in the model's data, and through the API since."""
        owned = self._purchases(user_idx) if user_idx is not None else np.empty(0, np.int64)
        bought = self.items.indices([e.item_id for e in recent if e.type == "purchase"])
        return np.union1d(owned, bought[bought >= 0])

    def _activity_weights(
        self, recent: Sequence[Event], now: float | None = None
    ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """Known items of recent events, each weighted by type and recency (summed per item)."""
        now = time.time() if now is None else now
        weights: dict[int, float] = {}
        for event in recent:
            item_idx = self.items.index(event.item_id, missing="none")
            if item_idx is None:
                continue
            age_hours = max(0.0, now - event.timestamp) / 3600.0
            weight = TYPE_WEIGHTS[event.type] * 0.5 ** (age_hours / self.activity_half_life_hours)
            weights[item_idx] = weights.get(item_idx, 0.0) + weight
        history = np.fromiter(weights.keys(), dtype=np.int64, count=len(weights))
        return history, np.fromiter(weights.values(), dtype=np.float64, count=len(weights))

    def _response(self, ranked: Ranked, extra: dict[str, dict[int, Any]] | None = None) -> dict[str, Any]:
        recommendations = []
        reasons = ranked.reasons or [-1] * len(ranked.items)
        for item, score, source, reason in zip(ranked.items, ranked.scores, ranked.sources, reasons):
            entry: dict[str, Any] = {
                "item_id": str(self.items.ids_[item]),
                "name": self.names[item],
                "price": self.prices[item],
                "score": None if score is None else round(score, 6),
                "source": source,
            }
            for key, values in (extra or {}).items():
                if item in values:
                    entry[key] = values[item]
            if reason >= 0:
                entry["because"] = {"item_id": str(self.items.ids_[reason]), "name": self.names[reason]}
            recommendations.append(entry)
        strategy = ranked.strategy if any(s != "popular" for s in ranked.sources) else "popular"
        return {"strategy": strategy, "model_version": self.version, "recommendations": recommendations}

    def _item(self, item_idx: int | None, item_id: str) -> dict[str, Any]:
        if item_idx is None:
            return {"item_id": item_id, "known": False}
        return {"item_id": item_id, "name": self.names[item_idx], "price": self.prices[item_idx], "known": True}


def _shared_csr(arrays: dict[str, NDArray[Any]], prefix: str, shape: tuple[int, int]) -> sp.csr_matrix:
    """A CSR matrix over memory-mapped arrays, without copying them (all workers share the pages)."""
    matrix = sp.csr_matrix(shape, dtype=np.float32)
    matrix.data, matrix.indices, matrix.indptr = (
        arrays[f"{prefix}.data"], arrays[f"{prefix}.indices"], arrays[f"{prefix}.indptr"]
    )
    if matrix.indptr[-1] != len(matrix.indices) or len(matrix.indptr) != shape[0] + 1:
        raise ValueError(f"{prefix}: inconsistent sparse arrays")
    return matrix


class ModelHolder:
    """Keeps the service of the version ``current`` points at, reloading when it changes.

    The link is checked at most every ``reload_interval`` seconds. A new version is loaded
    and verified beside the old one and swapped in with one assignment; a version that fails
    to load is logged and skipped, and the old one keeps serving.
    """

    def __init__(
        self, models_dir: str | Path, reload_interval: float = 2.0,
        on_load: Callable[[str, str | None], None] | None = None, **service_options: Any,
    ) -> None:
        self.models_dir = Path(models_dir)
        self.on_load = on_load
        self.reload_interval = reload_interval
        self.service_options = service_options
        self.service: RecommendationService | None = None
        self.last_error: str | None = None
        self._rejected_version: str | None = None
        self._checked_at = -math.inf
        self._lock = threading.Lock()
        self.refresh(force=True)

    def get(self) -> RecommendationService | None:
        """The current service, after a cheap check (one ``readlink``) if the interval has passed."""
        if time.monotonic() - self._checked_at >= self.reload_interval:
            self.refresh()
        return self.service

    def refresh(self, force: bool = False) -> None:
        if not self._lock.acquire(blocking=force):
            return
        try:
            self._checked_at = time.monotonic()
            try:
                version = artifacts.current_version(self.models_dir)
            except ArtifactError as exc:
                self.last_error = str(exc)
                return
            loaded = self.service.version if self.service else None
            if version is None:
                self.last_error = "no trained model yet; run make train"
                return
            if version in (loaded, self._rejected_version):
                return
            try:
                artifact = artifacts.load(self.models_dir / version)
                self.service = RecommendationService(artifact, **self.service_options)
                self.last_error = None
                logger.info("serving model version %s", version)
                if self.on_load is not None:
                    self.on_load(self.service.version, self.service.manifest.get("created_at"))
            except ArtifactError as exc:
                self._rejected_version = version
                self.last_error = f"model version {version} refused: {exc}"
                logger.error("refusing model version %s, keeping %s: %s", version, loaded, exc)
        finally:
            self._lock.release()
