"""What recommendations earn: impression counters, attributed events, experiments and the
secret that signs recommendation ids, shared by every server on the store."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .base import Attribution, Session, StorePart

# (day, endpoint, strategy, model_version, experiment, variant): the key of a counter row.
ImpressionKey = tuple[str, str, str, str, str, str]
# (experiment, shopper_id) -> (variant, lists shown, first shown at)
Exposures = Mapping[tuple[str, str], tuple[str, int, float]]


@dataclass(frozen=True)
class ExperimentRow:
    """An experiment as stored: its definition (JSON text, ``experiments.parse`` reads it)."""

    name: str
    definition: str
    status: str
    started_at: float
    stopped_at: float | None


@dataclass(frozen=True)
class ShopperOutcome:
    """One shopper's exposure to an experiment and what followed from its lists."""

    variant: str
    lists: int
    clicks: int
    carts: int
    purchases: int
    revenue: float


class Performance(StorePart):
    """Counters, attributions and experiments (part of ``ActivityStore``)."""

    def shared_secret(self, name: str, candidate: str) -> str:
        """The value stored under ``name``, storing ``candidate`` first if there is none: the
        first server to ask chooses it, and every server on the store then signs alike."""
        with self.backend.writing() as db:
            db.execute(
                "INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                (name, candidate),
            )
            return str(
                db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()[0]
            )

    def add_impressions(
        self, counts: Mapping[ImpressionKey, tuple[int, int]], exposures: Exposures
    ) -> None:
        """Add a worker's counts (lists and items shown) and experiment exposures in one
        transaction. An exposure of a forgotten shopper is dropped: storing the id again would
        undo the erasure."""
        shoppers = sorted({shopper for _, shopper in exposures})
        with self.backend.writing(shoppers) as db:
            if counts:
                db.executemany(
                    "INSERT INTO impressions (day, endpoint, strategy, model_version, experiment, "
                    "variant, lists, items) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (day, endpoint, strategy, model_version, experiment, variant) "
                    "DO UPDATE SET lists = impressions.lists + excluded.lists, "
                    "items = impressions.items + excluded.items",
                    [(*key, lists, items) for key, (lists, items) in counts.items()],
                )
            forgotten = self._forgotten(db, shoppers)
            rows = [
                (experiment, shopper, variant, lists, first_at)
                for (experiment, shopper), (variant, lists, first_at) in exposures.items()
                if shopper not in forgotten
            ]
            if rows:
                db.executemany(
                    "INSERT INTO exposures (experiment, shopper_id, variant, lists, first_at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (experiment, shopper_id) "
                    "DO UPDATE SET lists = exposures.lists + excluded.lists",
                    rows,
                )

    def _add_attributions(
        self,
        db: Session,
        attributions: Iterable[Attribution],
        unattributed: Mapping[tuple[str, str, str], int],
    ) -> None:
        """Called inside ``add_events``'s transaction: an event and its attribution are
        stored together or not at all."""
        rows = [
            (
                a.user_id,
                a.shopper_id,
                a.item_id,
                a.type,
                a.timestamp,
                day_of(a.timestamp),
                a.endpoint,
                a.strategy,
                a.model_version,
                a.experiment,
                a.variant,
                a.position,
                a.shown_at,
                a.quantity,
                a.revenue,
            )
            for a in attributions
        ]
        if rows:
            db.executemany(
                "INSERT INTO attributions (user_id, shopper_id, item_id, type, ts, day, endpoint, "
                "strategy, model_version, experiment, variant, position, shown_at, quantity, "
                "revenue) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        if unattributed:
            db.executemany(
                "INSERT INTO unattributed (day, reason, type, events) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (day, reason, type) DO UPDATE SET "
                "events = unattributed.events + excluded.events",
                [(*key, count) for key, count in unattributed.items()],
            )

    # ------------------------------------------------------------------ experiments
    def experiments(self) -> list[ExperimentRow]:
        """Every experiment, running or stopped, oldest first."""
        with self.backend.reading() as db:
            rows = db.execute(
                "SELECT name, definition, status, started_at, stopped_at FROM experiments "
                "ORDER BY started_at, name"
            ).fetchall()
        return [ExperimentRow(*row) for row in rows]

    def put_experiment(self, name: str, definition: str, now: float, replace: bool = True) -> bool:
        """Start ``name`` with this definition (JSON text), replacing a stored one when
        ``replace``; True if it was not stored before. A replaced experiment restarts."""
        with self.backend.writing() as db:
            existed = (
                db.execute("SELECT 1 FROM experiments WHERE name = ?", (name,)).fetchone()
                is not None
            )
            if existed and not replace:
                return False
            db.execute(
                "INSERT INTO experiments (name, definition, status, started_at, stopped_at, "
                "updated_at) VALUES (?, ?, 'running', ?, NULL, ?) ON CONFLICT (name) DO UPDATE "
                "SET definition = excluded.definition, status = 'running', "
                "started_at = excluded.started_at, stopped_at = NULL, "
                "updated_at = excluded.updated_at",
                (name, definition, now, now),
            )
        return not existed

    def stop_experiment(self, name: str, now: float) -> bool:
        """Stop a running experiment (its figures stay); False if there is no such one running."""
        with self.backend.writing() as db:
            return (
                db.execute(
                    "UPDATE experiments SET status = 'stopped', stopped_at = ?, updated_at = ? "
                    "WHERE name = ? AND status = 'running'",
                    (now, now, name),
                ).rowcount
                == 1
            )

    def experiment_outcomes(self, name: str) -> list[ShopperOutcome]:
        """Per exposed shopper: the variant, lists shown, and the clicks (views), carts,
        purchases and revenue attributed to that variant's lists."""
        with self.backend.reading() as db:
            rows = db.execute(
                "SELECT x.variant, x.lists, COALESCE(a.clicks, 0), COALESCE(a.carts, 0), "
                "COALESCE(a.purchases, 0), COALESCE(a.revenue, 0) FROM exposures x LEFT JOIN ("
                "SELECT shopper_id, variant, "
                "SUM(CASE WHEN type = 'view' THEN 1 ELSE 0 END) AS clicks, "
                "SUM(CASE WHEN type = 'cart' THEN 1 ELSE 0 END) AS carts, "
                "SUM(CASE WHEN type = 'purchase' THEN 1 ELSE 0 END) AS purchases, "
                "SUM(revenue) AS revenue FROM attributions WHERE experiment = ? "
                "GROUP BY shopper_id, variant) a "
                "ON a.shopper_id = x.shopper_id AND a.variant = x.variant "
                "WHERE x.experiment = ? ORDER BY x.variant, x.shopper_id",
                (name, name),
            ).fetchall()
        return [
            ShopperOutcome(str(v), int(n), int(c), int(k), int(p), float(r))
            for v, n, c, k, p, r in rows
        ]

    # ------------------------------------------------------------------ dashboard
    def daily_performance(self, since_day: str) -> dict[str, list[tuple[Any, ...]]]:
        """Rows from ``since_day`` (YYYY-MM-DD) on, for the dashboard: ``impressions`` (day,
        endpoint, model_version, lists, items), ``attributed`` (day, endpoint, model_version,
        type, events, revenue), ``unattributed`` (day, reason, type, events)."""
        with self.backend.reading() as db:
            impressions = db.execute(
                "SELECT day, endpoint, model_version, SUM(lists), SUM(items) FROM impressions "
                "WHERE day >= ? GROUP BY day, endpoint, model_version ORDER BY 1, 2, 3",
                (since_day,),
            ).fetchall()
            attributed = db.execute(
                "SELECT day, endpoint, model_version, type, COUNT(*), SUM(revenue) "
                "FROM attributions WHERE day >= ? GROUP BY day, endpoint, model_version, type "
                "ORDER BY 1, 2, 3, 4",
                (since_day,),
            ).fetchall()
            unattributed = db.execute(
                "SELECT day, reason, type, events FROM unattributed WHERE day >= ? "
                "ORDER BY 1, 2, 3",
                (since_day,),
            ).fetchall()
        return {
            "impressions": [tuple(row) for row in impressions],
            "attributed": [tuple(row) for row in attributed],
            "unattributed": [tuple(row) for row in unattributed],
        }


@functools.lru_cache(maxsize=8)
def _day_number(number: int) -> str:
    return dt.datetime.fromtimestamp(number * 86400, dt.UTC).strftime("%Y-%m-%d")


def day_of(timestamp: float) -> str:
    """The UTC day (YYYY-MM-DD) counters file a moment under (each day's string made once:
    every response asks)."""
    return _day_number(int(timestamp // 86400))
