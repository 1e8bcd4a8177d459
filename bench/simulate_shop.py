#!/usr/bin/env python3
"""Simulated shoppers against a real server: do the experiment results find the better variant?

    python bench/simulate_shop.py [--shoppers 300] [--views 3] [--seeds 20] [--ab-seeds 3]

An honest test of ``GET /v1/admin/experiments/<name>/results`` (``recommender.experiments
.results``): the shoppers are customers of the shipped log (data/online_retail.parquet,
cleaned as ``train.py`` cleans it), and each one's taste is the set of items they bought.
The model is trained on those purchases, as it would be in the shop; what the server never
sees is how tastes turn into clicks. A shopper opens their recommendations
(``exclude_purchased=false``, k=10) ``--views`` times; shown an item they like they click
it (a ``view`` event) with probability 0.3, any other item with 0.02; a clicked item is
carted with probability 0.5 and a carted one bought with 0.5, 1 to 3 of it at the list's
price. Every event cites the list's ``recommendation_id``. Because the simulation knows its
own probabilities and every list it was shown, it knows each variant's TRUE expected CTR
(expected clicks per list shown) and revenue per shopper, and reports them beside the
server's measured figures: "the right sign" is checked against that truth.

1. The model: ``train.py --no-evaluate`` on the shipped log into a temporary directory.
2. For each trial a fresh server (``serve.py``, 2 sync workers, 127.0.0.1, a new activity
   store) and one experiment on the ``recommendations`` endpoint, decided on CTR:
   - A/B (``--ab-seeds`` of them): ``model`` (the current model) against ``popular``
     (trending items only, control);
   - A/A (``--seeds`` of them): two variants that both serve the current model.
   A seed chooses the experiment's name (so the hash split), the shoppers (drawn from the
   log's customers) and their random draws.
3. The bench checks that the server counted what the simulation did (lists, clicks, carts,
   purchases, revenue per variant), that every A/B run is significant with the true sign,
   and that at most 2 of the A/A runs are significant (at 5%, 1 of 20 is expected).
-> bench/results/simulate_shop.json and simulate_shop.md

The core (``Behaviour``, ``run_experiment``) talks to any ``Shop``; tests/test_simulation.py
runs it on a small generated shop through the in-process Flask client.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from scipy import stats

from recommender.experiments.results import MIN_SHOPPERS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PYTHON, RESULTS, ROOT, machine, shown  # noqa: E402
from serve_bench import Server  # noqa: E402

DATA = ROOT / "data" / "online_retail.parquet"
K = 10
ALPHA = 0.05
TOKEN = "simulation-admin-token"
# The server's own sums as the results report them, and the simulation's for the same.
COUNTED = ("shoppers", "impressions", "clicks", "carts", "purchases", "revenue")


class SimulationError(RuntimeError):
    """The server answered something the simulation cannot go on from."""


# ---------------------------------------------------------------- what shoppers do
@dataclass(frozen=True)
class Behaviour:
    """How a shopper acts on a list: the probabilities the server never sees."""

    click_liked: float = 0.3
    click_other: float = 0.02
    cart: float = 0.5
    buy: float = 0.5
    max_quantity: int = 3

    def click(self, liked: bool) -> float:
        return self.click_liked if liked else self.click_other

    def expected_revenue(self, liked: bool, price: float) -> float:
        """What showing one item earns on average: click, cart, buy, 1..max_quantity of it."""
        mean_quantity = (1 + self.max_quantity) / 2
        return self.click(liked) * self.cart * self.buy * mean_quantity * price


@dataclass
class Visit:
    """One shopper's page views: what they did, and what they were expected to do."""

    shopper_id: str
    variant: str = ""
    lists: int = 0
    clicks: int = 0
    carts: int = 0
    purchases: int = 0
    revenue: float = 0.0
    expected_clicks: float = 0.0
    expected_revenue: float = 0.0
    liked_shown: int = 0
    events_posted: int = 0
    events_attributed: int = 0
    lists_outside: int = 0  # lists the experiment did not cover (none expected)


class Shop(Protocol):
    """The server as the simulation sees it."""

    def call(
        self, method: str, path: str, body: Any = None, admin: bool = False
    ) -> tuple[int, Any]:
        """Send a request; the status and the parsed JSON answer."""
        ...

    def settle(self) -> None:
        """Wait until what was done is readable: experiments picked up, impressions written."""
        ...


