"""Choosing the recommender that ships, and measuring it against the usual baselines.

The validation protocol comes from the log (``protocols.choose_protocol``): rolling time
periods, each customer's next purchase, or random held-out customers / baskets. Every choice
is made on validation folds carved from data before the test fold; the test fold is used once,
to report the shipped model, its parts and the baselines side by side, each with a bootstrap
95% interval over the evaluated customers.

The search, on the validation folds of every protocol the log supports:

1. how strongly to down-weight old purchases (``DECAY_DAYS``, "none" included), with the lead
   item-to-item model: EASE at each ``EASE_L2`` (a multiple of its Gram matrix's mean
   diagonal, so that the grid means the same on any log) where the catalog allows, else
   cosine kNN;
2. every item-to-item model alone, without decay and with the chosen one (EASE also with its
   negative weights kept, ``EASE(signed=True)``; one Gram matrix per fold and decay);
3. ALS alone, trending alone (each half-life), popularity alone;
4. the two best item-to-item models blended with ALS and trending over a grid of weights.

Each stage is pruned early (successive halving, one rung): its configurations are scored on
the screening folds (each protocol's first: the most recent period, the next-purchase fold),
and only those within ``SCREEN_ERRORS`` standard errors of the best there, at most the better
half, are fitted and scored on the other folds; only those measured on every fold can be
chosen. Every item-to-item model is fitted once per fold, so the folds are the cost.

Configurations rank by NDCG@k on the primary protocol (the one the log supports best, whose
test figure is reported); any other protocol measured guards, so that the choice does well on
all of them: a configuration clearly worse there than the best (``GUARD_ERRORS`` standard
errors) ranks last. The best one ships, unless it is a blend that does not beat its best
single part by more than the bootstrap standard error of the difference: then the part ships.

The package's modules follow that order: ``choice`` (what a configuration is, the grids, the
default, ``build_als``), ``folds`` (training sides and what to measure), ``scoring`` (fitting
a configuration's parts on a fold and scoring it), ``search`` (the stages and the ranking
rule), ``measure`` (the test fold, once).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from numpy.typing import NDArray

from ..config import EvaluationSettings
from ..memory import release_freed_memory, share_one_arena
from ..protocols import choose_protocol
from .choice import (
    MIN_VALIDATION_ROWS,
    BlendChoice,
    build_als,
    build_item_knn,
    default_choice,
    item_candidates,
    untuned,
)
from .folds import Fold, evaluation_fold, make_folds, plan_folds
from .measure import factor_metrics, measure
from .repeats import RepeatChoice, choose_repeat, measure_repeats, repeat_cells
from .scoring import FoldState
from .search import search, simplest_within_noise

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

__all__ = [
    "BlendChoice",
    "Fold",
    "RepeatChoice",
    "Selection",
    "build_als",
    "build_item_knn",
    "default_choice",
    "evaluation_fold",
    "factor_metrics",
    "make_folds",
    "repeat_cells",
    "select_and_evaluate",
    "simplest_within_noise",
]


@dataclass
class Selection:
    """The outcome: the choice, the figures behind it, the test predictions, and notes."""

    choice: BlendChoice
    evaluation: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    predictions: dict[str, NDArray[Any]] = field(default_factory=dict)
    # None: no side of the log measures rebuys (no timestamps, or baskets only).
    repeat: RepeatChoice | None = None


def select_and_evaluate(
    purchases: pd.DataFrame, settings: EvaluationSettings, current: dict[str, Any] | None = None
) -> Selection:
    """Choose the protocol, tune on its validation folds, measure everything on its test fold.

    ``current`` is the blend of the model now serving (from its manifest): it is measured on
    the same test fold, for the promotion gate.

    Raises
    ------
    DataError
        Too little data to hold anything out.
    """
    started = time.perf_counter()
    # The folds are ranked in threads: one arena keeps what one thread freed for the next
    # (``memory``), and each stage's freed pages go back before the next stage's peak.
    share_one_arena()
    protocol = choose_protocol(purchases, settings.test_days, settings.validation_periods)
    logger.info("validation protocol: %s (%s)", protocol.name, protocol.reason)
    # The test folds are built after the search (``TestFolds``): it holds the validation ones.
    tests, validation = plan_folds(purchases, protocol, settings)
    release_freed_memory()
    candidates, notes = item_candidates(tests.n_items, settings)
    evaluated = sum(fold.held_out.seen.shape[0] for fold in next(iter(validation.values())))
    states = {name: [FoldState(fold) for fold in folds] for name, folds in validation.items()}
    repeat: RepeatChoice | None = None
    repeat_report: dict[str, Any] = {}
    if evaluated >= MIN_VALIDATION_ROWS:
        outcome = search(validation, candidates, settings, states)
        choice = outcome.pop("choice")
        logger.info("chosen on validation: %s", choice.label())
        stage = time.perf_counter()
        repeat, repeat_report = choose_repeat(states, choice, settings)
        if repeat is not None:
            logger.info(
                "buy it again, chosen on validation in %.1fs: %s, mix %g, exclude_purchased=%s",
                time.perf_counter() - stage,
                repeat.label(),
                repeat.mix,
                repeat.exclude_purchased,
            )
    else:
        choice, outcome = untuned(
            default_choice(tests.n_items, settings, has_customers=not tests.basket), evaluated
        )
        logger.warning("validation: %s", outcome["rule"])
    described = {name: [fold.description for fold in folds] for name, folds in validation.items()}
    del states, validation
    release_freed_memory()
    test_fold, secondary = tests.build()

    test_state = FoldState(test_fold)
    measured = measure(test_fold, choice, settings, current, state=test_state)
    predictions = measured.pop("predictions")
    if repeat is not None:
        stage = time.perf_counter()
        repeats = measure_repeats(test_state, choice, repeat, settings)
        logger.info("buy it again, measured on the test fold in %.1fs", time.perf_counter() - stage)
        if repeats is not None:
            measured["repeats"] = {**repeats, "validation": repeat_report}
    del test_state
    release_freed_memory()
    evaluation: dict[str, Any] = {
        "protocol": {**protocol.to_dict(), **test_fold.description},
        "validation": {"folds": described, **outcome, "chosen": choice.label()},
        "k": settings.eval_k,
        **measured,
    }
    if secondary is not None:
        also = measure(secondary, choice, settings, None, item_pages=False)
        also.pop("predictions")
        evaluation["also"] = {
            secondary.description["split"]: {"protocol": secondary.description, **also}
        }
    evaluation["seconds"] = round(time.perf_counter() - started, 1)
    return Selection(choice, evaluation, notes, predictions, repeat)
