"""Experiments: splitting shoppers between variants (``design``) and reading what each
variant earned (``results``). Neither knows about HTTP or the database: the server assigns
and counts, the activity store keeps the counts, and these read them."""

from .design import DECISION_METRICS, ENDPOINTS, STRATEGIES, Experiment, Variant, parse
from .results import analyse

__all__ = [
    "DECISION_METRICS",
    "ENDPOINTS",
    "STRATEGIES",
    "Experiment",
    "Variant",
    "analyse",
    "parse",
]