def visit(
    shop: Shop,
    experiment: str,
    shopper_id: str,
    taste: frozenset[str],
    views: int,
    behaviour: Behaviour,
    rng: np.random.Generator,
) -> Visit:
    """``views`` page views of one shopper, each followed by the events its list caused."""
    done = Visit(shopper_id)
    path = f"/v1/users/{urllib.parse.quote(shopper_id, safe='')}/recommendations"
    for _ in range(views):
        status, body = shop.call("GET", f"{path}?k={K}&exclude_purchased=false")
        if status != 200:
            raise SimulationError(f"GET {path}: {status} {body}")
        shown_items = body.get("recommendations") or []
        if not shown_items:
            continue  # an empty list shows nothing and is not counted
        tag = body.get("experiment") or {}
        if tag.get("name") != experiment:
            done.lists_outside += 1
            continue
        if done.variant and tag["variant"] != done.variant:
            raise SimulationError(f"{shopper_id} moved from {done.variant} to {tag['variant']}")
        done.variant = tag["variant"]
        done.lists += 1
        cited = {"user_id": shopper_id, "recommendation_id": body["recommendation_id"]}
        events: list[dict[str, Any]] = []
        for entry in shown_items:
            item, price = entry["item_id"], float(entry.get("price") or 0.0)
            liked = item in taste
            done.liked_shown += liked
            done.expected_clicks += behaviour.click(liked)
            done.expected_revenue += behaviour.expected_revenue(liked, price)
            # Three draws per item whatever happens: the stream does not depend on outcomes.
            clicked, carted, bought = rng.random(3)
            if clicked >= behaviour.click(liked):
                continue
            events.append({**cited, "item_id": item, "type": "view"})
            done.clicks += 1
            if carted >= behaviour.cart:
                continue
            events.append({**cited, "item_id": item, "type": "cart"})
            done.carts += 1
            if bought >= behaviour.buy:
                continue
            quantity = int(rng.integers(1, behaviour.max_quantity + 1))
            events.append(
                {**cited, "item_id": item, "type": "purchase", "quantity": quantity, "price": price}
            )
            done.purchases += 1
            done.revenue += round(quantity * price, 6)
        if events:
            status, answer = shop.call("POST", "/v1/events", {"events": events})
            if status != 201:
                raise SimulationError(f"POST /v1/events: {status} {answer}")
            done.events_posted += len(events)
            done.events_attributed += int(answer.get("attributed", 0))
    return done


# ---------------------------------------------------------------- one experiment
def ab_definition() -> dict[str, Any]:
    """The trained model against a deliberately weaker holdout (trending items only)."""
    return {
        "variants": [
            {"name": "model", "weight": 1},
            {"name": "popular", "weight": 1, "strategy": "popular"},
        ],
        "control": "popular",
        "endpoints": ["recommendations"],
        "metric": "ctr",
    }


def aa_definition() -> dict[str, Any]:
    """Two variants that both serve the current model: any 'significant' is a false alarm."""
    return {
        "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}],
        "control": "a",
        "endpoints": ["recommendations"],
        "metric": "ctr",
    }


@dataclass
class Truth:
    """A variant's figures as the simulation knows them."""

    shoppers: int = 0
    lists: int = 0
    expected_clicks: float = 0.0
    expected_revenue: float = 0.0
    counted: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COUNTED, 0.0))

    def add(self, done: Visit) -> None:
        self.shoppers += 1
        self.lists += done.lists
        self.expected_clicks += done.expected_clicks
        self.expected_revenue += done.expected_revenue
        for name, value in (
            ("shoppers", 1),
            ("impressions", done.lists),
            ("clicks", done.clicks),
            ("carts", done.carts),
            ("purchases", done.purchases),
            ("revenue", done.revenue),
        ):
            self.counted[name] += value

    def figures(self) -> dict[str, float | None]:
        """True expected CTR (clicks per list shown) and revenue per shopper."""
        return {
            "ctr": self.expected_clicks / self.lists if self.lists else None,
            "revenue_per_shopper": self.expected_revenue / self.shoppers if self.shoppers else None,
        }


