"""What a personal recommender is made of (``BlendChoice``), the grids the search walks,
the untuned default, and the one place ALS is built from its settings."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..algorithms import ALS, MODELS, ItemKNN, NeighbourModel
from ..config import AlsSettings, EvaluationSettings, NeighbourSettings

DECAY_DAYS = (0.0, 14.0, 30.0, 60.0, 120.0)
# EASE's l2 as a multiple of the mean diagonal of its Gram matrix (``EASE(scale_l2=True)``):
# the same grid fits a small log and a large one, binary or decayed, and a fold with less data.
EASE_L2 = (2.0, 8.0, 32.0)


ALS_WEIGHTS = (0.0, 0.25, 0.5)


TREND_WEIGHTS = (0.0, 0.25, 0.5, 1.0)


HALF_LIVES = (7.0, 14.0, 30.0)
# "Popularity" is trending with a half-life far longer than any log: every purchase counts alike.


POPULARITY_HALF_LIFE = 36500.0
# Share of customers whose last order a next-purchase validation fold holds out (see
# ``data.split.next_purchase_split``).


VALIDATION_SHARE = 0.5
# Fewer rows (customers, baskets) than this on the validation folds cannot tell configurations
# apart (a standard error of about 0.03 NDCG): the untuned default ships instead of noise's pick.


MIN_VALIDATION_ROWS = 100
# A configuration this many standard errors below the best on a secondary protocol is not chosen.


GUARD_ERRORS = 2.0
# Pruning (``search.survivors_of``): a configuration this many standard errors below the best
# on the screening folds, or outside the better half there, is not fitted on the other folds;
# at least this many survive each stage.


SCREEN_ERRORS = 2.0


MIN_SURVIVORS = 2


CUTS = (1, 5, 10, 20)


SAVED_DEPTH = 20
# Dense score matrices of the evaluated rows are held in memory: bound their size.


MAX_SCORE_ENTRIES = 20_000_000


@dataclass(frozen=True)
class BlendChoice:
    """What the personal recommender is made of; stored in the manifest, read by the server.

    Scores are ``item_weight * item + als_weight * ALS + trend_weight * trending`` (each part
    scaled to 1, ``algorithms.blend``); ``item_weight`` None means ``1 - als_weight``. The
    item-to-item part is fitted on purchases weighted ``exp(-age / decay_days)`` (``decay_days``
    0: unweighted), so that item relations are those of recent baskets, and scores a customer's
    whole history unweighted: what they bought long ago still says what they like (on the
    retail log, decaying the history as well loses a tenth of NDCG on every protocol).
    """

    item_model: str
    item_params: dict[str, Any]
    als_weight: float
    trend_weight: float
    trend_half_life_days: float
    decay_days: float = 0.0
    item_weight: float | None = None

    def item_key(self, decay_days: float | None = None) -> tuple[Any, ...]:
        """The item-to-item model and the decay it is fitted or scored with (default: the choice's)."""
        decay = self.decay_days if decay_days is None else decay_days
        return (self.item_model, tuple(sorted(self.item_params.items())), decay)

    def _key(self) -> tuple[Any, ...]:
        """What the choice ranks by: parameters of a part weighted 0 do not matter."""
        item = self.item_key() if self.item_part else ()
        trend = self.trend_half_life_days if self.trend_weight else None
        return (item, self.item_part, self.als_weight, self.trend_weight, trend)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BlendChoice) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @property
    def item_part(self) -> float:
        return 1.0 - self.als_weight if self.item_weight is None else self.item_weight

    def build_item_model(self, num_threads: int = 0) -> NeighbourModel:
        params = dict(self.item_params)
        if self.item_model == "item_knn":
            params["num_threads"] = num_threads
        return MODELS[self.item_model](**params)  # type: ignore[return-value]

    def item_label(self) -> str:
        shown = {
            k: v
            for k, v in self.item_params.items()
            if k
            not in (
                "neighbours",
                "max_items",
                "min_support",
                "min_pair_support",
                "scale_l2",
                "signed",
            )
        }
        if self.item_params.get("scale_l2"):
            shown["l2"] = f"{shown['l2']:g} x mean diagonal"
        params = ", ".join(
            [f"{k}={v}" for k, v in shown.items()]
            + (["signed"] if self.item_params.get("signed") else [])
        )
        decay = f", decay {self.decay_days:g}d" if self.decay_days else ""
        return f"{self.item_model}({params}{decay})"

    def trend_label(self) -> str:
        if self.trend_half_life_days >= POPULARITY_HALF_LIFE:
            return "popularity"
        return f"trending({self.trend_half_life_days:g}d)"

    def parts(self) -> list[BlendChoice]:
        """The single components this choice blends (itself when it is one)."""
        singles = []
        if self.item_part > 0:
            singles.append(replace(self, als_weight=0.0, trend_weight=0.0, item_weight=None))
        if self.als_weight > 0:
            singles.append(
                replace(self, als_weight=1.0, trend_weight=0.0, item_weight=None, decay_days=0.0)
            )
        if self.trend_weight > 0:
            singles.append(
                replace(self, als_weight=0.0, trend_weight=1.0, item_weight=0.0, decay_days=0.0)
            )
        return singles if len(singles) > 1 else [self]

    def label(self) -> str:
        terms = []
        if self.item_part > 0:
            terms.append(
                self.item_label() + (f" x{self.item_part:g}" if self.item_part != 1 else "")
            )
        if self.als_weight > 0:
            terms.append(f"ALS x{self.als_weight:g}")
        if self.trend_weight > 0:
            terms.append(self.trend_label() + (f" x{self.trend_weight:g}" if terms else ""))
        if len(terms) == 1:
            return terms[0].replace(" x1", "") + " alone"
        return " + ".join(terms)


