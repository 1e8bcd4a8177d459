"""Models behind one estimator interface (``base.Recommender``), fitted on integer indices only."""

from __future__ import annotations

from .als import ALS
from .base import Recommender
from .cooccurrence import Cooccurrence
from .ease import EASE
from .item_knn import ItemKNN
from .neighbours import NeighbourModel
from .popular import Popular
from .rp3beta import RP3beta

MODELS: dict[str, type[Recommender]] = {
    "item_knn": ItemKNN,
    "ease": EASE,
    "rp3beta": RP3beta,
    "cooccurrence": Cooccurrence,
    "als": ALS,
    "popular": Popular,
}

__all__ = [
    "ALS",
    "EASE",
    "MODELS",
    "Cooccurrence",
    "ItemKNN",
    "NeighbourModel",
    "Popular",
    "RP3beta",
    "Recommender",
]
