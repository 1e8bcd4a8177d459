"""Choosing the recommender that ships, and measuring it against the usual baselines.

The validation protocol comes from the log (``protocols.choose_protocol``): rolling time
periods, each customer's next purchase, or random held-out customers / baskets. Every choice
is made on validation folds carved from data before the test fold; the test fold is used once,
to report the shipped model, its parts and the baselines side by side, each with a bootstrap
95% interval over the evaluated customers.

The search, on the validation folds of every protocol the log supports:

1. how strongly to down-weight old purchases (``DECAY_DAYS``, "none" included), with the lead
   item-to-item model: EASE at each ``EASE_L2`` (a multiple of its Gram matrix's mean
   diagonal, so that the grid means the same on any log) where the catalog allows, else
   cosine kNN;
2. every item-to-item model alone, without decay and with the chosen one (EASE also with its
   negative weights kept, ``EASE(signed=True)``; one Gram matrix per fold and decay);
3. ALS alone, trending alone (each half-life), popularity alone;
4. the two best item-to-item models blended with ALS and trending over a grid of weights.

Configurations rank by NDCG@k on the primary protocol (the one the log supports best, whose
test figure is reported); any other protocol measured guards, so that the choice does well on
all of them: a configuration clearly worse there than the best (``GUARD_ERRORS`` standard
errors) ranks last. The best one ships, unless it is a blend that does not beat its best
single part by more than the bootstrap standard error of the difference: then the part ships.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from joblib import Parallel, delayed
from numpy.typing import NDArray

from .algorithms import ALS, EASE, MODELS, ItemKNN, NeighbourModel
from .algorithms.blend import blend_scores
from .algorithms.ease import gram_matrix
from .config import AlsSettings, EvaluationSettings
from .data.matrix import Interactions, binarize, build_interactions, cap_history, decayed, trending_weights
from .data.split import HoldoutSplit, next_purchase_split, random_holdout_split
from .errors import DataError, ModelSkippedError
from .evaluation import HeldOut, bootstrap_interval, next_item_metrics, ranking_metrics, row_ndcg, top_k
from .protocols import NEXT_PURCHASE, RANDOM_HOLDOUT, ROLLING, Protocol, choose_protocol, period_cutoffs

logger = logging.getLogger(__name__)

DECAY_DAYS = (0.0, 14.0, 30.0, 60.0, 120.0)
# EASE's l2 as a multiple of the mean diagonal of its Gram matrix (``EASE(scale_l2=True)``):
# the same grid fits a small log and a large one, binary or decayed, and a fold with less data.
EASE_L2 = (2.0, 8.0, 32.0)
ALS_WEIGHTS = (0.0, 0.25, 0.5)
TREND_WEIGHTS = (0.0, 0.25, 0.5, 1.0)
HALF_LIVES = (7.0, 14.0, 30.0)
# "Popularity" is trending with a half-life far longer than any log: every purchase counts alike.
POPULARITY_HALF_LIFE = 36500.0
# Share of customers whose last order a next-purchase validation fold holds out (see
# ``data.split.next_purchase_split``).
VALIDATION_SHARE = 0.5
# Fewer rows (customers, baskets) than this on the validation folds cannot tell configurations
# apart (a standard error of about 0.03 NDCG): the untuned default ships instead of noise's pick.
MIN_VALIDATION_ROWS = 100
# A configuration this many standard errors below the best on a secondary protocol is not chosen.
GUARD_ERRORS = 2.0
CUTS = (1, 5, 10, 20)
SAVED_DEPTH = 20
# Dense score matrices of the evaluated rows are held in memory: bound their size.
MAX_SCORE_ENTRIES = 20_000_000


@dataclass(frozen=True)
class BlendChoice:
    """What the personal recommender is made of; stored in the manifest, read by the server.

    Scores are ``item_weight * item + als_weight * ALS + trend_weight * trending`` (each part
    scaled to 1, ``algorithms.blend``); ``item_weight`` None means ``1 - als_weight``. The
    item-to-item part is fitted on purchases weighted ``exp(-age / decay_days)`` (``decay_days``
    0: unweighted), so that item relations are those of recent baskets, and scores a customer's
    whole history unweighted: what they bought long ago still says what they like (on the
    retail log, decaying the history as well loses a tenth of NDCG on every protocol).
    """

    item_model: str
    item_params: dict[str, Any]
    als_weight: float
    trend_weight: float
    trend_half_life_days: float
    decay_days: float = 0.0
    item_weight: float | None = None

    def item_key(self, decay_days: float | None = None) -> tuple[Any, ...]:
        """The item-to-item model and the decay it is fitted or scored with (default: the choice's)."""
        decay = self.decay_days if decay_days is None else decay_days
        return (self.item_model, tuple(sorted(self.item_params.items())), decay)

    def _key(self) -> tuple[Any, ...]:
        """What the choice ranks by: parameters of a part weighted 0 do not matter."""
        item = self.item_key() if self.item_part else ()
        trend = self.trend_half_life_days if self.trend_weight else None
        return (item, self.item_part, self.als_weight, self.trend_weight, trend)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BlendChoice) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @property
    def item_part(self) -> float:
        return 1.0 - self.als_weight if self.item_weight is None else self.item_weight

    def build_item_model(self, num_threads: int = 0) -> NeighbourModel:
        params = dict(self.item_params)
        if self.item_model == "item_knn":
            params["num_threads"] = num_threads
        return MODELS[self.item_model](**params)  # type: ignore[return-value]

    def item_label(self) -> str:
        shown = {k: v for k, v in self.item_params.items()
                 if k not in ("neighbours", "max_items", "min_support", "min_pair_support", "scale_l2", "signed")}
        if self.item_params.get("scale_l2"):
            shown["l2"] = f"{shown['l2']:g} x mean diagonal"
        params = ", ".join([f"{k}={v}" for k, v in shown.items()] + (["signed"] if self.item_params.get("signed") else []))
        decay = f", decay {self.decay_days:g}d" if self.decay_days else ""
        return f"{self.item_model}({params}{decay})"

    def trend_label(self) -> str:
        if self.trend_half_life_days >= POPULARITY_HALF_LIFE:
            return "popularity"
        return f"trending({self.trend_half_life_days:g}d)"

    def parts(self) -> list[BlendChoice]:
        """The single components this choice blends (itself when it is one)."""
        singles = []
        if self.item_part > 0:
            singles.append(replace(self, als_weight=0.0, trend_weight=0.0, item_weight=None))
        if self.als_weight > 0:
            singles.append(replace(self, als_weight=1.0, trend_weight=0.0, item_weight=None, decay_days=0.0))
        if self.trend_weight > 0:
            singles.append(replace(self, als_weight=0.0, trend_weight=1.0, item_weight=0.0, decay_days=0.0))
        return singles if len(singles) > 1 else [self]

    def label(self) -> str:
        terms = []
        if self.item_part > 0:
            terms.append(self.item_label() + (f" x{self.item_part:g}" if self.item_part != 1 else ""))
        if self.als_weight > 0:
            terms.append(f"ALS x{self.als_weight:g}")
        if self.trend_weight > 0:
            terms.append(self.trend_label() + (f" x{self.trend_weight:g}" if terms else ""))
        if len(terms) == 1:
            return terms[0].replace(" x1", "") + " alone"
        return " + ".join(terms)