def run_experiment(
    shop: Shop,
    name: str,
    definition: Mapping[str, Any],
    shoppers: Sequence[tuple[str, frozenset[str]]],
    views: int,
    behaviour: Behaviour,
    seed: int,
    threads: int = 1,
    settle_tries: int = 10,
) -> dict[str, Any]:
    """Start experiment ``name``, let ``shoppers`` (id, taste) visit, read the results and
    stop it. The answer holds the server's comparison of the decision metric beside the
    simulation's truth, and every count where the server and the simulation disagree."""
    status, answer = shop.call("PUT", f"/v1/admin/experiments/{name}", dict(definition), True)
    if status not in (200, 201):
        raise SimulationError(f"PUT experiment {name}: {status} {answer}")
    shop.settle()
    started = time.perf_counter()

    def one(position: int) -> Visit:
        shopper_id, taste = shoppers[position]
        rng = np.random.default_rng([seed, position])
        return visit(shop, name, shopper_id, taste, views, behaviour, rng)

    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:
            visits = list(pool.map(one, range(len(shoppers))))
    else:
        visits = [one(position) for position in range(len(shoppers))]
    visiting = time.perf_counter() - started

    truths: dict[str, Truth] = {}
    for done in visits:
        if done.lists:
            truths.setdefault(done.variant, Truth()).add(done)
    # Impressions are written by each worker on an interval: reread until the server's sums
    # are the simulation's (or give up after ``settle_tries`` and report the difference).
    for _ in range(settle_tries):
        shop.settle()
        status, results = shop.call("GET", f"/v1/admin/experiments/{name}/results", admin=True)
        if status != 200:
            raise SimulationError(f"results of {name}: {status} {results}")
        mismatches = _mismatches(results, truths)
        if not mismatches:
            break
    status, answer = shop.call("POST", f"/v1/admin/experiments/{name}/stop", admin=True)
    if status != 200:
        raise SimulationError(f"stop {name}: {status} {answer}")
    return _summary(name, definition, results, truths, visits, mismatches, visiting)


def _mismatches(results: Mapping[str, Any], truths: Mapping[str, Truth]) -> list[str]:
    """Where the server's per-variant sums differ from what the simulation did."""
    found = []
    served = {variant["name"]: variant for variant in results["variants"]}
    for variant, truth in truths.items():
        for name in COUNTED:
            theirs = float(served.get(variant, {}).get(name, 0))
            ours = truth.counted[name]
            if not math.isclose(theirs, ours, abs_tol=0.011):
                found.append(f"{variant}.{name}: server {theirs:g}, simulation {ours:g}")
    return found


def _summary(
    name: str,
    definition: Mapping[str, Any],
    results: Mapping[str, Any],
    truths: Mapping[str, Truth],
    visits: Sequence[Visit],
    mismatches: list[str],
    visiting: float,
) -> dict[str, Any]:
    comparison = results["comparisons"][0]
    variant, control = comparison["variant"], comparison["against"]
    metric = results["metric"]
    measured = comparison["metrics"][metric]
    truth = {v: truths[v].figures() if v in truths else {} for v in (control, variant)}
    true_difference = {
        key: (
            truth[variant][key] - truth[control][key]
            if truth[variant].get(key) is not None and truth[control].get(key) is not None
            else None
        )
        for key in ("ctr", "revenue_per_shopper")
    }
    difference, interval = measured["difference"], measured["interval"]
    truth_difference = true_difference.get(metric)
    same_model = all(
        not v.get("strategy") and not v.get("model_version") for v in definition["variants"]
    )
    return {
        "experiment": name,
        "variant": variant,
        "control": control,
        "metric": metric,
        "shoppers": {v["name"]: v["shoppers"] for v in results["variants"]},
        "lists": {v["name"]: v["impressions"] for v in results["variants"]},
        "measured": {v["name"]: v[metric]["value"] for v in results["variants"]},
        "true": truth,
        "difference": difference,
        "interval": interval,
        "p_value": measured["p_value"],
        "significant": bool(comparison["significant"]),
        "verdict": comparison["verdict"],
        "true_difference": truth_difference,
        "true_difference_revenue_per_shopper": true_difference["revenue_per_shopper"],
        # Identical variants show a shopper the same list whichever they get: the effect is 0.
        "counterfactual_effect": 0.0 if same_model else None,
        # Against the simulation's truth; None for identical variants, which have no sign.
        "right_sign": None
        if same_model
        else (
            difference is not None
            and truth_difference is not None
            and math.copysign(1, difference) == math.copysign(1, truth_difference)
            and difference != 0
        ),
        "interval_covers_truth": (
            interval is not None
            and truth_difference is not None
            and interval[0] <= (0.0 if same_model else truth_difference) <= interval[1]
        ),
        "other_metrics": {
            key: {"difference": value["difference"], "p_value": value["p_value"]}
            for key, value in comparison["metrics"].items()
            if key != metric
        },
        "liked_share_shown": {
            v: round(
                sum(d.liked_shown for d in visits if d.variant == v)
                / max(1, K * sum(d.lists for d in visits if d.variant == v)),
                4,
            )
            for v in (control, variant)
        },
        "events_posted": sum(d.events_posted for d in visits),
        "events_attributed": sum(d.events_attributed for d in visits),
        "lists_outside_experiment": sum(d.lists_outside for d in visits),
        "server_vs_simulation": mismatches,
        "visit_seconds": round(visiting, 2),
    }


