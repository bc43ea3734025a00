"""`medssl tune` on the demo study: three tiny Optuna trials on a validation metric, each trial a run whose settings
hold its sampled values, recorded in 'trials'; the journal resumes the search; the best values written as
overrides that `replicate --overrides` plans with."""

from __future__ import annotations

import json

import pytest

from medssl_core.cli import main
from medssl_core.common.errors import ConfigError
from medssl_core.plan.catalog import get_study
from medssl_core.plan.grid import expand
from medssl_core.plan.study import Tunable
from medssl_core.store import run_sql

pytest.importorskip("optuna", reason="the tune extra (pip install 'medssl[tune]') brings Optuna")


def test_three_trials_of_the_demo_then_resume_and_apply(tmp_path, medmnist_dir, capsys):
    db, best = tmp_path / "r.duckdb", tmp_path / "best.json"
    args = ["tune", "demo", "--method", "simclr", "--protocol", "linear", "--profile", "quick", "--device", "cpu",
            "--data-dir", str(medmnist_dir), "--db", str(db), "--no-download"]
    assert main([*args, "--trials", "3", "--write", str(best)]) == 0
    rows = run_sql(db, "SELECT t.trial, t.params, t.objective, t.value, r.spec_json, m.value FROM trials t "
                       "JOIN runs r USING (run_id) JOIN metrics m ON m.run_id = t.run_id AND m.split = 'val' "
                       "AND m.name = 'accuracy' ORDER BY t.trial")[1]
    assert [r[0] for r in rows] == [0, 1, 2] and {r[2] for r in rows} == {"val.accuracy"}
    for _, params, _, value, spec_json, val_accuracy in rows:
        params, hp = json.loads(params), json.loads(spec_json)["hparams"]
        assert hp["protocol"]["fit"]["optimizer"]["lr"] == params["evaluate.protocol.fit.optimizer.lr"]
        assert value == val_accuracy  # the objective is the validation metric, never test
    pretrain_lrs = {json.loads(s)["hparams"]["train"]["optimizer"]["lr"] for (s,) in run_sql(
        db, "SELECT spec_json FROM runs WHERE kind = 'pretrain'")[1]}
    assert len(pretrain_lrs) == 3  # each trial pretrained with its own sampled rate

    assert main([*args, "--trials", "1"]) == 0  # the journal resumes: trial 3 is added
    assert run_sql(db, "SELECT max(trial), count(*), count(DISTINCT params) FROM trials")[1] == [(3, 4, 4)]

    tuned = json.loads(best.read_text())
    assert set(tuned["overrides"]["methods"]) == {"simclr"}
    plan = expand(get_study("demo"), "quick", data_dir=medmnist_dir, seeds=[0], overrides=tuned["overrides"])
    lrs = {s.method: s.hparams["protocol"]["fit"]["optimizer"]["lr"] for s in plan.evaluate if s.protocol == "linear"}
    (params,), = run_sql(db, "SELECT params FROM trials WHERE trial = ?", [tuned["best_trial"]])[1]
    assert lrs["simclr"] == json.loads(params)["evaluate.protocol.fit.optimizer.lr"]
    assert lrs["random_init"] == 1e-3  # the method it was tuned for only
    capsys.readouterr()
    assert main(["replicate", "demo", "--overrides", str(best), "--seeds", "0", "--device", "cpu", "--data-dir",
                 str(medmnist_dir), "--db", str(db), "--dry-run"]) == 0
    with pytest.raises(ConfigError, match="unknown"):
        expand(get_study("demo"), "quick", data_dir=medmnist_dir, overrides={"methods": {"simclr": {"pretrian": {}}}})


def test_tunables_are_checked():
    with pytest.raises(ConfigError, match="either choices or low < high"):
        Tunable("pretrain.train.optimizer.lr", 1e-2, 1e-3)
    with pytest.raises(ConfigError, match="starts with"):
        Tunable("train.optimizer.lr", 1e-4, 1e-2)
