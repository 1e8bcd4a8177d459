"""Choosing the recommender that ships, and measuring it against the usual baselines.

For a customer log, two temporal folds: the last ``test_days`` of the log are the test
period, and the ``test_days`` before them the validation period. The blend (which
item-to-item model, how much ALS, how much trending, which trending half-life) is tuned on
the validation fold only; then the chosen blend, its parts and the baselines (popularity and
``implicit``'s own recommenders at their defaults) are fitted on everything before the test
period and measured on it. For a basket-only log the folds hold out baskets instead, and
the task is to find the hidden item of a basket from the rest.
"""
from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from joblib import Parallel, delayed
from numpy.typing import NDArray

from .algorithms import ALS, EASE, Cooccurrence, ItemKNN, NeighbourModel, RP3beta
from .algorithms.blend import blend_scores
from .config import TrainConfig
from .data.matrix import Interactions, binarize, build_interactions, cap_history, trending_weights
from .data.split import basket_split, temporal_split
from .errors import DataError, ModelSkippedError
from .evaluation import HeldOut, next_item_metrics, ranking_metrics, top_k

logger = logging.getLogger(__name__)

ITEM_MODELS: dict[str, type[NeighbourModel]] = {
    "ease": EASE, "rp3beta": RP3beta, "cooccurrence": Cooccurrence, "item_knn": ItemKNN,
}
ALS_WEIGHTS = (0.0, 0.25, 0.5, 0.75)
TREND_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
HALF_LIVES = (7.0, 14.0, 30.0)
CUTS = (1, 5, 10, 20)
# Dense score matrices of the evaluated rows are held in memory: bound their size.
MAX_SCORE_ENTRIES = 20_000_000


@dataclass(frozen=True)
class BlendChoice:
    """What the personal recommender is made of; stored in the manifest, read by the server."""

    item_model: str
    item_params: dict[str, Any]
    als_weight: float
    trend_weight: float
    trend_half_life_days: float

    def build_item_model(self, num_threads: int = 0) -> NeighbourModel:
        params = dict(self.item_params)
        if self.item_model == "item_knn":
            params["num_threads"] = num_threads
        return ITEM_MODELS[self.item_model](**params)

    def label(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.item_params.items() if k not in ("neighbours", "max_items"))
        return (f"{self.item_model}({params}) + ALS x{self.als_weight:g} + trending({self.trend_half_life_days:g}d)"
                f" x{self.trend_weight:g}")


def default_choice(n_items: int, config: TrainConfig, has_customers: bool = True) -> BlendChoice:
    """The blend used when it cannot be tuned: EASE where the catalog allows, else cosine kNN."""
    if n_items <= config.ease_max_items:
        item_model, params = "ease", {"l2": 250.0, "neighbours": 200, "max_items": config.ease_max_items}
    else:
        item_model, params = "item_knn", {"similarity": "cosine", "neighbours": 100, "min_support": 1,
                                          "min_pair_support": 1}
    return BlendChoice(item_model, params, 0.5 if has_customers else 0.0, 0.5, config.trending_half_life_days)


def item_candidates(n_items: int, config: TrainConfig) -> tuple[dict[str, tuple[str, dict[str, Any]]], list[str]]:
    """Item-to-item models tried by the search, and notes on those skipped (and why)."""
    candidates: dict[str, tuple[str, dict[str, Any]]] = {}
    notes = []
    if n_items <= config.ease_max_items:
        for l2 in (100.0, 250.0, 500.0):
            candidates[f"ease l2={l2:g}"] = ("ease", {"l2": l2, "neighbours": 200, "max_items": config.ease_max_items})
    else:
        notes.append(f"EASE skipped: {n_items} items exceed ease_max_items={config.ease_max_items} "
                     f"(it needs a dense {n_items} x {n_items} matrix, {n_items ** 2 * 8 / 2 ** 30:.1f} GiB)")
    candidates["rp3beta"] = ("rp3beta", {"alpha": 1.0, "beta": 0.5, "neighbours": 100})
    candidates["cooccurrence llr"] = ("cooccurrence", {"shrinkage": 10.0, "neighbours": 100})
    for similarity in ("cosine", "bm25"):
        candidates[f"item-knn {similarity}"] = ("item_knn", {"similarity": similarity, "neighbours": 100,
                                                             "min_support": 1, "min_pair_support": 1})
    return candidates, notes


