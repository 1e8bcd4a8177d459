"""Buy it again: which of a customer's own items they are likely to buy next, and when.

In shops whose customers rebuy (groceries, pet food, office supplies, wholesalers) a large
part of what a customer buys next is what they bought before, and the customer's own habit
predicts it better than any item-to-item model: next-basket studies find personal frequency
("P-TopFreq", the items in most of the customer's orders) beating most learned models (Li et
al. 2023, "A Next Basket Recommendation Reality Check"), and time-decayed frequency stronger
still where tastes drift (TIFU-KNN, Hu et al. 2020). ``RepeatBuyer`` is that model, with two
refinements the validation folds may switch on: the item's repeat rate (how many of its buyers
ever came back: a lamp bought once is not a bag of coffee bought once) and whether the
customer's cycle for the item is due within the horizon (milk bought weekly, last bought six
days ago, before flour bought monthly and last bought last week).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from ..errors import NotFittedError


@dataclass
class RepeatCells:
    """What the repeat model learns from: per (customer, item) cell of the purchase matrix.

    ``cells``: customers x items CSR whose stored cells (in CSR order) the arrays follow;
    ``times``: distinct orders that held the item; ``first_age`` / ``last_age``: days between
    the first / latest of them and the log's last purchase. ``frequency`` holds
    ``sum(exp(-age / decay))`` over the orders, by decay (0: the plain count), for the decays
    already computed; ``purchase_cell`` / ``purchase_age`` (one entry per order of a cell), when
    given, compute any other decay.
    """

    cells: sp.csr_matrix
    times: NDArray[np.float32]
    first_age: NDArray[np.float32]
    last_age: NDArray[np.float32]
    purchase_cell: NDArray[np.integer] | None = None
    purchase_age: NDArray[np.float32] | None = None
    frequency_by_decay: dict[float, NDArray[np.float32]] = field(default_factory=dict)

    @classmethod
    def from_purchases(
        cls,
        cells: sp.csr_matrix,
        purchase_cell: NDArray[np.integer],
        purchase_age: NDArray[np.floating],
    ) -> RepeatCells:
        """From one entry per distinct (customer, item, order): its cell and its age in days
        (the entries of a cell in any order)."""
        nnz = cells.nnz
        times = np.bincount(purchase_cell, minlength=nnz).astype(np.float32)
        first = np.zeros(nnz, dtype=np.float32)
        last = np.full(nnz, np.inf, dtype=np.float32)
        ages = np.asarray(purchase_age, dtype=np.float32)
        np.maximum.at(first, purchase_cell, ages)
        np.minimum.at(last, purchase_cell, ages)
        last[~np.isfinite(last)] = 0.0
        return cls(cells, times, first, last, purchase_cell, ages, {0.0: times})

    def frequency(self, decay_days: float) -> NDArray[np.float32]:
        """``sum(exp(-age / decay_days))`` over each cell's orders (0: their number)."""
        if decay_days not in self.frequency_by_decay:
            if self.purchase_cell is None or self.purchase_age is None:
                raise ValueError(f"no purchase times to decay by {decay_days:g} days")
            self.frequency_by_decay[decay_days] = np.bincount(
                self.purchase_cell,
                weights=np.exp(-self.purchase_age / decay_days),
                minlength=self.cells.nnz,
            ).astype(np.float32)
        return self.frequency_by_decay[decay_days]

    def rows(self, rows: NDArray[np.integer]) -> RepeatCells:
        """The cells of some customers only (their orders, decays as computed so far)."""
        indptr = self.cells.indptr
        lengths = np.diff(indptr)[rows]
        # Each row's cells in turn: its start, then one step per cell.
        offsets = np.cumsum(lengths) - lengths
        take = np.repeat(indptr[:-1][rows] - offsets, lengths) + np.arange(int(lengths.sum()))
        cells = sp.csr_matrix(
            (
                np.ones(len(take), dtype=np.float32),
                self.cells.indices[take],
                np.concatenate([[0], np.cumsum(lengths)]),
            ),
            shape=(len(rows), self.cells.shape[1]),
        )
        return RepeatCells(
            cells,
            self.times[take],
            self.first_age[take],
            self.last_age[take],
            frequency_by_decay={d: f[take] for d, f in self.frequency_by_decay.items()},
        )


