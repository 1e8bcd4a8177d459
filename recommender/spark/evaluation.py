"""Choosing and measuring the Spark engine's model by the local engine's rules, and gating it.

The same protocol rule (``protocols.decide``, from figures computed in Spark SQL), the same
noise rule for blends (``model_selection.simplest_within_noise``), the same metrics and
intervals (``model_selection.scoring.held_out_metrics``) and the same gate as the local
engine. What differs is where the work runs:

- the splits are Spark SQL over the cleaned lines (each customer's last order by a window,
  held-out customers by a seeded hash), so nothing the size of the log reaches the driver;
- the candidate models are fitted by Spark on each fold's training side (cosine item-to-item
  neighbours, ``pyspark.ml`` ALS, trending and popularity totals), and only their item-side
  arrays (items x K neighbours, items x factors) are collected;
- the evaluated customers are a sample (``max_eval_users``, reported), whose purchases,
  targets and factors alone are collected; the driver scores them with numpy.

It measures one validation fold (the period before the test period, or the nested
next-purchase or held-out fold): each fold costs a cluster fit of every model, where the local
engine measures several. Only models Spark fits at scale are candidates: EASE (a dense
items x items inverse) and the kNN variants of ``implicit`` are the local engine's.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from numpy.typing import NDArray

from ..algorithms import ALS
from ..algorithms.blend import blend_scores
from ..config import AlsSettings, EvaluationSettings, TrainConfig
from ..data.split import period_cutoffs
from ..errors import DataError
from ..evaluation import HeldOut, row_ndcg, top_k
from ..model_selection import BlendChoice, Selection, simplest_within_noise
from ..model_selection.choice import (
    ALS_WEIGHTS,
    CUTS,
    MIN_VALIDATION_ROWS,
    POPULARITY_HALF_LIFE,
    SAVED_DEPTH,
    TREND_WEIGHTS,
    VALIDATION_SHARE,
    sample_limit,
    untuned,
)
from ..model_selection.measure import headline_figures
from ..model_selection.scoring import held_out_metrics
from ..protocols import (
    NEXT_PURCHASE,
    NO_CUSTOMERS,
    NO_TIMESTAMPS,
    ONE_TIMESTAMP,
    RANDOM_HOLDOUT,
    ROLLING,
    Protocol,
    decide,
)
from .models import SparkCosineNeighbours, capped_pairs, fit_als, item_totals, spark_als_params

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

logger = logging.getLogger(__name__)

HOLDOUT_SHARE = 0.2
DAY = 86400.0


def default_choice(settings: EvaluationSettings) -> BlendChoice:
    """What the Spark engine ships untuned (``--no-evaluate``): cosine neighbours x0.5 + ALS
    x0.5 + trending x0.5."""
    return BlendChoice(
        "item_knn",
        {"similarity": "cosine", **knn_params(settings)},
        0.5,
        0.5,
        settings.trending_half_life_days,
    )


def knn_params(settings: EvaluationSettings) -> dict[str, int]:
    return {
        "neighbours": settings.neighbours.neighbours,
        "min_support": settings.neighbours.min_support,
        "min_pair_support": settings.neighbours.min_pair_support,
    }


@dataclass
class SparkFold:
    """A training side (customer lines in Spark) and the sampled rows measured on it, on the
    driver. ``absent`` marks items never bought on the training side: the local engine's fold
    does not know them, so they are never recommended here either."""

    kind: str
    train: DataFrame
    held_out: HeldOut
    absent: NDArray[np.bool_]
    description: dict[str, Any]
    row_ids: list[str]
    newest: int | None
    max_history: int = 0
    unit: str = "customers"
    fitted: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    cached: tuple[DataFrame, ...] = ()

    def release(self) -> None:
        """Drop the persisted sides of the split (``_kept``)."""
        for frame in self.cached:
            frame.unpersist()

    @property
    def timed(self) -> bool:
        return self.kind == "time"


def select_and_evaluate(
    lines: DataFrame,
    users: DataFrame | None,
    item_ids: NDArray[np.str_],
    settings: EvaluationSettings,
    current: dict[str, Any] | None,
) -> Selection:
    """Choose the protocol, tune on its validation fold, measure on its test fold.

    ``lines``: the cleaned customer lines with integer ``row`` and ``item`` and the
    ``order_id`` and ``timestamp`` columns; ``users``: ``user_id`` to ``row``, or None for a
    log of guest baskets, whose ``row`` numbers the baskets (held out at random); ``item_ids``
    the item index's ids. ``current`` is
    the manifest of the model now serving: its recipe (blend and parameters) is refitted on
    the test fold for the gate.

    Raises ``DataError`` when too little is left to hold anything out.
    """
    from pyspark.sql import functions as F

    started = time.perf_counter()
    test: SparkFold | None = None
    validation: SparkFold | None = None
    n_items = len(item_ids)
    lines = (
        lines.where(F.col("row").isNotNull())
        .select("row", "item", "order_id", F.col("timestamp").cast("long").alias("t"))
        .persist()
    )
    try:
        protocol = (
            spark_protocol(lines, settings)
            if users is not None
            else Protocol(RANDOM_HOLDOUT, NO_CUSTOMERS)
        )
        logger.info("spark validation protocol: %s (%s)", protocol.name, protocol.reason)
        test, validation = _folds(
            lines, protocol, n_items, settings, "customers" if users is not None else "baskets"
        )
        notes: list[str] = []
        rows_measured = validation.held_out.seen.shape[0] if validation is not None else 0
        if rows_measured >= MIN_VALIDATION_ROWS and validation is not None:
            choice, outcome = _search(validation, protocol.name, settings)
        else:
            choice, outcome = untuned(default_choice(settings), rows_measured)
        measured = _measure(test, choice, settings, current, notes)
        predictions = _predictions(test, measured.pop("recommended"), users, item_ids)
        evaluation: dict[str, Any] = {
            "engine": "spark",
            "spark": (
                "one validation fold; the primary protocol only; candidates are the models Spark fits "
                "(cosine neighbours, ALS, trending, popularity)"
            ),
            "protocol": {**protocol.to_dict(), **test.description},
            "validation": {
                "folds": {protocol.name: [validation.description]}
                if validation is not None
                else {},
                **outcome,
                "chosen": choice.label(),
            },
            "k": settings.eval_k,
            **measured,
            "seconds": round(time.perf_counter() - started, 1),
        }
        return Selection(choice, evaluation, notes, predictions)
    finally:
        for fold in (test, validation):
            if fold is not None:
                fold.release()
        lines.unpersist()


# ----------------------------------------------------------------------------- the protocol
def spark_protocol(lines: DataFrame, settings: EvaluationSettings) -> Protocol:
    """``protocols.choose_protocol`` on Spark: the same figures, counted by Spark SQL."""
    from pyspark.sql import functions as F

    low, high = lines.agg(F.min("t"), F.max("t")).first()
    if high is None:
        return Protocol(RANDOM_HOLDOUT, NO_TIMESTAMPS)
    if low == high:
        return Protocol(RANDOM_HOLDOUT, ONE_TIMESTAMP)
    per_customer = lines.groupBy("row").agg(
        F.countDistinct("t").alias("times"), F.min("t").alias("first_seen")
    )
    customers, repeat = per_customer.agg(
        F.count("*"), F.sum((F.col("times") >= 2).cast("int"))
    ).first()
    windows = period_cutoffs(
        pd.Timestamp(int(high), unit="s"), settings.test_days, settings.validation_periods + 1
    )
    bounds = [(_seconds(start), _seconds(stop)) for start, stop in windows]
    first_bought = (
        lines.groupBy("row", "item").agg(F.min("t").alias("first")).join(per_customer, "row")
    )
    flags = [
        F.max(
            ((F.col("first") >= lo) & (F.col("first") < hi) & (F.col("first_seen") < lo)).cast(
                "int"
            )
        ).alias(f"p{number}")
        for number, (lo, hi) in enumerate(bounds)
    ]
    counts = (
        first_bought.groupBy("row")
        .agg(*flags)
        .agg(*[F.sum(f"p{n}") for n in range(len(bounds))])
        .first()
    )
    repeat = int(repeat or 0)
    periods = [
        {
            "start": f"{start:%Y-%m-%d}",
            "evaluable_customers": int(counts[n] or 0),
            "coverage": round(int(counts[n] or 0) / max(repeat, 1), 4),
        }
        for n, (start, _) in enumerate(windows)
    ]
    # One protocol is measured on Spark: a second would cost another fit of every model.
    return decide(int(customers), repeat, periods, settings.test_days, measure_both=False)


def _seconds(moment: pd.Timestamp) -> int:
    return int(moment.value // 10**9)


# ----------------------------------------------------------------------------- the folds
def _folds(
    lines: DataFrame, protocol: Protocol, n_items: int, settings: EvaluationSettings, unit: str
) -> tuple[SparkFold, SparkFold | None]:
    """The test fold and the validation fold carved from its training side."""
    from pyspark.sql import functions as F

    seed = settings.random_state
    if protocol.name == RANDOM_HOLDOUT:
        train, held = _holdout_split(lines, seed)
        test = _holdout_fold(train, held, n_items, settings, unit)
        inner_train, inner_held = _holdout_split(train, seed + 1)
        return test, _optional(
            lambda: _holdout_fold(inner_train, inner_held, n_items, settings, unit)
        )
    if protocol.name == NEXT_PURCHASE:
        train, held = _next_purchase_split(lines, 1.0, seed)
        test = _time_fold(train, held, n_items, settings, {"split": NEXT_PURCHASE})
        inner_train, inner_held = _next_purchase_split(train, VALIDATION_SHARE, seed)
        return test, _optional(
            lambda: _time_fold(inner_train, inner_held, n_items, settings, {"split": NEXT_PURCHASE})
        )
    high = lines.agg(F.max("t")).first()[0]
    windows = period_cutoffs(pd.Timestamp(int(high), unit="s"), settings.test_days, 2)

    def period(start: pd.Timestamp, stop: pd.Timestamp) -> SparkFold:
        lo, hi = _seconds(start), _seconds(stop)
        return _time_fold(
            lines.where(F.col("t") < lo),
            lines.where((F.col("t") >= lo) & (F.col("t") < hi)),
            n_items,
            settings,
            {"split": ROLLING, "train_until": f"{start:%Y-%m-%d %H:%M}"},
        )

    return period(*windows[0]), _optional(lambda: period(*windows[1]))


def _optional(build: Any) -> SparkFold | None:
    try:
        return build()
    except DataError as exc:
        logger.warning("spark validation fold skipped: %s", exc)
        return None


def _uniform(F: Any, *columns: Any) -> Any:
    """A number in [0, 1) drawn from the columns' hash (a seeded, reproducible draw per row)."""
    return (F.abs(F.xxhash64(*columns)) % 1_000_000) / 1_000_000.0