@dataclass
class Fold:
    """A training side and what to measure on: ``held_out`` rows are customers (temporal
    folds) or held-out baskets (basket folds, whose ``seen`` rows are the queries)."""

    interactions: Interactions
    held_out: HeldOut
    description: dict[str, Any]
    basket: bool = False
    purchases: pd.DataFrame | None = None
    test: pd.DataFrame | None = None

    @property
    def fit_matrix(self) -> sp.csr_matrix:
        return self.interactions.order_items if self.basket else self.interactions.user_items


@dataclass
class Selection:
    """The outcome: the choice, the figures behind it, and what to write in the report."""

    choice: BlendChoice
    evaluation: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def select_and_evaluate(purchases: pd.DataFrame, config: TrainConfig, current: dict[str, Any] | None = None) -> Selection:
    """Tune the blend on the validation fold, measure everything on the test fold.

    ``current`` is the blend of the model now serving (from its manifest): it is measured on
    the same test fold, for the promotion gate.

    Raises
    ------
    DataError
        Too little data to hold anything out.
    """
    started = time.perf_counter()
    basket = purchases["user_id"].isna().all()
    if basket:
        outer = basket_split(purchases, seed=config.random_state)
        inner = basket_split(outer.train, seed=config.random_state + 1)
        test_fold = _basket_fold(outer.train, outer.queries, outer.hidden)
        validation_fold = _basket_fold(inner.train, inner.queries, inner.hidden)
    else:
        outer_split = temporal_split(purchases, config.test_days)
        test_fold = _temporal_fold(outer_split.train, outer_split.test, config, outer_split.cutoff)
        inner_split = temporal_split(outer_split.train, config.test_days)
        validation_fold = _temporal_fold(inner_split.train, inner_split.test, config, inner_split.cutoff)
    n_items = len(test_fold.interactions.item_ids)
    candidates, notes = item_candidates(n_items, config)
    search = _search(validation_fold, candidates, config)
    choice = search["choice"]
    logger.info("chosen on validation: %s (ndcg@%d %.4f)", choice.label(), config.eval_k, search["best_ndcg"])

    test = _measure(test_fold, choice, config, current)
    evaluation = {
        "protocol": test_fold.description,
        "validation": {**validation_fold.description, "search": search["table"], "chosen": choice.label()},
        "k": config.eval_k,
        **test,
        "seconds": round(time.perf_counter() - started, 1),
    }
    return Selection(choice, evaluation, notes)


def evaluation_fold(purchases: pd.DataFrame, config: TrainConfig) -> Fold:
    """The test fold ``select_and_evaluate`` measures on (customer logs): train before the
    cut-off, measure on what customers bought after it. For measuring models fitted
    elsewhere (the Spark engine's) on the same split."""
    split = temporal_split(purchases, config.test_days)
    return _temporal_fold(split.train, split.test, config, split.cutoff)


def factor_metrics(fold: Fold, user_factors: NDArray[np.floating], item_factors: NDArray[np.floating],
                   config: TrainConfig) -> dict[str, float]:
    """Metrics at ``eval_k`` of a factor model (fitted on ``fold``'s training side) on ``fold``."""
    scores = (np.asarray(user_factors)[fold.held_out.rows] @ np.asarray(item_factors).T).astype(np.float32)
    return _metrics(fold, scores, config)


