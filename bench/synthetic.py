#!/usr/bin/env python3
"""Deterministic synthetic purchase log (Parquet, generic column names) for benchmarks.

    python bench/synthetic.py --lines 1000000 --users 100000 --items 10000 --seed 42 \
        --out bench/.cache/log_1M.parquet

Columns: user_id ("u<n>"), item_id ("i<n>"), timestamp (datetime64[us]), quantity (int),
order_id ("o<n>"), price (float), name ("Item <n>").

Skew:
- item popularity: Zipf-Mandelbrot, p(rank r) ~ 1 / (r + offset) ** exponent (exponent 1.1 by
  default; the offset flattens the very head the way real shop logs do: pure Zipf over 50,000
  items would put ~14 % of all lines on one item). Ranks are shuffled onto item ids.
- customer activity: each customer gets a Pareto(shape 2) weight (a power-law tail); orders
  pick their customer with probability proportional to it.
- orders: baskets of 1-10 lines (P(size = s) ~ 1 / s, so mean ~3.4), one customer per order,
  all lines of an order share its timestamp; timestamps uniform over 2025.

Generated in chunks with numpy and written with pyarrow's ParquetWriter, so memory stays
bounded (a few hundred MiB) whatever --lines is. Same arguments and seed, same file contents.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

YEAR_START = np.datetime64("2025-01-01T00:00:00", "s").astype(np.int64)
YEAR_SECONDS = 365 * 86400
MAX_BASKET = 10
SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("timestamp", pa.timestamp("us")),
        ("quantity", pa.int32()),
        ("order_id", pa.string()),
        ("price", pa.float64()),
        ("name", pa.string()),
    ]
)


def _prefixed(prefix: str, values: np.ndarray) -> pa.Array:
    """'<prefix><n>' strings built by pyarrow (no per-value Python loop)."""
    digits = pc.cast(pa.array(values, type=pa.int64()), pa.string())
    return pc.binary_join_element_wise(pa.scalar(prefix), digits, "")


def _cdf(weights: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(weights, dtype=np.float64)
    cdf /= cdf[-1]
    return cdf


def generate(
    lines: int,
    users: int,
    items: int,
    seed: int,
    out: Path,
    *,
    item_exponent: float = 1.1,
    item_offset: float = 20.0,
    user_shape: float = 2.0,
    chunk_lines: int = 1_000_000,
) -> dict:
    rng = np.random.default_rng(seed)
    # Item popularity by rank, ranks shuffled onto item ids.
    ranks = np.arange(1, items + 1, dtype=np.float64)
    item_cdf = _cdf((ranks + item_offset) ** -item_exponent)
    item_of_rank = rng.permutation(items)
    # Per-item price (log-normal, 2 decimals) and name, fixed for the whole log.
    item_price = np.round(np.exp(rng.normal(1.2, 0.8, size=items)), 2) + 0.01
    # Customer activity: Pareto weights (power-law tail).
    user_cdf = _cdf(rng.pareto(user_shape, size=users) + 1.0)
    sizes = np.arange(1, MAX_BASKET + 1)
    size_p = 1.0 / sizes
    size_p /= size_p.sum()

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    written, next_order = 0, 0
    started = time.perf_counter()
    with pq.ParquetWriter(tmp, SCHEMA, compression="snappy") as writer:
        while written < lines:
            want = min(chunk_lines, lines - written)
            # Enough baskets for `want` lines (mean size ~3.4), last one trimmed.
            basket = rng.choice(sizes, size=int(want / 3.0) + 16, p=size_p)
            while basket.sum() < want:
                basket = np.concatenate(
                    [basket, rng.choice(sizes, size=int(want / 3.0) + 16, p=size_p)]
                )
            ends = np.cumsum(basket)
            n_orders = int(np.searchsorted(ends, want)) + 1
            basket = basket[:n_orders].copy()
            basket[-1] -= int(ends[n_orders - 1] - want)
            order_user = np.searchsorted(user_cdf, rng.random(n_orders), side="right")
            order_time = YEAR_START + rng.integers(0, YEAR_SECONDS, size=n_orders)
            order_idx = np.repeat(np.arange(n_orders), basket)
            item = item_of_rank[np.searchsorted(item_cdf, rng.random(want), side="right")]
            quantity = rng.geometric(0.5, size=want).astype(np.int32)  # 1, 2, 3, ... halving
            table = pa.table(
                {
                    "user_id": _prefixed("u", order_user[order_idx]),
                    "item_id": _prefixed("i", item),
                    "timestamp": pa.array(
                        (order_time[order_idx] * 1_000_000).astype("datetime64[us]")
                    ),
                    "quantity": pa.array(quantity),
                    "order_id": _prefixed("o", next_order + order_idx),
                    "price": pa.array(item_price[item]),
                    "name": _prefixed("Item ", item),
                },
                schema=SCHEMA,
            )
            writer.write_table(table, row_group_size=len(table))
            written += want
            next_order += n_orders
            del table, item, order_idx, quantity
    tmp.replace(out)
    return {
        "path": str(out),
        "lines": lines,
        "users": users,
        "items": items,
        "seed": seed,
        "orders": next_order,
        "item_exponent": item_exponent,
        "item_offset": item_offset,
        "user_pareto_shape": user_shape,
        "bytes": out.stat().st_size,
        "seconds": round(time.perf_counter() - started, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, required=True)
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--items", type=int, required=True)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--item-exponent", type=float, default=1.1, help="Zipf exponent of item popularity"
    )
    parser.add_argument(
        "--item-offset", type=float, default=20.0, help="Zipf-Mandelbrot offset (0 = pure Zipf)"
    )
    parser.add_argument(
        "--user-shape", type=float, default=2.0, help="Pareto shape of customer activity"
    )
    parser.add_argument("--chunk-lines", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    info = generate(
        args.lines,
        args.users,
        args.items,
        args.seed,
        args.out,
        item_exponent=args.item_exponent,
        item_offset=args.item_offset,
        user_shape=args.user_shape,
        chunk_lines=args.chunk_lines,
    )
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
