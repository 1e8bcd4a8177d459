"""``ActivityStore``: every read and write of the activity store, in SQL that SQLite and
PostgreSQL both run (``?`` placeholders; the PostgreSQL backend passes them to psycopg as
``%s``). The backend gives connections, transactions and locks:

- ``reading()``: a connection for reads (no transaction kept open);
- ``writing(users)``: one transaction, all or nothing, serialised with every other write
  about the same ``users`` (SQLite: the database's write lock; PostgreSQL: an advisory lock
  per customer), so a customer's history limit holds and a forget cannot interleave with a
  write about them, whatever the number of servers;
- ``run_lock(name)``: one run of a job (nightly, alerts) per store;
- driver errors as ``StoreUnavailable`` (cannot reach it: HTTP 503, retry) or ``StoreError``.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from ..errors import StoreError, StoreUnavailable

logger = logging.getLogger(__name__)

EVENT_TYPES = ("view", "cart", "wishlist", "purchase")
# 1: the schema before it had a version (SQLite only); 2: schema_version, suppressed_by_time.
SCHEMA_VERSION = 2
# While the database is away, the suppression list last read stands in for it; it is
# refreshed this often while the database answers (only rows changed since, with a margin
# for clocks that differ between hosts).
SUPPRESSION_REFRESH_SECONDS = 5.0
CLOCK_MARGIN_SECONDS = 600.0


@dataclass(frozen=True)
class Event:
    """One thing a shopper did; ``timestamp`` in seconds since the epoch (UTC)."""

    user_id: str
    item_id: str
    type: str
    timestamp: float


@dataclass(frozen=True)
class CatalogChange:
    """An item's recorded price and availability from ``at`` on (None: never given)."""

    item_id: str
    price: float | None
    available: bool | None
    at: float


@dataclass(frozen=True)
class Shopper:
    """What a personal answer needs from the store, read in one round trip: the customer's
    suppression (``forgotten``, ``opted_out`` or None), recent events (newest first) and,
    when asked for, the wish list (``(item_id, added_at)``, most recently added first)."""

    suppression: str | None
    recent: list[Event]
    wishlist: list[tuple[str, float]]


class Session(Protocol):
    """What a backend's connection offers: ``?`` placeholders, cursors with ``fetchone``,
    ``fetchall``, ``rowcount`` and iteration."""

    def execute(self, sql: str, args: Sequence[Any] = ...) -> Any: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any: ...


class Backend(Protocol):
    kind: str
    where: str
    on_state: Callable[[bool], None] | None

    def exists(self) -> bool: ...

    def ensure_schema(self) -> None: ...

    def reading(self) -> AbstractContextManager[Session]: ...

    def writing(self, users: Collection[str] = ..., catalog: bool = ...) -> AbstractContextManager[Session]: ...

    def run_lock(self, name: str) -> AbstractContextManager[None]: ...

    def close(self) -> None: ...


def is_database_url(location: str | Path | None) -> bool:
    """True for a ``postgresql://`` (or ``postgres://``) URL, False for a SQLite file path."""
    return str(location or "").startswith(("postgresql://", "postgres://"))


def describe(location: str | Path | None) -> str:
    """``location`` as it may be logged or written to a manifest: a URL without its password."""
    text = str(location)
    if not is_database_url(text):
        return text
    parts = urlsplit(text)
    if parts.password is None:
        return text
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


