"""Item-to-item neighbours and ALS factors computed by Spark, as the local models compute them.

Both functions take DataFrames of integer indices (``row``, ``item``; the id maps are made
by the caller) and return numpy arrays shaped exactly like the local models' attributes, so
the artifacts written from them are the ones the server already reads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ..algorithms.neighbours import NeighbourModel, largest_per_row, places_in_rows

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

logger = logging.getLogger(__name__)


# The most co-purchased pairs (counted with repeats, each customer's n items making n(n-1)/2)
# one block of customers may hold: a block's sparse count matrix then stays within a few
# hundred MB in its Python worker, and a log with more pairs is cut into more blocks.
PAIRS_PER_BLOCK = 16_000_000
# The most pairs (both ways) one partition of the ranking step may hold at most: its arrays in
# the Python worker then stay under about 300 MB, where 8 partitions of the 20M-line log's
# pairs held several GB each.
RANKED_PER_PARTITION = 4_000_000


class SparkCosineNeighbours(NeighbourModel):
    """Cosine item-to-item neighbours over binary rows (customers or orders), counted with Spark.

    ``cosine(i, j) = shared(i, j) / sqrt(n_i * n_j)``, the local default (``implicit``'s
    ``CosineRecommender`` on a binary matrix). Like the local engine, the best ``2K + 1``
    pairs per item (itself included) are the candidates, and items or pairs with too little
    support are dropped from them before the top K is kept, ties broken by the lower item
    index.

    Two partitioned steps, each a sparse product or a sort in numpy inside Spark's Python
    workers (``mapInArrow``), where a self-join of every row's items, its count and two
    window functions took two to three times as long (``co_purchases``, ``top_candidates``):

    1. the rows are cut into blocks (by row); each block's ``X'X`` (scipy) gives its pairs'
       counts, which Spark adds up over the blocks per pair;
    2. the pairs, both ways, are partitioned by item (more partitions for more pairs,
       ``RANKED_PER_PARTITION``); each partition ranks its items' candidates by score and
       keeps the top K of those with enough support.

    ``fit`` takes a DataFrame of distinct ``(row, item)`` pairs (``item`` an integer index)
    and ``n_items``; the fitted attributes are those of ``NeighbourModel``.
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
        from pyspark.sql import functions as F

        started = time.perf_counter()
        pairs = pairs.select("row", F.col("item").cast("int").alias("item")).persist()
        support = _dense(
            pairs.groupBy("item").agg(F.count("*").alias("n")).collect(), n_items
        ).astype(np.int64)
        sizes = pairs.groupBy("row").agg(F.count("*").alias("n"))
        instances = sizes.agg(F.sum(F.col("n") * (F.col("n") - 1) / 2)).first()[0] or 0
        context = pairs.sparkSession.sparkContext
        blocks = max(context.defaultParallelism, int(np.ceil(instances / PAIRS_PER_BLOCK)))
        shared = (
            pairs.repartition(blocks, "row")
            .mapInArrow(co_purchases(n_items), "a int, b int, shared long")
            .groupBy("a", "b")
            .agg(F.sum("shared").alias("shared"))
        )
        both_ways = shared.unionByName(
            shared.select(F.col("b").alias("a"), F.col("a").alias("b"), "shared")
        )
        counts = context.broadcast(support)
        ranking = top_candidates(counts, self.neighbours, self.min_support, self.min_pair_support)
        partitions = max(
            int(pairs.sparkSession.conf.get("spark.sql.shuffle.partitions") or 1),
            int(np.ceil(2 * instances / RANKED_PER_PARTITION)),
        )
        table = (
            both_ways.repartition(partitions, "a")
            .mapInArrow(ranking, "a int, b int, score float, shared long, rank int")
            .collect()
        )  # n_items x K rows: small
        counts.destroy()
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
        self.item_support_ = support.astype(np.int32)
        pairs.unpersist()
        logger.info(
            "%s (K=%d): %d items with neighbours, %d pairs in %d blocks, %.1fs",
            self.describe(),
            self.neighbours,
            int((self.neighbour_ids_[:, 0] >= 0).sum()),
            len(table),
            blocks,
            time.perf_counter() - started,
        )
        return self


