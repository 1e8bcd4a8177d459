"""The evaluation report: one self-contained HTML page (plots embedded as PNG) per model version."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

METRIC_COLUMNS = ("precision", "recall", "ndcg", "map", "hit_rate", "coverage", "novelty")


def render(evaluation: dict[str, Any], summary: dict[str, Any]) -> bytes:
    """HTML for ``evaluation`` (from ``model_selection``) and a summary of the training run.

    Long because it writes one HTML page top to bottom, section by section.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    models = evaluation.get("models", {})
    k = evaluation.get("k", 10)
    sections = [f"<h1>Model {html.escape(str(summary.get('version', '')))}</h1>"]
    sections.append(
        _definition_list(
            {
                "trained": summary.get("created_at"),
                "data": summary.get("data"),
                "shipped recommender": evaluation.get("shipped"),
                f"headline (NDCG@{k}) on the test fold": _fmt(evaluation.get("headline_value")),
                "95% interval (bootstrap over customers)": _interval(
                    evaluation.get("headline_ci95")
                ),
                "validation protocol": (evaluation.get("protocol") or {}).get("name"),
                "why this protocol": (evaluation.get("protocol") or {}).get("reason"),
                "gate": summary.get("gate"),
            }
        )
    )
    for note in summary.get("notes", []):
        sections.append(f"<p class=note>{html.escape(note)}</p>")
    if models:
        sections.append(f"<h2>Test fold (never used for any choice): every model at K={k}</h2>")
        protocol = evaluation.get("protocol", {})
        sections.append(
            _definition_list({key: value for key, value in protocol.items() if key != "stats"})
        )
        sections.append(_model_table(models, k))
        for name, other in (evaluation.get("also") or {}).items():
            sections.append(f"<h2>Also measured: {html.escape(name)} protocol</h2>")
            sections.append(_definition_list(other.get("protocol", {})))
            sections.append(_model_table(other.get("models", {}), k))
        names = list(models)
        figure, axes = plt.subplots(1, 2, figsize=(13, 0.45 * len(names) + 1.5))
        for axis, metric in zip(axes, ("ndcg", "hit_rate")):
            axis.barh(
                names,
                [models[n][metric] for n in names],
                color=["#c0392b" if n.startswith("shipped") else "#7f8c8d" for n in names],
            )
            axis.set_title(f"{metric} @ {k} by model")
            axis.invert_yaxis()
        axes[1].set_yticklabels([])
        sections.append(_figure(figure, plt))
        figure, axes = plt.subplots(1, 2, figsize=(13, 4))
        for name in names:
            by_k = models[name].get("by_k", {})
            cuts = [int(c) for c in by_k]
            axes[0].plot(cuts, [by_k[str(c)]["ndcg"] for c in cuts], marker="o", label=name)
            axes[1].plot(cuts, [by_k[str(c)]["recall"] for c in cuts], marker="o", label=name)
        axes[0].set_title("NDCG by K")
        axes[1].set_title("recall by K")
        axes[1].legend(fontsize=7, loc="upper left")
        sections.append(_figure(figure, plt))
        figure, axes = plt.subplots(1, 2, figsize=(13, 0.45 * len(names) + 1.5))
        axes[0].barh(names, [models[n]["novelty"] for n in names], color="#2980b9")
        axes[0].set_title("popularity rank of recommended items (mean; higher = less obvious)")
        axes[0].invert_yaxis()
        axes[1].barh(names, [models[n]["coverage"] for n in names], color="#27ae60")
        axes[1].set_title(f"catalog coverage of the top {k}")
        axes[1].invert_yaxis()
        axes[1].set_yticklabels([])
        sections.append(_figure(figure, plt))
    repeats = evaluation.get("repeats")
    if repeats:
        sections.append(_repeats_section(repeats, k))
    item_to_item = evaluation.get("item_to_item")
    if item_to_item:
        sections.append(
            "<h2>Item pages</h2><p>" + html.escape(item_to_item.get("task", "")) + "</p>"
        )
        rows = "".join(
            f"<tr><th>{html.escape(name)}</th><td>{_fmt(v['hit_rate'])}</td><td>{_fmt(v['ndcg'])}</td>"
            f"<td>{_fmt(v['mrr'])}</td><td>{v['pairs']}</td></tr>"
            for name, v in item_to_item.items()
            if isinstance(v, dict)
        )
        sections.append(
            f"<table><tr><th>model</th><th>hit rate@{k}</th><th>NDCG@{k}</th><th>MRR</th>"
            f"<th>pairs</th></tr>{rows}</table>"
        )
    validation = evaluation.get("validation")
    if validation:
        sections.append("<h2>How the shipped model was chosen</h2>")
        how = (
            "On Spark, on one validation fold before the test fold: "
            + str(evaluation["spark"])
            + ". "
            if evaluation.get("engine") == "spark"
            else "On validation folds before the test fold only: the decay of old purchases first, then "
            "every single component (item-to-item models, ALS, trending, popularity), then the two best "
            "item-to-item models blended with ALS and trending. "
        )
        sections.append(
            "<p>"
            + html.escape(how)
            + "A blend ships only if it beats its best part by more than the "
            "bootstrap standard error. Chosen: "
            f"<b>{html.escape(str(validation.get('chosen')))}</b>.</p>"
        )
        sections.append(
            _definition_list(
                {k2: v for k2, v in validation.items() if k2 not in ("search", "chosen", "folds")}
            )
        )
        search = validation.get("search", [])
        columns = [key for key in (search[0] if search else {}) if key != "config"]
        rows = "".join(
            "<tr><td>"
            + html.escape(r["config"])
            + "</td>"
            + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in columns)
            + "</tr>"
            for r in search
        )
        header = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        sections.append(
            f"<table><tr><th>configuration (validation)</th>{header}</tr>{rows}</table>"
        )
    cleaning = summary.get("cleaning")
    if cleaning:
        sections.append(
            "<h2>Cleaning</h2>"
            + _definition_list(
                {
                    **{k2: v for k2, v in cleaning.items() if not isinstance(v, dict)},
                    **cleaning.get("rejected", {}),
                    **cleaning.get("dropped", {}),
                }
            )
        )
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right;font-size:13px}"
        "th:first-child{text-align:left}.note{background:#fff3cd;padding:6px}img{max-width:100%}"
    )
    page = (
        "<!doctype html><html><head><meta charset=utf-8>"
        f"<title>Evaluation {html.escape(str(summary.get('version')))}</title>"
        f"<style>{style}</style></head><body>{''.join(sections)}</body></html>"
    )
    return page.encode("utf-8")


