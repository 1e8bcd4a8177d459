"""Privacy: the suppression list (forgotten and opted-out customers), forgetting a customer,
and everything held about one."""

from __future__ import annotations

import logging
import time

from ..errors import StoreUnavailable
from .base import CLOCK_MARGIN_SECONDS, SUPPRESSION_REFRESH_SECONDS, Session, StorePart

logger = logging.getLogger(__name__)


class Suppression(StorePart):
    """Forget, opt out, and what is held (part of ``ActivityStore``)."""

    def suppressed(self, reason: str | None = None) -> list[str]:
        """Ids of customers who were forgotten (``reason="forgotten"``) or opted out."""
        query, args = "SELECT user_id FROM suppressed", tuple[str, ...]()
        if reason is not None:
            query, args = query + " WHERE reason = ?", (reason,)
        with self.backend.reading() as db:
            return [row[0] for row in db.execute(query, args)]

    def suppression(self, user_id: str) -> str | None:
        """``"forgotten"``, ``"opted_out"`` or None for one customer, read from the database
        on every call (a forget through any server holds at once). While the database cannot
        be reached, the list this process last read answers instead (a forget cannot be made
        meanwhile: it is a write); None if it never read one."""
        try:
            with self.backend.reading() as db:
                row = db.execute(
                    "SELECT reason FROM suppressed WHERE user_id = ?", (user_id,)
                ).fetchone()
                self._refresh_known_suppressed(db)
        except StoreUnavailable:
            return self._known_suppressed.get(user_id)
        return row[0] if row else None

    def _refresh_known_suppressed(self, db: Session) -> None:
        """Read the suppression rows changed since the last read, at most every
        ``SUPPRESSION_REFRESH_SECONDS``: the list that answers while the database is away."""
        if time.monotonic() - self._known_checked <= SUPPRESSION_REFRESH_SECONDS:
            return
        self._known_checked = time.monotonic()
        since = -1.0 if self._known_since is None else self._known_since - CLOCK_MARGIN_SECONDS
        for user_id, reason, at in db.execute(
            "SELECT user_id, reason, at FROM suppressed WHERE at >= ?", (since,)
        ):
            self._known_suppressed[user_id] = reason
            self._known_since = max(self._known_since or at, at)
        if self._known_since is None:
            self._known_since = 0.0

    def forget(self, user_id: str, now: float | None = None) -> dict[str, int]:
        """Erase a customer's events, wish list, alert ledger, attributed events and experiment
        exposures, and put the id on the
        suppression list, in one transaction: from the commit on, nothing personal about them
        is served or trained on, by any server."""
        now = time.time() if now is None else now
        with self.backend.writing([user_id]) as db:
            events = db.execute("DELETE FROM events WHERE user_id = ?", (user_id,)).rowcount
            wished = db.execute("DELETE FROM wishlist WHERE user_id = ?", (user_id,)).rowcount
            db.execute("DELETE FROM alerts_delivered WHERE user_id = ?", (user_id,))
            db.execute("DELETE FROM digests WHERE user_id = ?", (user_id,))
            attributed = db.execute(
                "DELETE FROM attributions WHERE user_id = ? OR shopper_id = ?", (user_id, user_id)
            ).rowcount
            db.execute("DELETE FROM exposures WHERE shopper_id = ?", (user_id,))
            db.execute(
                "INSERT INTO suppressed (user_id, reason, at) VALUES (?, 'forgotten', ?) "
                "ON CONFLICT (user_id) DO UPDATE SET reason = 'forgotten', at = excluded.at",
                (user_id, now),
            )
        self._known_suppressed[user_id] = "forgotten"
        logger.info(
            "forgot a customer: %d events, %d wish-list items and %d attributed events erased",
            events,
            wished,
            attributed,
        )
        return {
            "events_erased": events,
            "wishlist_items_erased": wished,
            "attributed_events_erased": attributed,
        }

    def set_opt_out(self, user_id: str, opted_out: bool, now: float | None = None) -> None:
        """Opt a customer out of personalisation (data kept), or back in; a forgotten one stays forgotten."""
        now = time.time() if now is None else now
        with self.backend.writing([user_id]) as db:
            if opted_out:
                db.execute(
                    "INSERT INTO suppressed (user_id, reason, at) VALUES (?, 'opted_out', ?) "
                    "ON CONFLICT (user_id) DO NOTHING",
                    (user_id, now),
                )
            else:
                db.execute(
                    "DELETE FROM suppressed WHERE user_id = ? AND reason = 'opted_out'", (user_id,)
                )
        if opted_out:
            self._known_suppressed.setdefault(user_id, "opted_out")
        elif self._known_suppressed.get(user_id) == "opted_out":
            del self._known_suppressed[user_id]

    def everything_about(self, user_id: str) -> dict[str, object]:
        """All the store holds about a customer, for a subject access request."""
        with self.backend.reading() as db:
            events = db.execute(
                "SELECT item_id, type, ts, received_at FROM events WHERE user_id = ? ORDER BY ts, id",
                (user_id,),
            ).fetchall()
            attributed = db.execute(
                "SELECT item_id, type, ts, endpoint, model_version, experiment, variant, position, "
                "revenue FROM attributions WHERE user_id = ? OR shopper_id = ? ORDER BY ts, id",
                (user_id, user_id),
            ).fetchall()
            exposures = db.execute(
                "SELECT experiment, variant, lists, first_at FROM exposures WHERE shopper_id = ? "
                "ORDER BY first_at, experiment",
                (user_id,),
            ).fetchall()
        return {
            "events": [
                {"item_id": i, "type": t, "timestamp": ts, "received_at": r}
                for i, t, ts, r in events
            ],
            "wishlist": [{"item_id": item, "added_at": at} for item, at in self.wishlist(user_id)],
            "attributed_events": [
                dict(
                    zip(
                        (
                            "item_id",
                            "type",
                            "timestamp",
                            "endpoint",
                            "model_version",
                            "experiment",
                            "variant",
                            "position",
                            "revenue",
                        ),
                        row,
                    )
                )
                for row in attributed
            ],
            "experiments": [
                {"experiment": e, "variant": v, "lists_shown": n, "first_shown_at": at}
                for e, v, n, at in exposures
            ],
            "suppression": self.suppression(user_id),
        }
