"""recommender: "customers who bought this also bought" and more, from a shop's purchase log.

Data flows one way: ``data`` (read, clean, build matrices) -> ``algorithms`` (fit) ->
``artifacts`` (versioned files) -> ``service`` (answers in external ids) -> ``server`` (HTTP).
"""

from __future__ import annotations

__version__ = "0.1.0"