def co_purchases(n_items: int) -> Callable[[Iterator[Any]], Iterator[Any]]:
    """The ``mapInArrow`` function of step 1: a block of ``(row, item)`` pairs (whole rows)
    to ``(a, b, shared)`` with ``a < b``, the block's upper triangle of ``X'X``."""

    def count(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa
        import scipy.sparse as sp

        collected = list(batches)
        if not collected:
            return
        block = pa.Table.from_batches(collected)
        if not block.num_rows:
            return
        # Rows numbered within the block (any key type: order ids are strings).
        rows = block.column("row").combine_chunks().dictionary_encode().indices.to_numpy()
        items = block.column("item").to_numpy()
        matrix = sp.csr_matrix(
            (np.ones(len(items), dtype=np.int32), (rows, items)),
            shape=(int(rows.max()) + 1, n_items),
        )
        counts = sp.triu(matrix.T.tocsr() @ matrix, k=1).tocoo()
        yield pa.RecordBatch.from_arrays(
            [
                pa.array(counts.row.astype(np.int32)),
                pa.array(counts.col.astype(np.int32)),
                pa.array(counts.data.astype(np.int64)),
            ],
            names=["a", "b", "shared"],
        )

    return count


def top_candidates(
    support: Any, neighbours: int, min_support: int, min_pair_support: int
) -> Callable[[Iterator[Any]], Iterator[Any]]:
    """The ``mapInArrow`` function of step 2, over a partition holding every pair of its
    items ``a`` (both ways): each ``a``'s ``2K + 1`` best by score (itself included, score
    desc, then ``b``), then of those with ``a != b`` and enough support, the best ``K``,
    ranked from 1. ``support``: the broadcast items' counts.

    The score is Spark SQL's ``(shared / sqrt(n_a * n_b)).cast("float")``: the same float64
    division and square root of the exact integer product, rounded to float32 once."""

    def rank(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa

        collected = list(batches)
        if not collected:
            return
        part = pa.Table.from_batches(collected)
        counts = support.value
        first = part.column("a").to_numpy().astype(np.int64)
        present = np.unique(first)
        a = np.concatenate([first, present])
        b = np.concatenate([part.column("b").to_numpy().astype(np.int64), present])
        shared = np.concatenate([part.column("shared").to_numpy(), counts[present]])
        by_item = np.argsort(a, kind="stable")
        a, b, shared = a[by_item], b[by_item], shared[by_item]
        n_a, n_b = counts[a], counts[b]
        score = (shared / np.sqrt((n_a * n_b).astype(np.float64))).astype(np.float32)
        # The local engine's selection: per item, best score first, ties to the lower item.
        candidates = largest_per_row(a, b, score, len(counts), 2 * neighbours + 1)
        a, b, shared, score, n_a, n_b = (x[candidates] for x in (a, b, shared, score, n_a, n_b))
        kept = (a != b) & (n_a >= min_support) & (n_b >= min_support) & (shared >= min_pair_support)
        a, b, shared, score = a[kept], b[kept], shared[kept], score[kept]
        place = places_in_rows(a, len(counts))
        best = place < neighbours
        yield pa.RecordBatch.from_arrays(
            [
                pa.array(a[best].astype(np.int32)),
                pa.array(b[best].astype(np.int32)),
                pa.array(score[best]),
                pa.array(shared[best].astype(np.int64)),
                pa.array((place[best] + 1).astype(np.int32)),
            ],
            names=["a", "b", "score", "shared", "rank"],
        )

    return rank


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
    return its user and item factor DataFrames (``id``, ``features``).

    Users and items are cut into one block per core Spark has (its default parallelism)
    instead of ALS's fixed 10: each half-step is then one task per core, and on two local
    cores a fit on the shipped log takes 7-8 s against 14-22 s with 10 blocks, the rest
    being tasks' and shuffles' overhead (docs/spark.md)."""
    from pyspark.ml.recommendation import ALS

    started = time.perf_counter()
    blocks = max(1, int(ratings.sparkSession.sparkContext.defaultParallelism))
    model = ALS(
        numUserBlocks=blocks,
        numItemBlocks=blocks,
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
    logger.info("spark als %s, %d blocks: %.1fs", params, blocks, time.perf_counter() - started)
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