def sample_limit(settings: EvaluationSettings, n_items: int) -> int:
    """How many rows a fold measures at most: ``max_eval_users``, fewer where scoring them over
    ``n_items`` would exceed ``MAX_SCORE_ENTRIES``, never under 100."""
    return max(100, min(settings.max_eval_users, MAX_SCORE_ENTRIES // max(1, n_items)))


def untuned(default: BlendChoice, evaluated: int) -> tuple[BlendChoice, dict[str, Any]]:
    """What ships when the validation rows are too few to tune (either engine): the default's
    item-to-item part alone, since no blend can be shown to beat its part (the search's noise
    rule), and the rule that says so."""
    return default.parts()[0], {
        "rule": (
            f"not tuned: the validation folds evaluate {evaluated} rows, fewer than the "
            f"{MIN_VALIDATION_ROWS} it takes to tell configurations apart; the default's "
            "item-to-item part ships alone, as no blend "
            "can be shown to beat its part"
        ),
        "configurations_measured": 0,
        "search": [],
    }


def default_choice(
    n_items: int, settings: EvaluationSettings, has_customers: bool = True
) -> BlendChoice:
    """The blend used when it cannot be tuned (``--no-evaluate``, or too few validation rows):
    EASE (the middle of the searched l2 grid) where the catalog allows, else cosine kNN, with
    ALS x0.25 for a log of customers, and no trending.

    It is what the search chose, part for part, on the logs it was tried on (Online Retail,
    synthetic taste groups); trending never won on a log of customers, and on customers active
    in bursts it ranks what is selling now for somebody whose burst was months ago.
    """
    if n_items <= settings.ease_max_items:
        item_model, params = (
            "ease",
            {
                "l2": EASE_L2[len(EASE_L2) // 2],
                "scale_l2": True,
                "neighbours": 200,
                "max_items": settings.ease_max_items,
            },
        )
    else:
        item_model, params = (
            "item_knn",
            {
                "similarity": "cosine",  # type: ignore[dict-item]
                "neighbours": 100,
                "min_support": 1,
                "min_pair_support": 1,
            },
        )
    return BlendChoice(
        item_model, params, 0.25 if has_customers else 0.0, 0.0, settings.trending_half_life_days
    )


def plain_ease(settings: EvaluationSettings) -> BlendChoice:
    """EASE as it is usually run, the baseline of every report: binary, l2 250, every weight
    (the 200 strongest of each item, as all item models rank)."""
    return BlendChoice(
        "ease",
        {
            "l2": 250.0,
            "neighbours": 200,
            "max_items": settings.ease_max_items,
            "signed": True,
            "min_pair_support": 0,
        },
        0.0,
        0.0,
        settings.trending_half_life_days,
    )


def build_als(settings: AlsSettings, num_threads: int | None = None) -> ALS:
    """The ALS of a run, from its settings: the one place that maps them onto ALS, so that
    what evaluation fits is what ships (GPU included)."""
    return ALS(
        factors=settings.factors,
        regularization=settings.regularization,
        alpha=settings.alpha,
        iterations=settings.iterations,
        confidence=settings.confidence,
        random_state=settings.random_state,
        num_threads=settings.num_threads if num_threads is None else num_threads,
        use_gpu=settings.use_gpu,
    )


def build_item_knn(settings: NeighbourSettings) -> ItemKNN:
    """The "also bought" kNN of a run, from its settings: the one place that maps them onto
    ``ItemKNN``, so that what evaluation measures on item pages is what ships."""
    return ItemKNN(
        similarity=settings.similarity,
        neighbours=settings.neighbours,
        min_support=settings.min_support,
        min_pair_support=settings.min_pair_support,
        num_threads=settings.num_threads,
    )


def item_candidates(
    n_items: int, settings: EvaluationSettings
) -> tuple[dict[str, tuple[str, dict[str, Any]]], list[str]]:
    """Item-to-item models tried by the search, and notes on those skipped (and why)."""
    candidates: dict[str, tuple[str, dict[str, Any]]] = {}
    notes = []
    if n_items <= settings.ease_max_items:
        for signed in (False, True):
            for l2 in EASE_L2:
                params = {
                    "l2": l2,
                    "scale_l2": True,
                    "neighbours": 200,
                    "max_items": settings.ease_max_items,
                }
                if signed:  # its negative weights are mostly between items never bought together
                    params.update(signed=True, min_pair_support=0)
                candidates[f"ease{' signed' if signed else ''} l2={l2:g}"] = ("ease", params)
    else:
        notes.append(
            f"EASE skipped: {n_items} items exceed ease_max_items={settings.ease_max_items} "
            f"(it needs a dense {n_items} x {n_items} matrix, {n_items**2 * 8 / 2**30:.1f} GiB)"
        )
    candidates["rp3beta"] = ("rp3beta", {"alpha": 1.0, "beta": 0.5, "neighbours": 100})
    candidates["cooccurrence llr"] = ("cooccurrence", {"shrinkage": 10.0, "neighbours": 100})
    for similarity in ("cosine", "bm25"):
        candidates[f"item-knn {similarity}"] = (
            "item_knn",
            {"similarity": similarity, "neighbours": 100, "min_support": 1, "min_pair_support": 1},
        )
    return candidates, notes
