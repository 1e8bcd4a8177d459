"""The optional customers file (``id,name``): who to greet by name on the page they made.

Read with the standard ``csv`` module (the server never imports pandas). Held in memory
as a dict: a shop's customer list is small next to its purchase log.
"""
from __future__ import annotations

import csv
from pathlib import Path

from .errors import ConfigError


def read_customers(path: str | Path) -> dict[str, str]:
    """``{customer id: name}``; raises ``ConfigError`` naming the file when it is unusable."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            fields = reader.fieldnames or []
            id_field = next((f for f in ("id", "user_id", "customer_id") if f in fields), None)
            if id_field is None or "name" not in fields:
                raise ConfigError(f"{path}: customers file needs 'id' and 'name' columns, has {fields}")
            return {row[id_field].strip(): (row["name"] or "").strip() for row in reader if row.get(id_field)}
    except FileNotFoundError:
        raise ConfigError(f"{path}: customers file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{path}: cannot read customers file: {exc}") from None
