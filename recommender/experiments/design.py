"""What an experiment is: named variants with weights, and which one a shopper sees.

A variant serves the current model (no ``model_version``, no ``strategy``), another model
version loaded beside it, or a non-personal ``strategy`` (``popular``: trending items only,
a holdout). Assignment is a hash of the experiment's name and the shopper's id, so a
shopper sees the same variant on every server and after every restart, and two experiments
split shoppers independently of each other.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ConfigError

STRATEGIES = ("popular",)
# The decision metric: what the verdict and the sample size are about (``results.METRICS``).
DECISION_METRICS = ("ctr", "conversion", "revenue_per_shopper", "revenue_per_mille")
# The recommendation endpoints an experiment may cover (all of them by default).
ENDPOINTS = (
    "also-bought",
    "bought-together",
    "recommendations",
    "buy-again",
    "wishlist-recommendations",
    "page-you-made",
    "from-items",
)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class Variant:
    name: str
    weight: float
    model_version: str | None = None
    strategy: str | None = None


@dataclass(frozen=True)
class Experiment:
    """A named split of traffic; ``control`` is the variant the others are compared with
    (the first one unless named), ``endpoints`` the endpoints it covers (empty: all)."""

    name: str
    variants: tuple[Variant, ...]
    control: str
    endpoints: tuple[str, ...] = ()
    metric: str = "ctr"
    lift: float = 0.05
    _bounds: tuple[float, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        total = sum(variant.weight for variant in self.variants)
        running, bounds = 0.0, []
        for variant in self.variants:
            running += variant.weight / total
            bounds.append(running)
        object.__setattr__(self, "_bounds", tuple(bounds))

    def covers(self, endpoint: str) -> bool:
        return not self.endpoints or endpoint in self.endpoints

    def assign(self, shopper_id: str) -> Variant:
        """The shopper's variant: their hash's place among the cumulative weights."""
        digest = hashlib.blake2b(f"{self.name}\x00{shopper_id}".encode(), digest_size=8).digest()
        point = int.from_bytes(digest, "big") / 2.0**64
        for variant, bound in zip(self.variants, self._bounds):
            if point < bound:
                return variant
        return self.variants[-1]

    def to_json(self) -> str:
        """The definition as stored (and as ``GET /v1/admin/experiments`` shows it)."""
        return json.dumps(self.definition(), sort_keys=True)

    def definition(self) -> dict[str, Any]:
        return {
            "variants": [
                {key: value for key, value in asdict(variant).items() if value is not None}
                for variant in self.variants
            ],
            "control": self.control,
            "endpoints": list(self.endpoints),
            "metric": self.metric,
            "lift": self.lift,
        }


def parse(name: str, raw: Mapping[str, Any]) -> Experiment:
    """An experiment from its definition (a config file's ``[experiments.<name>]`` table, a
    ``PUT`` body, or the stored JSON); ``ConfigError`` names the first bad field."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(
            "name: 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    if not isinstance(raw, Mapping):
        raise ConfigError("experiment: must be an object with variants")
    unknown = set(raw) - {"variants", "control", "endpoints", "metric", "lift"}
    if unknown:
        raise ConfigError(f"{sorted(unknown)[0]}: unknown field")
    variants_raw = raw.get("variants")
    if not isinstance(variants_raw, list) or not 2 <= len(variants_raw) <= 10:
        raise ConfigError("variants: must be a list of 2 to 10 variants")
    variants = [_variant(position, item) for position, item in enumerate(variants_raw)]
    names = [variant.name for variant in variants]
    if len(set(names)) != len(names):
        raise ConfigError("variants: names must differ")
    control = raw.get("control", names[0])
    if control not in names:
        raise ConfigError(f"control: must name one of the variants ({', '.join(names)})")
    endpoints = raw.get("endpoints", [])
    if not isinstance(endpoints, list) or any(e not in ENDPOINTS for e in endpoints):
        raise ConfigError(f"endpoints: a list of any of {', '.join(ENDPOINTS)}")
    metric = raw.get("metric", "ctr")
    if metric not in DECISION_METRICS:
        raise ConfigError(f"metric: must be one of {', '.join(DECISION_METRICS)}")
    lift = raw.get("lift", 0.05)
    if isinstance(lift, bool) or not isinstance(lift, (int, float)) or not 0 < lift <= 10:
        raise ConfigError("lift: the relative lift to size the test for, e.g. 0.05 (0 to 10]")
    return Experiment(name, tuple(variants), control, tuple(endpoints), metric, float(lift))


def _variant(position: int, raw: Any) -> Variant:
    where = f"variants[{position}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be an object with name and weight")
    unknown = set(raw) - {"name", "weight", "model_version", "strategy"}
    if unknown:
        raise ConfigError(f"{where}.{sorted(unknown)[0]}: unknown field")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(f"{where}.name: 1 to 64 letters, digits, '.', '_' or '-'")
    weight = raw.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight <= 1e6:
        raise ConfigError(f"{where}.weight: must be a positive number")
    version, strategy = raw.get("model_version"), raw.get("strategy")
    if version is not None and (not isinstance(version, str) or not NAME.fullmatch(version)):
        raise ConfigError(f"{where}.model_version: must be a model version's name")
    if strategy is not None and strategy not in STRATEGIES:
        raise ConfigError(f"{where}.strategy: must be one of {', '.join(STRATEGIES)}")
    if version is not None and strategy is not None:
        raise ConfigError(f"{where}: give model_version or strategy, not both")
    return Variant(name, float(weight), version, strategy)
