"""Personal answers: a customer's picks, recommendations from a list of items (a cart, a wish
list), the page you made, and the non-personal answer for an opted-out or forgotten customer.
The personal part of ``service.RecommendationService``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from ..activity import Event
from ..algorithms.als import ALS
from ..bundle import PersonalLists
from ..data.idmap import IdMap
from . import responses
from .catalog import Catalog, Filters
from .ranking import STRATEGIES, Ranked, Ranker, activity_weights
from .repeat import EXCLUDE_MODES, RepeatModel, with_facts


class PersonalAnswers:
    """Answers about one shopper; reads what ``RecommendationService`` prepared."""

    version: str
    catalog: Catalog
    items: IdMap
    users: IdMap
    user_items: sp.csr_matrix
    ranker: Ranker
    als: ALS | None
    lists: PersonalLists | None
    activity_half_life_hours: float
    repeat: RepeatModel | None
    repeat_ranked: Callable[..., tuple[Ranked, dict[int, dict[str, Any]]]]

    def exclude_mode(self, exclude_purchased: bool | str | None) -> str:
        """``exclude_purchased`` as one of ``EXCLUDE_MODES``: None is the model's default (the
        mode its training run chose, "true" without a repeat model); the repeat-aware modes
        need a repeat model, and are "true" / plain "false" without one."""
        if exclude_purchased is None:
            return self.repeat.default_mode if self.repeat is not None else "true"
        if isinstance(exclude_purchased, bool):
            return "true" if exclude_purchased else "false"
        if exclude_purchased not in EXCLUDE_MODES:
            raise ValueError(f"exclude_purchased: expected one of {', '.join(EXCLUDE_MODES)}")
        return exclude_purchased

    def evidence(
        self, user_idx: int | None, recent: Sequence[Event]
    ) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float32] | None]:
        """What a shopper's picks are scored from: a known customer's purchases (unweighted)
        and ALS factors; else their recent activity, folded in."""
        if user_idx is not None:
            history, weights = self._purchase_row(user_idx)
            vector = self.als.user_factors_[user_idx] if self.als is not None else None
        else:
            history, weights = activity_weights(recent, self.items, self.activity_half_life_hours)
            vector = self.ranker.vector(history, weights)
        return history, weights, vector

    def for_user(
        self,
        user_id: str,
        k: int,
        filters: Filters = Filters(),
        exclude_purchased: bool | str | None = None,
        recent: Sequence[Event] = (),
    ) -> dict[str, Any]:
        """Personal picks: ALS for a customer in the model, blended with the neighbours of their
        purchases; a shopper the model has not seen is folded in from ``recent`` activity; one
        with neither gets trending items (``strategy: popular``). ``exclude_purchased`` is a
        mode (``exclude_mode``): with "false" or "repeat" and a repeat model, own items are
        ranked by the customer's habit too (``RepeatAnswers.repeat_ranked``)."""
        mode = self.exclude_mode(exclude_purchased)
        user_idx = self.users.index(user_id, missing="none")
        owned = self._owned(user_idx, recent)
        if mode != "true" and self.repeat is not None and len(owned):
            kept, facts = self.repeat_ranked(user_idx, recent, k, filters, mode)
            response = self._answer(kept)
            with_facts(response, kept, facts)
            response["exclude_purchased"] = mode
            response["known_customer"] = user_idx is not None
            return response
        history, weights, vector = self.evidence(user_idx, recent)
        exclude_purchased = mode != "false"
        ranked: Ranked | None = (
            self._from_list(user_idx, history, weights, k, filters, owned)
            if user_idx is not None and exclude_purchased
            else None
        )
        if ranked is None:
            exclude = owned if exclude_purchased else np.empty(0, dtype=np.int64)
            ranked = self.ranker.rank(history, weights, vector, k, filters, exclude)
        response = self._answer(ranked)
        if not len(history):
            response["fallback_reason"] = "new_customer"
        response["exclude_purchased"] = mode
        response["known_customer"] = user_idx is not None
        return response

    def for_items(
        self,
        item_ids: Sequence[str],
        k: int,
        filters: Filters = Filters(),
        weights: Sequence[float] | None = None,
        exclude_idx: NDArray[np.int64] | None = None,
    ) -> dict[str, Any]:
        """Recommendations from a list of items (a cart, a wish list): ALS fold-in blended with
        the items' neighbours; each result names the listed item that led to it."""
        indices = self.items.indices(item_ids)
        known = indices >= 0
        history = indices[known]
        history_weights = (
            np.ones(len(history)) if weights is None else np.asarray(weights, dtype=float)[known]
        )
        # Only masked out of the catalog (``Catalog.allowed``): repeats and order do not
        # matter, so the two are joined, not sorted into a union.
        exclude = history if exclude_idx is None else np.concatenate([history, exclude_idx])
        ranked = self.ranker.rank(
            history,
            history_weights,
            self.ranker.vector(history, history_weights),
            k,
            filters,
            exclude,
        )
        response = self._answer(ranked)
        response["unknown_items"] = [item for item, ok in zip(item_ids, known.tolist()) if not ok]
        if not len(history):
            response["fallback_reason"] = "no_known_items"
        return response

    def for_wishlist(
        self,
        user_id: str,
        wished: Sequence[str],
        recent: Sequence[Event],
        k: int,
        filters: Filters = Filters(),
    ) -> dict[str, Any]:
        """What customers who wanted these items also bought, without the wish list itself and
        without what the shopper already bought; ``because`` names the wished item."""
        owned = self._owned(self.users.index(user_id, missing="none"), recent)
        response = self.for_items(wished, k, filters, exclude_idx=owned)
        response.pop("unknown_items", None)
        if not wished:
            response["fallback_reason"] = "empty_wishlist"
        return response

    def page_you_made(
        self, user_id: str, recent: Sequence[Event], k: int, filters: Filters = Filters()
    ) -> dict[str, Any]:
        """Recommendations from a shopper's recent activity, grouped by the item that led to them.

        Events weigh by type (``ranking.TYPE_WEIGHTS``) and recency (half-life
        ``activity_half_life_hours``). Items already bought (in the model or since) and the
        items of the activity itself are not recommended.
        """
        user_idx = self.users.index(user_id, missing="none")
        history, weights = activity_weights(recent, self.items, self.activity_half_life_hours)
        if not len(history):
            response = self.for_user(user_id, k, filters, True, recent)
            response["fallback_reason"] = "no_recent_activity"
            response["groups"] = []
            return response
        exclude = np.concatenate([self._owned(user_idx, recent), history])  # a mask: see for_items
        ranked = self.ranker.rank(
            history, weights, self.ranker.vector(history, weights), k, filters, exclude
        )
        response = self._answer(ranked)
        response["groups"] = responses.page_groups(response, ranked, recent, self.catalog)
        response["known_customer"] = user_idx is not None
        return response

    def not_personal(self, user_id: str, k: int, filters: Filters, reason: str) -> dict[str, Any]:
        """Trending items only, for a customer who opted out or was forgotten; flagged as such."""
        response = self.popular_answer(k, filters)
        response["fallback_reason"] = reason
        return response

    def popular_answer(self, k: int, filters: Filters) -> dict[str, Any]:
        """Trending items only: what an experiment's ``popular`` holdout shows."""
        return self._answer(self.ranker.popular(k, filters))

    def _from_list(
        self,
        user_idx: int,
        history: NDArray[np.int64],
        weights: NDArray[np.float64],
        k: int,
        filters: Filters,
        owned: NDArray[np.int64],
    ) -> Ranked | None:
        """A known customer's answer read off their precomputed list: the list's items that
        pass the filters and are not bought since, best first. None (score everything) when
        there is no list, or the filters leave fewer than k of a list that may not hold every
        candidate. Anything beyond the list scores no higher than its last item, so the answer
        is the exhaustive ranking's."""
        if self.lists is None or not self.lists.strategy[user_idx]:
            return None
        list_row = self.lists.row(user_idx)
        row = np.asarray(self.lists.items[list_row])
        listed = row[row >= 0].astype(np.int64)
        allowed = self.catalog.allowed(filters, exclude_idx=owned)
        places = self.catalog.diversify_places(listed, np.flatnonzero(allowed[listed]), k, filters)
        chosen = listed[places].tolist()
        if len(chosen) < k and len(listed) == self.lists.depth:
            return None
        strategy = STRATEGIES[int(self.lists.strategy[user_idx])]
        ranked = Ranked(
            items=chosen,
            scores=np.asarray(self.lists.scores[list_row])[places].tolist(),
            sources=[strategy] * len(chosen),
            strategy=strategy,
        )
        self.ranker.fill_popular(ranked, k, allowed, filters)
        ranked.reasons = self.ranker.reasons(history, weights, ranked.items)
        return ranked

    def _answer(self, ranked: Ranked) -> dict[str, Any]:
        return responses.ranking(ranked, self.catalog, self.version)

    def _purchase_row(self, user_idx: int) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """A known customer's items and how much each counts (a slice of the memory-mapped arrays)."""
        start, stop = self.user_items.indptr[user_idx], self.user_items.indptr[user_idx + 1]
        return (
            np.asarray(self.user_items.indices[start:stop], dtype=np.int64),
            np.asarray(self.user_items.data[start:stop], dtype=np.float64),
        )

    def _owned(self, user_idx: int | None, recent: Sequence[Event]) -> NDArray[np.int64]:
        """Items a shopper bought: in the model's data, and through the API since."""
        owned = self._purchase_row(user_idx)[0] if user_idx is not None else np.empty(0, np.int64)
        bought_ids = [e.item_id for e in recent if e.type == "purchase"]
        if not bought_ids:  # a CSR row is sorted and unique already: the union is the row
            return owned
        bought = self.items.indices(bought_ids)
        return np.union1d(owned, bought[bought >= 0])
