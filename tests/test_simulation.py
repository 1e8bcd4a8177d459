"""The experiment statistics against simulated shoppers whose tastes the test knows: the small
version of ``bench/simulate_shop.py``, in-process.

The shop is generated: 6 departments of 20 items, each customer a fan of one department who
bought a few of its items; their taste (known to the simulation, not to the server) is every
item of their department. The model trained on the log learns the departments; the ``popular``
holdout shows the shop's best sellers, of which a shopper likes about one in six. The
simulation computes each variant's true expected CTR from its own click probabilities and the
lists it was shown, so the sign the results must find is known, not assumed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recommender import training
from recommender.experiments.results import MIN_SHOPPERS

from helpers import ROOT, make_app, tiny_config

sys.path.insert(0, str(ROOT / "bench"))
from simulate_shop import (  # noqa: E402
    Behaviour,
    aa_definition,
    aa_false_alarms,
    ab_definition,
    run_experiment,
)

TOKEN = "simulation-test-token"
DEPARTMENTS, PER_DEPARTMENT, CUSTOMERS = 6, 20, 300
SHOPPERS, VIEWS, AA_SEEDS = 100, 2, 20


def department_log(seed: int = 0) -> tuple[pd.DataFrame, dict[str, frozenset[str]]]:
    """Each customer 3 orders of 2 to 4 items from their own department (a few best sellers
    per department bought more often), plus a stray item from anywhere now and then."""
    rng = np.random.default_rng(seed)
    items = [[f"d{d}-i{i}" for i in range(PER_DEPARTMENT)] for d in range(DEPARTMENTS)]
    appeal = 1.0 / np.arange(1, PER_DEPARTMENT + 1)
    appeal /= appeal.sum()
    rows, tastes = [], {}
    for customer in range(CUSTOMERS):
        department = customer % DEPARTMENTS
        tastes[f"c{customer}"] = frozenset(items[department])
        for order in range(3):
            picked = rng.choice(PER_DEPARTMENT, rng.integers(2, 5), replace=False, p=appeal)
            basket = [items[department][i] for i in picked]
            if rng.random() < 0.2:
                basket.append(items[rng.integers(DEPARTMENTS)][rng.integers(PER_DEPARTMENT)])
            for item in dict.fromkeys(basket):
                rows.append(
                    (
                        f"c{customer}",
                        item,
                        pd.Timestamp("2024-01-01") + pd.Timedelta(days=customer % 60 + 7 * order),
                        f"c{customer}-{order}",
                        1,
                        5.0 + int(item.split("-i")[1]),
                    )
                )
    log = pd.DataFrame(
        rows, columns=["user_id", "item_id", "timestamp", "order_id", "quantity", "price"]
    )
    return log, tastes


@pytest.fixture(scope="module")
def department_shop(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("department-shop")
    log, tastes = department_log()
    log.to_csv(root / "log.csv", index=False)
    training.run(tiny_config(root / "log.csv", root / "models"))
    return root / "models", tastes


class FlaskShop:
    """The in-process app as ``simulate_shop.Shop``: settling writes the impressions at once."""

    def __init__(self, app) -> None:
        self.app = app
        self.client = app.test_client()

    def call(self, method: str, path: str, body=None, admin: bool = False):
        headers = {"Authorization": f"Bearer {TOKEN}"} if admin else {}
        answer = self.client.open(path, method=method, json=body, headers=headers)
        return answer.status_code, answer.get_json()

    def settle(self) -> None:
        self.app.extensions["recommender_tracing"].counter.flush()


def experiment(models: Path, store: Path, tastes, name: str, definition, seed: int) -> dict:
    """One experiment on a fresh app and store, ``SHOPPERS`` customers drawn by ``seed``."""
    ids = sorted(tastes)
    drawn = np.random.default_rng([seed, 7]).choice(len(ids), SHOPPERS, replace=False)
    shoppers = [(ids[i], tastes[ids[i]]) for i in drawn]
    app = make_app(models, store, admin_token=TOKEN, impressions_flush_seconds=60)
    return run_experiment(FlaskShop(app), name, definition, shoppers, VIEWS, Behaviour(), seed)


def counted_as_done(run: dict) -> None:
    assert run["server_vs_simulation"] == []
    assert run["events_attributed"] == run["events_posted"] > 0
    assert run["lists_outside_experiment"] == 0
    assert sum(run["lists"].values()) == SHOPPERS * VIEWS
    # Fewer shoppers in a variant get no verdict, which would pass an A/A run for free.
    assert min(run["shoppers"].values()) >= MIN_SHOPPERS


@pytest.mark.slow
def test_the_results_find_the_better_variant_with_the_true_sign(department_shop, tmp_path):
    models, tastes = department_shop
    run = experiment(models, tmp_path / "ab.sqlite3", tastes, "ab-0", ab_definition(), 1000)
    counted_as_done(run)
    truth = run["true"]
    assert truth["model"]["ctr"] > truth["popular"]["ctr"]  # the simulation's truth, measured
    assert run["variant"] == "model" and run["control"] == "popular"
    assert run["significant"] and run["right_sign"]
    assert run["difference"] > 0 and run["interval"][0] > 0
    assert run["verdict"] == "model does better"


@pytest.mark.slow
def test_identical_variants_are_not_significant_in_at_least_18_of_20_seeds(
    department_shop, tmp_path
):
    models, tastes = department_shop
    runs = []
    for seed in range(AA_SEEDS):
        run = experiment(
            models, tmp_path / f"aa-{seed}.sqlite3", tastes, f"aa-{seed}", aa_definition(), seed
        )
        counted_as_done(run)
        runs.append(run)
    # Different names split the shoppers differently: the seeds are not one split repeated.
    assert len({tuple(sorted(run["shoppers"].items())) for run in runs}) > 1
    assert aa_false_alarms(runs) <= 2, [(r["experiment"], r["p_value"]) for r in runs]