class ActivityStore:
    """Events, wish lists, suppression, catalog history and the alert ledger.

    Parameters
    ----------
    location : a SQLite file (its directory is created if missing) or a PostgreSQL URL.
    history_limit : events kept per shopper (the newest).
    history_days : events older than this are deleted.
    password : the PostgreSQL password when the URL has none (``RECO_ACTIVITY_DB_PASSWORD``);
        libpq's own ``PGPASSWORD`` and ``~/.pgpass`` work too.
    pool_size : PostgreSQL connections per process at most (one per serving thread is enough).
    """

    def __init__(self, location: str | Path, history_limit: int = 200, history_days: float = 90.0,
                 password: str | None = None, pool_size: int = 4) -> None:
        self.history_limit = history_limit
        self.history_days = history_days
        self.backend: Backend
        if is_database_url(location):
            from .postgres import PostgresBackend

            self.backend = PostgresBackend(str(location), password, pool_size)
        else:
            from .sqlite import SqliteBackend

            self.backend = SqliteBackend(Path(location))
        self._known_suppressed: dict[str, str] = {}
        self._known_since: float | None = None
        self._known_checked = 0.0

    @property
    def where(self) -> str:
        """The store's location for messages (no password)."""
        return self.backend.where

    def exists(self) -> bool:
        """Whether there is a store to read: the SQLite file exists (a server URL always does)."""
        return self.backend.exists()

    def create_schema(self) -> None:
        """Create the tables, or upgrade an older schema in place (safe from every worker at once)."""
        self.backend.ensure_schema()

    def close(self) -> None:
        """Close this process's (SQLite: this thread's) connections."""
        self.backend.close()

    def run_lock(self, name: str) -> AbstractContextManager[None]:
        """Hold the store's lock for one run of ``name`` (raises ``BusyError`` if another holds it)."""
        return self.backend.run_lock(name)

    # ------------------------------------------------------------------ events and wish lists
    def add_events(self, events: Sequence[Event], now: float | None = None) -> int:
        """Store a batch in one transaction (all or nothing), then prune those shoppers' history.

        Events of forgotten customers are acknowledged but not stored: their id is on the
        suppression list, and storing it again would undo the erasure. Returns the number stored.
        """
        now = time.time() if now is None else now
        users = sorted({e.user_id for e in events})
        with self.backend.writing(users) as db:
            forgotten = {row[0] for row in db.execute(
                f"SELECT user_id FROM suppressed WHERE reason = 'forgotten' AND user_id IN ({_marks(users)})",
                users)} if users else set()
            kept = [e for e in events if e.user_id not in forgotten]
            if kept:
                db.executemany("INSERT INTO events (user_id, item_id, type, ts, received_at) VALUES (?, ?, ?, ?, ?)",
                               [(e.user_id, e.item_id, e.type, e.timestamp, now) for e in kept])
            self._prune_users(db, {e.user_id for e in kept}, now)
        return len(kept)

    def recent_events(self, user_id: str, limit: int | None = None, now: float | None = None) -> list[Event]:
        """A shopper's events within the history window, newest first."""
        cutoff = (time.time() if now is None else now) - self.history_days * 86400
        with self.backend.reading() as db:
            rows = db.execute("SELECT user_id, item_id, type, ts FROM events WHERE user_id = ? AND ts >= ? "
                              "ORDER BY ts DESC, id DESC LIMIT ?",
                              (user_id, cutoff, limit or self.history_limit)).fetchall()
        return [Event(*row) for row in rows]

    def shopper(self, user_id: str, wishlist: bool = False, now: float | None = None) -> Shopper:
        """``Shopper`` in one statement (a database round trip costs more than the rows). While
        the database cannot be reached this raises ``StoreUnavailable``; ``suppression``
        still answers then, from the list last read."""
        cutoff = (time.time() if now is None else now) - self.history_days * 86400
        query = ("SELECT 's', reason, NULL, 0, 0 FROM suppressed WHERE user_id = ? UNION ALL "
                 "SELECT 'e', item_id, type, ts, id FROM (SELECT item_id, type, ts, id FROM events "
                 "WHERE user_id = ? AND ts >= ? ORDER BY ts DESC, id DESC LIMIT ?) AS recent")
        args: tuple[Any, ...] = (user_id, user_id, cutoff, self.history_limit)
        if wishlist:
            query += " UNION ALL SELECT 'w', item_id, NULL, added_at, 0 FROM wishlist WHERE user_id = ?"
            args += (user_id,)
        with self.backend.reading() as db:
            rows = db.execute(query, args).fetchall()
            if time.monotonic() - self._known_checked > SUPPRESSION_REFRESH_SECONDS:
                self._refresh_known_suppressed(db)
        suppression = next((row[1] for row in rows if row[0] == "s"), None)
        events = sorted((row for row in rows if row[0] == "e"), key=lambda row: (row[3], row[4]), reverse=True)
        wished = sorted(((row[1], row[3]) for row in rows if row[0] == "w"), key=lambda pair: (-pair[1], pair[0]))
        return Shopper(suppression, [Event(user_id, item, kind, ts) for _, item, kind, ts, _ in events], wished)

    def purchases(self, since: float | None = None) -> list[Event]:
        """Purchase events (all shoppers), oldest first: what the nightly training adds to its log."""
        with self.backend.reading() as db:
            rows = db.execute("SELECT user_id, item_id, type, ts FROM events WHERE type = 'purchase' AND ts >= ? "
                              "ORDER BY ts, id", (since or 0.0,)).fetchall()
        return [Event(*row) for row in rows]

    def count_events(self) -> int:
        with self.backend.reading() as db:
            return int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def add_to_wishlist(self, user_id: str, item_id: str, now: float | None = None) -> bool:
        """Add an item; True if it was not there yet. Also recorded as a ``wishlist`` event.
        Nothing is stored for a forgotten customer (checked in the same transaction)."""
        now = time.time() if now is None else now
        with self.backend.writing([user_id]) as db:
            if db.execute("SELECT 1 FROM suppressed WHERE user_id = ? AND reason = 'forgotten'",
                          (user_id,)).fetchone():
                return False
            created = db.execute("INSERT INTO wishlist (user_id, item_id, added_at) VALUES (?, ?, ?) "
                                 "ON CONFLICT DO NOTHING", (user_id, item_id, now)).rowcount == 1
            if created:
                db.execute("INSERT INTO events (user_id, item_id, type, ts, received_at) "
                           "VALUES (?, ?, 'wishlist', ?, ?)", (user_id, item_id, now, now))
                self._prune_users(db, {user_id}, now)
        return created

    def remove_from_wishlist(self, user_id: str, item_id: str) -> bool:
        """Remove an item; True if it was there."""
        with self.backend.writing([user_id]) as db:
            return db.execute("DELETE FROM wishlist WHERE user_id = ? AND item_id = ?",
                              (user_id, item_id)).rowcount == 1

    def wishlist(self, user_id: str) -> list[tuple[str, float]]:
        """``(item_id, added_at)`` of a shopper's wish list, most recently added first."""
        with self.backend.reading() as db:
            return [(item, at) for item, at in db.execute(
                "SELECT item_id, added_at FROM wishlist WHERE user_id = ? ORDER BY added_at DESC, item_id",
                (user_id,))]

    def prune(self, now: float | None = None) -> int:
        """Delete every event outside the history window (age and per-shopper count)."""
        now = time.time() if now is None else now
        with self.backend.reading() as db:
            users = sorted(row[0] for row in db.execute("SELECT DISTINCT user_id FROM events"))
        removed = 0
        for start in range(0, len(users), 500):  # short transactions: servers keep writing meanwhile
            chunk = users[start:start + 500]
            with self.backend.writing(chunk) as db:
                removed += self._prune_users(db, chunk, now)
        return removed

    def _prune_users(self, db: Session, users: Iterable[str], now: float) -> int:
        cutoff = now - self.history_days * 86400
        removed = 0
        for user_id in users:  # a batch touches few shoppers; each delete uses the (user_id, ts) index
            removed += db.execute(
                "DELETE FROM events WHERE user_id = ? AND (ts < ? OR id NOT IN ("
                "SELECT id FROM events WHERE user_id = ? ORDER BY ts DESC, id DESC LIMIT ?))",
                (user_id, cutoff, user_id, self.history_limit)).rowcount
        return removed

    # ------------------------------------------------------------------ privacy
    def suppressed(self, reason: str | None = None) -> list[str]:
        """Ids of customers who were forgotten (``reason="forgotten"``) or opted out."""
        query, args = "SELECT user_id FROM suppressed", ()
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
                row = db.execute("SELECT reason FROM suppressed WHERE user_id = ?", (user_id,)).fetchone()
                if time.monotonic() - self._known_checked > SUPPRESSION_REFRESH_SECONDS:
                    self._refresh_known_suppressed(db)
        except StoreUnavailable:
            return self._known_suppressed.get(user_id)
        return row[0] if row else None

    def _refresh_known_suppressed(self, db: Session) -> None:
        self._known_checked = time.monotonic()
        since = -1.0 if self._known_since is None else self._known_since - CLOCK_MARGIN_SECONDS
        for user_id, reason, at in db.execute("SELECT user_id, reason, at FROM suppressed WHERE at >= ?", (since,)):
            self._known_suppressed[user_id] = reason
            self._known_since = max(self._known_since or at, at)
        if self._known_since is None:
            self._known_since = 0.0

    def forget(self, user_id: str, now: float | None = None) -> dict[str, int]:
        """Erase a customer's events, wish list and alert ledger and put the id on the
        suppression list, in one transaction: from the commit on, nothing personal about them
        is served or trained on, by any server."""
        now = time.time() if now is None else now
        with self.backend.writing([user_id]) as db:
            events = db.execute("DELETE FROM events WHERE user_id = ?", (user_id,)).rowcount
            wished = db.execute("DELETE FROM wishlist WHERE user_id = ?", (user_id,)).rowcount
            db.execute("DELETE FROM alerts_delivered WHERE user_id = ?", (user_id,))
            db.execute("DELETE FROM digests WHERE user_id = ?", (user_id,))
            db.execute("INSERT INTO suppressed (user_id, reason, at) VALUES (?, 'forgotten', ?) "
                       "ON CONFLICT (user_id) DO UPDATE SET reason = 'forgotten', at = excluded.at", (user_id, now))
        self._known_suppressed[user_id] = "forgotten"
        logger.info("forgot a customer: %d events and %d wish-list items erased", events, wished)
        return {"events_erased": events, "wishlist_items_erased": wished}

    def set_opt_out(self, user_id: str, opted_out: bool, now: float | None = None) -> None:
        """Opt a customer out of personalisation (data kept), or back in; a forgotten one stays forgotten."""
        now = time.time() if now is None else now
        with self.backend.writing([user_id]) as db:
            if opted_out:
                db.execute("INSERT INTO suppressed (user_id, reason, at) VALUES (?, 'opted_out', ?) "
                           "ON CONFLICT (user_id) DO NOTHING", (user_id, now))
            else:
                db.execute("DELETE FROM suppressed WHERE user_id = ? AND reason = 'opted_out'", (user_id,))
        if opted_out:
            self._known_suppressed.setdefault(user_id, "opted_out")
        elif self._known_suppressed.get(user_id) == "opted_out":
            del self._known_suppressed[user_id]

    def everything_about(self, user_id: str) -> dict[str, object]:
        """All the store holds about a customer, for a subject access request."""
        with self.backend.reading() as db:
            events = db.execute("SELECT item_id, type, ts, received_at FROM events WHERE user_id = ? ORDER BY ts, id",
                                (user_id,)).fetchall()
        return {
            "events": [{"item_id": i, "type": t, "timestamp": ts, "received_at": r} for i, t, ts, r in events],
            "wishlist": [{"item_id": item, "added_at": at} for item, at in self.wishlist(user_id)],
            "suppression": self.suppression(user_id),
        }

    # ------------------------------------------------------------ catalog history and alerts
    def record_catalog(self, states: Iterable[tuple[str, float | None, bool | None]],
                       now: float | None = None) -> int:
        """Record items' ``(item_id, price, available)`` where either differs from the item's
        latest recorded state (None: unchanged), in one transaction; returns how many changed.
        The history is what the alert rules compare against (``CatalogChange``)."""
        now = time.time() if now is None else now
        changed = 0
        with self.backend.writing(catalog=True) as db:
            for item_id, price, available in states:
                row = db.execute("SELECT price, available FROM catalog_changes WHERE item_id = ? "
                                 "ORDER BY at DESC, id DESC LIMIT 1", (item_id,)).fetchone()
                last_price, last_available = row if row else (None, None)
                new_price = last_price if price is None else float(price)
                new_available = last_available if available is None else int(bool(available))
                if row is not None and new_price == last_price and new_available == last_available:
                    continue
                db.execute("INSERT INTO catalog_changes (item_id, price, available, at) VALUES (?, ?, ?, ?)",
                           (item_id, new_price, new_available, now))
                changed += 1
        return changed

    def catalog_history(self, items: Sequence[str] | None = None) -> dict[str, list[CatalogChange]]:
        """Recorded states, oldest first, of every item or of ``items`` only (one customer's)."""
        query = "SELECT item_id, price, available, at FROM catalog_changes"
        args: tuple[str, ...] = ()
        if items is not None:
            items = sorted(set(items))[:10_000]
            if not items:
                return {}
            query += f" WHERE item_id IN ({_marks(items)})"
            args = tuple(items)
        history: dict[str, list[CatalogChange]] = {}
        with self.backend.reading() as db:
            for item_id, price, available, at in db.execute(query + " ORDER BY item_id, at, id", args):
                history.setdefault(item_id, []).append(
                    CatalogChange(item_id, price, None if available is None else bool(available), at))
        return history

    def interest(self, since: float, user_id: str | None = None) -> list[tuple[str, str, str, float]]:
        """``(user_id, item_id, kind, at)``: wish-list items (kind ``wishlist``, whenever added)
        and items viewed or carted since ``since``, the latest time per kind; one customer or all."""
        where, args = ("WHERE user_id = ?", (user_id,)) if user_id is not None else ("", ())
        with self.backend.reading() as db:
            wished = db.execute(f"SELECT user_id, item_id, added_at FROM wishlist {where}", args).fetchall()
            events = db.execute(
                "SELECT user_id, item_id, type, MAX(ts) FROM events WHERE type IN ('view', 'cart') AND ts >= ?"
                + (" AND user_id = ?" if user_id is not None else "") + " GROUP BY user_id, item_id, type",
                (since, *args)).fetchall()
        return [(user, item, "wishlist", at) for user, item, at in wished] + [tuple(row) for row in events]

    def delivered_alerts(self, user_id: str | None = None) -> set[tuple[str, str, str, float]]:
        """``(user_id, item_id, reason, change_at)`` of every alert already in a digest."""
        where, args = ("WHERE user_id = ?", (user_id,)) if user_id is not None else ("", ())
        with self.backend.reading() as db:
            return {tuple(row) for row in db.execute(  # type: ignore[misc]
                f"SELECT user_id, item_id, reason, change_at FROM alerts_delivered {where}", args)}

    def last_digest_at(self) -> dict[str, float]:
        """Each customer's latest digest (sent, exported or being sent): the frequency cap's clock."""
        with self.backend.reading() as db:
            return {user: at for user, at in db.execute("SELECT user_id, MAX(created_at) FROM digests GROUP BY user_id")}

    def open_digest(self, user_id: str, channel: str, message_id: str, body: str,
                    alerts: Sequence[tuple[str, str, float]], now: float | None = None) -> int:
        """Record a digest about to be delivered and its alerts, in one transaction, before the
        delivery: from the commit on, a rerun neither builds these alerts again nor forgets the
        digest (``pending_digests``). Returns its id."""
        now = time.time() if now is None else now
        status = "sending" if channel == "smtp" else "exported"
        with self.backend.writing([user_id]) as db:
            digest_id = int(db.execute(
                "INSERT INTO digests (user_id, channel, status, message_id, body, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?) RETURNING id", (user_id, channel, status, message_id, body, now)).fetchone()[0])
            db.executemany("INSERT INTO alerts_delivered (user_id, item_id, reason, change_at, digest_id) "
                           "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                           [(user_id, item, reason, at, digest_id) for item, reason, at in alerts])
        return digest_id

    def mark_sent(self, digest_id: int, now: float | None = None) -> None:
        """The mail server accepted the digest."""
        with self.backend.writing() as db:
            db.execute("UPDATE digests SET status = 'sent', sent_at = ? WHERE id = ?",
                       (time.time() if now is None else now, digest_id))

    def mark_refused(self, digest_id: int) -> None:
        """The mail server refused the recipient for good: not retried."""
        with self.backend.writing() as db:
            db.execute("UPDATE digests SET status = 'refused' WHERE id = ?", (digest_id,))

    def pending_digests(self) -> list[tuple[int, str, str, str]]:
        """``(id, user_id, message_id, body)`` of e-mail digests recorded but not confirmed sent
        (a run stopped mid-delivery): the next run sends them first, with the same Message-ID."""
        with self.backend.reading() as db:
            return [tuple(row) for row in db.execute(  # type: ignore[misc]
                "SELECT id, user_id, message_id, body FROM digests WHERE status = 'sending' ORDER BY id")]

    def schema_version(self) -> int:
        with self.backend.reading() as db:
            return int(db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0])


def _marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


def upgrade(db: Session, version: int, base: Sequence[str], migrations: dict[int, Sequence[str]]) -> int:
    """Bring a schema at ``version`` (0: none) to ``SCHEMA_VERSION``: ``base`` creates the
    oldest schema this backend knows, then each migration above ``version`` runs in order.
    Runs inside the caller's transaction; returns the version it found."""
    if version > SCHEMA_VERSION:
        raise StoreError(f"activity_db: schema version {version} is newer than this version of the "
                         f"recommender knows ({SCHEMA_VERSION}); upgrade the recommender")
    if version == 0:
        for statement in base:
            db.execute(statement)
    first = min(migrations)
    for target in range(max(version + 1, first), SCHEMA_VERSION + 1):
        for statement in migrations[target]:
            db.execute(statement)
    if version < SCHEMA_VERSION:
        db.execute("DELETE FROM schema_version")
        db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        logger.info("activity store schema: version %d -> %d", version, SCHEMA_VERSION)
    return version

