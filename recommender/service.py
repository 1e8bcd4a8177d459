"""RecommendationService: a loaded model version answering in external ids, with fallbacks.

Built once per model version from an ``artifacts.Artifact``; everything a request needs
(id dict, names as Python strings, the popularity ranking) is prepared here so that a
request only indexes arrays. Imports no pandas and knows nothing of HTTP.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import artifacts
from .data.idmap import IdMap
from .errors import ArtifactError

logger = logging.getLogger(__name__)

_POPULAR_DEPTH = 1000


class NeighbourTable:
    """Dense top-K neighbour arrays of one item-to-item component, as saved by ``ItemKNN``."""

    def __init__(self, arrays: dict[str, NDArray[Any]], prefix: str, basis: str) -> None:
        self.ids = arrays[f"{prefix}.neighbour_ids"]
        self.scores = arrays[f"{prefix}.neighbour_scores"]
        self.support = arrays[f"{prefix}.neighbour_support"]
        self.basis = basis


class RecommendationService:
    """Answers for one model version; read-only and safe to share between threads."""

    def __init__(self, artifact: artifacts.Artifact) -> None:
        arrays = artifact.arrays
        try:
            self.version = artifact.version
            self.manifest = artifact.manifest
            self.items = IdMap(arrays["item_ids"])
            self.names: list[str] = arrays["catalog.names"].tolist()
            self.prices: list[float | None] = [
                None if math.isnan(price) else round(price, 2) for price in arrays["catalog.prices"].tolist()
            ]
            components = artifact.manifest.get("components", {})
            self.tables = {
                name: NeighbourTable(arrays, name, components[name]["basis"])
                for name in ("also_bought", "bought_together") if name in components
            }
            popularity = np.asarray(arrays["popular.popularity"])
            self.popular_ranking = np.lexsort((np.arange(len(popularity)), -popularity))[:_POPULAR_DEPTH]
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{artifact.path}: incomplete model: {exc}") from None
        n_items = len(self.items)
        for table in self.tables.values():
            if table.ids.shape[0] != n_items:
                raise ArtifactError(f"{artifact.path}: neighbour table does not match the item list")
        if not self.tables:
            raise ArtifactError(f"{artifact.path}: model has no item-to-item component")

    def item_neighbours(self, component: str, item_id: str, k: int) -> dict[str, Any]:
        """Top-k neighbours of an item from ``also_bought`` or ``bought_together``.

        Falls back to the other component when a log had no customers, and tops the list
        up with popular items when the item has fewer than k neighbours (or none, or is
        unknown); ``strategy`` and each entry's ``source`` say which is which.
        """
        table = self.tables.get(component) or next(iter(self.tables.values()))
        item_idx = self.items.index(item_id, missing="none")
        recommendations: list[dict[str, Any]] = []
        fallback = None
        if item_idx is None:
            fallback = "unknown_item"
        else:
            ids = table.ids[item_idx]
            valid = ids >= 0
            for neighbour, score, support in zip(
                ids[valid][:k].tolist(), table.scores[item_idx][valid][:k].tolist(),
                table.support[item_idx][valid][:k].tolist(),
            ):
                recommendations.append(self._entry(neighbour, score, "item-knn", bought_both=support))
            if not recommendations:
                fallback = "too_few_buyers"
        self._fill_popular(recommendations, k, exclude=set() if item_idx is None else {item_idx})
        response: dict[str, Any] = {
            "item": self._item(item_idx, item_id),
            "strategy": "item-knn" if fallback is None else "popular",
            "basis": table.basis,
            "model_version": self.version,
            "recommendations": recommendations,
        }
        if fallback:
            response["fallback_reason"] = fallback
        return response

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
        }

    def _fill_popular(self, recommendations: list[dict[str, Any]], k: int, exclude: set[int]) -> None:
        taken = exclude | {self.items.index(entry["item_id"]) for entry in recommendations}
        for item_idx in self.popular_ranking.tolist():
            if len(recommendations) >= k:
                break
            if item_idx not in taken:
                recommendations.append(self._entry(item_idx, None, "popular"))

    def _entry(self, item_idx: int, score: float | None, source: str, **extra: Any) -> dict[str, Any]:
        entry = {
            "item_id": str(self.items.ids_[item_idx]),
            "name": self.names[item_idx],
            "price": self.prices[item_idx],
            "score": None if score is None else round(float(score), 6),
            "source": source,
        }
        entry.update(extra)
        return entry

    def _item(self, item_idx: int | None, item_id: str) -> dict[str, Any]:
        if item_idx is None:
            return {"item_id": item_id, "known": False}
        return {"item_id": item_id, "name": self.names[item_idx], "price": self.prices[item_idx], "known": True}


class ModelHolder:
    """Keeps the service of the version ``current`` points at, reloading when it changes.

    The link is checked at most every ``reload_interval`` seconds. A new version is loaded
    and verified beside the old one and swapped in with one assignment; a version that fails
    to load is logged and skipped, and the old one keeps serving.
    """

    def __init__(self, models_dir: str | Path, reload_interval: float = 2.0) -> None:
        self.models_dir = Path(models_dir)
        self.reload_interval = reload_interval
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
                self.service = RecommendationService(artifacts.load(self.models_dir / version))
                self.last_error = None
                logger.info("serving model version %s", version)
            except ArtifactError as exc:
                self._rejected_version = version
                self.last_error = f"model version {version} refused: {exc}"
                logger.error("refusing model version %s, keeping %s: %s", version, loaded, exc)
        finally:
            self._lock.release()
