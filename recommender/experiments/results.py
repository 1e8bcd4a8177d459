"""An experiment's results: per variant, what its lists were shown and what they earned,
with 95% intervals, and each variant against control.

The shopper is the unit: assignment is by shopper, so one shopper's lists are not
independent draws, and every figure is a ratio of sums over shoppers (clicks over lists
shown, revenue over shoppers, ...). Intervals are scipy's bootstrap over shoppers
(``scipy.stats.bootstrap``, percentile, 1,000 resamples); a difference's p-value is a
permutation test of shoppers between the two variants (``scipy.stats.permutation_test``),
which assumes nothing about the metric's distribution (revenue is far from normal). The
shoppers needed to detect the experiment's lift come from the control's bootstrap standard
error and the normal approximation (two-sided 5%, power 80%). Fixed seeds: the same data
gives the same report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from ..activity.performance import ShopperOutcome
from .design import Experiment, Variant

RESAMPLES = 1000
# Fewer shoppers than this in a variant: figures and intervals, but no verdict (a percentile
# bootstrap's interval is too narrow on a handful of shoppers, and can disagree with the
# permutation test's p-value).
MIN_SHOPPERS = 30
ALPHA = 0.05
POWER = 0.8
# name: (numerator column, denominator column, scale); ``COLUMNS`` are a variant's
# per-shopper columns.
COLUMNS = ("lists", "clicks", "carts", "purchases", "revenue", "buyers", "shoppers")
METRICS: dict[str, tuple[str, str, float]] = {
    "impressions_per_shopper": ("lists", "shoppers", 1.0),
    "ctr": ("clicks", "lists", 1.0),
    "clicks_per_shopper": ("clicks", "shoppers", 1.0),
    "carts_per_shopper": ("carts", "shoppers", 1.0),
    "purchases_per_shopper": ("purchases", "shoppers", 1.0),
    "conversion": ("buyers", "shoppers", 1.0),
    "revenue_per_shopper": ("revenue", "shoppers", 1.0),
    "revenue_per_mille": ("revenue", "lists", 1000.0),
}
COMPARED = ("ctr", "conversion", "clicks_per_shopper", "revenue_per_shopper", "revenue_per_mille")


def analyse(
    experiment: Experiment,
    outcomes: Sequence[ShopperOutcome],
    status: str = "running",
    lift: float | None = None,
) -> dict[str, Any]:
    """The report ``GET /v1/admin/experiments/<name>/results`` and ``experiments report``
    give; ``lift`` overrides the experiment's for the sample size."""
    lift = experiment.lift if lift is None else lift
    tables = {
        variant.name: _table([o for o in outcomes if o.variant == variant.name])
        for variant in experiment.variants
    }
    variants, spreads = [], {}
    for variant in experiment.variants:
        entry, spreads[variant.name] = _figures(variant, tables[variant.name])
        variants.append(entry)
    control = tables[experiment.control]
    return {
        "experiment": experiment.name,
        "status": status,
        "control": experiment.control,
        "metric": experiment.metric,
        "confidence": 1 - ALPHA,
        "variants": variants,
        "comparisons": [
            _comparison(experiment, variant.name, control, tables[variant.name])
            for variant in experiment.variants
            if variant.name != experiment.control
        ],
        "shoppers_needed": {
            "metric": experiment.metric,
            "lift": lift,
            "power": POWER,
            "per_variant": _shoppers_needed(
                control, spreads[experiment.control], experiment.metric, lift
            ),
        },
    }


def _figures(variant: Variant, table: NDArray[np.float64]) -> tuple[dict[str, Any], Any]:
    """One variant's totals and metrics with their intervals, and the metrics' bootstrap
    standard errors."""
    totals = dict(zip(COLUMNS, table.sum(axis=1).tolist()))
    entry: dict[str, Any] = {
        "name": variant.name,
        "serves": (
            f"model {variant.model_version}"
            if variant.model_version
            else variant.strategy or "current model"
        ),
        "shoppers": int(totals["shoppers"]),
        "impressions": int(totals["lists"]),
        "clicks": int(totals["clicks"]),
        "carts": int(totals["carts"]),
        "purchases": int(totals["purchases"]),
        "revenue": round(totals["revenue"], 2),
    }
    values, intervals, spread = _estimates(table)
    for position, metric in enumerate(METRICS):
        entry[metric] = {
            "value": _rounded(values[position]),
            "interval": None
            if intervals is None
            else [_rounded(intervals[0][position]), _rounded(intervals[1][position])],
        }
    return entry, spread


def _comparison(
    experiment: Experiment,
    name: str,
    control: NDArray[np.float64],
    variant: NDArray[np.float64],
) -> dict[str, Any]:
    """A variant against control, and the verdict on the experiment's decision metric."""
    metrics = _compare(control, variant)
    chosen = metrics[experiment.metric]
    p_value = chosen["p_value"]
    fewest = min(control.shape[1], variant.shape[1])
    significant = p_value is not None and p_value < ALPHA and fewest >= MIN_SHOPPERS
    if p_value is None or fewest < MIN_SHOPPERS:
        verdict = f"not enough data (fewer than {MIN_SHOPPERS} shoppers in a variant)"
    elif not significant:
        verdict = "no significant difference"
    else:
        verdict = f"{name} does {'better' if chosen['difference'] > 0 else 'worse'}"
    return {
        "variant": name,
        "against": experiment.control,
        "metrics": metrics,
        "significant": significant,
        "verdict": verdict,
    }