class RepeatBuyer:
    """Scores each customer's own items by how likely they are to buy them again soon.

    ``score = frequency * rate ** rate_weight * due ** due_weight`` where

    - ``frequency`` is the number of the customer's orders that held the item, each weighted
      ``exp(-age / decay_days)`` (``decay_days`` 0: unweighted, plain P-TopFreq);
    - ``rate`` is the item's repeat rate, ``(buyers who bought it in 2+ orders + 1) /
      (buyers + 2)``: how often its buyers come back for it;
    - ``due`` is how much of the customer's usual interval for the item (their own, else the
      item's cycle) will have passed by the end of ``horizon_days``: ``min(1, (days since the
      last purchase + horizon) / interval)``, 1 where no interval is known.

    Attributes (after ``fit``)
    --------------------------
    scores_ : customers x items CSR, the score of each cell (0 outside the customer's items).
    cycle_days_ : float32 (n_items,), the item's repurchase cycle: over its buyers who came
        back, the days between their first and latest purchase over the purchases after the
        first (NaN with fewer than ``min_rebuyers`` such buyers).
    rate_ : float32 (n_items,), the repeat rate above.
    shop_rate_ : the share of all (customer, item) pairs bought in 2+ orders: what "rarely
        rebought" is measured against (``rarely_rebought``).
    """

    def __init__(
        self,
        decay_days: float = 60.0,
        rate_weight: float = 0.0,
        due_weight: float = 0.0,
        horizon_days: float = 30.0,
        min_rebuyers: int = 2,
    ) -> None:
        self.decay_days = decay_days
        self.rate_weight = rate_weight
        self.due_weight = due_weight
        self.horizon_days = horizon_days
        self.min_rebuyers = min_rebuyers

    def get_params(self) -> dict[str, Any]:
        return {
            "decay_days": self.decay_days,
            "rate_weight": self.rate_weight,
            "due_weight": self.due_weight,
            "horizon_days": self.horizon_days,
            "min_rebuyers": self.min_rebuyers,
        }

    def fit(self, cells: RepeatCells) -> RepeatBuyer:
        """Learn each item's cycle and repeat rate, and score every cell."""
        self.fit_items(cells)
        scores = self.cell_scores(
            cells.cells.indices,
            cells.times,
            cells.frequency(self.decay_days),
            cells.first_age,
            cells.last_age,
        )
        self.scores_ = sp.csr_matrix(
            (scores, cells.cells.indices, cells.cells.indptr), shape=cells.cells.shape
        )
        return self

    def fit_items(self, cells: RepeatCells) -> RepeatBuyer:
        """Only the per-item part (cycle and rate): sums over each item's buyers."""
        items, n_items = cells.cells.indices, cells.cells.shape[1]
        again = cells.times >= 2
        buyers = np.bincount(items, minlength=n_items).astype(np.float64)
        rebuyers = np.bincount(items, weights=again, minlength=n_items).astype(np.float64)
        span = np.where(again, cells.first_age - cells.last_age, 0.0)
        spans = np.bincount(items, weights=span, minlength=n_items).astype(np.float64)
        rebuys = np.bincount(
            items, weights=np.where(again, cells.times - 1, 0), minlength=n_items
        ).astype(np.float64)
        self.set_items(buyers, rebuyers, spans, rebuys)
        return self

    def set_items(
        self,
        buyers: NDArray[np.float64],
        rebuyers: NDArray[np.float64],
        spans: NDArray[np.float64],
        rebuys: NDArray[np.float64],
    ) -> None:
        """The per-item state from its sums (each engine computes them its own way): buyers,
        buyers with 2+ orders, their days from first to latest purchase, and their purchases
        after the first."""
        self.rate_ = ((rebuyers + 1.0) / (buyers + 2.0)).astype(np.float32)
        self.shop_rate_ = float(np.sum(rebuyers) / max(1.0, float(np.sum(buyers))))
        known = (rebuyers >= self.min_rebuyers) & (spans > 0) & (rebuys > 0)
        self.cycle_days_ = np.full(len(buyers), np.nan, dtype=np.float32)
        self.cycle_days_[known] = spans[known] / rebuys[known]

    def set_fitted(
        self, cycle_days: NDArray[np.floating], rate: NDArray[np.floating], shop_rate: float
    ) -> RepeatBuyer:
        """The per-item state as ``to_arrays`` gave it (a loaded model version)."""
        self.cycle_days_ = np.asarray(cycle_days)
        self.rate_ = np.asarray(rate)
        self.shop_rate_ = float(shop_rate)
        return self

    def intervals(
        self,
        items: NDArray[np.integer],
        times: NDArray[np.floating],
        first_age: NDArray[np.floating],
        last_age: NDArray[np.floating],
    ) -> NDArray[np.float32]:
        """Each cell's usual interval in days: the customer's own (2+ orders on different
        days), else the item's cycle; NaN when neither is known."""
        self._check_fitted()
        own = np.where(
            (times >= 2) & (first_age > last_age),
            (first_age - last_age) / np.maximum(times - 1, 1),
            np.nan,
        )
        return np.where(np.isnan(own), self.cycle_days_[items], own).astype(np.float32)

    def cell_scores(
        self,
        items: NDArray[np.integer],
        times: NDArray[np.floating],
        frequency: NDArray[np.floating],
        first_age: NDArray[np.floating],
        last_age: NDArray[np.floating],
    ) -> NDArray[np.float32]:
        """The score of cells from their facts (the formula of the class docstring); the server
        rescores a cell with a purchase recorded since training through this same function."""
        self._check_fitted()
        scores = np.asarray(frequency, dtype=np.float64)
        if self.rate_weight:
            scores = scores * self.rate_[items].astype(np.float64) ** self.rate_weight
        if self.due_weight:
            interval = self.intervals(items, times, first_age, last_age)
            due = np.where(
                np.isnan(interval),
                1.0,
                np.clip((last_age + self.horizon_days) / np.where(interval > 0, interval, 1), 0, 1),
            )
            scores = scores * due**self.due_weight
        return scores.astype(np.float32)

    def rarely_rebought(
        self, items: NDArray[np.integer], times: NDArray[np.floating]
    ) -> NDArray[np.bool_]:
        """Which cells a repeat-aware list still excludes: bought in one order only, of an item
        its buyers rebuy less often than the shop's items do on average (a lamp, not coffee)."""
        self._check_fitted()
        return (np.asarray(times) < 2) & (self.rate_[items] < self.shop_rate_)

    def recommend(
        self, user_idx: int, n: int = 10
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """The customer's own items, best first (ties: lower index)."""
        self._check_fitted()
        start, stop = self.scores_.indptr[user_idx], self.scores_.indptr[user_idx + 1]
        items = self.scores_.indices[start:stop].astype(np.int64)
        scores = self.scores_.data[start:stop]
        order = np.lexsort((items, -scores))[:n]
        return items[order], scores[order]

    def to_arrays(self) -> dict[str, NDArray[Any]]:
        self._check_fitted()
        return {
            "cycle_days": self.cycle_days_,
            "rate": self.rate_,
            "shop_rate": np.array([self.shop_rate_]),
        }

    def _check_fitted(self) -> None:
        if not hasattr(self, "rate_"):
            raise NotFittedError("RepeatBuyer is not fitted yet; call fit first")


def mix_weights(mix: float) -> tuple[float, float]:
    """The weights of the repeat part and the explore part for ``mix``: ``mix`` and
    ``1 - mix``, except that ``mix`` 1 keeps the explore part a thousandth as strong, as the
    tie-breaker among own items of equal habit and the order of the rest."""
    return mix, (1.0 - mix) if mix < 1.0 else 1e-3


def mixed_scores(
    repeat: NDArray[np.floating] | sp.csr_matrix,
    explore: NDArray[np.floating] | None,
    mix: float,
) -> NDArray[np.float64]:
    """Own items and new ones on one scale, ``mix * repeat + (1 - mix) * explore`` (see
    ``mix_weights``), each part divided by its row's largest magnitude; ``repeat`` is 0
    outside the customer's items. Dense rows (n_rows, n_items) or one row (n_items,)."""
    repeat_weight, explore_weight = mix_weights(mix)
    dense = (
        repeat.toarray()  # type: ignore[union-attr]
        if sp.issparse(repeat)
        else np.asarray(repeat, dtype=np.float64)
    )
    out = repeat_weight * _row_scaled(np.atleast_2d(dense).astype(np.float64))
    if explore is not None:
        out += explore_weight * _row_scaled(np.atleast_2d(np.asarray(explore, dtype=np.float64)))
    return out if np.ndim(dense) == 2 else out[0]


def mixed_cells(
    repeat: sp.csr_matrix, explore_at_cells: NDArray[np.floating] | None, mix: float
) -> NDArray[np.float64]:
    """``mixed_scores`` at the stored cells of ``repeat`` only (a customer's own items), with
    the explore part given there already divided by its whole row's largest magnitude: the
    buy-again row, without scoring the catalog."""
    repeat_weight, explore_weight = mix_weights(mix)
    lengths = np.diff(repeat.indptr)
    row_max = np.zeros(len(lengths))
    nonempty = lengths > 0
    row_max[nonempty] = np.maximum.reduceat(np.abs(repeat.data), repeat.indptr[:-1][nonempty])
    scale = np.repeat(np.where(row_max > 0, row_max, 1.0), lengths)
    out = repeat_weight * repeat.data / scale
    if explore_at_cells is not None:
        out = out + explore_weight * np.asarray(explore_at_cells, dtype=np.float64)
    return out


def _row_scaled(scores: NDArray[np.float64]) -> NDArray[np.float64]:
    scale = np.abs(np.where(np.isfinite(scores), scores, 0.0)).max(axis=1, keepdims=True)
    return scores / np.where(scale > 0, scale, 1.0)
