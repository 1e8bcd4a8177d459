"""Models behind one estimator interface (``base.Recommender``), fitted on integer indices only."""
from __future__ import annotations

from .als import ALS
from .base import Recommender
from .item_knn import ItemKNN
from .popular import Popular

MODELS: dict[str, type[Recommender]] = {"item_knn": ItemKNN, "als": ALS, "popular": Popular}

__all__ = ["ALS", "MODELS", "ItemKNN", "Popular", "Recommender"]
