"""Starting (or joining) the Spark session a training run uses."""

from __future__ import annotations

import io
import os
import re
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ..config import TrainConfig
from ..errors import ConfigError, DataError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def spark_session(config: TrainConfig) -> SparkSession:
    """The active session (under ``spark-submit``) or a new one for ``config.spark_master``.

    Raises ``ConfigError`` when pyspark (or the Java it needs) is missing, with the fix.
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise ConfigError(
            "engine: spark needs pyspark; install it with make install-spark "
            "(pip install '.[spark]')"
        ) from None
    active = SparkSession.getActiveSession()
    if active is not None and config.spark_master is None:
        return active
    builder = SparkSession.builder.appName("recommender-train")
    # Under spark-submit (which starts the JVM and says so in PYSPARK_GATEWAY_PORT) the master
    # is spark-submit's --master unless --spark-master overrides it.
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ
    master = config.spark_master or ("" if submitted else "local[*]")
    if master:
        builder = builder.master(master)
    settings = {
        "spark.sql.session.timeZone": "UTC",
        # Bad values become NULL (then rejected by cleaning and counted), as in pandas.
        "spark.sql.ansi.enabled": "false",
        # Parquet written by pandas stores nanosecond times, which Spark reads only as numbers.
        "spark.sql.legacy.parquet.nanosAsLong": "true",
        "spark.sql.adaptive.enabled": "true",
        "spark.ui.showConsoleProgress": "false",
    }
    if not submitted:  # spark-submit has started the driver JVM with its own --driver-memory
        settings["spark.driver.memory"] = config.spark_driver_memory
    if master.startswith("local"):
        # Local workers run this interpreter (its packages, pyarrow included), not whichever
        # python3 is first on PATH; a cluster's is PYSPARK_PYTHON (docs/spark.md).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if master.startswith("local") and not submitted:
        # Local tasks run in the driver JVM, whose default 1 MiB thread stack an ALS fit's
        # lineage (one step per iteration, with no checkpoint directory to cut it) can
        # overflow when Spark serialises it: seen once in the tests, as a StackOverflowError.
        settings["spark.driver.extraJavaOptions"] = "-Xss16m"
    if config.spark_partitions:
        settings["spark.sql.shuffle.partitions"] = str(config.spark_partitions)
    elif (
        master.startswith("local") and not submitted
    ):  # Spark's 200 suits a cluster, not a few local cores
        settings["spark.sql.shuffle.partitions"] = str(max(8, 4 * (os.cpu_count() or 2)))
    for key, value in settings.items():
        builder = builder.config(key, value)
    try:
        session = builder.getOrCreate()
    except Exception as exc:  # py4j / JVM start-up failures share no base class
        raise ConfigError(
            f"spark_master: cannot start Spark at {master or 'spark-submit master'!r}: "
            f"{first_line(exc)} "
            "(is Java 17 installed and JAVA_HOME set?)"
        ) from None
    session.sparkContext.setLogLevel("WARN")
    return session


def data_uri(path: object) -> str:
    """The log's location as Spark expects it (a URI such as ``s3a://bucket/log/`` stays as given).

    A local path that does not exist is a ``DataError`` here, before the minutes of starting Spark.
    """
    text = str(path)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text):
        return text
    if not os.path.exists(text):
        raise DataError(f"{text}: file not found")
    return os.path.abspath(text)


def stream_blocks(
    frame: DataFrame, to_block: Callable[[Any], NDArray[Any]]
) -> Iterator[NDArray[Any]]:
    """The rows of a sorted DataFrame as numpy blocks, one partition at a time, in order.

    Each partition reaches the executor's Python worker as Arrow record batches
    (``mapInArrow``), where ``to_block`` turns the partition's ``pyarrow.Table`` into one
    compact array (column to numpy, no Python object per row); only that array's bytes travel
    to the driver, partition by partition, so arrays of any length (user factors of millions
    of customers) are written without the driver holding them. A partition's block must stay
    under 2 GB (Arrow's binary values): Spark's default partition sizes are far below it.
    """
    blocks = frame.mapInArrow(_encoder(to_block), "block binary").rdd
    context = frame.sparkSession.sparkContext
    for partition in range(blocks.getNumPartitions()):
        for row in context.runJob(blocks, lambda part: part, [partition]):
            block = np.load(io.BytesIO(row["block"]), allow_pickle=False)
            if len(block):
                yield block


def _encoder(to_block: Callable[[Any], NDArray[Any]]) -> Callable[[Iterator[Any]], Iterator[Any]]:
    """The ``mapInArrow`` function: a partition's batches to one ``.npy`` payload."""

    def encode(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa

        collected = list(batches)
        if not collected:
            return
        buffer = io.BytesIO()
        np.save(buffer, to_block(pa.Table.from_batches(collected)), allow_pickle=False)
        yield pa.RecordBatch.from_arrays(
            [pa.array([buffer.getvalue()], type=pa.binary())], names=["block"]
        )

    return encode


def first_line(exc: BaseException) -> str:
    """The first line of an error (py4j messages carry a Java stack trace after it)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
