"""The optional customers file: names to greet customers by, and who opted out.

CSV with ``id`` (or ``user_id``, ``customer_id``) and ``name``, and optionally ``email`` (where
alerts are sent) and ``opted_out`` (true/false): an opted-out customer gets no personal
recommendations, no export rows and no e-mail.
Read with the standard ``csv`` module (the server never imports pandas) and held in memory:
a shop's customer list is small next to its purchase log.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

_TRUE = {"1", "true", "yes", "y"}


@dataclass(frozen=True)
class Customers:
    names: dict[str, str] = field(default_factory=dict)
    opted_out: frozenset[str] = frozenset()
    emails: dict[str, str] = field(default_factory=dict)


def read_customers(path: str | Path | None) -> Customers:
    """Read the customers file; ``ConfigError`` naming the file when it is unusable."""
    if path is None:
        return Customers()
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            fields = reader.fieldnames or []
            id_field = next((f for f in ("id", "user_id", "customer_id") if f in fields), None)
            if id_field is None:
                raise ConfigError(f"{path}: customers file needs an 'id' column, has {fields}")
            names, opted_out, emails = {}, set(), {}
            for row in reader:
                customer = (row.get(id_field) or "").strip()
                if not customer:
                    continue
                if row.get("name"):
                    names[customer] = row["name"].strip()
                if "@" in (row.get("email") or ""):
                    emails[customer] = row["email"].strip()
                if (row.get("opted_out") or "").strip().lower() in _TRUE:
                    opted_out.add(customer)
            return Customers(names, frozenset(opted_out), emails)
    except FileNotFoundError:
        raise ConfigError(f"{path}: customers file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{path}: cannot read customers file: {exc}") from None
