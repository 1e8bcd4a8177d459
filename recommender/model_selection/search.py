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
from ..evaluation import bootstrap_interval, row_ndcg
from .choice import (
    ALS_WEIGHTS,
    DECAY_DAYS,
    GUARD_ERRORS,
    HALF_LIVES,
    MIN_SURVIVORS,
    POPULARITY_HALF_LIFE,
    SCREEN_ERRORS,
    TREND_WEIGHTS,
    BlendChoice,
)
from .folds import Fold
from .scoring import FoldState, choice_top_k, forget, release


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
    # Successive halving, one rung: every choice is scored on the screening folds (each
    # protocol's first: the most recent period, the next-purchase fold); only the survivors
    # (``survivors_of``) are fitted and scored on the other folds. Those pruned are kept
    # apart, measured on fewer rows, never chosen.
    pruned: dict[BlendChoice, dict[str, NDArray[np.float64]]] = {}
    protocol_of = {id(state): name for name, group in states.items() for state in group}
    screening = [group[0] for group in states.values() if group]
    screening_ids = {id(state) for state in screening}
    # The screening folds come first, so rows of pruned and surviving choices line up.
    flat = screening + [state for state in flat if id(state) not in screening_ids]

    def scored(
        todo: list[BlendChoice], group: list[FoldState]
    ) -> list[list[NDArray[np.float64] | None]]:
        """Per-row NDCG of each choice on each fold of ``group`` (None: not scorable there)."""

        def one_fold(state: FoldState) -> list[NDArray[np.float64] | None]:
            out = []
            for choice in todo:
                recommended = choice_top_k(state, choice, settings, settings.eval_k)
                out.append(
                    None if recommended is None else row_ndcg(recommended, state.fold.held_out)
                )
            return out

        results = Parallel(n_jobs=settings.jobs, prefer="threads")(
            delayed(one_fold)(state) for state in group
        )
        return [[result[position] for result in results] for position in range(len(todo))]

    def by_protocol(
        per_fold: list[NDArray[np.float64] | None], group: list[FoldState]
    ) -> dict[str, NDArray[np.float64]] | None:
        if any(values is None for values in per_fold):
            return None
        out: dict[str, list[NDArray[np.float64]]] = {}
        for state, values in zip(group, per_fold):
            out.setdefault(protocol_of[id(state)], []).append(values)  # type: ignore[arg-type]
        return {name: np.concatenate(parts) for name, parts in out.items()}

    def measure(choices: Iterable[BlendChoice]) -> None:
        """Measure the choices on every fold; with more than one fold per protocol and more
        choices than survive, first on the screening folds, the rest only for the survivors."""
        todo = [c for c in dict.fromkeys(choices) if c not in rows and c not in pruned]
        rest = [state for state in flat if id(state) not in screening_ids]
        if not rest or len(todo) <= MIN_SURVIVORS:
            for choice, per_fold in zip(todo, scored(todo, flat)):
                measured = by_protocol(per_fold, flat)
                if measured is not None:
                    rows[choice] = measured
            return
        screened = {}
        for choice, per_fold in zip(todo, scored(todo, screening)):
            measured = by_protocol(per_fold, screening)
            if measured is not None:
                screened[choice] = measured
        survivors = survivors_of(screened)
        for choice in screened:
            if choice not in survivors:
                pruned[choice] = screened[choice]
        for state in screening:
            forget(state, [c for c in todo if c not in survivors], [*rows, *survivors])
        for choice, per_fold in zip(survivors, scored(survivors, rest)):
            later = by_protocol(per_fold, rest)
            if later is None:
                continue
            # Fold by fold in ``flat``'s order, as ``rows`` of unscreened choices are.
            rows[choice] = {
                name: np.concatenate(
                    [
                        part
                        for part in (screened[choice].get(name), later.get(name))
                        if part is not None
                    ]
                )
                for name in states
            }

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
    by_rank = sorted(rows, key=ranking.__getitem__, reverse=True)
    best_decay = by_rank[0].decay_days if rows else 0.0
    singles = [
        item_choice(name, decay)
        for name in candidates
        for decay in dict.fromkeys((0.0, best_decay))
    ]
    # The finalists are the two best item singles of both stages: the runner-up here is one
    # whenever the next stage's models do worse, and refitting it then costs a fit per fold.
    # Its fitted tables are kept.
    for state in flat:
        release(state, singles, spare=by_rank[1:2])
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
    screened_trends = {
        c: values for c, values in pruned.items() if c.item_part == 0 and c.trend_weight > 0
    }
    if trend_singles:
        half_life = max(trend_singles, key=ranking.__getitem__).trend_half_life_days
    elif screened_trends:
        screen_ranking = rank_keys(screened_trends)
        half_life = max(screened_trends, key=screen_ranking.__getitem__).trend_half_life_days
    else:
        half_life = POPULARITY_HALF_LIFE
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
        release(state, finalists)
        state.item_scores = {}
    measure(blends)
    for state in flat:
        state.item_scores = None
    if not rows:
        raise DataError("evaluation: no model could be measured on the validation folds")

    choice, rule = simplest_within_noise(rows, settings.random_state)
    for state in flat:  # the later stage on these folds (rebuys) scores the choice
        release(state, [choice])
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
        "configurations_pruned": len(pruned),
        "pruning": (
            f"each stage's configurations were scored on {', '.join(protocols)}'s first fold; "
            f"those more than {SCREEN_ERRORS:g} standard errors below the best there, or "
            f"outside the better half, were not fitted on the other folds"
            if pruned
            else "none"
        ),
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


def survivors_of(screened: Rows) -> list[BlendChoice]:
    """The configurations worth fitting on the other folds, best first: those within
    ``SCREEN_ERRORS`` standard errors of the best on the screening folds (paired, on the
    primary protocol) and kept by the guard, at most the better half, at least
    ``MIN_SURVIVORS``.

    Successive halving with a noise floor: the folds are where the cost is (every item model
    is fitted once per fold), and a configuration clearly behind on the most recent period
    does not win on all of them together; one within noise of the best is not dropped just
    because the stage is large, unless it is in the worse half.
    """
    if not screened:
        return []
    ranking = rank_keys(screened)
    ordered = sorted(screened, key=ranking.__getitem__, reverse=True)
    primary = next(iter(screened[ordered[0]]))
    best = screened[ordered[0]][primary]
    close = []
    for choice in ordered:
        difference, error = paired_difference(screened[choice][primary], best)
        if ranking[choice][0] and difference >= -SCREEN_ERRORS * error:
            close.append(choice)
    keep = max(MIN_SURVIVORS, (len(ordered) + 1) // 2)
    survivors = close[:keep]
    for choice in ordered:
        if len(survivors) >= MIN_SURVIVORS:
            break
        if choice not in survivors:
            survivors.append(choice)
    return survivors


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