# ---------------------------------------------------------------- the shoppers
def customer_tastes(data: Path = DATA) -> dict[str, frozenset[str]]:
    """Every customer of the log (cleaned as ``train.py`` cleans it) and the items they bought."""
    from recommender.config import TrainConfig, load_config
    from recommender.training import load_purchases

    config = load_config(TrainConfig, overrides={"data": data}, environ={})
    purchases, _ = load_purchases(config)
    bought = purchases.dropna(subset=["user_id"]).groupby("user_id", observed=True)["item_id"]
    return {str(user): frozenset(map(str, items)) for user, items in bought.unique().items()}


def draw_shoppers(
    tastes: Mapping[str, frozenset[str]], count: int, seed: int
) -> list[tuple[str, frozenset[str]]]:
    """``count`` customers drawn without replacement (all of them when fewer)."""
    ids = sorted(tastes)
    rng = np.random.default_rng([seed, 7])
    chosen = rng.choice(len(ids), size=min(count, len(ids)), replace=False)
    return [(ids[i], tastes[ids[i]]) for i in chosen]


def aa_false_alarms(runs: Sequence[Mapping[str, Any]]) -> int:
    return sum(run["significant"] for run in runs)


# ---------------------------------------------------------------- over HTTP
class HttpShop:
    """A real server on 127.0.0.1; impressions are written every ``flush_seconds``."""

    def __init__(self, base: str, flush_seconds: float) -> None:
        self.base = base
        self.flush_seconds = flush_seconds

    def call(
        self, method: str, path: str, body: Any = None, admin: bool = False
    ) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if admin:
            headers["Authorization"] = f"Bearer {TOKEN}"
        request = urllib.request.Request(
            self.base + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers=headers,
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as error:
            raw = error.read()
            try:
                return error.code, json.loads(raw)
            except json.JSONDecodeError:
                return error.code, raw[:200].decode(errors="replace")

    def settle(self) -> None:
        time.sleep(3 * self.flush_seconds)


def train(models: Path, scratch: Path) -> list[str]:
    command = [
        PYTHON,
        str(ROOT / "train.py"),
        "--data",
        str(DATA),
        "--models-dir",
        str(models),
        "--activity-db",
        str(scratch / "train.sqlite3"),
        "--no-evaluate",
    ]
    print(f"[simulate] {shown(command)}", file=sys.stderr, flush=True)
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=600)
    return command


