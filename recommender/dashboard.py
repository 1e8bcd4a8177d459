"""The merchandiser's "Performance" view: what recommendations were shown and earned, per
day, by endpoint and by model version, and each experiment's variants side by side.

``summarise`` shapes the store's daily rows into series; ``render_svg`` draws them with
matplotlib (already the training report's plotting library), on the server, so the page
needs no charting code of its own.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

SERIES = ("impressions", "ctr", "conversion", "revenue")


def summarise(rows: dict[str, list[tuple[Any, ...]]]) -> dict[str, Any]:
    """Per day, by endpoint and by model version: lists shown (``impressions``), clicks,
    carts, purchases, attributed revenue, ``ctr`` (clicks per list shown) and ``conversion``
    (attributed purchases per list shown); plus the events that cited a list and were not
    attributed, by reason."""
    days = sorted({row[0] for row in rows["impressions"]} | {row[0] for row in rows["attributed"]})
    grouped: dict[str, dict[str, dict[str, dict[str, float]]]] = {
        "by_endpoint": defaultdict(lambda: defaultdict(_zero)),
        "by_model_version": defaultdict(lambda: defaultdict(_zero)),
    }
    for day, endpoint, version, lists, _items in rows["impressions"]:
        for key, group in ((endpoint, "by_endpoint"), (version, "by_model_version")):
            grouped[group][key][day]["impressions"] += lists
    names = {"view": "clicks", "cart": "carts", "purchase": "purchases"}
    for day, endpoint, version, kind, events, revenue in rows["attributed"]:
        for key, group in ((endpoint, "by_endpoint"), (version, "by_model_version")):
            cell = grouped[group][key][day]
            if kind in names:
                cell[names[kind]] += events
            cell["revenue"] += revenue or 0.0
    summary: dict[str, Any] = {"days": days}
    for group, series in grouped.items():
        summary[group] = {
            key: [_rates(day, per_day[day]) for day in days]
            for key, per_day in sorted(series.items())
        }
    missed: dict[str, int] = defaultdict(int)
    for _day, reason, _kind, events in rows["unattributed"]:
        missed[reason] += events
    summary["not_attributed"] = dict(missed)
    totals = _zero()
    for per_day in grouped["by_endpoint"].values():
        for cell in per_day.values():
            for name, value in cell.items():
                totals[name] += value
    summary["totals"] = _rates(None, totals)
    return summary


def _zero() -> dict[str, float]:
    return {"impressions": 0, "clicks": 0, "carts": 0, "purchases": 0, "revenue": 0.0}


def _rates(day: str | None, cell: dict[str, float]) -> dict[str, Any]:
    shown = cell["impressions"]
    entry: dict[str, Any] = {} if day is None else {"day": day}
    entry.update(
        impressions=int(shown),
        clicks=int(cell["clicks"]),
        carts=int(cell["carts"]),
        purchases=int(cell["purchases"]),
        revenue=round(cell["revenue"], 2),
        ctr=round(cell["clicks"] / shown, 6) if shown else None,
        conversion=round(cell["purchases"] / shown, 6) if shown else None,
    )
    return entry


def render_svg(summary: dict[str, Any], experiments: Sequence[dict[str, Any]]) -> bytes:
    """One SVG: a row of daily plots (lists shown, CTR, conversion, revenue) by endpoint,
    one by model version, then each experiment's variants with their 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = 2 + len(experiments)
    figure, axes = plt.subplots(rows, 4, figsize=(16, 3.2 * rows), squeeze=False)
    days = summary["days"]
    titles = {
        "impressions": "lists shown",
        "ctr": "CTR (clicks per list)",
        "conversion": "conversion (purchases per list)",
        "revenue": "attributed revenue",
    }
    for row, (group, label) in enumerate(
        (("by_endpoint", "by endpoint"), ("by_model_version", "by model version"))
    ):
        for column, series in enumerate(SERIES):
            axis = axes[row][column]
            axis.set_title(f"{titles[series]}, {label}", fontsize=9)
            for key, points in summary[group].items():
                values = [point[series] for point in points]
                axis.plot(
                    range(len(days)),
                    [float("nan") if v is None else v for v in values],
                    marker="o",
                    label=key,
                )
            axis.set_xticks(range(len(days)), days, rotation=45, fontsize=7)
            if not days:
                axis.text(0.5, 0.5, "no traffic yet", ha="center", va="center")
            elif column == 0:
                axis.legend(fontsize=7)
    for row, result in enumerate(experiments, start=2):
        metrics = ("ctr", "conversion", "revenue_per_shopper", "revenue_per_mille")
        for column, metric in enumerate(metrics):
            axis = axes[row][column]
            axis.set_title(f"{result['experiment']}: {metric.replace('_', ' ')}", fontsize=9)
            names, values, low, high = [], [], [], []
            for variant in result["variants"]:
                figure_value = variant[metric]
                if figure_value["value"] is None:
                    continue
                names.append(variant["name"])
                values.append(figure_value["value"])
                interval = figure_value["interval"] or [figure_value["value"]] * 2
                low.append(figure_value["value"] - interval[0])
                high.append(interval[1] - figure_value["value"])
            if names:
                axis.errorbar(range(len(names)), values, yerr=[low, high], fmt="o", capsize=6)
                axis.set_xticks(range(len(names)), names, fontsize=8)
                axis.set_xlim(-0.5, len(names) - 0.5)
            else:
                axis.text(0.5, 0.5, "no shoppers yet", ha="center", va="center")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg")
    plt.close(figure)
    return buffer.getvalue()
