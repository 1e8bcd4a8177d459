"""Buy it again: a customer's own items most likely bought next, and personal picks that keep
the purchases that come back (``exclude_purchased`` ``false`` or ``repeat``). The repeat part
of ``service.RecommendationService``; the scores are ``algorithms.repeat``'s, mixed with the
personal blend as the training run measured (``model_selection.repeats``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from ..activity import Event
from ..algorithms.base import top_n
from ..algorithms.repeat import RepeatBuyer, mixed_scores
from ..bundle import ModelBundle
from ..data.idmap import IdMap
from . import responses
from .catalog import Catalog, Filters
from .ranking import Ranked, Ranker

# exclude_purchased: every purchase excluded, none, or those rarely rebought (the repeat-aware mode).
EXCLUDE_MODES = ("true", "false", "repeat")


@dataclass(frozen=True)
class OwnItems:
    """A shopper's own items and their facts, purchases recorded since training included:
    ``items`` (ascending), ``times`` (orders), ``frequency`` (decayed), ages in days of the
    first and latest purchase before the model's ``as_of`` (negative: bought since)."""

    items: NDArray[np.int64]
    times: NDArray[np.float64]
    frequency: NDArray[np.float64]
    first_age: NDArray[np.float64]
    last_age: NDArray[np.float64]


class RepeatModel:
    """The loaded repeat model of one version: its cell arrays (memory-mapped) and settings."""

    def __init__(self, bundle: ModelBundle, user_items: sp.csr_matrix) -> None:
        arrays, entry = bundle.repeat, bundle.components["repeat"]
        assert arrays is not None
        self.frequency, self.times, self.first_age, self.last_age = (
            np.asarray(a)
            for a in (arrays.frequency, arrays.times, arrays.first_age, arrays.last_age)
        )
        if len(self.times) != user_items.nnz:
            raise ValueError("repeat model does not match the purchase matrix")
        self.model = RepeatBuyer(
            **{k: entry[k] for k in ("decay_days", "rate_weight", "due_weight", "horizon_days")}
        )
        self.model.set_fitted(
            np.asarray(arrays.cycle_days), np.asarray(arrays.rate), float(arrays.shop_rate[0])
        )
        self.mix = float(entry["mix"])
        self.default_mode = str(entry.get("exclude_purchased", "true"))
        self.as_of = float(entry["as_of"])
        self.user_items = user_items

    def own_items(self, user_idx: int | None, items: IdMap, recent: Sequence[Event]) -> OwnItems:
        """The shopper's items in the model, with the purchases recorded since added: each
        recorded purchase after ``as_of`` is one more order, of age ``(as_of - t) / 86400``."""
        if user_idx is not None:
            start, stop = self.user_items.indptr[user_idx], self.user_items.indptr[user_idx + 1]
            known = np.asarray(self.user_items.indices[start:stop], dtype=np.int64)
            facts = [
                np.asarray(a[start:stop], dtype=np.float64)
                for a in (self.times, self.frequency, self.first_age, self.last_age)
            ]
        else:
            known = np.empty(0, dtype=np.int64)
            facts = [np.empty(0) for _ in range(4)]
        since = [e for e in recent if e.type == "purchase" and e.timestamp > self.as_of]
        if not since:
            return OwnItems(known, *facts)
        bought = items.indices([e.item_id for e in since])
        ages = np.array([(self.as_of - e.timestamp) / 86400.0 for e in since])[bought >= 0]
        bought = bought[bought >= 0].astype(np.int64)
        all_items = np.union1d(known, bought)
        times, frequency, first, last = (np.zeros(len(all_items)) for _ in range(4))
        first[:], last[:] = -np.inf, np.inf
        place = np.searchsorted(all_items, known)
        times[place], frequency[place], first[place], last[place] = facts
        at = np.searchsorted(all_items, bought)
        decay = self.model.decay_days
        np.add.at(times, at, 1.0)
        np.add.at(frequency, at, np.exp(-ages / decay) if decay else 1.0)
        np.maximum.at(first, at, ages)
        np.minimum.at(last, at, ages)
        return OwnItems(all_items, times, frequency, first, last)

    def scores(self, own: OwnItems) -> NDArray[np.float64]:
        return self.model.cell_scores(
            own.items, own.times, own.frequency, own.first_age, own.last_age
        ).astype(np.float64)

    def facts(self, own: OwnItems, position: int) -> dict[str, Any]:
        """What the answer says of one own item: when last bought, how often, usually how often."""
        interval = self.model.intervals(
            own.items[position : position + 1],
            own.times[position : position + 1],
            own.first_age[position : position + 1],
            own.last_age[position : position + 1],
        )[0]
        out: dict[str, Any] = {
            "last_bought": time.strftime(
                "%Y-%m-%d", time.gmtime(self.as_of - float(own.last_age[position]) * 86400)
            ),
            "times_bought": int(own.times[position]),
        }
        # Orders a few hours apart say how much, not how often: an interval under a day is not one.
        if np.isfinite(interval) and interval >= 1.0:
            out["usually_every_days"] = round(float(interval), 1)
        out["text"] = repeat_reason(out["times_bought"], out.get("usually_every_days"))
        return out


def with_facts(response: dict[str, Any], ranked: Ranked, facts: dict[int, dict[str, Any]]) -> None:
    """Each own item's entry gains its facts and, as ``because``, the reason in words."""
    for entry, item in zip(response["recommendations"], ranked.items):
        if item in facts:
            entry.update({key: value for key, value in facts[item].items() if key != "text"})
            entry["because"] = {"text": facts[item]["text"]}