def _repeats_section(repeats: dict[str, Any], k: int) -> str:
    """Buy it again: everything bought next, rebuys included, beside the usual next-basket
    baselines, the paired differences, and what the validation folds chose and why."""
    validation = repeats.get("validation", {})
    paired = "".join(
        f"<tr><th>{html.escape(name)}</th><td>{html.escape(v['against'])}</td>"
        f"<td>{_fmt(v['difference'])}</td><td>{_interval(v['ci95'])}</td></tr>"
        for name, v in repeats.get("paired", {}).items()
    )
    chosen = {
        "chosen on validation": validation.get("chosen"),
        "default exclude_purchased": validation.get("default_exclude_purchased"),
        "why": validation.get("rule"),
    }
    return (
        "<h2>Buy it again: everything bought next, rebuys included</h2>"
        f"<p>{html.escape(str(repeats.get('question', '')))}. The headline above answers "
        "another question (items new to the customer); this one is what a shop whose customers "
        "rebuy shows in its buy-again row and in a personal list that keeps purchases.</p>"
        + _definition_list(repeats.get("protocol", {}))
        + _model_table(repeats.get("models", {}), k)
        + f"<h3>Paired differences (NDCG@{k}, same customers)</h3>"
        + "<table><tr><th>list</th><th>against</th><th>difference</th><th>95% interval</th></tr>"
        + paired
        + "</table><h3>How it was chosen (validation folds only)</h3>"
        + _definition_list(chosen)
    )


def _model_table(models: dict[str, Any], k: int) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(name)}</th>"
        + "".join(f"<td>{_fmt(values.get(m))}</td>" for m in METRIC_COLUMNS)
        + f"<td>{_interval(values.get('ndcg_ci95'))}</td></tr>"
        for name, values in models.items()
    )
    header = (
        "".join(f"<th>{m}@{k}</th>" for m in METRIC_COLUMNS[:-2])
        + f"<th>coverage</th><th>novelty (mean pop. rank)</th><th>NDCG@{k} 95% interval</th>"
    )
    return f"<table><tr><th>model</th>{header}</tr>{rows}</table>"


def _interval(bounds: Any) -> str | None:
    if not bounds:
        return None
    return f"[{bounds[0]:.4f}, {bounds[1]:.4f}]"


def _figure(figure: Any, plt: Any) -> str:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _definition_list(values: dict[str, Any]) -> str:
    items = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in values.items()
        if v is not None
    )
    return f"<table>{items}</table>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if value < 10 else f"{value:.0f}"
    return html.escape(str(value)) if value is not None else ""
