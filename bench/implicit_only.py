#!/usr/bin/env python3
"""The baseline: implicit alone on the same log, no cleaning, no tables, no saving.

    python bench/implicit_only.py bench/.cache/log_1M.parquet

Reads user_id,item_id with pandas, builds the binary users x items CSR with pd.factorize,
then times CosineRecommender(K=50).fit and cpu ALS(factors=64, iterations=15,
regularization=0.05).fit with BLAS held to one thread, then implicit's own batch
recommendation for the customers our training precomputes lists for (those who bought within
``--list-days`` of the log's last purchase, all for 0): ``als.recommend(userids,
user_items[userids], N=200)`` (bought items filtered, implicit's default). Prints one JSON
object of seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import pandas as pd
import scipy.sparse as sp
from threadpoolctl import threadpool_limits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="Parquet log with user_id,item_id columns")
    parser.add_argument("--knn-k", type=int, default=50)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--regularization", type=float, default=0.05)
    parser.add_argument("--depth", type=int, default=200, help="N of the batch recommend")
    parser.add_argument(
        "--list-days", type=int, default=90, help="customers active within N days (0: all)"
    )
    args = parser.parse_args(argv)

    import warnings

    import implicit.cpu.als
    import implicit.nearest_neighbours
    from implicit.utils import ParameterWarning

    # implicit's kNN converts an internal COO to CSR and says so; it costs milliseconds.
    warnings.simplefilter("ignore", ParameterWarning)

    result: dict[str, float | int] = {}
    t0 = time.perf_counter()
    columns = ["user_id", "item_id"] + (["timestamp"] if args.list_days > 0 else [])
    frame = pd.read_parquet(args.data, columns=columns)
    result["read_seconds"] = round(time.perf_counter() - t0, 3)

    t = time.perf_counter()
    users, user_values = pd.factorize(frame["user_id"])
    items, item_values = pd.factorize(frame["item_id"])
    if args.list_days > 0:
        stamps = pd.to_datetime(frame["timestamp"]).to_numpy(dtype="datetime64[s]").astype(np.int64)
        latest = np.full(len(user_values), np.iinfo(np.int64).min)
        np.maximum.at(latest, users, stamps)
        listed = np.flatnonzero(stamps.max() - latest <= args.list_days * 86400)
        del stamps
    else:
        listed = np.arange(len(user_values))
    del frame
    user_items = sp.csr_matrix(
        (np.ones(len(users), dtype=np.float32), (users, items)),
        shape=(len(user_values), len(item_values)),
    )
    user_items.sum_duplicates()
    user_items.data[:] = 1.0
    del users, items
    result["csr_seconds"] = round(time.perf_counter() - t, 3)
    result.update(users=user_items.shape[0], items=user_items.shape[1], nnz=int(user_items.nnz))

    with threadpool_limits(1, "blas"):
        t = time.perf_counter()
        cosine = implicit.nearest_neighbours.CosineRecommender(K=args.knn_k)
        cosine.fit(user_items, show_progress=False)
        result["cosine_fit_seconds"] = round(time.perf_counter() - t, 3)
        del cosine

        t = time.perf_counter()
        als = implicit.cpu.als.AlternatingLeastSquares(
            factors=args.factors,
            iterations=args.iterations,
            regularization=args.regularization,
            random_state=42,
        )
        als.fit(user_items, show_progress=False)
        result["als_fit_seconds"] = round(time.perf_counter() - t, 3)

        # What our list pass is measured against: implicit's batch recommend, same customers.
        t = time.perf_counter()
        als.recommend(listed, user_items[listed], N=args.depth)
        result["recommend_seconds"] = round(time.perf_counter() - t, 3)
        result.update(recommend_users=len(listed), recommend_depth=args.depth)

    result["fits_seconds"] = round(result["cosine_fit_seconds"] + result["als_fit_seconds"], 3)
    result["total_seconds"] = round(time.perf_counter() - t0, 3)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
