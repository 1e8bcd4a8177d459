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