def default_choice(n_items: int, settings: EvaluationSettings, has_customers: bool = True) -> BlendChoice:
    """The blend used when it cannot be tuned (``--no-evaluate``, or too few validation rows):
    EASE (the middle of the searched l2 grid) where the catalog allows, else cosine kNN, with
    ALS x0.25 for a log of customers, and no trending.

    It is what the search chose, part for part, on the logs it was tried on (Online Retail,
    synthetic taste groups); trending never won on a log of customers, and on customers active
    in bursts it ranks what is selling now for somebody whose burst was months ago.
    """
    if n_items <= settings.ease_max_items:
        item_model, params = "ease", {"l2": EASE_L2[len(EASE_L2) // 2], "scale_l2": True, "neighbours": 200,
                                      "max_items": settings.ease_max_items}
    else:
        item_model, params = "item_knn", {"similarity": "cosine", "neighbours": 100, "min_support": 1,
                                          "min_pair_support": 1}
    return BlendChoice(item_model, params, 0.25 if has_customers else 0.0, 0.0, settings.trending_half_life_days)


def build_als(settings: AlsSettings, num_threads: int | None = None) -> ALS:
    """The ALS of a run, from its settings: the one place that maps them onto ALS, so that
    what evaluation fits is what ships (GPU included)."""
    return ALS(factors=settings.factors, regularization=settings.regularization, alpha=settings.alpha,
               iterations=settings.iterations, confidence=settings.confidence,
               random_state=settings.random_state,
               num_threads=settings.num_threads if num_threads is None else num_threads, use_gpu=settings.use_gpu)


def item_candidates(n_items: int, settings: EvaluationSettings) -> tuple[dict[str, tuple[str, dict[str, Any]]], list[str]]:
    """Item-to-item models tried by the search, and notes on those skipped (and why)."""
    candidates: dict[str, tuple[str, dict[str, Any]]] = {}
    notes = []
    if n_items <= settings.ease_max_items:
        for signed in (False, True):
            for l2 in EASE_L2:
                params = {"l2": l2, "scale_l2": True, "neighbours": 200, "max_items": settings.ease_max_items}
                if signed:  # its negative weights are mostly between items never bought together
                    params.update(signed=True, min_pair_support=0)
                candidates[f"ease{' signed' if signed else ''} l2={l2:g}"] = ("ease", params)
    else:
        notes.append(f"EASE skipped: {n_items} items exceed ease_max_items={settings.ease_max_items} "
                     f"(it needs a dense {n_items} x {n_items} matrix, {n_items ** 2 * 8 / 2 ** 30:.1f} GiB)")
    candidates["rp3beta"] = ("rp3beta", {"alpha": 1.0, "beta": 0.5, "neighbours": 100})
    candidates["cooccurrence llr"] = ("cooccurrence", {"shrinkage": 10.0, "neighbours": 100})
    for similarity in ("cosine", "bm25"):
        candidates[f"item-knn {similarity}"] = ("item_knn", {"similarity": similarity, "neighbours": 100,
                                                             "min_support": 1, "min_pair_support": 1})
    return candidates, notes


# ----------------------------------------------------------------------------- folds
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
                self._weighted[decay_days] = binarize(self.interactions.user_items)
        return self._weighted[decay_days]

    def query(self) -> sp.csr_matrix:
        """What each evaluated row is scored from: its whole history, unweighted."""
        if self.timed:
            return self.weighted(0.0)[self.held_out.rows]
        return self.held_out.seen


@dataclass
class Selection:
    """The outcome: the choice, the figures behind it, the test predictions, and notes."""

    choice: BlendChoice
    evaluation: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    predictions: dict[str, NDArray[Any]] = field(default_factory=dict)


def select_and_evaluate(purchases: pd.DataFrame, settings: EvaluationSettings, current: dict[str, Any] | None = None) -> Selection:
    """Choose the protocol, tune on its validation folds, measure everything on its test fold.

    ``current`` is the blend of the model now serving (from its manifest): it is measured on
    the same test fold, for the promotion gate.

    Raises
    ------
    DataError
        Too little data to hold anything out.
    """
    started = time.perf_counter()
    protocol = choose_protocol(purchases, settings.test_days, settings.validation_periods)
    logger.info("validation protocol: %s (%s)", protocol.name, protocol.reason)
    test_fold, validation, secondary = _folds(purchases, protocol, settings)
    n_items = len(test_fold.interactions.item_ids)
    candidates, notes = item_candidates(n_items, settings)
    evaluated = sum(fold.held_out.seen.shape[0] for fold in next(iter(validation.values())))
    if evaluated >= MIN_VALIDATION_ROWS:
        search = _search(validation, candidates, settings)
        choice = search.pop("choice")
        logger.info("chosen on validation: %s", choice.label())
    else:
        choice = default_choice(n_items, settings, has_customers=not test_fold.basket)
        search = {"rule": (f"not tuned: the validation folds evaluate {evaluated} rows, fewer than the "
                           f"{MIN_VALIDATION_ROWS} it takes to tell configurations apart; the default ships"),
                  "configurations_measured": 0, "search": []}
        logger.warning("validation: %s", search["rule"])

    measured = _measure(test_fold, choice, settings, current)
    predictions = measured.pop("predictions")
    evaluation: dict[str, Any] = {
        "protocol": {**protocol.to_dict(), **test_fold.description},
        "validation": {"folds": {name: [fold.description for fold in folds] for name, folds in validation.items()},
                       **search, "chosen": choice.label()},
        "k": settings.eval_k,
        **measured,
    }
    if secondary is not None:
        also = _measure(secondary, choice, settings, None, item_pages=False)
        also.pop("predictions")
        evaluation["also"] = {secondary.description["split"]: {"protocol": secondary.description, **also}}
    evaluation["seconds"] = round(time.perf_counter() - started, 1)
    return Selection(choice, evaluation, notes, predictions)


def _folds(purchases: pd.DataFrame, protocol: Protocol, settings: EvaluationSettings
           ) -> tuple[Fold, dict[str, list[Fold]], Fold | None]:
    """The test fold, the validation folds of each protocol, and a second test fold (the
    next-purchase one, when the rolling protocol is primary)."""
    if protocol.name == RANDOM_HOLDOUT:
        outer = random_holdout_split(purchases, seed=settings.random_state)
        inner = random_holdout_split(outer.train, seed=settings.random_state + 1)
        return _holdout_fold(outer, settings), {RANDOM_HOLDOUT: [_holdout_fold(inner, settings)]}, None
    if protocol.name == NEXT_PURCHASE:
        outer_np = next_purchase_split(purchases)
        inner_np = next_purchase_split(outer_np.train, share=VALIDATION_SHARE, seed=settings.random_state)
        return (_time_fold(outer_np.train, outer_np.test, settings, {"split": NEXT_PURCHASE}),
                {NEXT_PURCHASE: [_time_fold(inner_np.train, inner_np.test, settings, {"split": NEXT_PURCHASE})]}, None)
    windows = period_cutoffs(purchases["timestamp"].max(), settings.test_days, settings.validation_periods + 1)
    cut = windows[0][0]
    test_fold = _rolling_fold(purchases, *windows[0], settings)
    rolling = []
    for start, stop in windows[1:]:
        try:
            rolling.append(_rolling_fold(purchases, start, stop, settings))
        except DataError as exc:
            logger.warning("validation period from %s skipped: %s", f"{start:%Y-%m-%d}", exc)
    before = purchases[purchases["timestamp"] < cut]
    validation = {ROLLING: rolling} if rolling else {}
    try:
        inner_np = next_purchase_split(before, share=VALIDATION_SHARE, seed=settings.random_state)
        validation[NEXT_PURCHASE] = [_time_fold(inner_np.train, inner_np.test, settings, {"split": NEXT_PURCHASE})]
    except DataError as exc:
        logger.warning("next-purchase validation skipped: %s", exc)
    if not validation:
        raise DataError("evaluation: no validation period before the test period")
    secondary = None
    try:
        outer_np = next_purchase_split(purchases, after=cut)
        secondary = _time_fold(outer_np.train, outer_np.test, settings,
                               {"split": NEXT_PURCHASE, "held_out": f"each customer's last order, from {cut:%Y-%m-%d}"})
    except DataError as exc:
        logger.warning("next-purchase test skipped: %s", exc)
    return test_fold, validation, secondary


def evaluation_fold(purchases: pd.DataFrame, settings: EvaluationSettings) -> Fold:
    """The rolling protocol's test fold: train before the cut-off, measure what customers
    bought after it. For measuring models fitted elsewhere (the Spark engine's) on the same split."""
    return _rolling_fold(purchases, *period_cutoffs(purchases["timestamp"].max(), settings.test_days, 1)[0], settings)


def _rolling_fold(purchases: pd.DataFrame, start: pd.Timestamp, stop: pd.Timestamp, settings: EvaluationSettings) -> Fold:
    """Train on everything before ``start``, measure on the purchases from ``start`` to ``stop``."""
    times = purchases["timestamp"]
    if not (times < start).any():
        raise DataError(f"evaluation: no purchases before {start:%Y-%m-%d %H:%M}")
    return _time_fold(purchases[times < start], purchases[(times >= start) & (times < stop)], settings,
                      {"split": ROLLING, "train_until": f"{start:%Y-%m-%d %H:%M}"})


def factor_metrics(fold: Fold, user_factors: NDArray[np.floating], item_factors: NDArray[np.floating],
                   settings: EvaluationSettings) -> dict[str, float]:
    """Metrics at ``eval_k`` of a factor model (fitted on ``fold``'s training side) on ``fold``."""
    scores = (np.asarray(user_factors)[fold.held_out.rows] @ np.asarray(item_factors).T).astype(np.float32)
    return _metrics(fold, scores, settings)


def _time_fold(train: pd.DataFrame, test: pd.DataFrame, settings: EvaluationSettings, description: dict[str, Any]) -> Fold:
    """Customers of the training side, measured on the items new to them in ``test``."""
    interactions = build_interactions(train, "binary")
    test = test[test["user_id"].notna()]
    users = interactions.user_ids.indices(test["user_id"])
    known = users >= 0
    pairs = pd.DataFrame({"user": users[known], "item": test["item_id"].to_numpy()[known]}).drop_duplicates()
    items = interactions.item_ids.indices(pairs["item"])
    pairs["index"] = items
    already = np.zeros(len(pairs), dtype=bool)
    reachable = items >= 0
    already[reachable] = np.asarray(
        interactions.user_items[pairs["user"].to_numpy()[reachable], items[reachable]]
    ).ravel() > 0
    new = pairs[~already]
    n_targets = new.groupby("user").size()
    rows = n_targets.index.to_numpy(dtype=np.int64)
    limit = max(100, min(settings.max_eval_users, MAX_SCORE_ENTRIES // max(1, len(interactions.item_ids))))
    sampled = len(rows) > limit
    if sampled:
        rows = np.sort(np.random.default_rng(settings.random_state).choice(rows, limit, replace=False))
    cutoff = train["timestamp"].max() if "timestamp" in train and len(train) else None
    if not len(rows):
        raise DataError("evaluation: no customer bought anything new in the held-out purchases"
                        + (f" after {cutoff:%Y-%m-%d}" if cutoff is not None else ""))
    position = pd.Series(np.arange(len(rows)), index=rows)
    hits = new[(new["index"] >= 0) & new["user"].isin(rows)]
    targets = sp.csr_matrix(
        (np.ones(len(hits), dtype=np.float32), (position[hits["user"]].to_numpy(), hits["index"].to_numpy())),
        shape=(len(rows), len(interactions.item_ids)),
    )
    popularity = np.diff(interactions.user_items.tocsc().indptr).astype(np.float64)
    held_out = HeldOut(rows, binarize(interactions.user_items[rows]), targets,
                       n_targets[rows].to_numpy(dtype=np.int64), popularity)
    description = {
        "train_until": f"{cutoff:%Y-%m-%d %H:%M}" if cutoff is not None else None,
        **description,
        "test_from": f"{test['timestamp'].min():%Y-%m-%d %H:%M}" if len(test) else None,
        "test_until": f"{test['timestamp'].max():%Y-%m-%d %H:%M}" if len(test) else None,
        "customers_evaluated": int(len(rows)), "target_pairs": int(n_targets[rows].sum()),
        "unreachable_target_pairs": int(n_targets[rows].sum() - targets.nnz),
        "train_customers": len(interactions.user_ids), "train_items": len(interactions.item_ids),
    }
    if sampled:
        description["sampled"] = f"{len(rows)} of {len(n_targets)} evaluable customers, at random"
    row_ids = interactions.user_ids.ids(rows)
    return Fold(interactions, held_out, description, "time", "customers", test, list(row_ids))


def _holdout_fold(split: HoldoutSplit, settings: EvaluationSettings) -> Fold:
    """Held-out customers or baskets, each with one hidden item to find from the rest."""
    interactions = build_interactions(split.train, "binary")
    lookup = interactions.item_ids
    queries, hidden = split.queries, split.hidden
    limit = max(100, min(settings.max_eval_users, MAX_SCORE_ENTRIES // max(1, len(lookup))))
    sampled = len(queries) > limit
    if sampled:
        keep = np.sort(np.random.default_rng(settings.random_state).choice(len(queries), limit, replace=False))
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
    seen = binarize(sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=shape))
    targets = sp.csr_matrix((np.ones(len(target_rows), dtype=np.float32), (target_rows, targets_cols)), shape=shape)
    fit_on = split.unit if split.unit == "customers" else "orders"
    basis = interactions.user_items if fit_on == "customers" else interactions.order_items
    popularity = np.diff(basis.tocsc().indptr).astype(np.float64)
    held_out = HeldOut(np.arange(len(queries), dtype=np.int64), seen, targets,
                       np.ones(len(queries), dtype=np.int64), popularity)
    description = {"split": RANDOM_HOLDOUT, "held_out": f"{len(queries)} {split.unit}",
                   f"train_{split.unit}": basis.shape[0], "task": "find the one hidden item from the rest"}
    if sampled:
        description["sampled"] = f"{len(queries)} of {len(split.queries)} held-out {split.unit}, at random"
    return Fold(interactions, held_out, description, "holdout", fit_on,
                row_ids=[f"holdout:{number}" for number in range(len(queries))])


# ----------------------------------------------------------------------------- scoring
@dataclass
class _FoldState:
    """What the search fitted on one fold, kept between its stages."""

    fold: Fold
    items: dict[tuple[Any, ...], NeighbourModel] = field(default_factory=dict)
    item_scores: dict[tuple[Any, ...], NDArray[np.float32]] | None = None
    grams: dict[float, NDArray[np.float64]] = field(default_factory=dict)
    als: NDArray[np.float32] | None = None
    trends: dict[float, NDArray[np.float64]] = field(default_factory=dict)


def _fit_item(state: _FoldState, choice: BlendChoice) -> NeighbourModel | None:
    """Fit (once per fold) the item model of ``choice``; None when it is skipped."""
    # RP3beta and LLR co-occurrence read only who bought what: decay changes their query, not their fit.
    fit_decay = choice.decay_days if choice.item_model in ("ease", "item_knn") else 0.0
    key = choice.item_key(fit_decay)
    if key in state.items:
        return state.items[key]
    fold = state.fold
    matrix = fold.weighted(fit_decay)
    model = choice.build_item_model(num_threads=1)
    try:
        if isinstance(model, EASE):
            model.check_catalog(len(fold.interactions.item_ids))  # before any dense Gram matrix is built
            for decay in dict.fromkeys((0.0, fit_decay)):
                if decay not in state.grams:
                    state.grams[decay] = gram_matrix(fold.weighted(decay))
            model.fit(matrix, gram=state.grams[fit_decay], counts=state.grams[0.0])
        else:
            model.fit(matrix)
    except ModelSkippedError:
        model = None  # type: ignore[assignment]
    state.items[key] = model  # type: ignore[assignment]
    return model


def _als_scores(state: _FoldState, settings: EvaluationSettings) -> NDArray[np.float32] | None:
    fold = state.fold
    if fold.basket or not fold.interactions.user_items.nnz:
        return None
    if state.als is None:
        als = build_als(settings.als, num_threads=1).fit(fold.interactions.user_counts)
        factors = als.user_factors_[fold.held_out.rows] if fold.timed else als.fold_in_rows(fold.held_out.seen)
        state.als = (factors @ als.item_factors_.T).astype(np.float32)
    return state.als


def _trend(state: _FoldState, half_life: float) -> NDArray[np.float64]:
    if half_life not in state.trends:
        fold = state.fold
        if fold.timed:
            weights = trending_weights(fold.interactions.purchase_age, half_life)
            trend = np.asarray(weights.sum(axis=0), dtype=np.float64).ravel()
        else:
            trend = fold.held_out.popularity.astype(np.float64)
        state.trends[half_life] = trend / trend.max() if trend.max() > 0 else trend
    return state.trends[half_life]


def _choice_scores(state: _FoldState, choice: BlendChoice, settings: EvaluationSettings) -> NDArray[np.float64] | None:
    """Scores of every item for the fold's evaluated rows under ``choice`` (None: cannot be
    scored on this fold, e.g. EASE on a catalog too large or ALS on baskets)."""
    fold = state.fold
    item = als = None
    if choice.item_part > 0:
        key = choice.item_key()
        item = state.item_scores.get(key) if state.item_scores is not None else None
        if item is None:
            model = _fit_item(state, choice)
            if model is None:
                return None
            item = model.score_rows(fold.query())
            if state.item_scores is not None:
                state.item_scores[key] = item
    if choice.als_weight > 0:
        als = _als_scores(state, settings)
        if als is None:
            return None
    trend = _trend(state, choice.trend_half_life_days)
    scores = blend_scores(item, als, trend, choice.als_weight, choice.trend_weight, choice.item_weight)
    if scores is None:
        scores = np.tile(trend, (len(fold.held_out.rows), 1))
    return scores


def _metrics(fold: Fold, scores: NDArray[np.floating], settings: EvaluationSettings,
             recommended: NDArray[np.int64] | None = None) -> dict[str, Any]:
    if recommended is None:
        recommended = top_k(scores, fold.held_out.seen, max(CUTS))
    result: dict[str, Any] = ranking_metrics(recommended[:, : settings.eval_k], fold.held_out, settings.eval_k)
    low, high, error = bootstrap_interval(row_ndcg(recommended[:, : settings.eval_k], fold.held_out),
                                          seed=settings.random_state)
    result["ndcg_ci95"] = [round(low, 5), round(high, 5)]
    result["ndcg_se"] = round(error, 5)
    result["by_k"] = {
        str(cut): {name: ranking_metrics(recommended[:, :cut], fold.held_out, cut)[name]
                   for name in ("ndcg", "recall", "hit_rate")}
        for cut in CUTS
    }
    return result


# ----------------------------------------------------------------------------- search
def _search(validation: dict[str, list[Fold]], candidates: dict[str, tuple[str, dict[str, Any]]],
            settings: EvaluationSettings) -> dict[str, Any]:
    """The staged search of the module docstring over every validation fold."""
    states = {name: [_FoldState(fold) for fold in folds] for name, folds in validation.items()}
    flat = [state for group in states.values() for state in group]
    timed = all(state.fold.timed for state in flat)
    has_als = not any(state.fold.basket for state in flat)
    default_half_life = settings.trending_half_life_days
    rows: dict[BlendChoice, dict[str, NDArray[np.float64]]] = {}

    def measure(choices: Iterable[BlendChoice]) -> None:
        todo = [c for c in dict.fromkeys(choices) if c not in rows]

        def one_fold(state: _FoldState) -> list[NDArray[np.float64] | None]:
            out = []
            for choice in todo:
                scores = _choice_scores(state, choice, settings)
                out.append(None if scores is None else
                           row_ndcg(top_k(scores, state.fold.held_out.seen, settings.eval_k), state.fold.held_out))
            return out

        results = Parallel(n_jobs=settings.jobs, prefer="threads")(delayed(one_fold)(state) for state in flat)
        for position, choice in enumerate(todo):
            per_fold = [result[position] for result in results]
            if any(values is None for values in per_fold):
                continue
            by_protocol, offset = {}, 0
            for name, group in states.items():
                by_protocol[name] = np.concatenate(per_fold[offset: offset + len(group)])
                offset += len(group)
            rows[choice] = by_protocol

    def item_choice(name: str, decay: float) -> BlendChoice:
        kind, params = candidates[name]
        return BlendChoice(kind, params, 0.0, 0.0, default_half_life, decay)

    # The decay is chosen with the lead model: EASE at each of its l2 (the best l2 moves with
    # the decay, as decay shrinks the Gram matrix's spread), else cosine kNN.
    leads = [name for name in candidates if name.startswith("ease l2")] or ["item-knn cosine"]
    lead = leads[len(leads) // 2]
    decays = DECAY_DAYS if timed else (0.0,)
    measure(item_choice(name, decay) for decay in decays for name in leads)
    ranking = _ranking(rows)
    best_decay = max(rows, key=ranking.__getitem__).decay_days if rows else 0.0
    singles = [item_choice(name, decay) for name in candidates for decay in dict.fromkeys((0.0, best_decay))]
    if has_als:
        singles.append(BlendChoice(*candidates[lead], 1.0, 0.0, default_half_life))
    for half_life in (*HALF_LIVES, POPULARITY_HALF_LIFE) if timed else (POPULARITY_HALF_LIFE,):
        singles.append(BlendChoice(*candidates[lead], 0.0, 1.0, half_life, 0.0, 0.0))
    measure(singles)
    ranking = _ranking(rows)
    item_singles = [c for c in rows if c.item_part > 0 and c.als_weight == 0 and c.trend_weight == 0]
    finalists = sorted(item_singles, key=ranking.__getitem__, reverse=True)[:2]
    trend_singles = [c for c in rows if c.item_part == 0 and c.trend_weight > 0]
    half_life = max(trend_singles, key=ranking.__getitem__).trend_half_life_days if trend_singles \
        else POPULARITY_HALF_LIFE
    blends = [replace(finalist, als_weight=als_weight, trend_weight=trend_weight, trend_half_life_days=half_life)
              for finalist in finalists for als_weight in (ALS_WEIGHTS if has_als else (0.0,))
              for trend_weight in TREND_WEIGHTS if als_weight or trend_weight]
    for state in flat:  # each finalist's scores are computed once per fold for all its blends
        state.item_scores = {}
    measure(blends)
    for state in flat:
        state.item_scores = None
    if not rows:
        raise DataError("evaluation: no model could be measured on the validation folds")

    choice, rule = simplest_within_noise(rows, settings.random_state)
    ranking = _ranking(rows)
    table = sorted(rows, key=ranking.__getitem__, reverse=True)
    protocols = list(validation)
    return {
        "choice": choice,
        "rule": rule,
        "decay_chosen_days": best_decay,
        "score": (f"NDCG@k on {protocols[0]} relative to the best configuration there"
                  + (f"; a configuration more than {GUARD_ERRORS:g} standard errors below the best on "
                     f"{', '.join(protocols[1:])} ranks after all others" if len(protocols) > 1 else "")),
        "configurations_measured": len(rows),
        "search": [{"config": c.label(), "score": round(ranking[c][1], 4),
                    **({"guard": "passed" if ranking[c][0] else "failed"} if len(protocols) > 1 else {}),
                    **{f"ndcg {name}": round(float(values.mean()), 5) for name, values in rows[c].items()}}
                   for c in table[:30]],
    }


Rows = dict[BlendChoice, dict[str, NDArray[np.float64]]]


def simplest_within_noise(rows: Rows, seed: int = 0) -> tuple[BlendChoice, str]:
    """The configuration to ship, and why: the best by ``_ranking``, unless it is a blend whose
    gain over its best single part (measured too) on the primary protocol is within the
    bootstrap standard error of that gain; then the part.

    ``rows`` maps each measured configuration to its per-row NDCG on each protocol (the same
    rows, in the same order, for every configuration; the primary protocol first).
    """
    ranking = _ranking(rows)
    best = max(rows, key=ranking.__getitem__)
    parts = [part for part in best.parts() if part in rows]
    if len(best.parts()) == 1 or not parts:
        return best, "the best configuration is a single component"
    part = max(parts, key=ranking.__getitem__)
    primary = next(iter(rows[best]))
    gain, error = _paired_difference(rows[best][primary], rows[part][primary], bootstrap_seed=seed)
    if gain > error:
        return best, f"the blend beats its best part ({part.label()}) by {gain:.4f} > standard error {error:.4f}"
    return part, (f"the blend {best.label()} beats its best part by {gain:.4f}, within the standard error "
                  f"{error:.4f}: the part ships")


def _ranking(rows: Rows) -> dict[BlendChoice, tuple[bool, float]]:
    """Sort keys, higher first: (kept by the guard, NDCG@k on the primary protocol relative to
    the best there).

    The primary protocol (the first: the one the log supports best, whose test figure is
    reported) ranks. Every other protocol guards: a configuration more than ``GUARD_ERRORS``
    standard errors below the best one there (paired over the same customers) ranks after
    all those that are not. So the choice does well on every protocol without a protocol the
    log supports less well pulling it towards its own optimum.
    """
    if not rows:
        return {}
    names = list(next(iter(rows.values())))
    best_mean = {name: max(float(values[name].mean()) for values in rows.values()) for name in names}
    kept = dict.fromkeys(rows, True)
    for name in names[1:]:
        leader = max(rows, key=lambda c: float(rows[c][name].mean()))
        for choice, values in rows.items():
            difference, error = _paired_difference(values[name], rows[leader][name])
            if difference < -GUARD_ERRORS * error:
                kept[choice] = False
    primary = names[0]
    scale = best_mean[primary] if best_mean[primary] > 0 else 1.0
    return {choice: (kept[choice], float(values[primary].mean()) / scale) for choice, values in rows.items()}


def _paired_difference(values: NDArray[np.float64], baseline: NDArray[np.float64],
                       bootstrap_seed: int | None = None) -> tuple[float, float]:
    """Mean of ``values - baseline`` over the same rows, and its standard error (bootstrap
    over rows with a seed; else the normal approximation, cheap enough to apply to every
    configuration)."""
    difference = values - baseline
    if bootstrap_seed is not None:
        return float(difference.mean()), bootstrap_interval(difference, seed=bootstrap_seed)[2]
    if len(difference) < 2:
        return float(difference.mean()) if len(difference) else 0.0, 0.0
    return float(difference.mean()), float(difference.std(ddof=1) / np.sqrt(len(difference)))


# ----------------------------------------------------------------------------- measuring
def _measure(fold: Fold, choice: BlendChoice, settings: EvaluationSettings, current: dict[str, Any] | None,
             item_pages: bool = True) -> dict[str, Any]:
    """Fit the choice, its parts, the current model's blend and the baselines; measure them all
    on the test fold (once, after every choice is made)."""
    state = _FoldState(fold)
    results: dict[str, dict[str, Any]] = {}
    shipped_scores = _choice_scores(state, choice, settings)
    if shipped_scores is None:
        raise DataError("evaluation: the chosen model cannot be scored on the test fold")
    shipped_top = top_k(shipped_scores, fold.held_out.seen, max(CUTS[-1], SAVED_DEPTH))
    del shipped_scores
    shipped_name = "shipped: " + choice.label()
    results[shipped_name] = _metrics(fold, np.empty(0), settings, recommended=shipped_top)
    for part in choice.parts():
        if part != choice:
            scores = _choice_scores(state, part, settings)
            if scores is not None:
                results["part: " + part.label()] = _metrics(fold, scores, settings)
    if current:
        try:
            previous = BlendChoice(**current)
        except TypeError:
            previous = None
        scores = _choice_scores(state, previous, settings) if previous is not None else None
        if scores is not None:
            results["current blend"] = _metrics(fold, scores, settings)
    results.update(_baselines(fold, state, settings))
    out: dict[str, Any] = {"models": results, "shipped": shipped_name, "headline": "ndcg",
                           "headline_value": results[shipped_name]["ndcg"],
                           "headline_ci95": results[shipped_name]["ndcg_ci95"]}
    if "current blend" in results:
        out["current_headline_value"] = results["current blend"]["ndcg"]
    if item_pages and fold.timed and fold.test is not None and "timestamp" in fold.test:
        out["item_to_item"] = _next_item(fold, _fit_item(state, choice) if choice.item_part else None, settings)
    out["predictions"] = _predictions(fold, shipped_top)
    return out


def _predictions(fold: Fold, recommended: NDArray[np.int64]) -> dict[str, NDArray[Any]]:
    """The shipped model's test rankings and the targets, in external ids, so that anyone can
    recompute the reported figures from the saved model version."""
    item_ids = fold.interactions.item_ids.ids_
    targets = fold.held_out.targets.tocsr()
    targets.sort_indices()
    return {
        "row_ids": np.asarray(fold.row_ids, dtype=np.str_),
        "recommended": np.asarray(item_ids[recommended], dtype=np.str_),
        "targets.indptr": targets.indptr.astype(np.int64),
        "targets.items": np.asarray(item_ids[targets.indices], dtype=np.str_),
        "n_targets": fold.held_out.n_targets.astype(np.int64),
    }


def _baselines(fold: Fold, state: _FoldState, settings: EvaluationSettings) -> dict[str, dict[str, Any]]:
    """Popularity, ``implicit``'s own recommenders at their defaults (called directly) and
    plain EASE, on the same rows."""
    import warnings

    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.nearest_neighbours import BM25Recommender, CosineRecommender
    from implicit.utils import ParameterWarning
    from threadpoolctl import threadpool_limits

    matrix = fold.fit_matrix
    results = {"baseline: popularity": _metrics(fold, np.tile(fold.held_out.popularity, (len(fold.held_out.rows), 1)),
                                                settings)}
    query = fold.query()
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("ignore", ParameterWarning)
        for name, model in (("cosine K=100", CosineRecommender(K=100)), ("BM25 K=100", BM25Recommender(K=100))):
            model.fit(matrix, show_progress=False)
            results[f"baseline: implicit {name}"] = _metrics(fold, (query @ model.similarity).toarray(), settings)
        if not fold.basket:
            als = AlternatingLeastSquares(factors=100, regularization=0.01, iterations=15,
                                          random_state=settings.random_state)
            als.fit(matrix, show_progress=False)
            if fold.timed:
                factors = als.user_factors[fold.held_out.rows]
            else:
                factors = ALS.from_arrays({"user_factors": als.user_factors, "item_factors": als.item_factors},
                                          regularization=0.01, alpha=1.0).fold_in_rows(fold.held_out.seen)
            results["baseline: implicit ALS factors=100 reg=0.01"] = _metrics(fold, factors @ als.item_factors.T,
                                                                              settings)
    if len(fold.interactions.item_ids) <= settings.ease_max_items:
        # As EASE is usually run: binary, every weight (the 200 strongest of each item rank as all do).
        ease = BlendChoice("ease", {"l2": 250.0, "neighbours": 200, "max_items": settings.ease_max_items,
                                    "signed": True, "min_pair_support": 0}, 0.0, 0.0, settings.trending_half_life_days)
        scores = _choice_scores(state, ease, settings)
        if scores is not None:
            results["baseline: EASE l2=250"] = _metrics(fold, scores, settings)
    return results


def _next_item(fold: Fold, shipped_item: NeighbourModel | None, settings: EvaluationSettings) -> dict[str, Any]:
    """"Customers who bought this also bought", measured on what customers bought next."""
    assert fold.test is not None
    test = fold.test.sort_values(["user_id", "timestamp"], kind="stable")
    test = test.drop_duplicates(["user_id", "item_id"])
    same_user = test["user_id"].to_numpy()[1:] == test["user_id"].to_numpy()[:-1]
    later_order = test["order_id"].to_numpy()[1:] != test["order_id"].to_numpy()[:-1]
    follow = np.flatnonzero(same_user & later_order)
    queries = fold.interactions.item_ids.indices(test["item_id"].to_numpy()[follow])
    targets = fold.interactions.item_ids.indices(test["item_id"].to_numpy()[follow + 1])
    valid = (queries >= 0) & (targets >= 0)
    queries, targets = queries[valid], targets[valid]
    knn = settings.neighbours
    shipped = ItemKNN(similarity=knn.similarity, neighbours=knn.neighbours, min_support=knn.min_support,
                      min_pair_support=knn.min_pair_support, num_threads=knn.num_threads).fit(
        cap_history(fold.fit_matrix, fold.interactions.purchase_age, knn.max_history))
    results = {"also-bought as served (item-knn " + settings.neighbours.similarity + ")":
               next_item_metrics(shipped.neighbour_ids_, queries, targets, settings.eval_k)}
    if shipped_item is not None:
        results[f"{shipped_item.describe()}"] = next_item_metrics(shipped_item.neighbour_ids_, queries, targets,
                                                                  settings.eval_k)
    popular = np.argsort(-fold.held_out.popularity, kind="stable")[: settings.eval_k + 1]
    table = np.tile(popular, (len(fold.held_out.popularity), 1))
    results["baseline: popularity"] = next_item_metrics(table, queries, targets, settings.eval_k)
    return {"task": "the next item a customer bought (a later order), among the first item's top k", **results}