# ----------------------------------------------------------------------------- folds
def _temporal_fold(train: pd.DataFrame, test: pd.DataFrame, config: TrainConfig, cutoff: pd.Timestamp) -> Fold:
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
    limit = max(100, min(config.max_eval_users, MAX_SCORE_ENTRIES // max(1, len(interactions.item_ids))))
    if len(rows) > limit:
        rows = np.sort(np.random.default_rng(config.random_state).choice(rows, limit, replace=False))
    if not len(rows):
        raise DataError(f"evaluation: no customer bought anything new after {cutoff:%Y-%m-%d}")
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
        "split": "temporal", "train_until": f"{cutoff:%Y-%m-%d %H:%M}",
        "test_until": f"{test['timestamp'].max():%Y-%m-%d %H:%M}" if len(test) else None,
        "customers_evaluated": int(len(rows)), "target_pairs": int(n_targets[rows].sum()),
        "unreachable_target_pairs": int(n_targets[rows].sum() - targets.nnz),
        "train_customers": len(interactions.user_ids), "train_items": len(interactions.item_ids),
    }
    return Fold(interactions, held_out, description, purchases=train, test=test)


def _basket_fold(train: pd.DataFrame, queries: list[list[str]], hidden: list[str]) -> Fold:
    interactions = build_interactions(train, "binary")
    lookup = interactions.item_ids
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
    popularity = np.diff(interactions.order_items.tocsc().indptr).astype(np.float64)
    held_out = HeldOut(np.arange(len(queries), dtype=np.int64), seen, targets,
                       np.ones(len(queries), dtype=np.int64), popularity)
    description = {"split": "baskets", "train_baskets": interactions.n_orders, "test_baskets": len(queries),
                   "task": "find the one hidden item of a basket from the rest"}
    return Fold(interactions, held_out, description, basket=True, purchases=train)


# ----------------------------------------------------------------------------- scoring
@dataclass
class _Parts:
    """Fitted parts on one fold and their scores for the fold's evaluated rows."""

    item_scores: dict[str, NDArray[np.float32]]
    als_scores: NDArray[np.float32] | None
    trends: dict[float, NDArray[np.float64]]
    models: dict[str, NeighbourModel]


def _fit_item_models(fold: Fold, candidates: dict[str, tuple[str, dict[str, Any]]], config: TrainConfig,
                     notes: list[str] | None = None) -> dict[str, NeighbourModel]:
    def fit(name: str, kind: str, params: dict[str, Any]) -> tuple[str, NeighbourModel | None]:
        if kind == "item_knn":
            params = {**params, "num_threads": 1}
        try:
            return name, ITEM_MODELS[kind](**params).fit(fold.fit_matrix)
        except ModelSkippedError as exc:
            if notes is not None:
                notes.append(str(exc))
            return name, None

    fitted = Parallel(n_jobs=config.jobs, prefer="threads")(
        delayed(fit)(name, kind, params) for name, (kind, params) in candidates.items()
    )
    return {name: model for name, model in fitted if model is not None}


def _fit_als(fold: Fold, config: TrainConfig) -> ALS | None:
    if fold.basket or not fold.interactions.user_items.nnz:
        return None
    return ALS(factors=config.als_factors, regularization=config.als_regularization, alpha=config.als_alpha,
               iterations=config.als_iterations, confidence=config.als_confidence,
               random_state=config.random_state, num_threads=config.num_threads).fit(fold.interactions.user_counts)


def _rows_scores(fold: Fold, model: NeighbourModel | ALS) -> NDArray[np.float32]:
    if isinstance(model, ALS):
        if fold.basket:
            raise ValueError("ALS is not scored on basket folds")
        return (model.user_factors_[fold.held_out.rows] @ model.item_factors_.T).astype(np.float32)
    return model.score_rows(fold.held_out.seen).astype(np.float32)


def _trend(fold: Fold, half_life: float) -> NDArray[np.float64]:
    weights = trending_weights(fold.interactions.purchase_age, half_life)
    trend = np.asarray(weights.sum(axis=0), dtype=np.float64).ravel()
    return trend / trend.max() if trend.max() > 0 else trend


def _metrics(fold: Fold, scores: NDArray[np.floating], config: TrainConfig) -> dict[str, float]:
    recommended = top_k(scores, fold.held_out.seen, max(CUTS))
    result = ranking_metrics(recommended[:, : config.eval_k], fold.held_out, config.eval_k)
    result["by_k"] = {  # type: ignore[assignment]
        str(cut): {name: ranking_metrics(recommended[:, :cut], fold.held_out, cut)[name]
                   for name in ("ndcg", "recall", "hit_rate")}
        for cut in CUTS
    }
    return result


def _ndcg(fold: Fold, scores: NDArray[np.floating], k: int) -> float:
    return ranking_metrics(top_k(scores, fold.held_out.seen, k), fold.held_out, k)["ndcg"]


def _blend(parts: _Parts, item_name: str | None, als_weight: float, trend_weight: float,
           half_life: float) -> NDArray[np.float64]:
    item = parts.item_scores.get(item_name) if item_name else None
    scores = blend_scores(item, parts.als_scores, parts.trends.get(half_life), als_weight, trend_weight)
    if scores is None:
        scores = np.tile(parts.trends[half_life], (len(next(iter(parts.item_scores.values()))), 1))
    return scores


# ----------------------------------------------------------------------------- search
def _search(fold: Fold, candidates: dict[str, tuple[str, dict[str, Any]]], config: TrainConfig) -> dict[str, Any]:
    """Grid search of the blend on the validation fold (bounded: the two best item models)."""
    models = _fit_item_models(fold, candidates, config)
    als = _fit_als(fold, config)
    # Without timestamps every purchase has the same age: trending is plain popularity.
    half_lives = HALF_LIVES if fold.purchases is not None and "timestamp" in fold.purchases else (14.0,)
    parts = _Parts(
        item_scores={name: _rows_scores(fold, model) for name, model in models.items()},
        als_scores=_rows_scores(fold, als) if als is not None else None,
        trends={half_life: _trend(fold, half_life) for half_life in half_lives},
        models=models,
    )
    alone = {name: _ndcg(fold, scores, config.eval_k) for name, scores in parts.item_scores.items()}
    finalists = sorted(alone, key=lambda name: -alone[name])[:2]
    als_weights = ALS_WEIGHTS if als is not None else (0.0,)
    table = [{"config": f"{name} alone", "ndcg": round(value, 5)} for name, value in alone.items()]
    best: tuple[float, BlendChoice] | None = None
    for name, als_weight, trend_weight in itertools.product(finalists, als_weights, TREND_WEIGHTS):
        for half_life in half_lives if trend_weight else half_lives[-1:]:
            kind, params = candidates[name]
            choice = BlendChoice(kind, params, als_weight, trend_weight, half_life)
            value = _ndcg(fold, _blend(parts, name, als_weight, trend_weight, half_life), config.eval_k)
            table.append({"config": choice.label(), "ndcg": round(value, 5)})
            if best is None or value > best[0] + 1e-9:
                best = (value, choice)
    assert best is not None
    table.sort(key=lambda row: -row["ndcg"])
    return {"choice": best[1], "best_ndcg": best[0], "table": table[:25]}


# ----------------------------------------------------------------------------- measuring
def _measure(fold: Fold, choice: BlendChoice, config: TrainConfig, current: dict[str, Any] | None) -> dict[str, Any]:
    """Fit the choice, its parts, the current model's blend and the baselines; measure them all."""
    choices = {"shipped": choice}
    if current:
        choices["current"] = BlendChoice(**current)
    candidates = {f"{key}:{c.item_model}": (c.item_model, c.item_params) for key, c in choices.items()}
    models = _fit_item_models(fold, candidates, config)
    als = _fit_als(fold, config)
    trends = {c.trend_half_life_days: _trend(fold, c.trend_half_life_days) for c in choices.values()}
    parts = _Parts({name: _rows_scores(fold, model) for name, model in models.items()},
                   _rows_scores(fold, als) if als is not None else None, trends, models)
    results: dict[str, dict[str, Any]] = {}
    for key, c in choices.items():
        scores = _blend(parts, f"{key}:{c.item_model}", c.als_weight if als is not None else 0.0,
                        c.trend_weight, c.trend_half_life_days)
        results[f"{key} blend" if key == "current" else "shipped: " + c.label()] = _metrics(fold, scores, config)
    shipped_item = f"shipped:{choice.item_model}"
    if shipped_item in parts.item_scores:
        results[f"part: {choice.item_model} alone"] = _metrics(fold, parts.item_scores[shipped_item], config)
    if als is not None:
        results["part: ALS alone"] = _metrics(fold, parts.als_scores, config)  # type: ignore[arg-type]
    results.update(_baselines(fold, config))
    shipped_name = next(name for name in results if name.startswith("shipped"))
    out: dict[str, Any] = {"models": results, "shipped": shipped_name, "headline": "ndcg",
                           "headline_value": results[shipped_name]["ndcg"]}
    if "current blend" in results:
        out["current_headline_value"] = results["current blend"]["ndcg"]
    if not fold.basket and fold.test is not None:
        out["item_to_item"] = _next_item(fold, models.get(shipped_item), config)
    return out


def _baselines(fold: Fold, config: TrainConfig) -> dict[str, dict[str, Any]]:
    """Popularity and ``implicit``'s own recommenders at their defaults, called directly."""
    import warnings

    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.nearest_neighbours import BM25Recommender, CosineRecommender
    from implicit.utils import ParameterWarning
    from threadpoolctl import threadpool_limits

    matrix = binarize(fold.fit_matrix)
    results = {"baseline: popularity": _metrics(fold, np.tile(fold.held_out.popularity, (len(fold.held_out.rows), 1)),
                                                config)}
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("ignore", ParameterWarning)
        for name, model in (("cosine K=100", CosineRecommender(K=100)), ("BM25 K=100", BM25Recommender(K=100))):
            model.fit(matrix, show_progress=False)
            results[f"baseline: implicit {name}"] = _metrics(fold, (fold.held_out.seen @ model.similarity).toarray(),
                                                             config)
        if not fold.basket:
            als = AlternatingLeastSquares(factors=100, regularization=0.01, iterations=15,
                                          random_state=config.random_state)
            als.fit(matrix, show_progress=False)
            scores = als.user_factors[fold.held_out.rows] @ als.item_factors.T
            results["baseline: implicit ALS factors=100 reg=0.01"] = _metrics(fold, scores, config)
    return results


def _next_item(fold: Fold, shipped_item: NeighbourModel | None, config: TrainConfig) -> dict[str, Any]:
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
    shipped = ItemKNN(similarity=config.similarity, neighbours=config.neighbours, min_support=config.min_support,
                      min_pair_support=config.min_pair_support, num_threads=config.num_threads).fit(
        fold.fit_matrix if fold.basket else cap_history(fold.fit_matrix, fold.interactions.purchase_age,
                                                        config.max_history))
    results = {"also-bought as served (item-knn " + config.similarity + ")":
               next_item_metrics(shipped.neighbour_ids_, queries, targets, config.eval_k)}
    if shipped_item is not None:
        results[f"{shipped_item.describe()}"] = next_item_metrics(shipped_item.neighbour_ids_, queries, targets,
                                                                  config.eval_k)
    popular = np.argsort(-fold.held_out.popularity, kind="stable")[: config.eval_k + 1]
    table = np.tile(popular, (len(fold.held_out.popularity), 1))
    results["baseline: popularity"] = next_item_metrics(table, queries, targets, config.eval_k)
    return {"task": "the next item a customer bought (a later order), among the first item's top k", **results}