def repeat_reason(times_bought: int, every_days: float | None) -> str:
    """The reason a repeat item is shown, in words: "you buy this every 2 weeks"."""
    if every_days is None:
        return f"you bought this {times_bought} times" if times_bought > 1 else "you bought this"
    if every_days < 6.5:
        span = f"{round(every_days):g} days" if round(every_days) != 1 else "day"
    elif every_days < 60:
        weeks = round(every_days / 7)
        span = f"{weeks} weeks" if weeks != 1 else "week"
    else:
        months = round(every_days / 30)
        span = f"{months} months" if months != 1 else "month"
    if times_bought > 1:
        return f"you buy this every {span}"
    return f"its buyers buy it again every {span}"


class RepeatAnswers:
    """Answers from the repeat model; reads what ``RecommendationService`` prepared."""

    version: str
    catalog: Catalog
    items: IdMap
    users: IdMap
    ranker: Ranker
    repeat: RepeatModel | None
    # ``PersonalAnswers.evidence``: a shopper's items, their weights and ALS vector.
    evidence: Callable[
        [int | None, Sequence[Event]],
        tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float32] | None],
    ]

    def explore(
        self, user_idx: int | None, recent: Sequence[Event]
    ) -> tuple[NDArray[np.float64], str]:
        """The personal blend over the whole catalog (trending where nothing personal is
        known) and its strategy: the part of a repeat-aware list that finds new items."""
        history, weights, vector = self.evidence(user_idx, recent)
        scores, strategy = self.ranker.scores(history, weights, vector)
        if scores is None:
            return np.asarray(self.ranker.trend, dtype=np.float64), strategy
        return scores, strategy

    def _mixed(
        self, user_idx: int | None, recent: Sequence[Event]
    ) -> tuple[OwnItems, NDArray[np.float64], str]:
        """The shopper's own items, every item's score on the scale the training run measured
        (the repeat score of own items mixed with the blend), and the blend's strategy."""
        assert self.repeat is not None
        explore, strategy = self.explore(user_idx, recent)
        own = self.repeat.own_items(user_idx, self.items, recent)
        row = np.zeros(len(self.catalog))
        row[own.items] = self.repeat.scores(own)
        return own, mixed_scores(row, explore, self.repeat.mix), strategy

    def buy_again(
        self, user_id: str, k: int, filters: Filters, recent: Sequence[Event]
    ) -> dict[str, Any]:
        """The shopper's own items, most likely bought next first (the personal list's scores on
        their own items), each with when it was last bought and how often; the business
        filters apply."""
        user_idx = self.users.index(user_id, missing="none")
        ranked = Ranked(strategy="repeat")
        facts: dict[int, dict[str, Any]] = {}
        owns_any = False
        if self.repeat is not None:
            own, mixed, _ = self._mixed(user_idx, recent)
            allowed = self.catalog.allowed(filters)
            owns_any = len(own.items) > 0
            keep = allowed[own.items]
            candidates = own.items[keep]
            best, scores = top_n(mixed[candidates], len(candidates), positive_only=False)
            ranked.items = self.catalog.diversify(candidates[best].tolist(), k, filters)
            score_of = dict(zip(candidates[best].tolist(), scores.tolist()))
            ranked.scores = [score_of[i] for i in ranked.items]
            ranked.sources = ["repeat"] * len(ranked.items)
            place = {item: position for position, item in enumerate(own.items.tolist())}
            facts = {item: self.repeat.facts(own, place[item]) for item in ranked.items}
        response = responses.ranking(ranked, self.catalog, self.version)
        with_facts(response, ranked, facts)
        response["strategy"] = "repeat"
        response["known_customer"] = user_idx is not None
        if self.repeat is None:
            response["fallback_reason"] = "no_repeat_model"
        elif not ranked.items:
            response["fallback_reason"] = "filtered_out" if owns_any else "nothing_bought"
        return response

    def repeat_ranked(
        self,
        user_idx: int | None,
        recent: Sequence[Event],
        k: int,
        filters: Filters,
        mode: str,
    ) -> tuple[Ranked, dict[int, dict[str, Any]]]:
        """Personal picks with the purchases that come back kept (``mode`` "false": every
        purchase may appear; "repeat": not those bought once of an item rarely rebought), on
        the scale the training run measured; own items say why (``source: "repeat"``)."""
        assert self.repeat is not None
        own, mixed, strategy = self._mixed(user_idx, recent)
        excluded = (
            own.items[self.repeat.model.rarely_rebought(own.items, own.times)]
            if mode == "repeat"
            else np.empty(0, dtype=np.int64)
        )
        allowed = self.catalog.allowed(filters, exclude_idx=excluded)
        depth = k if filters.max_per_category is None else min(len(allowed), 10 * k + 50)
        best, scores = top_n(np.where(allowed, mixed, -np.inf), depth, positive_only=False)
        chosen = self.catalog.diversify(best.tolist(), k, filters)
        score_of = dict(zip(best.tolist(), scores.tolist()))
        place = {item: position for position, item in enumerate(own.items.tolist())}
        ranked = Ranked(
            items=chosen,
            scores=[score_of[i] for i in chosen],
            sources=["repeat" if i in place else strategy for i in chosen],
            strategy=strategy,
        )
        self.ranker.fill_popular(ranked, k, allowed, filters)
        facts = {
            item: self.repeat.facts(own, place[item]) for item in ranked.items if item in place
        }
        return ranked, facts
