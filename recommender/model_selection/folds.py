"""Training sides and what to measure on them, for each validation protocol."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from ..config import EvaluationSettings
from ..data.matrix import Interactions, binarize, build_interactions, decayed
from ..data.split import (
    HoldoutSplit,
    new_purchase_pairs,
    next_purchase_split,
    period_cutoffs,
    random_holdout_split,
)
from ..errors import DataError
from ..evaluation import HeldOut
from ..protocols import NEXT_PURCHASE, RANDOM_HOLDOUT, ROLLING, Protocol
from .choice import VALIDATION_SHARE, sample_limit

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)


@dataclass
class Fold:
    """A training side and what to measure on it.

    ``kind`` "time": ``held_out.rows`` are customers of the training side, scored from their
    own (possibly decayed) rows; "holdout": held-out customers or baskets not in the training
    side, scored from ``held_out.seen`` (the query items).
    """

    interactions: Interactions
    held_out: HeldOut
    description: dict[str, Any]
    kind: str = "time"
    fit_on: str = "customers"
    test: pd.DataFrame | None = None
    row_ids: list[str] = field(default_factory=list)
    # The same training side measured on everything bought next, rebuys included (time folds).
    everything: Fold | None = None
    _weighted: dict[float, sp.csr_matrix] = field(default_factory=dict)

    @property
    def basket(self) -> bool:
        return self.fit_on == "orders"

    @property
    def timed(self) -> bool:
        return self.kind == "time"

    @property
    def fit_matrix(self) -> sp.csr_matrix:
        return self.weighted(0.0)

    def weighted(self, decay_days: float) -> sp.csr_matrix:
        """The matrix item models fit on, purchases weighted by recency (0: binary)."""
        if decay_days not in self._weighted:
            if self.basket:
                self._weighted[decay_days] = binarize(self.interactions.order_items)
            elif decay_days and self.timed:
                self._weighted[decay_days] = decayed(self.interactions.purchase_age, decay_days)
            else:
                self._weighted[decay_days] = _binary(self.interactions.user_items)
        return self._weighted[decay_days]

    def forget_weights(self, keep: set[float]) -> None:
        """Drop the weighted matrices of decays not in ``keep`` (rebuilt if asked again)."""
        for decay in [decay for decay in self._weighted if decay not in keep]:
            del self._weighted[decay]

    def query(self) -> sp.csr_matrix:
        """What each evaluated row is scored from: its whole history, unweighted."""
        if self.timed:
            return self.weighted(0.0)[self.held_out.rows]
        return self.held_out.seen


@dataclass
class TestFolds:
    """The test fold and the second test fold (None when the log has none), built by
    ``build`` when they are measured, after the search.

    The search holds every validation fold; holding these two through it as well added ~75
    MiB (a fifth of what the search holds on the bench 1M log) to the evaluation's peak. The
    test fold is built once before the search too, and let go (``plan_folds``): a log too
    small for one then fails where and as it always did, before any search.
    """

    n_items: int
    basket: bool
    build: Callable[[], tuple[Fold, Fold | None]]


def _binary(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """``binarize(matrix)``, or ``matrix`` itself when it is binary already (the folds'
    ``user_items`` are built so): every fold is held through the search, and a copy of its
    largest matrix was a sixth of it. Whoever reads a fold's matrices does not write them
    (every item model of a fold already shares this one)."""
    if matrix.data.dtype == np.float32 and bool(np.all(matrix.data == 1.0)):
        return matrix
    return binarize(matrix)


def make_folds(
    purchases: pd.DataFrame, protocol: Protocol, settings: EvaluationSettings
) -> tuple[Fold, dict[str, list[Fold]], Fold | None]:
    """The test fold, the validation folds of each protocol, and a second test fold (the
    next-purchase one, when the rolling protocol is primary), all at once."""
    tests, validation = plan_folds(purchases, protocol, settings)
    test_fold, secondary = tests.build()
    return test_fold, validation, secondary


def plan_folds(
    purchases: pd.DataFrame, protocol: Protocol, settings: EvaluationSettings
) -> tuple[TestFolds, dict[str, list[Fold]]]:
    """The validation folds of each protocol, and how to build the test folds (``TestFolds``;
    the rolling protocol's are built when asked, the others' are already split)."""
    if protocol.name == RANDOM_HOLDOUT:
        outer = random_holdout_split(purchases, seed=settings.random_state)
        inner = random_holdout_split(outer.train, seed=settings.random_state + 1)
        test_fold = holdout_fold(outer, settings)
        return _built(test_fold), {RANDOM_HOLDOUT: [holdout_fold(inner, settings)]}
    if protocol.name == NEXT_PURCHASE:
        outer_np = next_purchase_split(purchases)
        inner_np = next_purchase_split(
            outer_np.train, share=VALIDATION_SHARE, seed=settings.random_state
        )
        test_fold = time_fold(outer_np.train, outer_np.test, settings, {"split": NEXT_PURCHASE})
        inner_fold = time_fold(
            inner_np.train, inner_np.test, settings, {"split": NEXT_PURCHASE}, keep_test=False
        )
        return _built(test_fold), {NEXT_PURCHASE: [inner_fold]}
    windows = period_cutoffs(
        purchases["timestamp"].max(), settings.test_days, settings.validation_periods + 1
    )
    cut = windows[0][0]
    # Built to fail now if it cannot be (as before the search), and let go until measured.
    test_fold = rolling_fold(purchases, *windows[0], settings)
    n_items, basket = len(test_fold.interactions.item_ids), test_fold.basket
    del test_fold
    validation = _rolling_validation(purchases, windows, settings)

    def build() -> tuple[Fold, Fold | None]:
        return rolling_fold(purchases, *windows[0], settings), _second_test_fold(
            purchases, cut, settings
        )

    return TestFolds(n_items, basket, build), validation


def _built(test_fold: Fold) -> TestFolds:
    return TestFolds(
        len(test_fold.interactions.item_ids), test_fold.basket, lambda: (test_fold, None)
    )


def _rolling_validation(
    purchases: pd.DataFrame,
    windows: list[tuple[pd.Timestamp, pd.Timestamp]],
    settings: EvaluationSettings,
) -> dict[str, list[Fold]]:
    """The rolling protocol's validation folds (the periods before the test one) and the
    next-purchase fold before the test period."""
    cut = windows[0][0]
    rolling = []
    for start, stop in windows[1:]:
        try:
            rolling.append(rolling_fold(purchases, start, stop, settings, keep_test=False))
        except DataError as exc:
            logger.warning("validation period from %s skipped: %s", f"{start:%Y-%m-%d}", exc)
    before = purchases[purchases["timestamp"] < cut]
    validation = {ROLLING: rolling} if rolling else {}
    try:
        inner_np = next_purchase_split(before, share=VALIDATION_SHARE, seed=settings.random_state)
        validation[NEXT_PURCHASE] = [
            time_fold(
                inner_np.train, inner_np.test, settings, {"split": NEXT_PURCHASE}, keep_test=False
            )
        ]
    except DataError as exc:
        logger.warning("next-purchase validation skipped: %s", exc)
    if not validation:
        raise DataError("evaluation: no validation period before the test period")
    return validation


def _second_test_fold(
    purchases: pd.DataFrame, cut: pd.Timestamp, settings: EvaluationSettings
) -> Fold | None:
    """The next-purchase test fold beside the rolling one: each customer's last order from
    the cut-off (None, with a warning, when there is none)."""
    try:
        outer_np = next_purchase_split(purchases, after=cut)
        return time_fold(
            outer_np.train,
            outer_np.test,
            settings,
            {
                "split": NEXT_PURCHASE,
                "held_out": f"each customer's last order, from {cut:%Y-%m-%d}",
            },
            keep_test=False,
        )
    except DataError as exc:
        logger.warning("next-purchase test skipped: %s", exc)
        return None


def evaluation_fold(purchases: pd.DataFrame, settings: EvaluationSettings) -> Fold:
    """The rolling protocol's test fold: train before the cut-off, measure what customers
    bought after it. For measuring models fitted elsewhere (the Spark engine's) on the same split."""
    return rolling_fold(
        purchases, *period_cutoffs(purchases["timestamp"].max(), settings.test_days, 1)[0], settings
    )


def rolling_fold(
    purchases: pd.DataFrame,
    start: pd.Timestamp,
    stop: pd.Timestamp,
    settings: EvaluationSettings,
    keep_test: bool = True,
) -> Fold:
    """Train on everything before ``start``, measure on the purchases from ``start`` to ``stop``
    (``keep_test``: see ``time_fold``)."""
    times = purchases["timestamp"]
    if not (times < start).any():
        raise DataError(f"evaluation: no purchases before {start:%Y-%m-%d %H:%M}")
    return time_fold(
        purchases[times < start],
        purchases[(times >= start) & (times < stop)],
        settings,
        {"split": ROLLING, "train_until": f"{start:%Y-%m-%d %H:%M}"},
        keep_test,
    )


def time_fold(
    train: pd.DataFrame,
    test: pd.DataFrame,
    settings: EvaluationSettings,
    description: dict[str, Any],
    keep_test: bool = True,
) -> Fold:
    """Customers of the training side, measured on the items new to them in ``test``; the
    fold's ``everything`` measures every item they bought there, rebuys included.

    ``keep_test``: the fold keeps the ``test`` lines, which only the test fold's item-to-item
    measure reads (``measure``); the validation folds and the second test fold drop them, as
    every fold is held through the whole search (the lines are a fold's largest part)."""
    # A time fold is fitted and scored on its customers' rows: its orders' matrix is never read.
    interactions = build_interactions(train, "binary", orders=False)
    cutoff = train["timestamp"].max() if "timestamp" in train and len(train) else None
    users, items = new_purchase_pairs(interactions, test)
    targets = _targets(interactions, users, items, settings)
    if targets is None:
        raise DataError(
            "evaluation: no customer bought anything new in the held-out purchases"
            + (f" after {cutoff:%Y-%m-%d}" if cutoff is not None else "")
        )
    held_out, counts = targets
    description = {
        "train_until": f"{cutoff:%Y-%m-%d %H:%M}" if cutoff is not None else None,
        **description,
        "test_from": f"{test['timestamp'].min():%Y-%m-%d %H:%M}" if len(test) else None,
        "test_until": f"{test['timestamp'].max():%Y-%m-%d %H:%M}" if len(test) else None,
        **counts,
        "train_customers": len(interactions.user_ids),
        "train_items": len(interactions.item_ids),
    }
    fold = Fold(
        interactions,
        held_out,
        description,
        "time",
        "customers",
        test if keep_test else None,
        list(interactions.user_ids.ids(held_out.rows)),
    )
    everything = _targets(interactions, *new_purchase_pairs(interactions, test, True), settings)
    if everything is not None:
        held, counts = everything
        # Nothing is excluded: the question is what they buy next, whether bought before or not.
        held = replace(held, seen=sp.csr_matrix(held.seen.shape, dtype=np.float32))
        rebought = held.targets.multiply(interactions.user_items[held.rows]).nnz
        fold.everything = Fold(
            interactions,
            held,
            {
                **description,
                **counts,
                "targets": "every item bought in the test period, rebuys included",
                "rebought_share": round(rebought / max(1, counts["target_pairs"]), 4),
            },
            "time",
            "customers",
            fold.test,
            list(interactions.user_ids.ids(held.rows)),
            _weighted=fold._weighted,
        )
    return fold


def _targets(
    interactions: Interactions,
    users: NDArray[np.int64],
    items: NDArray[np.int64],
    settings: EvaluationSettings,
) -> tuple[HeldOut, dict[str, Any]] | None:
    """The customers with a target pair (at most ``sample_limit``, drawn at random) and their
    targets; None when there are none."""
    evaluable, per_customer = np.unique(users, return_counts=True)
    rows = evaluable.astype(np.int64)
    limit = sample_limit(settings, len(interactions.item_ids))
    sampled = len(rows) > limit
    if sampled:
        rows = np.sort(
            np.random.default_rng(settings.random_state).choice(rows, limit, replace=False)
        )
    if not len(rows):
        return None
    hits = (items >= 0) & np.isin(users, rows)
    targets = sp.csr_matrix(
        (
            np.ones(int(hits.sum()), dtype=np.float32),
            (np.searchsorted(rows, users[hits]), items[hits]),
        ),
        shape=(len(rows), len(interactions.item_ids)),
    )
    n_targets = per_customer[np.searchsorted(evaluable, rows)].astype(np.int64)
    popularity = np.diff(interactions.user_items.tocsc().indptr).astype(np.float64)
    held_out = HeldOut(
        rows, binarize(interactions.user_items[rows]), targets, n_targets, popularity
    )
    counts: dict[str, Any] = {
        "customers_evaluated": int(len(rows)),
        "target_pairs": int(n_targets.sum()),
        "unreachable_target_pairs": int(n_targets.sum() - targets.nnz),
    }
    if sampled:
        counts["sampled"] = f"{len(rows)} of {len(evaluable)} evaluable customers, at random"
    return held_out, counts


def holdout_fold(split: HoldoutSplit, settings: EvaluationSettings) -> Fold:
    """Held-out customers or baskets, each with one hidden item to find from the rest."""
    interactions = build_interactions(split.train, "binary")
    lookup = interactions.item_ids
    queries, hidden = split.queries, split.hidden
    limit = sample_limit(settings, len(lookup))
    sampled = len(queries) > limit
    if sampled:
        keep = np.sort(
            np.random.default_rng(settings.random_state).choice(len(queries), limit, replace=False)
        )
        queries, hidden = [queries[i] for i in keep], [hidden[i] for i in keep]
    rows, cols, targets_cols, target_rows = [], [], [], []
    for number, (query, item) in enumerate(zip(queries, hidden)):
        indices = lookup.indices(query)
        indices = indices[indices >= 0]
        rows.extend([number] * len(indices))
        cols.extend(indices.tolist())
        target = lookup.index(item, missing="none")
        if target is not None:
            target_rows.append(number)
            targets_cols.append(target)
    shape = (len(queries), len(lookup))
    seen = binarize(
        sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=shape)
    )
    targets = sp.csr_matrix(
        (np.ones(len(target_rows), dtype=np.float32), (target_rows, targets_cols)), shape=shape
    )
    fit_on = split.unit if split.unit == "customers" else "orders"
    basis = interactions.user_items if fit_on == "customers" else interactions.order_items
    popularity = np.diff(basis.tocsc().indptr).astype(np.float64)
    held_out = HeldOut(
        np.arange(len(queries), dtype=np.int64),
        seen,
        targets,
        np.ones(len(queries), dtype=np.int64),
        popularity,
    )
    description = {
        "split": RANDOM_HOLDOUT,
        "held_out": f"{len(queries)} {split.unit}",
        f"train_{split.unit}": basis.shape[0],
        "task": "find the one hidden item from the rest",
    }
    if sampled:
        description["sampled"] = (
            f"{len(queries)} of {len(split.queries)} held-out {split.unit}, at random"
        )
    return Fold(
        interactions,
        held_out,
        description,
        "holdout",
        fit_on,
        row_ids=[f"holdout:{number}" for number in range(len(queries))],
    )