def trial_on_server(
    models: Path,
    scratch: Path,
    name: str,
    definition: Mapping[str, Any],
    shoppers: Sequence[tuple[str, frozenset[str]]],
    args: argparse.Namespace,
    seed: int,
) -> dict[str, Any]:
    """One experiment on a fresh server with a fresh activity store."""
    flush = 0.2
    workdir = scratch / name
    workdir.mkdir()
    server = Server(
        args.workers,
        1,
        workdir,
        activity_db=str(workdir / "activity.sqlite3"),
        models=models,
        extra=(
            "--admin-token",
            TOKEN,
            "--request-log",
            "",
            "--impressions-flush-seconds",
            str(flush),
            "--experiments-refresh-seconds",
            str(flush),
        ),
    )
    try:
        server.wait_ready(timeout=120)
        return run_experiment(
            HttpShop(server.base, flush),
            name,
            definition,
            shoppers,
            args.views,
            Behaviour(),
            seed,
            threads=args.threads,
        )
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shoppers", type=int, default=300, help="shoppers per experiment")
    parser.add_argument("--views", type=int, default=3, help="page views per shopper")
    parser.add_argument("--seeds", type=int, default=20, help="A/A experiments")
    parser.add_argument("--ab-seeds", type=int, default=3, help="A/B experiments")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=4, help="shoppers visiting at once")
    parser.add_argument("--models", type=Path, help="a trained models dir (default: train one)")
    parser.add_argument("--max-seconds", type=float, default=900, help="no trial starts after")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    started, measured_on = time.perf_counter(), machine()  # the code as it was at the start

    def in_time() -> None:
        if time.perf_counter() - started > args.max_seconds:
            raise SystemExit(f"over --max-seconds {args.max_seconds:g}: stopped")

    tastes = customer_tastes()
    print(f"[simulate] {len(tastes)} customers in {DATA.name}", file=sys.stderr, flush=True)
    ab_runs, aa_runs = [], []
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        models = args.models or scratch / "models"
        train_command = None if args.models else train(models, scratch)
        trained = time.perf_counter()
        # A/B seeds from 1000: shoppers and draws other than the A/A runs'.
        for seed in range(args.ab_seeds):
            in_time()
            shoppers = draw_shoppers(tastes, args.shoppers, 1000 + seed)
            run = trial_on_server(
                models, scratch, f"ab-{seed}", ab_definition(), shoppers, args, 1000 + seed
            )
            ab_runs.append(run)
            print(f"[simulate] A/B {seed}: {line(run)}", file=sys.stderr, flush=True)
        for seed in range(args.seeds):
            in_time()
            shoppers = draw_shoppers(tastes, args.shoppers, seed)
            run = trial_on_server(
                models, scratch, f"aa-{seed}", aa_definition(), shoppers, args, seed
            )
            aa_runs.append(run)
            print(f"[simulate] A/A {seed}: {line(run)}", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started
    command = "python bench/simulate_shop.py " + " ".join(
        f"--{key.replace('_', '-')} {value}"
        for key, value in (
            ("shoppers", args.shoppers),
            ("views", args.views),
            ("seeds", args.seeds),
            ("ab_seeds", args.ab_seeds),
        )
    )
    report = verdicts(ab_runs, aa_runs)
    report.update(
        command=command,
        train_command=(
            shown(train_command).replace(str(scratch), "$TMP")
            if train_command
            else f"(given) {args.models}"
        ),
        behaviour=Behaviour().__dict__,
        k=K,
        workers=args.workers,
        client_threads=args.threads,
        seconds={
            "total": round(elapsed, 1),
            "after_training": round(time.perf_counter() - trained, 1),
        },
        machine=measured_on,
        ab=ab_runs,
        aa=aa_runs,
    )
    text = markdown(report)
    print(text)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "simulate_shop.json").write_text(json.dumps(report, indent=2) + "\n")
        (RESULTS / "simulate_shop.md").write_text(text)
    sys.exit(0 if report["passed"] else 1)


def verdicts(ab_runs: Sequence[Mapping[str, Any]], aa_runs: Sequence[Mapping[str, Any]]) -> dict:
    """The bench's checks: every A/B significant with the true sign, at most 10% of A/A
    significant, and the server's counts equal to the simulation's everywhere."""
    aa_significant = aa_false_alarms(aa_runs)
    runs = [*ab_runs, *aa_runs]
    checks = {
        "ab_significant_right_sign": all(r["significant"] and r["right_sign"] for r in ab_runs),
        "aa_significant_at_most_10_percent": aa_significant <= len(aa_runs) // 10,
        "server_counts_match": all(not r["server_vs_simulation"] for r in runs),
        "every_event_attributed": all(r["events_attributed"] == r["events_posted"] for r in runs),
        "every_list_in_the_experiment": all(r["lists_outside_experiment"] == 0 for r in runs),
        # Under MIN_SHOPPERS a variant gets no verdict: an A/A 'not significant' for free.
        "every_variant_has_a_verdict": all(
            min(r["shoppers"].values()) >= MIN_SHOPPERS for r in runs
        ),
    }
    p_values = [r["p_value"] for r in aa_runs if r["p_value"] is not None]
    return {
        "checks": checks,
        "passed": all(checks.values()),
        "aa_significant": aa_significant,
        "aa_runs": len(aa_runs),
        # Under the null the p-values are uniform: their spread, not only the count under 5%.
        "aa_p_values": {
            "below_0.05": sum(p < 0.05 for p in p_values),
            "below_0.10": sum(p < 0.10 for p in p_values),
            "below_0.20": sum(p < 0.20 for p in p_values),
            "mean": round(float(np.mean(p_values)), 3) if p_values else None,
            "ks_uniform_p": round(float(stats.kstest(p_values, "uniform").pvalue), 3)
            if len(p_values) > 1
            else None,
        },
    }


def line(run: Mapping[str, Any]) -> str:
    low, high = run["interval"] or (None, None)
    return (
        f"{run['variant']}-{run['control']} {run['metric']} {run['difference']:+.4f} "
        f"[{low}, {high}] p={run['p_value']} (true {run['true_difference']:+.4f}) "
        f"{run['verdict']}; {sum(run['shoppers'].values())} shoppers, "
        f"{sum(run['lists'].values())} lists, {run['visit_seconds']} s"
        + (f"; MISMATCH {run['server_vs_simulation']}" if run["server_vs_simulation"] else "")
    )


