"""Experiments as the activity store keeps them, and a report read from it: what the
server's admin endpoints and ``python -m recommender experiments`` share."""

from __future__ import annotations

import json
from typing import Any

from ..activity import ActivityStore
from ..activity.performance import ExperimentRow
from .design import Experiment, parse
from .results import analyse


def stored(store: ActivityStore) -> list[tuple[Experiment, ExperimentRow]]:
    """Every experiment the store holds, oldest first, with its row (status, times)."""
    return [(parse(row.name, json.loads(row.definition)), row) for row in store.experiments()]


def describe(experiment: Experiment, row: ExperimentRow) -> dict[str, Any]:
    return {
        "name": experiment.name,
        "status": row.status,
        "started_at": row.started_at,
        "stopped_at": row.stopped_at,
        **experiment.definition(),
    }


def report(store: ActivityStore, name: str, lift: float | None = None) -> dict[str, Any] | None:
    """``analyse`` of the named experiment's outcomes; None when there is no such experiment."""
    for experiment, row in stored(store):
        if experiment.name == name:
            return analyse(experiment, store.experiment_outcomes(name), row.status, lift)
    return None


def as_text(found: dict[str, Any]) -> str:
    """The report as a terminal shows it: a line per variant, then each comparison."""
    lines = [
        f"experiment {found['experiment']} ({found['status']}); control {found['control']}; "
        f"decision metric {found['metric']}; 95% intervals"
    ]
    header = (
        "variant",
        "shoppers",
        "lists",
        "clicks",
        "CTR",
        "purchases",
        "conversion",
        "revenue",
        "rev/1000 lists",
    )
    rows = [header]
    for variant in found["variants"]:
        rows.append(
            (
                f"{variant['name']} ({variant['serves']})",
                str(variant["shoppers"]),
                str(variant["impressions"]),
                str(variant["clicks"]),
                _with_interval(variant["ctr"]),
                str(variant["purchases"]),
                _with_interval(variant["conversion"]),
                f"{variant['revenue']:.2f}",
                _with_interval(variant["revenue_per_mille"], 2),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines += [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows
    ]
    for comparison in found["comparisons"]:
        lines.append(
            f"{comparison['variant']} against {comparison['against']}: {comparison['verdict']}"
        )
        for metric, figures in comparison["metrics"].items():
            if figures["interval"] is None:
                lines.append(f"  {metric}: not enough data")
                continue
            low, high = figures["interval"]
            lines.append(
                f"  {metric}: {figures['difference']:+.4g} [{low:+.4g}, {high:+.4g}], "
                f"p = {figures['p_value']:.3g}"
            )
    needed = found["shoppers_needed"]
    lines.append(
        f"shoppers needed per variant to find a {needed['lift']:.0%} lift in {needed['metric']} "
        f"(power {needed['power']:.0%}): "
        + (
            "not known until the control has data"
            if needed["per_variant"] is None
            else f"{needed['per_variant']:,}"
        )
    )
    return "\n".join(lines)


def _with_interval(figure: dict[str, Any], digits: int = 4) -> str:
    if figure["value"] is None:
        return "-"
    if figure["interval"] is None:
        return f"{figure['value']:.{digits}f}"
    low, high = figure["interval"]
    return f"{figure['value']:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
