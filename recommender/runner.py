"""Which engine trains: the one place that chooses between the local engine
(``training``: pandas and implicit on this machine) and the Spark engine (``spark.training``),
for ``train.py`` and the nightly job."""

from __future__ import annotations

from pathlib import Path

from .config import TrainConfig


def train(config: TrainConfig) -> Path:
    """One training run on the configured engine; returns the new version's directory.

    The local engine runs with BLAS capped to one thread: implicit parallelises its fits with
    OpenMP itself, and a multithreaded BLAS under it oversubscribes the cores. The Spark engine
    is imported only when asked for (pyspark is an optional dependency). Raises as
    ``training.run``.
    """
    if config.engine == "spark":
        from .spark import training as spark_training

        return spark_training.run(config)
    from threadpoolctl import threadpool_limits

    from . import training

    with threadpool_limits(limits=1, user_api="blas"):
        return training.run(config)
