"""The staged search over the validation folds, how configurations rank, and the noise rule."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import replace
from typing import Any, TypeVar

import numpy as np
from joblib import Parallel, delayed
from numpy.typing import NDArray

from ..config import EvaluationSettings
from ..errors import DataError
from ..evaluation import bootstrap_interval, row_ndcg, top_k
from .choice import (
    ALS_WEIGHTS,
    DECAY_DAYS,
    GUARD_ERRORS,
    HALF_LIVES,
    POPULARITY_HALF_LIFE,
    TREND_WEIGHTS,
    BlendChoice,
)
from .folds import Fold
from .scoring import FoldState, choice_scores


def search(
    validation: dict[str, list[Fold]],
    candidates: dict[str, tuple[str, dict[str, Any]]],
    settings: EvaluationSettings,
    states: dict[str, list[FoldState]] | None = None,
) -> dict[str, Any]:
    """The staged search of the package docstring over every validation fold (``states``:
    one per fold, kept by the caller for a later stage on the same folds).

    Long because the stages share one table of results and their order is the rule the
    package docstring states.
    """
    if states is None:
        states = {name: [FoldState(fold) for fold in folds] for name, folds in validation.items()}
    flat = [state for group in states.values() for state in group]
    timed = all(state.fold.timed for state in flat)
    has_als = not any(state.fold.basket for state in flat)
    default_half_life = settings.trending_half_life_days
    rows: dict[BlendChoice, dict[str, NDArray[np.float64]]] = {}

    def measure(choices: Iterable[BlendChoice]) -> None:
        todo = [c for c in dict.fromkeys(choices) if c not in rows]

        def one_fold(state: FoldState) -> list[NDArray[np.float64] | None]:
            out = []
            for choice in todo:
                scores = choice_scores(state, choice, settings)
                out.append(
                    None
                    if scores is None
                    else row_ndcg(
                        top_k(scores, state.fold.held_out.seen, settings.eval_k),
                        state.fold.held_out,
                    )
                )
            return out

        results = Parallel(n_jobs=settings.jobs, prefer="threads")(
            delayed(one_fold)(state) for state in flat
        )
        for position, choice in enumerate(todo):
            per_fold = [result[position] for result in results]
            if any(values is None for values in per_fold):
                continue
            by_protocol, offset = {}, 0
            for name, group in states.items():
                by_protocol[name] = np.concatenate(per_fold[offset : offset + len(group)])
                offset += len(group)
            rows[choice] = by_protocol

    def item_choice(name: str, decay: float) -> BlendChoice:
        kind, params = candidates[name]
        return BlendChoice(kind, params, 0.0, 0.0, default_half_life, decay)

    # The decay is chosen with the lead model: EASE at each of its l2 (the best l2 moves with
    # the decay, as decay shrinks the Gram matrix's spread), else cosine kNN.
    leads = [name for name in candidates if name.startswith("ease l2")] or ["item-knn cosine"]
    lead = leads[len(leads) // 2]
    decays = DECAY_DAYS if timed else (0.0,)
    measure(item_choice(name, decay) for decay in decays for name in leads)
    ranking = rank_keys(rows)
    best_decay = max(rows, key=ranking.__getitem__).decay_days if rows else 0.0
    singles = [
        item_choice(name, decay)
        for name in candidates
        for decay in dict.fromkeys((0.0, best_decay))
    ]
    if has_als:
        singles.append(BlendChoice(*candidates[lead], 1.0, 0.0, default_half_life))
    for half_life in (*HALF_LIVES, POPULARITY_HALF_LIFE) if timed else (POPULARITY_HALF_LIFE,):
        singles.append(BlendChoice(*candidates[lead], 0.0, 1.0, half_life, 0.0, 0.0))
    measure(singles)
    ranking = rank_keys(rows)
    item_singles = [
        c for c in rows if c.item_part > 0 and c.als_weight == 0 and c.trend_weight == 0
    ]
    finalists = sorted(item_singles, key=ranking.__getitem__, reverse=True)[:2]
    trend_singles = [c for c in rows if c.item_part == 0 and c.trend_weight > 0]
    half_life = (
        max(trend_singles, key=ranking.__getitem__).trend_half_life_days
        if trend_singles
        else POPULARITY_HALF_LIFE
    )
    blends = [
        replace(
            finalist,
            als_weight=als_weight,
            trend_weight=trend_weight,
            trend_half_life_days=half_life,
        )
        for finalist in finalists
        for als_weight in (ALS_WEIGHTS if has_als else (0.0,))
        for trend_weight in TREND_WEIGHTS
        if als_weight or trend_weight
    ]
    for state in flat:  # each finalist's scores are computed once per fold for all its blends
        state.item_scores = {}
    measure(blends)
    for state in flat:
        state.item_scores = None
    if not rows:
        raise DataError("evaluation: no model could be measured on the validation folds")

    choice, rule = simplest_within_noise(rows, settings.random_state)
    ranking = rank_keys(rows)
    table = sorted(rows, key=ranking.__getitem__, reverse=True)
    protocols = list(validation)
    return {
        "choice": choice,
        "rule": rule,
        "decay_chosen_days": best_decay,
        "score": (
            f"NDCG@k on {protocols[0]} relative to the best configuration there"
            + (
                f"; a configuration more than {GUARD_ERRORS:g} standard errors below the best on "
                f"{', '.join(protocols[1:])} ranks after all others"
                if len(protocols) > 1
                else ""
            )
        ),
        "configurations_measured": len(rows),
        "search": [
            {
                "config": c.label(),
                "score": round(ranking[c][1], 4),
                **(
                    {"guard": "passed" if ranking[c][0] else "failed"} if len(protocols) > 1 else {}
                ),
                **{
                    f"ndcg {name}": round(float(values.mean()), 5)
                    for name, values in rows[c].items()
                },
            }
            for c in table[:30]
        ],
    }


Rows = dict[BlendChoice, dict[str, NDArray[np.float64]]]
# Whatever the configurations are (a blend, a repeat model): ``rank_keys`` only compares rows.
Config = TypeVar("Config", bound=Hashable)


def simplest_within_noise(rows: Rows, seed: int = 0) -> tuple[BlendChoice, str]:
    """The configuration to ship, and why: the best by ``rank_keys``, unless it is a blend whose
    gain over its best single part (measured too) on the primary protocol is within the
    bootstrap standard error of that gain; then the part.

    ``rows`` maps each measured configuration to its per-row NDCG on each protocol (the same
    rows, in the same order, for every configuration; the primary protocol first).
    """
    ranking = rank_keys(rows)
    best = max(rows, key=ranking.__getitem__)
    parts = [part for part in best.parts() if part in rows]
    if len(best.parts()) == 1 or not parts:
        return best, "the best configuration is a single component"
    part = max(parts, key=ranking.__getitem__)
    primary = next(iter(rows[best]))
    gain, error = paired_difference(rows[best][primary], rows[part][primary], bootstrap_seed=seed)
    if gain > error:
        return (
            best,
            f"the blend beats its best part ({part.label()}) by {gain:.4f} > standard error {error:.4f}",
        )
    return part, (
        f"the blend {best.label()} beats its best part by {gain:.4f}, within the standard error "
        f"{error:.4f}: the part ships"
    )


def rank_keys(
    rows: dict[Config, dict[str, NDArray[np.float64]]],
) -> dict[Config, tuple[bool, float]]:
    """Sort keys, higher first: (kept by the guard, NDCG@k on the primary protocol relative to
    the best there).

    The primary protocol (the first: the one the log supports best, whose test figure is
    reported) ranks. Every other protocol guards: a configuration more than ``GUARD_ERRORS``
    standard errors below the best one there (paired over the same customers) ranks after
    all those that are not. So the choice does well on every protocol without a protocol the
    log supports less well pulling it towards its own optimum.
    """
    if not rows:
        return {}
    names = list(next(iter(rows.values())))
    best_mean = {
        name: max(float(values[name].mean()) for values in rows.values()) for name in names
    }
    kept = dict.fromkeys(rows, True)
    for name in names[1:]:
        leader = max(rows, key=lambda c: float(rows[c][name].mean()))
        for choice, values in rows.items():
            difference, error = paired_difference(values[name], rows[leader][name])
            if difference < -GUARD_ERRORS * error:
                kept[choice] = False
    primary = names[0]
    scale = best_mean[primary] if best_mean[primary] > 0 else 1.0
    return {
        choice: (kept[choice], float(values[primary].mean()) / scale)
        for choice, values in rows.items()
    }


def paired_difference(
    values: NDArray[np.float64], baseline: NDArray[np.float64], bootstrap_seed: int | None = None
) -> tuple[float, float]:
    """Mean of ``values - baseline`` over the same rows, and its standard error (bootstrap
    over rows with a seed; else the normal approximation, cheap enough to apply to every
    configuration)."""
    difference = values - baseline
    if bootstrap_seed is not None:
        return float(difference.mean()), bootstrap_interval(difference, seed=bootstrap_seed)[2]
    if len(difference) < 2:
        return float(difference.mean()) if len(difference) else 0.0, 0.0
    return float(difference.mean()), float(difference.std(ddof=1) / np.sqrt(len(difference)))
