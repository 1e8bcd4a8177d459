"""Quality measured black-box: train with train.py in a subprocess, serve with serve.py, ask
the HTTP API, score the answers. Nothing here imports the recommender package.

Cases (``--cases``, default all):

``retail``
    The reference protocol of shared/ANCHORS.md on the Online Retail log: train on every line
    before 2011-11-09, then ask ``GET /v1/users/<id>/recommendations?k=20`` for every customer
    of the training side who bought an item new to them from that date; NDCG@10 (and P, R,
    HR) against those new items (unreachable ones kept in the denominators).
``retail-repeats``
    ANCHORS.md's "repeats included" protocol: the same cut; the targets are every distinct item
    each customer of the training side bought from 2011-11-09, rebuys included. Served: the
    buy-again row (``GET /v1/users/<id>/buy-again?k=20``) and personal picks with
    ``exclude_purchased`` false, repeat, true and the model's default; references computed
    here from the same reference-cleaned training lines: P-TopFreq (the customer's items by
    the number of orders that held them; ties: the latest bought first, then the item id), the
    same with each order weighted exp(-age / 60 days), and popularity. Each served list also
    as the paired difference from the better P-TopFreq (same customers).
``groceries-baskets`` / ``groceries-customers``
    Groceries baskets shuffled with seed 42, 80% trained (as a basket log, or as a customer log
    with ``user_id`` = basket and one timestamp for every line); in each held-out basket of
    two or more items one item is hidden and ``POST /v1/recommendations`` gets the rest; HR@10.
``burst-retail`` / ``burst-synthetic``
    Logs of customers active in short bursts spread over the calendar (the retail log with
    each customer's orders cut to a 21-day burst; a synthetic log of taste groups). Each
    customer's last order is held out, the rest trained; the model's answers are scored
    against the new items of that order, beside EASE alone and implicit's cosine kNN fitted
    here on the same training lines (NDCG@10). Targets and references keep the lines of the
    ANCHORS.md reference cleaning (products only: postage, manual lines and carriage are not
    something to recommend, and the trainer drops them). The trainer's protocol choice is read from
    ``GET /v1/model``.

Every figure has a bootstrap 95% interval over customers (or baskets). Results go to
bench/results/quality.json with the command and the commit.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results"
PYTHON = sys.executable
CASES = (
    "retail",
    "retail-repeats",
    "groceries-baskets",
    "groceries-customers",
    "burst-retail",
    "burst-synthetic",
)


# ----------------------------------------------------------------------------- train and serve
def train(log: Path, models: Path, *extra: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [
            PYTHON,
            str(ROOT / "train.py"),
            "--data",
            str(log),
            "--models-dir",
            str(models),
            "--activity-db",
            str(models / "activity.sqlite3"),
            *extra,
        ],
        check=True,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return time.perf_counter() - started


class Server:
    """serve.py (gunicorn) on a free port of 127.0.0.1, stopped on exit."""

    def __init__(self, models: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                PYTHON,
                str(ROOT / "serve.py"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--models-dir",
                str(models),
                "--activity-db",
                str(models / "activity.sqlite3"),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                self.get("/ready")
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("server did not start") from None
                time.sleep(0.3)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.base + path, timeout=30) as response:
            return json.loads(response.read())

    def post(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


# ----------------------------------------------------------------------------- metrics
def ndcg_row(ranked: list[str], targets: set[str], n_targets: int, k: int = 10) -> float:
    gains = sum(1.0 / np.log2(i + 2) for i, item in enumerate(ranked[:k]) if item in targets)
    ideal = sum(1.0 / np.log2(i + 2) for i in range(min(n_targets, k)))
    return gains / ideal if ideal else 0.0


def summary(values: list[float], seed: int = 0) -> dict[str, Any]:
    values_array = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = values_array[rng.integers(0, len(values_array), size=(1000, len(values_array)))].mean(
        axis=1
    )
    low, high = np.quantile(means, [0.025, 0.975])
    return {
        "mean": round(float(values_array.mean()), 4),
        "ci95": [round(float(low), 4), round(float(high), 4)],
        "n": int(len(values_array)),
    }


def scored(
    rankings: dict[str, list[str]], targets: dict[str, set[str]], counts: dict[str, int]
) -> dict[str, Any]:
    ndcg = [ndcg_row(rankings[u], targets[u], counts[u]) for u in targets]
    hits = [float(bool(set(rankings[u][:10]) & targets[u])) for u in targets]
    precision = [len(set(rankings[u][:10]) & targets[u]) / 10 for u in targets]
    recall = [len(set(rankings[u][:10]) & targets[u]) / counts[u] for u in targets]
    return {
        "ndcg@10": summary(ndcg),
        "hit_rate@10": summary(hits),
        "precision@10": summary(precision),
        "recall@10": summary(recall),
    }


# ----------------------------------------------------------------------------- references fitted here
def reference_rankings(
    train_pairs: pd.DataFrame, users: list[str], k: int = 20
) -> dict[str, dict[str, list[str]]]:
    """EASE (l2=250) and implicit's cosine kNN (K=100) on the binary customer x item matrix of
    ``train_pairs`` (user_id, item_id), seen items excluded: the baselines of the issue."""
    from implicit.nearest_neighbours import CosineRecommender

    user_index = {u: i for i, u in enumerate(train_pairs["user_id"].unique())}
    item_ids = train_pairs["item_id"].unique()
    item_index = {it: i for i, it in enumerate(item_ids)}
    matrix = sp.csr_matrix(
        (
            np.ones(len(train_pairs), dtype=np.float32),
            (train_pairs["user_id"].map(user_index), train_pairs["item_id"].map(item_index)),
        ),
        shape=(len(user_index), len(item_ids)),
    )
    matrix.data[:] = 1.0
    rows = np.array([user_index[u] for u in users])
    gram = (matrix.T @ matrix).toarray().astype(np.float64)
    gram[np.diag_indices(len(gram))] += 250.0
    inverse = np.linalg.inv(gram)
    ease = -inverse / np.diag(inverse)
    np.fill_diagonal(ease, 0.0)
    cosine = CosineRecommender(K=100)
    cosine.fit(matrix, show_progress=False)
    out: dict[str, dict[str, list[str]]] = {}
    for name, scores in (
        ("EASE l2=250", matrix[rows] @ ease),
        ("implicit cosine K=100", (matrix[rows] @ cosine.similarity).toarray()),
    ):
        scores = np.asarray(scores, dtype=np.float64)
        scores[matrix[rows].nonzero()] = -np.inf
        best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        out[name] = {u: item_ids[best[i]].tolist() for i, u in enumerate(users)}
    return out


# ----------------------------------------------------------------------------- cases
def reference_lines(lines: pd.DataFrame) -> pd.Series:
    """The lines ANCHORS.md's reference cleaning keeps: sales (all-digit invoices, quantity and
    price above 0) of products (stock codes of five digits and up to two letters: no postage,
    manual lines or bank charges)."""
    return (
        lines["InvoiceNo"].astype(str).str.fullmatch(r"\d+")
        & (lines["Quantity"] > 0)
        & (lines["UnitPrice"] > 0)
        & lines["StockCode"].astype(str).str.fullmatch(r"\d{5}[A-Z]{0,2}")
    )


def retail_reference(raw: pd.DataFrame) -> pd.DataFrame:
    """The reference cleaning of shared/ANCHORS.md."""
    data = raw[raw["CustomerID"].notna()].copy()
    data = data[reference_lines(data)]
    data["user_id"] = data["CustomerID"].astype(int).astype(str)
    data["item_id"] = data["StockCode"].astype(str)
    return data


def case_retail(work: Path) -> dict[str, Any]:
    raw = pd.read_parquet(SHARED / "online_retail.parquet")
    cut = pd.Timestamp("2011-11-09")
    log = work / "retail_train.parquet"
    raw[raw["InvoiceDate"] < cut].to_parquet(log, index=False)
    reference = retail_reference(raw)
    before, after = (
        reference[reference["InvoiceDate"] < cut],
        reference[reference["InvoiceDate"] >= cut],
    )
    bought = before.groupby("user_id")["item_id"].agg(set)
    targets: dict[str, set[str]] = {}
    for user, items in after.groupby("user_id")["item_id"].agg(set).items():
        if user in bought.index:
            new = items - bought[user]
            if new:
                targets[user] = new
    models = work / "models_retail"
    seconds = train(log, models)
    with Server(models) as server:
        rankings = {
            u: [
                r["item_id"]
                for r in server.get(f"/v1/users/{u}/recommendations?k=20&exclude_purchased=true")[
                    "recommendations"
                ]
            ]
            for u in targets
        }
        model = server.get("/v1/model")
    result = scored(rankings, targets, {u: len(t) for u, t in targets.items()})
    return {
        "protocol": "shared/ANCHORS.md: train < 2011-11-09, top 20 over GET /v1/users/<id>/recommendations",
        "customers": len(targets),
        "train_seconds": round(seconds, 1),
        "served": result,
        "shipped": model["evaluation"].get("shipped"),
        "trainer_protocol": model["evaluation"].get("protocol"),
        "trainer_reported": {
            "ndcg@10": model["evaluation"].get("value"),
            "ci95": model["evaluation"].get("ci95"),
        },
    }


def p_topfreq(
    before: pd.DataFrame, users: list[str], decay_days: float | None
) -> dict[str, list[str]]:
    """Each customer's items by the orders that held them (each weighted exp(-age / decay_days)
    before the cut, with a decay), ties: the latest bought first, then the item id."""
    orders = before.drop_duplicates(["user_id", "item_id", "InvoiceNo"]).copy()
    end = before["InvoiceDate"].max()
    age = (end - orders["InvoiceDate"]).dt.total_seconds() / 86400.0
    orders["weight"] = np.exp(-age / decay_days) if decay_days else 1.0
    per_item = orders.groupby(["user_id", "item_id"]).agg(
        weight=("weight", "sum"), last=("InvoiceDate", "max")
    )
    per_item = per_item.reset_index().sort_values(
        ["user_id", "weight", "last", "item_id"], ascending=[True, False, False, True]
    )
    ranked = per_item.groupby("user_id")["item_id"].agg(list)
    return {u: ranked.get(u, [])[:20] for u in users}


def case_retail_repeats(work: Path) -> dict[str, Any]:
    raw = pd.read_parquet(SHARED / "online_retail.parquet")
    cut = pd.Timestamp("2011-11-09")
    log = work / "retail_train.parquet"
    raw[raw["InvoiceDate"] < cut].to_parquet(log, index=False)
    reference = retail_reference(raw)
    before = reference[reference["InvoiceDate"] < cut]
    after = reference[reference["InvoiceDate"] >= cut]
    bought = before.groupby("user_id")["item_id"].agg(set)
    targets = {
        user: items
        for user, items in after.groupby("user_id")["item_id"].agg(set).items()
        if user in bought.index
    }
    users = sorted(targets)
    rebought = sum(len(targets[u] & bought[u]) for u in users) / sum(
        len(t) for t in targets.values()
    )
    models = work / "models_retail_repeats"
    seconds = train(log, models)
    lists: dict[str, dict[str, list[str]]] = {}
    with Server(models) as server:
        for name, path in (
            ("served: buy again", "buy-again?k=20"),
            ("served: exclude_purchased=false", "recommendations?k=20&exclude_purchased=false"),
            ("served: exclude_purchased=repeat", "recommendations?k=20&exclude_purchased=repeat"),
            ("served: exclude_purchased=true", "recommendations?k=20&exclude_purchased=true"),
            ("served: the default", "recommendations?k=20"),
        ):
            lists[name] = {
                u: [r["item_id"] for r in server.get(f"/v1/users/{u}/{path}")["recommendations"]]
                for u in users
            }
        default_mode = server.get(f"/v1/users/{users[0]}/recommendations?k=1").get(
            "exclude_purchased"
        )
        model = server.get("/v1/model")
    lists["P-TopFreq"] = p_topfreq(before, users, None)
    lists["P-TopFreq, decayed 60 days"] = p_topfreq(before, users, 60.0)
    popular = before.groupby("item_id")["user_id"].nunique().sort_values(ascending=False)
    lists["popularity"] = {u: popular.index[:20].tolist() for u in users}
    counts = {u: len(t) for u, t in targets.items()}
    results = {name: scored(ranked, targets, counts) for name, ranked in lists.items()}
    per_row = {
        name: np.array([ndcg_row(ranked[u], targets[u], counts[u]) for u in users])
        for name, ranked in lists.items()
    }
    anchor = max(("P-TopFreq", "P-TopFreq, decayed 60 days"), key=lambda n: per_row[n].mean())
    paired = {
        name: {"against": anchor, **summary(list(per_row[name] - per_row[anchor]))}
        for name in lists
        if name.startswith("served")
    }
    return {
        "protocol": "shared/ANCHORS.md, repeats included: train < 2011-11-09, every item bought "
        "from then, top 20 over the HTTP API",
        "customers": len(users),
        "rebought_share": round(rebought, 4),
        "train_seconds": round(seconds, 1),
        "default_exclude_purchased": default_mode,
        "results": results,
        "paired_ndcg@10": paired,
        "trainer_reported": (model["evaluation"] or {}).get("repeats"),
    }


def groceries_split(seed: int = 42) -> tuple[list[list[str]], list[list[str]]]:
    lines = (SHARED / "groceries.csv").read_text().splitlines()
    baskets = [
        list(dict.fromkeys(item.strip() for item in line.split(",") if item.strip()))
        for line in lines
    ]
    baskets = [b for b in baskets if b]
    order = np.random.default_rng(seed).permutation(len(baskets))
    n_train = int(0.8 * len(baskets))
    return [baskets[i] for i in order[:n_train]], [baskets[i] for i in order[n_train:]]


def case_groceries(work: Path, as_customers: bool) -> dict[str, Any]:
    train_baskets, test_baskets = groceries_split()
    if as_customers:
        log = work / "groceries_customers.csv"
        rows = [(f"b{n}", item) for n, basket in enumerate(train_baskets) for item in basket]
        frame = pd.DataFrame(rows, columns=["user_id", "item_id"])
        frame["timestamp"] = "2024-01-01 00:00:00"
        frame.to_csv(log, index=False)
        extra: tuple[str, ...] = ()
    else:
        log = work / "groceries_baskets.csv"
        log.write_text("\n".join(",".join(b) for b in train_baskets) + "\n")
        extra = ("--format", "baskets")
    models = work / ("models_groceries_c" if as_customers else "models_groceries_b")
    seconds = train(log, models, *extra)
    rng = np.random.default_rng(42)
    hits = []
    with Server(models) as server:
        for basket in test_baskets:
            if len(basket) < 2:
                continue
            position = int(rng.integers(len(basket)))
            query = basket[:position] + basket[position + 1 :]
            answer = server.post("/v1/recommendations", {"items": query, "k": 10})
            hits.append(
                float(basket[position] in [r["item_id"] for r in answer["recommendations"]])
            )
        model = server.get("/v1/model")
    return {
        "protocol": "groceries shuffled (seed 42), 80% trained; one hidden item per held-out basket of 2+, "
        "POST /v1/recommendations with the rest",
        "train_seconds": round(seconds, 1),
        "served": {"hit_rate@10": summary(hits)},
        "shipped": model["evaluation"].get("shipped"),
        "trainer_protocol": model["evaluation"].get("protocol"),
    }


def burst_retail_log() -> pd.DataFrame:
    """The retail log with each customer's orders cut to a 21-day burst from one of their orders
    (chosen at random, seed 0): customers active in bursts spread over the year."""
    raw = pd.read_parquet(SHARED / "online_retail.parquet")
    raw = raw[raw["CustomerID"].notna()].copy()
    rng = np.random.default_rng(0)
    orders = raw.groupby(["CustomerID", "InvoiceNo"])["InvoiceDate"].max().reset_index()
    starts = orders.groupby("CustomerID")["InvoiceDate"].agg(lambda s: s.iloc[rng.integers(len(s))])
    start = raw["CustomerID"].map(starts)
    return raw[(raw["InvoiceDate"] >= start) & (raw["InvoiceDate"] < start + pd.Timedelta(days=21))]


def burst_synthetic_log(
    customers: int = 6000, items: int = 1500, groups: int = 30, seed: int = 0
) -> pd.DataFrame:
    """Customers of ``groups`` taste groups (each group favours its own tenth of the catalog),
    each active for 2-5 orders within a 30-day burst that starts anywhere in two years."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.8
    favourites = [rng.choice(items, items // 10, replace=False) for _ in range(groups)]
    rows = []
    origin = pd.Timestamp("2022-01-01")
    for customer in range(customers):
        group = favourites[customer % groups]
        start = rng.uniform(0, 700)
        weights = popularity.copy()
        weights[group] *= 40
        weights /= weights.sum()
        for order in range(int(rng.integers(2, 6))):
            day = start + rng.uniform(0, 30)
            for item in rng.choice(items, int(rng.integers(2, 8)), replace=False, p=weights):
                rows.append(
                    (
                        f"{500000 + customer * 10 + order}",
                        f"{20000 + item}",
                        1,
                        origin + pd.Timedelta(days=day),
                        2.5,
                        f"c{customer}",
                    )
                )
    return pd.DataFrame(
        rows,
        columns=["InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID"],
    )


def case_burst(work: Path, log_frame: pd.DataFrame, name: str) -> dict[str, Any]:
    """Hold out each customer's last order; train on the rest; score served answers."""
    frame = log_frame.copy()
    frame["CustomerID"] = frame["CustomerID"].astype(str).str.replace(r"\.0$", "", regex=True)
    frame["InvoiceNo"] = frame["InvoiceNo"].astype(str)
    orders = (
        frame.groupby(["CustomerID", "InvoiceNo"])["InvoiceDate"]
        .max()
        .reset_index()
        .sort_values(["CustomerID", "InvoiceDate", "InvoiceNo"])
    )
    counts = orders.groupby("CustomerID").size()
    last = orders.drop_duplicates("CustomerID", keep="last")
    last = last[last["CustomerID"].map(counts) >= 2]
    held_key = set(zip(last["CustomerID"], last["InvoiceNo"]))
    held = np.array([(c, o) in held_key for c, o in zip(frame["CustomerID"], frame["InvoiceNo"])])
    train_lines, test_lines = frame[~held], frame[held]
    train_pairs = (
        train_lines[reference_lines(train_lines)][["CustomerID", "StockCode"]]
        .astype(str)
        .drop_duplicates()
    )
    train_pairs.columns = ["user_id", "item_id"]
    bought = train_pairs.groupby("user_id")["item_id"].agg(set)
    test_valid = test_lines[reference_lines(test_lines)]
    targets = {}
    for user, items in (
        test_valid.groupby("CustomerID")["StockCode"].agg(lambda s: set(map(str, s))).items()
    ):
        if user in bought.index:
            new = items - bought[user]
            if new:
                targets[user] = new
    log = work / f"{name}.parquet"
    train_lines.to_parquet(log, index=False)
    models = work / f"models_{name}"
    seconds = train(log, models)
    with Server(models) as server:
        rankings = {
            u: [
                r["item_id"]
                for r in server.get(f"/v1/users/{u}/recommendations?k=20&exclude_purchased=true")[
                    "recommendations"
                ]
            ]
            for u in targets
        }
        model = server.get("/v1/model")
    counts_by_user = {u: len(t) for u, t in targets.items()}
    result = {"served": scored(rankings, targets, counts_by_user)}
    served_ndcg = np.array([ndcg_row(rankings[u], targets[u], counts_by_user[u]) for u in targets])
    for reference, ranked in reference_rankings(train_pairs, list(targets)).items():
        result[reference] = scored(ranked, targets, counts_by_user)
        # "Not worse" is a paired question: the same customers, both rankings.
        reference_ndcg = np.array(
            [ndcg_row(ranked[u], targets[u], counts_by_user[u]) for u in targets]
        )
        result[reference]["served_minus_this_ndcg@10"] = summary(list(served_ndcg - reference_ndcg))
    return {
        "protocol": "each customer's last order held out, the rest trained; top 20 over GET",
        "customers": len(targets),
        "train_seconds": round(seconds, 1),
        **result,
        "shipped": model["evaluation"].get("shipped"),
        "trainer_protocol": model["evaluation"].get("protocol"),
        "trainer_reported": {
            "ndcg@10": model["evaluation"].get("value"),
            "ci95": model["evaluation"].get("ci95"),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "quality.json")
    args = parser.parse_args()
    cases = [case.strip() for case in args.cases.split(",") if case.strip()]
    unknown = set(cases) - set(CASES)
    if unknown:
        parser.error(f"--cases: unknown case {sorted(unknown)[0]!r}")
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="quality-"))
    try:
        for case in cases:
            started = time.perf_counter()
            if case == "retail":
                result = case_retail(work)
            elif case == "retail-repeats":
                result = case_retail_repeats(work)
            elif case.startswith("groceries"):
                result = case_groceries(work, as_customers=case.endswith("customers"))
            elif case == "burst-retail":
                result = case_burst(work, burst_retail_log(), "burst_retail")
            else:
                result = case_burst(work, burst_synthetic_log(), "burst_synthetic")
            result.update(
                {
                    "seconds": round(time.perf_counter() - started, 1),
                    "commit": commit,
                    "command": f"python bench/quality.py --cases {case}",
                }
            )
            results[case] = result
            print(json.dumps({case: result}, indent=1), flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
