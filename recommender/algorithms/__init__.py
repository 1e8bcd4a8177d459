"""Models behind one estimator interface (``base.Recommender``), fitted on integer indices only."""
from __future__ import annotations

from .base import Recommender
from .item_knn import ItemKNN
from .popular import Popular

MODELS: dict[str, type[Recommender]] = {"item_knn": ItemKNN, "popular": Popular}

__all__ = ["MODELS", "ItemKNN", "Popular", "Recommender"]
