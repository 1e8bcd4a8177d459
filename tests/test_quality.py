"""The quality bar on the shipped logs, the promotion gate, and served == measured."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from recommender import artifacts, cli, model_selection, training
from recommender.algorithms.blend import blend_scores
from recommender.config import TrainConfig, load_config
from recommender.errors import GateRefusedError
from recommender.evaluation import top_k

from helpers import ROOT, make_app, tiny_config, write_log


@pytest.mark.slow
def test_shipped_log_beats_every_baseline_by_ten_percent(tmp_path: Path) -> None:
    config = load_config(
        TrainConfig,
        overrides={
            "data": ROOT / "data" / "online_retail.parquet",
            "models_dir": tmp_path,
            "num_threads": 2,
        },
        environ={},
    )
    version = training.run(config)
    evaluation = json.loads((version / "evaluation.json").read_text())
    models = evaluation["models"]
    shipped = models[evaluation["shipped"]]["ndcg"]
    baselines = {
        name: values["ndcg"] for name, values in models.items() if name.startswith("baseline")
    }
    assert set(baselines) == {
        "baseline: popularity",
        "baseline: implicit cosine K=100",
        "baseline: EASE l2=250",
        "baseline: implicit BM25 K=100",
        "baseline: implicit ALS factors=100 reg=0.01",
    }
    assert shipped >= 0.110  # the bar: 10% over EASE's 0.100 measured outside the project
    assert shipped >= 1.10 * max(baselines.values())
    # Every figure has its interval, and the protocol says why it was chosen.
    low, high = evaluation["headline_ci95"]
    assert low < shipped < high
    assert (
        evaluation["protocol"]["name"] == "rolling-time"
        and "repeat customers" in evaluation["protocol"]["reason"]
    )
    assert "next-purchase" in evaluation["also"]
    # A blend ships only with the gain over its best part beyond the noise, which the run states.
    assert (
        "standard error" in evaluation["validation"]["rule"]
        or "single component" in evaluation["validation"]["rule"]
    )
    # The protocol reproduces the reference figures (1,294 customers there; returns net out here).
    assert 1200 <= evaluation["protocol"]["customers_evaluated"] <= 1300
    assert evaluation["protocol"]["train_until"] == "2011-11-09 00:00"
    assert baselines["baseline: popularity"] == pytest.approx(0.0338, abs=0.003)
    assert baselines["baseline: implicit BM25 K=100"] == pytest.approx(0.0820, abs=0.005)
    assert evaluation["item_to_item"]["baseline: popularity"]["pairs"] > 500
    page = (version / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 3 and evaluation["shipped"] in page
    manifest = artifacts.load(version).manifest
    assert manifest["evaluation"]["value"] == pytest.approx(shipped)
    assert manifest["gate"]["status"] == "promoted"


@pytest.mark.slow
def test_basket_log_finds_the_missing_item_better_than_the_baselines(tmp_path: Path) -> None:
    config = load_config(
        TrainConfig,
        overrides={
            "data": ROOT / "data" / "groceries.csv",
            "format": "baskets",
            "models_dir": tmp_path,
            "num_threads": 2,
        },
        environ={},
    )
    evaluation = json.loads((training.run(config) / "evaluation.json").read_text())
    models = evaluation["models"]
    shipped = models[evaluation["shipped"]]["hit_rate"]
    assert evaluation["protocol"]["name"] == "random-holdout"
    assert "customer ids" in evaluation["protocol"]["reason"]
    for name in (
        "baseline: popularity",
        "baseline: implicit cosine K=100",
        "baseline: implicit BM25 K=100",
    ):
        assert shipped > models[name]["hit_rate"], name


@pytest.mark.parametrize("decay_days", [0.0, 3.0])
def test_served_recommendations_are_what_evaluation_measures(
    tmp_path: Path, monkeypatch, decay_days: float
) -> None:
    log, models = tmp_path / "tribes.csv", tmp_path / "models"
    write_log(log)
    default = model_selection.default_choice

    def with_decay(n_items, settings, has_customers=True):
        return dataclasses.replace(default(n_items, settings, has_customers), decay_days=decay_days)

    monkeypatch.setattr(training, "default_choice", with_decay)
    training.run(tiny_config(log, models, als_factors=2))
    model = artifacts.load_current(models)
    arrays, blend = model.arrays, model.manifest["blend"]
    assert blend["decay_days"] == decay_days
    # The item model is fitted on decayed purchases; a customer is scored from the whole history.
    assert (arrays["user_items.data"] == 1).all()
    service = make_app(models, tmp_path / "a.sqlite3").extensions["recommender"].get()
    trend = arrays["trending.popularity"] / arrays["trending.popularity"].max()
    for user in ("g1", "k2", "x1"):
        row = service.user_items[service.users.index(user)]
        item_scores = (row @ service.knn_matrix).toarray()
        als_scores = (
            arrays["als.user_factors"][[service.users.index(user)]] @ arrays["als.item_factors"].T
        )
        scores = blend_scores(
            item_scores,
            als_scores,
            trend,
            blend["als_weight"],
            blend["trend_weight"],
            blend["item_weight"],
        )
        expected = service.items.ids(top_k(scores, row, 3)[0])
        served = [r["item_id"] for r in service.for_user(user, 3)["recommendations"]]
        assert served == expected


def test_gate_refuses_a_worse_model_and_force_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    log, models = tmp_path / "tribes.csv", tmp_path / "models"
    write_log(log)
    first = training.run(tiny_config(log, models)).name

    def measured(purchases, settings, current):
        choice = model_selection.default_choice(8, settings)
        return model_selection.Selection(
            choice,
            {
                "headline": "ndcg",
                "headline_value": 0.05,
                "current_headline_value": 0.10,
                "models": {},
            },
        )

    monkeypatch.setattr(training, "select_and_evaluate", measured)
    with pytest.raises(GateRefusedError, match="more than 5% below the current model's 0.1000"):
        training.run(tiny_config(log, models, evaluate=True))
    assert artifacts.current_version(models) == first
    refused = [v for v in artifacts.versions(models) if v != first]
    assert len(refused) == 1
    # train.py says so on one line and exits 3 (what a cron job or CI checks), on either engine.
    options = ["--data", str(log), "--models-dir", str(models), "--min-support", "2"]
    exit_code = cli.train_main(
        [*options, "--min-pair-support", "1", "--activity-db", str(tmp_path / "a.sqlite3")]
    )
    error = capsys.readouterr().err.strip().splitlines()
    assert exit_code == 3 and len(error) == 1 and error[0].startswith("refused: model ")
    assert artifacts.current_version(models) == first
    refused = [v for v in artifacts.versions(models) if v != first]
    assert len(refused) == 2
    assert artifacts.read_manifest(models, refused[0])["gate"]["status"] == "refused"
    assert b"refused" in artifacts.read_document(models, refused[0], "report.html")

    within = training.run(
        tiny_config(log, models, evaluate=True, gate_tolerance=0.6)
    )  # 0.05 >= 0.10 * 0.4
    assert artifacts.current_version(models) == within.name
    forced = training.run(tiny_config(log, models, evaluate=True, force=True))
    assert artifacts.current_version(models) == forced.name
    assert artifacts.read_manifest(models, forced.name)["gate"]["status"] == "forced"


def test_a_log_too_short_to_split_is_trained_and_says_it_was_not_evaluated(
    tiny_log: Path, tmp_path: Path
) -> None:
    version = training.run(tiny_config(tiny_log, tmp_path / "m", evaluate=True, test_days=30))
    manifest = artifacts.load(version).manifest
    assert any(note.startswith("not evaluated") for note in manifest["notes"])
    assert manifest["blend"]["item_model"] == "ease"
    assert json.loads((version / "evaluation.json").read_text()) == {}