def _next_purchase_split(lines: DataFrame, share: float, seed: int) -> tuple[DataFrame, DataFrame]:
    """``data.split.next_purchase_split`` in Spark SQL: each customer's last order (by time,
    then order id) held out, for customers with an earlier purchase time; ``share`` of them
    (seeded hash) when below 1."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order_key = F.coalesce(F.col("order_id").cast("string"), F.col("t").cast("string"))
    orders = (
        lines.withColumn("order", order_key)
        .groupBy("row", "order")
        .agg(F.max("t").alias("order_t"))
    )
    latest = Window.partitionBy("row").orderBy(F.col("order_t").desc(), F.col("order").desc())
    per_customer = Window.partitionBy("row")
    last = (
        orders.withColumn("rank", F.row_number().over(latest))
        .withColumn("first_t", F.min("order_t").over(per_customer))
        .where((F.col("rank") == 1) & (F.col("order_t") > F.col("first_t")))
    )
    if share < 1.0:
        last = last.where(_uniform(F, F.col("row"), F.lit(seed)) < share)
    held_keys = last.select("row", "order")
    keyed = lines.withColumn("order", order_key)
    held = keyed.join(held_keys, ["row", "order"], "left_semi").drop("order")
    train = keyed.join(held_keys, ["row", "order"], "left_anti").drop("order")
    return train, held


def _holdout_split(lines: DataFrame, seed: int) -> tuple[DataFrame, DataFrame]:
    """``HOLDOUT_SHARE`` of the customers (seeded hash) held out whole; the rest trains."""
    from pyspark.sql import functions as F

    held_rows = _uniform(F, F.col("row"), F.lit(seed)) < HOLDOUT_SHARE
    return lines.where(~held_rows), lines.where(held_rows)


def _sample(
    rows: NDArray[np.int64], n_items: int, settings: EvaluationSettings
) -> tuple[NDArray[np.int64], bool]:
    """The rows measured: all, or as many as ``max_eval_users`` (and the score budget) allow."""
    limit = sample_limit(settings, n_items)
    if len(rows) <= limit:
        return rows, False
    return np.sort(
        np.random.default_rng(settings.random_state).choice(rows, limit, replace=False)
    ), True


def _pairs(frame: DataFrame, columns: tuple[str, ...]) -> tuple[NDArray[np.int64], ...]:
    table = frame.select(*columns).toPandas()
    return tuple(table[column].to_numpy(dtype=np.int64) for column in columns)


def _time_fold(
    train: DataFrame,
    test: DataFrame,
    n_items: int,
    settings: EvaluationSettings,
    description: dict[str, Any],
) -> SparkFold:
    """Customers of the training side, measured on the items new to them in ``test``."""
    from pyspark.sql import functions as F

    train, test = _kept(train), _kept(test)
    bought = train.select("row", "item").distinct()
    new = (
        test.select("row", "item")
        .distinct()
        .join(bought.select("row").distinct(), "row", "left_semi")
        .join(bought, ["row", "item"], "left_anti")
    )
    n_targets = new.groupBy("row").count().toPandas()
    if n_targets.empty:
        raise DataError("evaluation: no customer bought anything new in the held-out purchases")
    n_targets = n_targets.sort_values("row")
    rows, sampled = _sample(n_targets["row"].to_numpy(dtype=np.int64), n_items, settings)
    chosen = train.sparkSession.createDataFrame(pd.DataFrame({"row": rows.astype(np.int32)}))
    seen_rows, seen_items = _pairs(bought.join(F.broadcast(chosen), "row"), ("row", "item"))
    target_rows, target_items = _pairs(new.join(F.broadcast(chosen), "row"), ("row", "item"))
    popularity, absent = _training_items(bought, n_items)
    reachable = ~absent[target_items]
    shape = (len(rows), n_items)
    seen = _binary(np.searchsorted(rows, seen_rows), seen_items, shape)
    targets = _binary(np.searchsorted(rows, target_rows[reachable]), target_items[reachable], shape)
    counts = n_targets.set_index("row")["count"].loc[rows].to_numpy(dtype=np.int64)
    held_out = HeldOut(rows, seen, targets, counts, popularity)
    train_until, test_from, test_until = (
        train.agg(F.max("t")).first()[0],
        *test.agg(F.min("t"), F.max("t")).first(),
    )
    description = {
        "train_until": _when(train_until),
        **description,
        "test_from": _when(test_from),
        "test_until": _when(test_until),
        "customers_evaluated": int(len(rows)),
        "target_pairs": int(counts.sum()),
        "unreachable_target_pairs": int(counts.sum() - targets.nnz),
        "train_customers": int(bought.select("row").distinct().count()),
        "train_items": int((~absent).sum()),
    }
    if sampled:
        description["sampled"] = f"{len(rows)} of {len(n_targets)} evaluable customers, at random"
    return SparkFold(
        "time",
        train,
        held_out,
        absent,
        description,
        [],
        train_until,
        settings.neighbours.max_history,
        cached=(train, test),
    )


def _holdout_fold(
    train: DataFrame, held: DataFrame, n_items: int, settings: EvaluationSettings, unit: str
) -> SparkFold:
    """Held-out customers (or baskets) with two or more items, one of them hidden (the lowest
    seeded hash)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    seed = settings.random_state
    train, held = _kept(train), _kept(held)
    pairs = held.select("row", "item").distinct()
    draw = Window.partitionBy("row").orderBy(F.xxhash64("row", "item", F.lit(seed)), "item")
    ranked = (
        pairs.withColumn("rank", F.row_number().over(draw))
        .withColumn("size", F.count("*").over(Window.partitionBy("row")))
        .where(F.col("size") >= 2)
    )
    candidates = np.sort(_pairs(ranked.where(F.col("rank") == 1), ("row",))[0])
    if not len(candidates):
        raise DataError("evaluation: too few customers to hold any out")
    rows, sampled = _sample(candidates, n_items, settings)
    chosen = train.sparkSession.createDataFrame(pd.DataFrame({"row": rows.astype(np.int32)}))
    row_of, item_of, rank_of = _pairs(
        ranked.join(F.broadcast(chosen), "row"), ("row", "item", "rank")
    )
    bought = train.select("row", "item").distinct()
    popularity, absent = _training_items(bought, n_items)
    position = np.searchsorted(rows, row_of)
    shape = (len(rows), n_items)
    query = rank_of > 1
    seen = _binary(position[query], item_of[query], shape)
    hidden = ~query & ~absent[item_of]
    targets = _binary(position[hidden], item_of[hidden], shape)
    held_out = HeldOut(
        np.arange(len(rows), dtype=np.int64),
        seen,
        targets,
        np.ones(len(rows), dtype=np.int64),
        popularity,
    )
    description = {
        "split": RANDOM_HOLDOUT,
        "held_out": f"{len(rows)} {unit}",
        f"train_{unit}": int(bought.select("row").distinct().count()),
        "task": "find the one hidden item from the rest",
    }
    if sampled:
        description["sampled"] = f"{len(rows)} of {len(candidates)} held-out {unit}, at random"
    return SparkFold(
        "holdout",
        train,
        held_out,
        absent,
        description,
        [f"holdout:{number}" for number in range(len(rows))],
        None,
        settings.neighbours.max_history,
        unit,
        cached=(train, held),
    )


