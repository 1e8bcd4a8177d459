"""What every part of the activity store shares: the records it hands out (``Event``,
``CatalogChange``, ``Shopper``), what a backend offers (``Session``, ``Backend``), the schema's
version and its upgrade, and ``StorePart``, the base of the store's parts (``events``,
``privacy``, ``ledger``), which ``store.ActivityStore`` puts together."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from ..errors import StoreError

logger = logging.getLogger(__name__)

EVENT_TYPES = ("view", "cart", "wishlist", "purchase")
# 1: the schema before it had a version (SQLite only); 2: schema_version, suppressed_by_time;
# 3: what recommendations earn (settings, impressions, exposures, attributions, unattributed,
# experiments).
SCHEMA_VERSION = 3
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


# Version 3's tables, in SQL both databases run once ``{real}`` (a float column) and ``{id}``
# (an auto-incremented key) are the backend's own. The impression counters and the
# unattributed counts hold no customer ids; exposures and attributions do, and a forget
# erases them.
PERFORMANCE_TABLES = [
    "CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS impressions (
        day TEXT NOT NULL, endpoint TEXT NOT NULL, strategy TEXT NOT NULL,
        model_version TEXT NOT NULL, experiment TEXT NOT NULL, variant TEXT NOT NULL,
        lists BIGINT NOT NULL, items BIGINT NOT NULL,
        PRIMARY KEY (day, endpoint, strategy, model_version, experiment, variant))""",
    """CREATE TABLE IF NOT EXISTS exposures (
        experiment TEXT NOT NULL, shopper_id TEXT NOT NULL, variant TEXT NOT NULL,
        lists BIGINT NOT NULL, first_at {real} NOT NULL,
        PRIMARY KEY (experiment, shopper_id))""",
    "CREATE INDEX IF NOT EXISTS exposures_by_shopper ON exposures (shopper_id)",
    """CREATE TABLE IF NOT EXISTS attributions (
        id {id},
        user_id TEXT NOT NULL, shopper_id TEXT, item_id TEXT NOT NULL, type TEXT NOT NULL,
        ts {real} NOT NULL, day TEXT NOT NULL, endpoint TEXT NOT NULL, strategy TEXT NOT NULL,
        model_version TEXT NOT NULL, experiment TEXT NOT NULL, variant TEXT NOT NULL,
        position INTEGER NOT NULL, shown_at {real} NOT NULL, quantity {real} NOT NULL,
        revenue {real} NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS attributions_by_user ON attributions (user_id)",
    "CREATE INDEX IF NOT EXISTS attributions_by_shopper ON attributions (shopper_id)",
    "CREATE INDEX IF NOT EXISTS attributions_by_experiment ON attributions (experiment, variant)",
    "CREATE INDEX IF NOT EXISTS attributions_by_day ON attributions (day)",
    """CREATE TABLE IF NOT EXISTS unattributed (
        day TEXT NOT NULL, reason TEXT NOT NULL, type TEXT NOT NULL, events BIGINT NOT NULL,
        PRIMARY KEY (day, reason, type))""",
    """CREATE TABLE IF NOT EXISTS experiments (
        name TEXT PRIMARY KEY, definition TEXT NOT NULL, status TEXT NOT NULL,
        started_at {real} NOT NULL, stopped_at {real}, updated_at {real} NOT NULL)""",
]


@dataclass(frozen=True)
class Attribution:
    """An event that cites a recommendation it followed: the list (``endpoint``, ``strategy``,
    ``model_version``, experiment ``variant``, when it was shown) and the item's ``position``
    in it (1 = first); ``revenue`` is price x quantity for a purchase, else 0. ``shopper_id``
    is who the list was shown to (the unit an experiment counts), ``user_id`` who acted."""

    user_id: str
    shopper_id: str | None
    item_id: str
    type: str
    timestamp: float
    endpoint: str
    strategy: str
    model_version: str
    experiment: str
    variant: str
    position: int
    shown_at: float
    quantity: float
    revenue: float


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

    def writing(
        self, users: Collection[str] = ..., catalog: bool = ...
    ) -> AbstractContextManager[Session]: ...

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


class StorePart:
    """The state the store's parts share: the backend and the history window; the
    suppression list last read (``privacy.Suppression``), which stands in while the database
    is away."""

    backend: Backend
    history_limit: int
    history_days: float
    _known_suppressed: dict[str, str]
    _known_since: float | None
    _known_checked: float

    def _refresh_known_suppressed(self, db: Session) -> None:
        raise NotImplementedError

    def wishlist(self, user_id: str) -> list[tuple[str, float]]:
        raise NotImplementedError

    def _forgotten(self, db: Session, users: Sequence[str]) -> set[str]:
        """Which of ``users`` asked to be forgotten (read inside the caller's transaction)."""
        if not users:
            return set()
        return {
            row[0]
            for row in db.execute(
                "SELECT user_id FROM suppressed WHERE reason = 'forgotten' "
                f"AND user_id IN ({marks(users)})",
                list(users),
            )
        }

    def _add_attributions(
        self,
        db: Session,
        attributions: Iterable[Attribution],
        unattributed: Mapping[tuple[str, str, str], int],
    ) -> None:
        raise NotImplementedError


def marks(values: Sequence[Any]) -> str:
    """``?,?,...``: one placeholder per value."""
    return ",".join("?" * len(values))


def upgrade(
    db: Session, version: int, base: Sequence[str], migrations: Mapping[int, Sequence[str]]
) -> int:
    """Bring a schema at ``version`` (0: none) to ``SCHEMA_VERSION``: ``base`` creates the
    oldest schema this backend knows, then each migration above ``version`` runs in order.
    Runs inside the caller's transaction; returns the version it found."""
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"activity_db: schema version {version} is newer than this version of the "
            f"recommender knows ({SCHEMA_VERSION}); upgrade the recommender"
        )
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