def _table(outcomes: Sequence[ShopperOutcome]) -> NDArray[np.float64]:
    """One variant's per-shopper columns (``COLUMNS``), one row per column."""
    table = np.zeros((len(COLUMNS), len(outcomes)))
    if outcomes:
        table[:5] = np.array(
            [(o.lists, o.clicks, o.carts, o.purchases, o.revenue) for o in outcomes]
        ).T
    table[5] = table[COLUMNS.index("purchases")] > 0
    table[6] = 1.0
    return table


def _ratios(table: NDArray[np.float64], rows: Any = None, metrics: Sequence[str] = ()) -> Any:
    """Every metric of ``metrics`` (all when empty) over the shoppers ``rows`` index (all
    when None); a 2-d index (resamples x shoppers) gives one column per resample. Only the
    columns the metrics use are gathered: the resampling's cost is that gather."""
    names = metrics or tuple(METRICS)
    used = sorted({COLUMNS.index(METRICS[name][k]) for name in names for k in (0, 1)})
    shoppers = COLUMNS.index("shoppers")
    sums = {}
    for column in used:
        if column == shoppers:  # the count of the rows resampled
            sums[column] = float(table.shape[1] if rows is None else np.shape(rows)[-1])
        else:
            sums[column] = (table[column] if rows is None else table[column][rows]).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack(
            [
                METRICS[name][2]
                * sums[COLUMNS.index(METRICS[name][0])]
                / sums[COLUMNS.index(METRICS[name][1])]
                * np.ones(np.shape(rows)[:-1] if rows is not None else ())
                for name in names
            ]
        )


def _rounded(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def _estimates(table: NDArray[np.float64]) -> tuple[Any, Any, Any]:
    """Every metric's value, its 95% interval (low, high) and bootstrap standard error; no
    interval under two shoppers."""
    values = _ratios(table)
    shoppers = table.shape[1]
    if shoppers < 2:
        return values, None, None
    with np.errstate(invalid="ignore", divide="ignore"):
        result = stats.bootstrap(
            (np.arange(shoppers),),
            lambda rows, axis: _ratios(table, rows),
            vectorized=True,
            n_resamples=RESAMPLES,
            method="percentile",
            batch=_batch(shoppers),
            random_state=np.random.default_rng(0),
        )
    interval = result.confidence_interval
    return values, (interval.low, interval.high), result.standard_error


def _compare(control: NDArray[np.float64], variant: NDArray[np.float64]) -> dict[str, Any]:
    """Per compared metric: the variant minus control, its interval (bootstrap of each
    group's shoppers) and the permutation test's two-sided p-value."""
    n_control, n_variant = control.shape[1], variant.shape[1]
    base, other = _ratios(control, metrics=COMPARED), _ratios(variant, metrics=COMPARED)
    difference = other - base
    if n_control < 2 or n_variant < 2:
        return {
            metric: {
                "difference": _rounded(difference[position]),
                "relative": None,
                "interval": None,
                "p_value": None,
            }
            for position, metric in enumerate(COMPARED)
        }
    batch = _batch(n_control + n_variant)
    with np.errstate(invalid="ignore", divide="ignore"):
        interval = stats.bootstrap(
            (np.arange(n_control), np.arange(n_variant)),
            lambda a, b, axis: _ratios(variant, b, COMPARED) - _ratios(control, a, COMPARED),
            vectorized=True,
            n_resamples=RESAMPLES,
            method="percentile",
            batch=batch,
            random_state=np.random.default_rng(1),
        ).confidence_interval
        pooled = np.concatenate([control, variant], axis=1)
        # permutation_test wants the resamples first: one row per resample, a column per metric.
        test = stats.permutation_test(
            (np.arange(n_control), np.arange(n_control, n_control + n_variant)),
            lambda a, b, axis: (_ratios(pooled, b, COMPARED) - _ratios(pooled, a, COMPARED)).T,
            permutation_type="independent",
            vectorized=True,
            n_resamples=RESAMPLES,
            batch=batch,
            random_state=np.random.default_rng(2),
        )
    found = {}
    for position, metric in enumerate(COMPARED):
        change = difference[position]
        p_value = float(test.pvalue[position])
        found[metric] = {
            "difference": _rounded(change),
            "relative": _rounded(change / base[position]) if base[position] else None,
            "interval": [_rounded(interval.low[position]), _rounded(interval.high[position])],
            "p_value": _rounded(p_value)
            if math.isfinite(p_value) and math.isfinite(change)
            else None,
        }
    return found


def _shoppers_needed(
    control: NDArray[np.float64], spread: Any, metric: str, lift: float
) -> int | None:
    """Shoppers per variant for a two-sided test at 5% to find ``lift`` (relative) with 80%
    power: 2 (z_0.975 + z_0.8)^2 s^2 / (lift x value)^2, s^2 the per-shopper variance the
    control's bootstrap standard error implies (None until the control has data)."""
    shoppers = control.shape[1]
    position = list(METRICS).index(metric)
    value = float(_ratios(control)[position])
    if spread is None or not math.isfinite(value) or value == 0:
        return None
    variance = float(spread[position]) ** 2 * shoppers
    if not math.isfinite(variance) or variance == 0:
        return None
    z = stats.norm.ppf(1 - ALPHA / 2) + stats.norm.ppf(POWER)
    return int(math.ceil(2 * z**2 * variance / (lift * value) ** 2))


def _batch(shoppers: int) -> int:
    """Resamples per vectorised call: about 20 million index entries at a time."""
    return max(1, min(RESAMPLES, 20_000_000 // (max(shoppers, 1) * len(COLUMNS))))
