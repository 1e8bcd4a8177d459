"""Item-to-item neighbours and ALS factors computed by Spark, as the local models compute them.

Both functions take DataFrames of integer indices (``row``, ``item``; the id maps are made
by the caller) and return numpy arrays shaped exactly like the local models' attributes, so
the artifacts written from them are the ones the server already reads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ..algorithms.neighbours import NeighbourModel

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

logger = logging.getLogger(__name__)


class SparkCosineNeighbours(NeighbourModel):
    """Cosine item-to-item neighbours over binary rows (customers or orders), counted with Spark.

    ``cosine(i, j) = shared(i, j) / sqrt(n_i * n_j)``, the local default (``implicit``'s
    ``CosineRecommender`` on a binary matrix). Pairs are counted by a self-join of each row's
    items; like the local engine, the best ``2K + 1`` pairs per item (itself included) are the
    candidates, and items or pairs with too little support are dropped from them before the
    top K is kept (a window function), ties broken by the lower item index.

    ``fit`` takes a DataFrame of distinct ``(row, item)`` integer pairs and ``n_items``; the
    fitted attributes are those of ``NeighbourModel``.
    """

    def __init__(
        self, neighbours: int = 50, min_support: int = 3, min_pair_support: int = 2
    ) -> None:
        self.neighbours = neighbours
        self.min_support = min_support
        self.min_pair_support = min_pair_support

    def describe(self) -> str:
        return "item-knn (cosine, spark)"

    def _candidate_pairs(self, user_items, present):
        raise NotImplementedError("SparkCosineNeighbours.fit takes a Spark DataFrame")

    def fit(self, pairs: DataFrame, n_items: int) -> SparkCosineNeighbours:  # type: ignore[override]
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        started = time.perf_counter()
        pairs = pairs.select("row", "item").persist()
        support = pairs.groupBy("item").agg(F.count("*").alias("n"))
        left = pairs.select(F.col("row"), F.col("item").alias("a"))
        right = pairs.select(F.col("row"), F.col("item").alias("b"))
        shared = (
            left.join(right, "row")
            .where(F.col("a") < F.col("b"))
            .groupBy("a", "b")
            .agg(F.count("*").alias("shared"))
        )
        both_ways = shared.unionByName(
            shared.select(F.col("b").alias("a"), F.col("a").alias("b"), "shared")
        )
        itself = support.select(
            F.col("item").alias("a"), F.col("item").alias("b"), F.col("n").alias("shared")
        )
        n_a = support.select(F.col("item").alias("a"), F.col("n").alias("n_a"))
        n_b = support.select(F.col("item").alias("b"), F.col("n").alias("n_b"))
        scored = (
            both_ways.unionByName(itself)
            .join(F.broadcast(n_a), "a")
            .join(F.broadcast(n_b), "b")
            .withColumn(
                "score", (F.col("shared") / F.sqrt(F.col("n_a") * F.col("n_b"))).cast("float")
            )
        )
        by_score = Window.partitionBy("a").orderBy(F.col("score").desc(), F.col("b"))
        candidates = scored.withColumn("rank", F.row_number().over(by_score)).where(
            F.col("rank") <= 2 * self.neighbours + 1
        )
        kept = (
            candidates.where(
                (F.col("a") != F.col("b"))
                & (F.col("n_a") >= self.min_support)
                & (F.col("n_b") >= self.min_support)
                & (F.col("shared") >= self.min_pair_support)
            )
            .withColumn("rank", F.row_number().over(by_score))
            .where(F.col("rank") <= self.neighbours)
            .select("a", "b", "score", "shared", "rank")
        )
        table = kept.collect()  # n_items x K rows: small
        shape = (n_items, self.neighbours)
        self.neighbour_ids_ = np.full(shape, -1, dtype=np.int32)
        self.neighbour_scores_ = np.zeros(shape, dtype=np.float32)
        self.neighbour_support_ = np.zeros(shape, dtype=np.int32)
        if table:
            a, b, score, count, rank = (np.array(column) for column in zip(*table))
            at = (a.astype(np.int64), rank.astype(np.int64) - 1)
            self.neighbour_ids_[at] = b
            self.neighbour_scores_[at] = score
            self.neighbour_support_[at] = count
        self.item_support_ = _dense(support.collect(), n_items).astype(np.int32)
        pairs.unpersist()
        logger.info(
            "%s (K=%d): %d items with neighbours, %d pairs, %.1fs",
            self.describe(),
            self.neighbours,
            int((self.neighbour_ids_[:, 0] >= 0).sum()),
            len(table),
            time.perf_counter() - started,
        )
        return self


def capped_pairs(customer_items: DataFrame, max_history: int) -> DataFrame:
    """Each customer's ``max_history`` most recent items (``data.matrix.cap_history``) from
    ``(row, item, last)``, so that one heavy buyer cannot make the pair count quadratic."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    pairs = customer_items.select("row", "item", "last")
    if max_history > 0:
        recent = Window.partitionBy("row").orderBy(F.col("last").desc_nulls_last(), F.col("item"))
        pairs = pairs.withColumn("rank", F.row_number().over(recent)).where(
            F.col("rank") <= max_history
        )
    return pairs.select("row", "item")


