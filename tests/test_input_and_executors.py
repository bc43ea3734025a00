"""Bad command-line input is refused with the valid values; a Ray worker runs only the code its spec was planned
with; under a label fraction, the validation labels may follow the fraction, and every evaluation records how many
it used."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from medssl_core import config
from medssl_core.cli import main
from medssl_core.data import load_dataset
from medssl_core.data.splits import round_half_up
from medssl_core.execute.ray_cluster import _in_worker
from medssl_core.plan.catalog import get_study
from medssl_core.plan.grid import expand
from medssl_core.plan.study import deep_merge
from medssl_core.run.context import Context
from medssl_core.run.evaluate import labelled_positions
from medssl_core.run.inputs import split_arrays
from medssl_core.store import ResultsStore, run_sql
from tests.conftest import cpu_store, execute_cleanly


# -- bad input --------------------------------------------------------------------------------------------------
def test_a_data_dir_that_does_not_exist_is_refused_with_how_to_fix_it(tmp_path, capsys):
    missing = tmp_path / "no_such_folder"
    db = str(tmp_path / "r.duckdb")
    assert main(["replicate", "demo", "--data-dir", str(missing), "--db", db, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"--data-dir {missing} is not an existing folder" in err and f"mkdir -p {missing}" in err
    assert main(["results", "runs", "--data-dir", str(missing), "--db", db]) == 2  # no download hint where none is
    err = capsys.readouterr().err
    assert "is not an existing folder" in err and "mkdir" not in err
    assert not missing.exists()


def test_downloads_are_announced_with_their_folder(tmp_path, capsys):
    empty = tmp_path / "data"
    empty.mkdir()
    assert main(["replicate", "demo", "--data-dir", str(empty), "--db", str(tmp_path / "r.duckdb"), "--dry-run"]) == 0
    assert f"DOWNLOAD breastmnist (28 px): not present; the runs download the MedMNIST files into {empty}" in \
        capsys.readouterr().err


@pytest.mark.parametrize("option, value", [("--seeds", "-1"), ("--seeds", ""), ("--seeds", "0,,1"),
                                           ("--methods", ""), ("--datasets", " , ")])
def test_seeds_and_name_lists_that_name_nothing_valid_are_refused(medmnist_dir, tmp_path, capsys, option, value):
    code = main(["replicate", "demo", option, value, "--data-dir", str(medmnist_dir), "--db",
                 str(tmp_path / "r.duckdb"), "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2
    expected = "each non-negative, e.g. 0,1,2" if option == "--seeds" else f"{option} names nothing"
    assert expected in err


@pytest.fixture
def empty_db(tmp_path):
    db = tmp_path / "r.duckdb"
    ResultsStore(db).init()
    return db


def test_misspelt_study_names_are_refused_with_the_valid_ones_and_the_closest(empty_db, capsys):
    assert main(["results", "runs", "--study", "smalldatasl", "--db", str(empty_db)]) == 2  # not an empty table
    err = capsys.readouterr().err
    assert "'medsgssl'" in err and "Did you mean smalldatassl?" in err
    assert main(["replicate", "smalldatasl", "--db", str(empty_db)]) == 2
    assert "registered studies" in (err := capsys.readouterr().err) and "Did you mean smalldatassl?" in err


def test_paper_profiles_are_those_the_studies_declare(empty_db, tmp_path, capsys):
    paper = ["paper", "--db", str(empty_db), "--out", str(tmp_path / "paper")]
    assert main([*paper, "--profile", "quik"]) == 2
    assert "no study declares it" in (err := capsys.readouterr().err) and "Did you mean quick?" in err
    # a profile some studies declare is theirs, not refused by the first study without it
    assert main([*paper, "--profile", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "holds no finished runs of a study declaring profile 'tiny'" in err and "has no profile" not in err


def test_tune_refuses_misspelt_names_and_negative_seeds_before_searching(empty_db, medmnist_dir, tmp_path, capsys):
    tune = ["tune", "demo", "--db", str(empty_db), "--data-dir", str(medmnist_dir), "--journal", str(tmp_path / "j")]
    assert main([*tune, "--method", "simclrr", "--protocol", "linear"]) == 2
    assert "Did you mean simclr?" in capsys.readouterr().err
    assert main([*tune, "--method", "simclr", "--protocol", "linaer"]) == 2
    assert "Did you mean linear?" in capsys.readouterr().err
    assert main([*tune, "--method", "simclr", "--protocol", "linear", "--dataset", "breast"]) == 2
    assert "Did you mean breast_us?" in capsys.readouterr().err
    assert main([*tune, "--method", "simclr", "--protocol", "linear", "--seed", "-1"]) == 2
    assert "non-negative" in capsys.readouterr().err
    assert not (tmp_path / "j").exists()  # refused before any search is created


# -- Ray workers ------------------------------------------------------------------------------------------------
def test_a_ray_worker_refuses_a_spec_planned_with_other_code(medmnist_dir, tmp_path):
    spec = expand(get_study("demo"), "quick", data_dir=medmnist_dir, seeds=[0]).evaluate[0]
    module = sorted(spec.code)[-1]
    other = replace(spec, code={**spec.code, module: "0" * 16})  # the coordinator's code, one module edited
    ctx = Context(None, torch.device("cpu"), tmp_path, tmp_path, progress=False)
    ran = []

    def runner(s, c):
        ran.append(s.run_id)
        return "ran"

    record = _in_worker(runner, other, ctx, torch.get_num_threads())
    assert not ran and not record.ok and record.run["run_id"] == other.run_id
    assert module in record.run["error"] and "Install the coordinator's medssl version" in record.run["error"]
    assert _in_worker(runner, spec, ctx, torch.get_num_threads()) == "ran" and ran == [spec.run_id]


# -- validation labels under a label fraction -------------------------------------------------------------------
FOLLOW = {"evaluate": {"split": {"val_labels": "follow_fraction"}}}


def _one_percent(overrides: dict | None, medmnist_dir, methods=("random_init",)):
    """The demo's linear probe at 1 % of the labels (an encoder's last checkpoint: 'best' reads every label)."""
    demo = get_study("demo")
    study = replace(demo, profiles=(replace(demo.profile("quick"), fractions=(0.01,)),))
    return expand(study, "quick", data_dir=medmnist_dir, seeds=[0], methods=list(methods), protocols=["linear"],
                  overrides=deep_merge({"evaluate": {"checkpoint": "last"}}, overrides or {}))


def test_validation_labels_follow_the_label_fraction_when_declared(medmnist_dir, tmp_path):
    default, follow = (_one_percent(o, medmnist_dir).evaluate[0] for o in (None, FOLLOW))
    assert '"val_labels"' not in default.canonical()  # the default leaves recorded specs as they were
    assert '"val_labels":"follow_fraction"' in follow.canonical() and follow.config_id != default.config_id
    pretrainings = [[s.run_id for s in _one_percent(o, medmnist_dir, ("simclr",)).pretrain] for o in (None, FOLLOW)]
    assert pretrainings[0] == pretrainings[1] and pretrainings[0]  # evaluate overrides: pretrainings shared

    val = load_dataset("breastmnist", 28, medmnist_dir).labels["val"]
    ctx = Context(str(medmnist_dir), torch.device("cpu"), tmp_path, tmp_path, progress=False)
    hp = config.parse(config.EvaluateHP, follow.hparams, "test")
    splits, _ = split_arrays(follow, hp, ctx)
    used = splits["val"][1][labelled_positions(follow, hp, ctx, splits)["val"]]
    classes, counts = np.unique(val, return_counts=True)
    share = {int(c): max(1, round_half_up(0.01 * n)) for c, n in zip(classes, counts)}  # stratified, each class
    assert {int(c): int((used == c).sum()) for c in classes} == share

    store, ctx = cpu_store(tmp_path, medmnist_dir)
    for spec in (default, follow):
        execute_cleanly(replace(_one_percent(None, medmnist_dir), specs=[spec]), store, ctx)
    rows = run_sql(store.db_path, "SELECT run_id, split, name, value FROM metrics WHERE name LIKE 'n_%'")[1]
    recorded = {(run, split, name): value for run, split, name, value in rows}
    assert recorded[(default.run_id, "val", "n_val_labelled")] == len(val) == 78  # every validation label, as before
    assert recorded[(follow.run_id, "val", "n_val_labelled")] == recorded[(follow.run_id, "val", "n_images")] \
        == sum(share.values())
    assert recorded[(follow.run_id, "train", "n_labelled")] == recorded[(default.run_id, "train", "n_labelled")] < 10
