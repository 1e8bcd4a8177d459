"""Which validation protocol a log supports, decided from the log itself and said in the report.

A recommender is chosen and measured on held-out purchases; which purchases to hold out
depends on the log:

``rolling-time``
    Train before a cut-off, measure what customers bought in the ``test_days`` after it,
    over several consecutive periods. It mimics production (a model trained last night answers
    today) but only measures the customers active in those periods: it is used when each
    period holds a fair share of the repeat customers.
``next-purchase``
    Each customer's last order is held out, whenever it happened. Every repeat customer is
    measured, so it fits logs whose customers are active in bursts spread over the calendar
    (where the last month is a small, unusual minority).
``random-holdout``
    A share of customers (or baskets) is held out, one item of each hidden and found from the
    rest. For logs without a usable time order: no timestamps, or all the same.

The rule (``choose_protocol``), with the figures behind it kept in ``Protocol.stats``:

1. no timestamp column, or one distinct timestamp: ``random-holdout``;
2. fewer than ``MIN_CUSTOMERS`` customers bought at two different times: ``random-holdout``;
3. the test period and each of the ``validation_periods`` before it are *representative*
   when each holds at least ``MIN_CUSTOMERS`` evaluable customers (bought before the period,
   bought something new in it), they are at least ``MIN_COVERAGE`` of the repeat customers,
   and the best-covered period holds at most ``MAX_UNEVENNESS`` times the worst-covered one:
   then ``rolling-time``, with ``next-purchase`` measured too (the choice must do well on
   both);
4. otherwise ``next-purchase``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .data.split import protocol_figures

if TYPE_CHECKING:
    import pandas as pd

ROLLING, NEXT_PURCHASE, RANDOM_HOLDOUT = "rolling-time", "next-purchase", "random-holdout"
MIN_CUSTOMERS = 50
MIN_COVERAGE = 0.20
MAX_UNEVENNESS = 3.0


@dataclass(frozen=True)
class Protocol:
    """The chosen protocol, the others measured alongside it, why, and the figures behind it."""

    name: str
    reason: str
    also: tuple[str, ...] = ()
    stats: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "also_measured": list(self.also),
            "reason": self.reason,
            "stats": self.stats,
        }


def choose_protocol(
    purchases: pd.DataFrame, test_days: float = 30.0, validation_periods: int = 3
) -> Protocol:
    """Apply the module's rule to a cleaned purchase log (``user_id`` NA for guest lines);
    ``data.split.protocol_figures`` counts what the rule reads."""
    figures = protocol_figures(purchases, test_days, validation_periods + 1, MIN_CUSTOMERS)
    if figures.missing:
        return Protocol(
            RANDOM_HOLDOUT,
            {"customers": NO_CUSTOMERS, "timestamps": NO_TIMESTAMPS, "times": ONE_TIMESTAMP}[
                figures.missing
            ],
        )
    return decide(figures.customers, figures.repeat, figures.periods, test_days)


NO_CUSTOMERS = "the log has no customer ids: baskets are held out"
NO_TIMESTAMPS = "the log has no timestamps: customers are held out at random"
ONE_TIMESTAMP = "every purchase has the same timestamp: customers are held out at random"


def decide(
    customers: int,
    repeat: int,
    periods: list[dict[str, Any]] | None,
    test_days: float,
    measure_both: bool = True,
) -> Protocol:
    """Rules 2-4 of the module docstring, from the figures either engine computes: customers,
    those who bought at two different times, and each period's evaluable customers and
    coverage (``periods``, newest first; needed only when ``repeat >= MIN_CUSTOMERS``).
    ``measure_both`` false: the rolling protocol is measured alone (the Spark engine)."""
    stats: dict[str, Any] = {"customers": customers, "repeat_customers": repeat}
    if repeat < MIN_CUSTOMERS or not periods:
        return Protocol(
            RANDOM_HOLDOUT,
            f"only {repeat} customers bought at two different times "
            f"(fewer than {MIN_CUSTOMERS}): customers are held out at random",
            stats=stats,
        )
    stats["periods"] = periods
    coverages = [period["coverage"] for period in periods]
    evaluable = [period["evaluable_customers"] for period in periods]
    worst, best = min(coverages), max(coverages)
    stats["rule"] = (
        f"each of the {len(periods)} last {test_days:g}-day periods needs >= {MIN_CUSTOMERS} evaluable "
        f"customers and >= {MIN_COVERAGE:.0%} of the repeat customers, the best at most "
        f"{MAX_UNEVENNESS:g}x the worst"
    )
    if min(evaluable) < MIN_CUSTOMERS or worst < MIN_COVERAGE:
        return Protocol(
            NEXT_PURCHASE,
            f"the last {test_days:g}-day periods hold too few of the {repeat} repeat "
            f"customers (worst {worst:.1%}, {min(evaluable)} customers): each customer's "
            "last order is held out instead",
            stats=stats,
        )
    if best > MAX_UNEVENNESS * worst:
        return Protocol(
            NEXT_PURCHASE,
            f"the last {test_days:g}-day periods cover the repeat customers too unevenly "
            f"({worst:.1%} to {best:.1%}): each customer's last order is held out instead",
            stats=stats,
        )
    reason = (
        f"each of the last {len(periods)} {test_days:g}-day periods holds {worst:.0%} or more of "
        f"the {repeat} repeat customers: rolling time split"
    )
    if not measure_both:
        return Protocol(ROLLING, reason, stats=stats)
    return Protocol(
        ROLLING,
        reason + ", each customer's next purchase measured too",
        also=(NEXT_PURCHASE,),
        stats=stats,
    )
