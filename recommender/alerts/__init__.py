"""E-mail alerts: "back in stock", "price dropped" and "new for you", to the customers who asked.

``rules`` finds them (what ``GET /v1/users/<id>/alerts`` shows), ``delivery`` sends digests
and writes the alerts file, ``run`` is one alerts run as the command line starts it.
"""

from __future__ import annotations

from .delivery import FILE_FIELDS, MAIL_POLICY, compose, deliver
from .rules import REASONS, Alert, find_alerts
from .run import run

__all__ = [
    "FILE_FIELDS",
    "MAIL_POLICY",
    "REASONS",
    "Alert",
    "compose",
    "deliver",
    "find_alerts",
    "run",
]