def _yes(value: bool | None) -> str:
    return "–" if value is None else "yes" if value else "no"


def _f(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(report: Mapping[str, Any]) -> str:
    behaviour, spread = report["behaviour"], report["aa_p_values"]
    rows = [
        "| run | shoppers (control / variant) | true CTR control → variant | measured CTR "
        "| difference [95% CI] | p | true difference | significant | right sign |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, runs in (("A/B", report["ab"]), ("A/A", report["aa"])):
        for run in runs:
            control, variant = run["control"], run["variant"]
            low, high = run["interval"] or (None, None)
            rows.append(
                f"| {kind} `{run['experiment']}` | {run['shoppers'][control]} / "
                f"{run['shoppers'][variant]} | {_f(run['true'][control].get('ctr'))} → "
                f"{_f(run['true'][variant].get('ctr'))} | {_f(run['measured'][control])} → "
                f"{_f(run['measured'][variant])} | {run['difference']:+.4f} "
                f"[{_f(low)}, {_f(high)}] | {_f(run['p_value'], 3)} | "
                f"{run['true_difference']:+.4f} | {'yes' if run['significant'] else 'no'} | "
                f"{_yes(run['right_sign'])} |"
            )
    checks = ", ".join(f"{k}: {'pass' if v else 'FAIL'}" for k, v in report["checks"].items())
    mismatches = [m for r in [*report["ab"], *report["aa"]] for m in r["server_vs_simulation"]]
    revenue = [
        f"{r['experiment']} {r['other_metrics']['revenue_per_shopper']['difference']:+.2f} "
        f"(true {r['true_difference_revenue_per_shopper']:+.2f}, "
        f"p={r['other_metrics']['revenue_per_shopper']['p_value']})"
        for r in report["ab"]
    ]
    aa_other = {
        metric: sum(
            1
            for r in report["aa"]
            if r["other_metrics"][metric]["p_value"] is not None
            and r["other_metrics"][metric]["p_value"] < ALPHA
        )
        for metric in (report["aa"][0]["other_metrics"] if report["aa"] else {})
    }
    return "\n".join(
        [
            "# Experiment results against simulated shoppers",
            "",
            f"`{report['command']}` — {report['seconds']['total']} s in all "
            f"({report['seconds']['after_training']} s after training; "
            f"{report['machine']['cpus']} CPUs, {report['workers']} sync workers, "
            f"{report['client_threads']} client threads on the same cores).",
            "",
            f"Model: `{report['train_command']}`. Shoppers: customers of the shipped log, "
            "each liking exactly the items they bought; per list shown (k="
            f"{report['k']}, `exclude_purchased=false`) a liked item is clicked with p="
            f"{behaviour['click_liked']}, another with p={behaviour['click_other']}; a click "
            f"is carted with p={behaviour['cart']}, a cart bought with p={behaviour['buy']}, "
            f"1 to {behaviour['max_quantity']} at the list's price. The true CTR is the "
            "simulation's expected clicks per list over the lists it was shown; decision "
            "metric CTR, alpha 0.05. A/B: `model` (current model) against control `popular` "
            "(trending only); A/A: two variants both serving the current model, so their "
            "true effect is 0.",
            "",
            f"**A/A: {report['aa_significant']} of {report['aa_runs']} significant on CTR** "
            f"(allowed: {report['aa_runs'] // 10}). A/A p-values (uniform under the null): "
            f"{spread['below_0.10']} below 0.10, {spread['below_0.20']} below 0.20, mean "
            f"{spread['mean']}, Kolmogorov-Smirnov against uniform p={spread['ks_uniform_p']}. "
            "Other metrics' A/A false alarms (p < 0.05): "
            + ", ".join(f"{k} {v}" for k, v in aa_other.items())
            + ".",
            "",
            f"A/B intervals that hold the true difference: "
            f"{sum(r['interval_covers_truth'] for r in report['ab'])} of {len(report['ab'])}. "
            "A/B revenue per shopper (model − popular): " + "; ".join(revenue) + ".",
            "",
            f"Checks: {checks}."
            + (f" Server and simulation disagree: {mismatches}." if mismatches else ""),
            "",
            *rows,
            "",
        ]
    )


if __name__ == "__main__":
    main()
