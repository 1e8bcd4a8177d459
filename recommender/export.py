"""E-mail campaign export: every customer's top picks, streamed to CSV or JSON Lines.

Customers are scored in batches (matrix products, ``serving.batch.top_k_for_users``
does for the API), batches run in parallel threads, and rows are written as each batch
finishes in order, so memory holds a few batches, never all customers. Opted-out and
forgotten customers get no rows.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
from joblib import Parallel, delayed

from .serving.batch import top_k_for_users
from .serving.service import RecommendationService

logger = logging.getLogger(__name__)


def export(
    service: RecommendationService,
    destination: str | Path,
    k: int = 10,
    format: str = "csv",
    excluded_customers: set[str] | frozenset[str] = frozenset(),
    batch_size: int = 2000,
    jobs: int = 2,
    progress: bool | None = None,
) -> dict[str, int]:
    """Write each known customer's top ``k`` to ``destination`` (``-`` for standard output).

    The file is written to a temporary name and renamed when complete, so a campaign tool
    never picks up half a file. Returns counts: customers written and skipped.
    """
    from tqdm import tqdm

    eligible = np.array(
        [i for i, user in enumerate(service.users.ids_.tolist()) if user not in excluded_customers],
        dtype=np.int64,
    )
    skipped = len(service.users) - len(eligible)
    batches = [
        eligible[start : start + batch_size] for start in range(0, len(eligible), batch_size)
    ]
    show = sys.stderr.isatty() if progress is None else progress
    path = None if str(destination) == "-" else Path(destination)
    partial = path.with_name(path.name + ".partial") if path else None
    # UTF-8 and the writers' own line ends, whatever the locale says of standard output.
    if partial is None:
        sys.stdout.flush()
    handle: IO[str] = (
        partial.open("w", newline="", encoding="utf-8")
        if partial
        else io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="")
    )
    written = 0
    try:
        writer = _writer(handle, format)
        results = Parallel(n_jobs=jobs, prefer="threads", return_as="generator")(
            delayed(top_k_for_users)(service, batch, k) for batch in batches
        )
        with tqdm(total=len(eligible), unit="customer", disable=not show, desc="export") as bar:
            for batch, (items, scores) in zip(batches, results):
                for line in _lines(service, batch, items, scores, format):
                    writer(line)
                written += len(batch)
                bar.update(len(batch))
                if not show:
                    logger.info("exported %d of %d customers", written, len(eligible))
    except BaseException:
        if partial:
            handle.close()
            partial.unlink(missing_ok=True)
        raise
    finally:
        if isinstance(handle, io.TextIOWrapper) and partial is None:
            handle.flush()
            handle.detach()  # standard output stays open for the caller
    if partial and path:
        handle.close()
        partial.replace(path)
    logger.info(
        "exported %d customers (%d opted out or forgotten) to %s", written, skipped, destination
    )
    return {"customers": written, "skipped": skipped}


def _writer(handle: IO[str], format: str) -> Any:
    if format == "jsonl":
        return lambda line: handle.write(
            json.dumps(line, ensure_ascii=False, allow_nan=False) + "\n"
        )
    writer = csv.writer(handle)
    writer.writerow(["user_id", "rank", "item_id", "name", "price", "score"])
    return writer.writerows


def _lines(
    service: RecommendationService,
    batch: np.ndarray,
    items: np.ndarray,
    scores: np.ndarray,
    format: str,
) -> Iterator[Any]:
    users = service.users.ids(batch)
    for user, row_items, row_scores in zip(users, items.tolist(), scores.tolist()):
        picks = [(item, score) for item, score in zip(row_items, row_scores) if item >= 0]
        if format == "jsonl":
            yield {
                "user_id": user,
                "recommendations": [
                    {
                        "item_id": str(service.items.ids_[item]),
                        "name": service.names[item],
                        "price": service.prices[item],
                        "score": round(score, 6) if math.isfinite(score) else None,
                    }
                    for item, score in picks
                ],
            }
        else:
            yield [
                [
                    user,
                    rank,
                    str(service.items.ids_[item]),
                    service.names[item],
                    "" if service.prices[item] is None else service.prices[item],
                    f"{score:.6f}" if math.isfinite(score) else "",
                ]
                for rank, (item, score) in enumerate(picks, start=1)
            ]
