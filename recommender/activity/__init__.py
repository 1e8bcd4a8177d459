"""The activity store: what shoppers do between trainings, and the state every server shares.

Events (views, carts, wishes, purchases), wish lists, the suppression list (forgotten and
opted-out customers), the catalog's price and availability history and the alert ledger
live behind one class, ``ActivityStore``, on one of two databases:

- a file path: SQLite, the embedded default (``make run`` needs nothing but Python);
- a ``postgresql://user:password@host:port/dbname`` URL: PostgreSQL, which several servers
  share, so a wish list, a view or a "forget me" made through one holds on every one.

The store's parts (``events``, ``privacy``, ``ledger``, put together in ``store``) hold the
SQL both databases understand alike; ``sqlite`` and ``postgres`` each hold what is theirs
(schema, connections, transactions, locks, error translation); ``base`` what all share.
Nothing outside this package knows which database it has.
"""

from __future__ import annotations

from .base import (
    EVENT_TYPES,
    SCHEMA_VERSION,
    CatalogChange,
    Event,
    Shopper,
    describe,
    is_database_url,
)
from .store import ActivityStore

__all__ = [
    "EVENT_TYPES",
    "SCHEMA_VERSION",
    "ActivityStore",
    "CatalogChange",
    "Event",
    "Shopper",
    "describe",
    "is_database_url",
]
