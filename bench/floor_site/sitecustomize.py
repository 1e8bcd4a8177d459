"""Parts of a personal answer replaced by their cached result, for ``bench/personal_floor.py``.

Python runs this file at start-up in any process whose ``PYTHONPATH`` names this folder; the
benchmark starts the production server (``serve.py``, gunicorn) that way, so the patches are
made in the master before it forks its workers. ``RECO_BENCH_CACHED`` says which parts:

- ``ranking``: ``Ranker.rank`` and the fold-in (``Ranker.vector``) computed once per shopper's
  items, k, filters and exclusions, then returned from a dict: an answer with no model work.
  The recency weights, which change by the second, are not in the key.
- ``shopper``: the store read (``server.stores.shopper_state``) made once per shopper.

Nothing here is imported by the package or the tests; without the variable it does nothing.
"""

from __future__ import annotations

import os
from typing import Any

_CACHED = {part for part in os.environ.get("RECO_BENCH_CACHED", "").split(",") if part}

if "ranking" in _CACHED:
    from recommender.serving import ranking

    _rank, _vector = ranking.Ranker.rank, ranking.Ranker.vector
    _ranked: dict[Any, Any] = {}
    _vectors: dict[Any, Any] = {}

    def _cached_vector(self: Any, history: Any, weights: Any) -> Any:
        key = history.tobytes()
        if key not in _vectors:
            _vectors[key] = _vector(self, history, weights)
        return _vectors[key]

    def _cached_rank(
        self: Any, history: Any, weights: Any, vector: Any, k: int, filters: Any, exclude: Any
    ) -> Any:
        key = (history.tobytes(), k, filters, exclude.tobytes())
        if key not in _ranked:
            _ranked[key] = _rank(self, history, weights, vector, k, filters, exclude)
        return _ranked[key]  # its callers read it only (``PersonalAnswers``): no copy to pay for

    ranking.Ranker.vector = _cached_vector  # type: ignore[method-assign]
    ranking.Ranker.rank = _cached_rank  # type: ignore[method-assign]

if "shopper" in _CACHED:
    from recommender.server import stores, users

    _shopper_state = stores.shopper_state
    _shoppers: dict[Any, Any] = {}

    def _cached_shopper_state(user_id: str, wishlist: bool = False) -> Any:
        if (user_id, wishlist) not in _shoppers:
            _shoppers[user_id, wishlist] = _shopper_state(user_id, wishlist)
        return _shoppers[user_id, wishlist]

    users.shopper_state = _cached_shopper_state  # the views call it by this module's name