def _kept(side: DataFrame) -> DataFrame:
    """One side of a split, computed once: a fold's sides are read by a dozen Spark actions
    (its targets, its description, then every model fitted on it), and each would otherwise
    recompute the split (its windows and joins) from the cleaned lines. Released by
    ``SparkFold.release``."""
    from pyspark import StorageLevel

    return side.persist(StorageLevel.MEMORY_AND_DISK)


def _training_items(
    bought: DataFrame, n_items: int
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Customers (rows) per item on the training side, and the items none bought there."""
    from pyspark.sql import functions as F

    popularity = item_totals(bought.withColumn("one", F.lit(1.0)), "one", n_items).astype(
        np.float64
    )
    return popularity, popularity == 0


def _binary(
    rows: NDArray[np.int64], cols: NDArray[np.int64], shape: tuple[int, int]
) -> sp.csr_matrix:
    matrix = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=shape)
    matrix.data[:] = 1.0
    return matrix


def _when(seconds: int | None) -> str | None:
    return None if seconds is None else f"{pd.Timestamp(int(seconds), unit='s'):%Y-%m-%d %H:%M}"


# ----------------------------------------------------------------------------- scoring
def _item_scores(fold: SparkFold, params: dict[str, Any], max_history: int) -> NDArray[np.float32]:
    """Cosine neighbours fitted by Spark on the fold's training side, each customer's history
    capped as the shipped "also bought" table is; the rows' scores."""
    from pyspark.sql import functions as F

    key = ("knn", tuple(sorted(params.items())), max_history)
    if key not in fold.fitted:
        n_items = len(fold.absent)
        knn = {
            name: int(params[name])
            for name in ("neighbours", "min_support", "min_pair_support")
            if name in params
        }
        latest = fold.train.groupBy("row", "item").agg(F.max("t").alias("last"))
        model = SparkCosineNeighbours(**knn).fit(capped_pairs(latest, max_history), n_items)
        fold.fitted[key] = model.score_rows(fold.held_out.seen)
    return fold.fitted[key]


def _als_scores(fold: SparkFold, als: AlsSettings) -> NDArray[np.float32]:
    from pyspark.sql import functions as F

    key = ("als", als.factors, als.regularization, als.alpha, als.iterations, als.confidence)
    if key not in fold.fitted:
        n_items = len(fold.absent)
        counts = fold.train.groupBy("row", "item").agg(F.count("*").alias("lines"))
        weight = (
            F.lit(1.0) if als.confidence == "binary" else 1.0 + F.log(F.col("lines").cast("double"))
        )
        ratings = counts.select("row", "item", weight.alias("rating")).persist()
        n_rows, nnz = ratings.agg(F.countDistinct("row"), F.count("*")).first()
        params = spark_als_params(
            als.factors, als.regularization, als.alpha, als.iterations, nnz / max(n_rows, 1)
        )
        user_rows, item_rows = fit_als(ratings, params, als.random_state)
        item_factors = _factors(item_rows.toPandas(), n_items, als.factors)
        if fold.timed:
            chosen = fold.train.sparkSession.createDataFrame(
                pd.DataFrame({"id": fold.held_out.rows.astype(np.int32)})
            )
            table = user_rows.join(F.broadcast(chosen), "id").toPandas()
            table["id"] = np.searchsorted(fold.held_out.rows, table["id"].to_numpy())
            user_factors = _factors(table, len(fold.held_out.rows), als.factors)
        else:
            folded = ALS.from_arrays(
                {
                    "user_factors": np.zeros((0, als.factors), dtype=np.float32),
                    "item_factors": item_factors,
                },
                factors=als.factors,
                regularization=als.regularization,
                alpha=als.alpha,
            )
            user_factors = folded.fold_in_rows(fold.held_out.seen)
        ratings.unpersist()
        fold.fitted[key] = (user_factors @ item_factors.T).astype(np.float32)
    return fold.fitted[key]


def _factors(table: pd.DataFrame, length: int, factors: int) -> NDArray[np.float32]:
    out = np.zeros((length, factors), dtype=np.float32)
    if len(table):
        out[table["id"].to_numpy(dtype=np.int64)] = np.stack(table["features"].to_numpy()).astype(
            np.float32
        )
    return out


def _trend(fold: SparkFold, half_life: float) -> NDArray[np.float64]:
    """Trending (each customer's latest purchase of an item, halved every ``half_life`` days
    before the fold's newest) or popularity (customers per item), scaled to 1."""
    from pyspark.sql import functions as F

    key = ("trend", half_life if fold.timed and half_life < POPULARITY_HALF_LIFE else None)
    if key not in fold.fitted:
        if key[1] is None:
            trend = fold.held_out.popularity.astype(np.float64)
        else:
            latest = fold.train.groupBy("row", "item").agg(F.max("t").alias("last"))
            weighted = latest.withColumn(
                "weight",
                F.pow(F.lit(0.5), (F.lit(fold.newest) - F.col("last")) / F.lit(DAY * half_life)),
            )
            trend = item_totals(weighted, "weight", len(fold.absent)).astype(np.float64)
        fold.fitted[key] = trend / trend.max() if trend.max() > 0 else trend
    return fold.fitted[key]


def _scores(
    fold: SparkFold, choice: BlendChoice, als: AlsSettings, max_history: int | None = None
) -> NDArray[np.float64]:
    """Every item's score for the fold's rows under ``choice`` (items absent from the
    training side at minus infinity); neighbours on histories capped at ``max_history``
    (default: the run's)."""
    cap = fold.max_history if max_history is None else max_history
    item = _item_scores(fold, choice.item_params, cap) if choice.item_part > 0 else None
    factors = _als_scores(fold, als) if choice.als_weight > 0 else None
    trend = _trend(fold, choice.trend_half_life_days)
    scores = blend_scores(
        item, factors, trend, choice.als_weight, choice.trend_weight, choice.item_weight
    )
    if scores is None:
        scores = np.tile(trend, (len(fold.held_out.rows), 1))
    scores[:, fold.absent] = -np.inf
    return scores


def _ranked(fold: SparkFold, scores: NDArray[np.float64], depth: int) -> NDArray[np.int64]:
    return top_k(scores, fold.held_out.seen, depth)


# ----------------------------------------------------------------------------- search and measure
def _search(
    fold: SparkFold, protocol: str, settings: EvaluationSettings
) -> tuple[BlendChoice, dict[str, Any]]:
    """Every part alone (neighbours, ALS, trending, popularity) and the neighbours blended with
    ALS and trending over the local engine's weight grids; the noise rule picks."""
    params = {"similarity": "cosine", **knn_params(settings)}
    half_life = settings.trending_half_life_days
    has_als = fold.unit == "customers"  # a basket has no factors of its own to learn
    candidates = [
        BlendChoice("item_knn", params, 0.0, 0.0, half_life),
        BlendChoice("item_knn", params, 0.0, 1.0, POPULARITY_HALF_LIFE, 0.0, 0.0),
    ]
    if has_als:
        candidates.append(BlendChoice("item_knn", params, 1.0, 0.0, half_life))
    if fold.timed:
        candidates.append(BlendChoice("item_knn", params, 0.0, 1.0, half_life, 0.0, 0.0))
    trend_half_life = half_life if fold.timed else POPULARITY_HALF_LIFE
    candidates += [
        BlendChoice("item_knn", params, als_weight, trend_weight, trend_half_life)
        for als_weight in (ALS_WEIGHTS if has_als else (0.0,))
        for trend_weight in TREND_WEIGHTS
        if als_weight or trend_weight
    ]
    rows = {}
    for choice in dict.fromkeys(candidates):
        recommended = _ranked(fold, _scores(fold, choice, settings.als), settings.eval_k)
        rows[choice] = {protocol: row_ndcg(recommended, fold.held_out)}
    choice, rule = simplest_within_noise(rows, settings.random_state)
    table = sorted(rows, key=lambda c: float(rows[c][protocol].mean()), reverse=True)
    return choice, {
        "rule": rule,
        "score": f"NDCG@k on {protocol}",
        "configurations_measured": len(rows),
        "search": [
            {"config": c.label(), f"ndcg {protocol}": round(float(rows[c][protocol].mean()), 5)}
            for c in table
        ],
    }


def _measure(
    fold: SparkFold,
    choice: BlendChoice,
    settings: EvaluationSettings,
    current: dict[str, Any] | None,
    notes: list[str],
) -> dict[str, Any]:
    """The shipped choice, its parts, the serving model's recipe refitted, and popularity, on
    the test fold (used once, after the choice)."""
    shipped_top = _ranked(fold, _scores(fold, choice, settings.als), max(CUTS[-1], SAVED_DEPTH))
    shipped_name = "shipped: " + choice.label()
    results = {shipped_name: held_out_metrics(fold.held_out, np.empty(0), settings, shipped_top)}
    for part in choice.parts():
        if part != choice:
            results["part: " + part.label()] = _metrics(fold, part, settings.als, None, settings)
    recipe = _current_recipe(current, notes)
    if recipe is not None:
        results["current blend"] = _metrics(fold, *recipe, settings)
    results["baseline: popularity"] = _metrics(
        fold,
        BlendChoice("item_knn", choice.item_params, 0.0, 1.0, POPULARITY_HALF_LIFE, 0.0, 0.0),
        settings.als,
        None,
        settings,
    )
    params = {"similarity": "cosine", **knn_params(settings)}
    results["baseline: item-knn cosine (spark)"] = _metrics(
        fold,
        BlendChoice("item_knn", params, 0.0, 0.0, settings.trending_half_life_days),
        settings.als,
        None,
        settings,
    )
    if fold.unit == "customers":
        results["baseline: ALS (spark)"] = _metrics(
            fold,
            BlendChoice("item_knn", params, 1.0, 0.0, settings.trending_half_life_days),
            settings.als,
            None,
            settings,
        )
    return {**headline_figures(results, shipped_name), "recommended": shipped_top}


def _metrics(
    fold: SparkFold, choice: BlendChoice, als: AlsSettings, max_history: int | None, settings: Any
) -> dict[str, Any]:
    scores = _scores(fold, choice, als, max_history)
    return held_out_metrics(fold.held_out, np.empty(0), settings, _ranked(fold, scores, max(CUTS)))


def _current_recipe(
    current: dict[str, Any] | None, notes: list[str]
) -> tuple[BlendChoice, AlsSettings, int | None] | None:
    """The serving model's blend, ALS settings and history cap, from its manifest, when Spark
    can refit them: its item part must be cosine neighbours (a local model's EASE, say, is not)."""
    if not current or not current.get("blend"):
        return None
    try:
        blend = BlendChoice(**current["blend"])
    except TypeError:
        return None
    if blend.item_part > 0 and (
        blend.item_model != "item_knn" or blend.item_params.get("similarity") != "cosine"
    ):
        notes.append(
            f"gate: the current model's item part ({blend.item_label()}) cannot be fitted on Spark; "
            "the gate is not applied"
        )
        return None
    params = current.get("params") or {}
    fields = {field.name for field in dataclasses.fields(TrainConfig)}
    als = dataclasses.replace(
        TrainConfig(),
        **{key: value for key, value in params.items() if key.startswith("als_") and key in fields},
    ).als
    return blend, als, params.get("max_history")


def _predictions(
    fold: SparkFold, recommended: NDArray[np.int64], users: DataFrame, item_ids: NDArray[np.str_]
) -> dict[str, NDArray[Any]]:
    """The shipped model's test rankings and targets, in external ids (as the local engine
    saves them), so the reported figure can be recomputed from the version."""
    from pyspark.sql import functions as F

    if fold.timed:
        chosen = users.sparkSession.createDataFrame(
            pd.DataFrame({"row": fold.held_out.rows.astype(np.int32)})
        )
        table = users.join(F.broadcast(chosen), "row").toPandas().set_index("row")
        row_ids = table.loc[fold.held_out.rows, "user_id"].astype(str).tolist()
    else:
        row_ids = fold.row_ids
    targets = fold.held_out.targets.tocsr()
    targets.sort_indices()
    return {
        "row_ids": np.asarray(row_ids, dtype=np.str_),
        "recommended": np.asarray(item_ids[recommended], dtype=np.str_),
        "targets.indptr": targets.indptr.astype(np.int64),
        "targets.items": np.asarray(item_ids[targets.indices], dtype=np.str_),
        "n_targets": fold.held_out.n_targets.astype(np.int64),
    }