def _dense(rows: list[tuple[int, float]], length: int) -> NDArray[np.float64]:
    values = np.zeros(length, dtype=np.float64)
    if rows:
        index, value = (np.array(column) for column in zip(*rows))
        values[index.astype(np.int64)] = value
    return values


def item_totals(frame: DataFrame, value: str, n_items: int) -> NDArray[np.float32]:
    """Per item index, the sum of ``value`` over the frame's rows (popularity, trending)."""
    from pyspark.sql import functions as F

    return _dense(frame.groupBy("item").agg(F.sum(value)).collect(), n_items).astype(np.float32)


def spark_als_params(
    factors: int, regularization: float, alpha: float, iterations: int, mean_items_per_user: float
) -> dict[str, float]:
    """``pyspark.ml`` ALS parameters equivalent to the local (``implicit``) ones.

    ``implicit`` weighs an observed cell by ``alpha * w`` and penalises every factor by
    ``regularization``; Spark weighs it by ``1 + alpha * w`` and scales the penalty of a
    user (item) by its number of ratings. So Spark's alpha is ``alpha - 1`` (exact on binary
    purchases) and its penalty ``regularization / mean ratings per user``, which gives the
    average customer the local penalty.
    """
    return {
        "rank": factors,
        "maxIter": iterations,
        "alpha": max(alpha - 1.0, 0.0),
        "regParam": regularization / max(mean_items_per_user, 1.0),
    }


def fit_als(ratings: DataFrame, params: dict[str, float], seed: int) -> tuple[DataFrame, DataFrame]:
    """Fit ``pyspark.ml.recommendation.ALS`` (implicit preferences) on ``(row, item, rating)``;
    return its user and item factor DataFrames (``id``, ``features``)."""
    from pyspark.ml.recommendation import ALS

    started = time.perf_counter()
    model = ALS(
        userCol="row",
        itemCol="item",
        ratingCol="rating",
        implicitPrefs=True,
        nonnegative=False,
        rank=int(params["rank"]),
        maxIter=int(params["maxIter"]),
        regParam=float(params["regParam"]),
        alpha=float(params["alpha"]),
        seed=seed,
        coldStartStrategy="nan",
    ).fit(ratings)
    logger.info("spark als %s: %.1fs", params, time.perf_counter() - started)
    return model.userFactors, model.itemFactors


def factor_block(table: Any) -> NDArray[np.float32]:
    """The ``features`` column of a partition of factor rows (an Arrow table) as one float32
    block (run on the executors, by ``session.stream_blocks``)."""
    import pyarrow.compute as pc

    values = pc.list_flatten(table.column("features")).to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float32).reshape(table.num_rows, -1)


def column_block(name: str, dtype: Any) -> Callable[[Any], NDArray[Any]]:
    """A ``stream_blocks`` converter: one column of the partition's Arrow table as ``dtype``."""

    def block(table: Any) -> NDArray[Any]:
        return np.asarray(table.column(name).to_numpy(zero_copy_only=False)).astype(dtype)

    return block
