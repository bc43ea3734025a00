from __future__ import annotations

import hashlib
import subprocess
import sys
import time

from medssl_core.cli import main
from medssl_core.execute.local import execute
from medssl_core.plan.catalog import get_study
from medssl_core.plan.grid import expand
from medssl_core.plan.runspec import RunSpec
from medssl_core.run.runner import execute_spec
from medssl_core.store import run_sql
from tests.conftest import ROOT, cpu_store, env_for_subprocess


def test_run_id_is_canonical_and_stable():
    a = RunSpec("s", "pretrain", "d", "d", "m", 0, "quick", {"b": 1, "a": [1, 2.5]}, {"x": "as_published"})
    b = RunSpec("s", "pretrain", "d", "d", "m", 0, "quick", {"a": [1, 2.5], "b": 1}, {"x": "as_published"})
    assert a.canonical() == (
        '{"code":{},"data":null,"dataset":"d","dataset_used":"d","decisions":{"x":"as_published"},"fraction":null,'
        '"hparams":{"a":[1,2.5],"b":1},"kind":"pretrain","method":"m","pretrain":null,"profile":"quick",'
        '"protocol":null,"seed":0,"study":"s"}')
    assert a.run_id == b.run_id == hashlib.sha256(a.canonical().encode()).hexdigest()[:16] == "d9c57eff165fa8ab"
    assert RunSpec.from_json(a.canonical()).run_id == a.run_id
    c = RunSpec("s", "pretrain", "d", "d", "m", 1, "quick", {"a": [1, 2.5], "b": 1}, {"x": "as_published"})
    assert c.run_id != a.run_id and c.config_id == a.config_id and c.settings_id == a.settings_id
    # other code or data: another run and config, the same settings (so the old run is stale, not unrelated)
    d = RunSpec(**{**a.__dict__, "code": {"losses.py": "1"}, "data": "md5"})
    assert d.run_id != a.run_id and d.config_id != a.config_id and d.settings_id == a.settings_id
    # an evaluation embeds its pretraining: its ids change with the pretraining's, but not with its seed
    ev = RunSpec("s", "evaluate", "d", "d", "m", 0, "quick", {"k": 1}, {}, "knn", 1.0, a)
    ev_c = RunSpec("s", "evaluate", "d", "d", "m", 1, "quick", {"k": 1}, {}, "knn", 1.0, c)
    ev_d = ev.replace_pretrain(d)
    assert ev.parent == a.run_id and RunSpec.from_json(ev.canonical()) == ev
    assert ev_c.config_id == ev.config_id and ev_c.run_id != ev.run_id
    assert ev_d.config_id != ev.config_id and ev_d.settings_id == ev.settings_id


def test_demo_grid_shares_pretraining_and_applies_decisions(medmnist_dir):
    study = get_study("demo")
    plan = expand(study, "quick", data_dir=medmnist_dir)
    assert len(plan.pretrain) == 2 and len(plan.evaluate) == 8
    for spec in plan.evaluate:
        if spec.method == "simclr":
            assert spec.parent in {p.run_id for p in plan.pretrain}
        else:
            assert spec.parent is None and spec.hparams["backbone"]["init"] == "random"
    pre = plan.pretrain[0]
    assert pre.decisions == {"crop_scale": "as_published"} and pre.hparams["augment"]["crop_scale"] == [0.08, 0.1]
    plan2 = expand(study, "quick", data_dir=medmnist_dir, seeds=[0], overrides={"pretrain": {"train": {"epochs": 1}}})
    assert plan2.pretrain[0].hparams["train"]["epochs"] == 1 and plan2.pretrain[0].run_id != pre.run_id


def test_missing_dataset_is_skipped_with_instructions(tmp_path):
    plan = expand(get_study("demo"), "quick", data_dir=tmp_path, allow_download=False)
    assert not plan.specs and "medssl data fetch breastmnist" in plan.skipped[0][1]


def test_failed_run_is_recorded_and_the_grid_goes_on_then_retry(tmp_path, medmnist_dir):
    plan = expand(get_study("demo"), "quick", data_dir=medmnist_dir, seeds=[0], methods=["random_init"])
    store, ctx = cpu_store(tmp_path, medmnist_dir)
    calls = []

    def flaky(spec, ctx):
        calls.append(spec.protocol)
        if spec.protocol == "knn":
            spec = RunSpec(**{**spec.__dict__, "hparams": {**spec.hparams, "protocol": {"kind": "nope"}}})
        rec = execute_spec(spec, ctx)
        rec.run["run_id"] = plan.specs[len(calls) - 1].run_id
        return rec

    summary = execute(plan, store, ctx, runner=flaky, progress=False)
    assert summary.ran == 2 and len(summary.failed) == 1
    assert "protocol" in summary.failed[0].run["error"] and "nope" in summary.failed[0].run["error"]
    assert execute(plan, store, ctx, progress=False).ran == 0  # failed runs are not retried by default
    summary = execute(plan, store, ctx, retry_failed=True, progress=False)
    assert summary.ran == 1 and not summary.failed
    assert run_sql(store.db_path, "SELECT status, count(*) FROM runs GROUP BY 1")[1] == [("ok", 2)]


def test_replicate_killed_midway_then_resumed_runs_each_run_exactly_once(tmp_path, medmnist_dir):
    db = tmp_path / "r.duckdb"
    cmd = [sys.executable, "-m", "medssl_core.cli", "replicate", "demo", "--profile", "quick", "--device", "cpu",
           "--data-dir", str(medmnist_dir), "--db", str(db), "--no-progress"]
    env = env_for_subprocess(tmp_path)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    records = tmp_path / "r_runs" / "records"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(records.glob("*.json"))) < 3:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    done_before = len(list(records.glob("*.json")))
    assert 3 <= done_before < 10
    second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    assert "already done" in second.stderr
    ids = run_sql(db, "SELECT run_id, status FROM runs")[1]
    assert len(ids) == 10 and len({i for i, _ in ids}) == 10 and {s for _, s in ids} == {"ok"}
    third = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert "0 runs executed, 10 already done" in third.stderr
    assert run_sql(db, "SELECT count(*) FROM metrics m JOIN runs r USING (run_id) WHERE r.kind = 'evaluate' "
                       "AND m.split = 'test' AND m.name = 'accuracy'")[1] == [(8,)]
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    env_rows = run_sql(db, "SELECT count(DISTINCT run_id), list(DISTINCT git_commit), max(data_checksums) "
                           "FROM environment")[1][0]
    assert env_rows[0] == 10 and env_rows[1] == [head] and "750601b1f35ba3300ea97c75c52ff8f6" in env_rows[2]


def test_bare_replicate_on_cpu_with_a_gpu_profile_is_refused_clearly(medmnist_dir, tmp_path, capsys):
    code = main(["replicate", "smalldatassl", "--profile", "paper", "--device", "cpu", "--db",
                 str(tmp_path / "r.duckdb"), "--data-dir", str(medmnist_dir), "--dry-run"])
    assert code == 2 and "--allow-slow" in capsys.readouterr().err


def test_unknown_study_and_bad_seeds(capsys, tmp_path):
    assert main(["replicate", "nosuch", "--db", str(tmp_path / "x.duckdb")]) == 2
    assert "registered studies" in capsys.readouterr().err
    assert main(["replicate", "demo", "--seeds", "a,b", "--db", str(tmp_path / "x.duckdb")]) == 2
    assert "comma-separated integers" in capsys.readouterr().err


def test_no_horizontal_flip_for_datasets_with_left_right_classes():
    from dataclasses import replace

    from medssl_core.plan.study import StudyDataset

    study = replace(get_study("demo"), datasets=(StudyDataset("organs", "OrganA", ("organamnist",),
                                                              {"scheme": "official"}),))
    profile = replace(study.profiles[0], image_size={"organamnist": 28})
    study = replace(study, profiles=(profile,))
    plan = expand(study, "quick")  # plans a download of organamnist; nothing is fetched
    assert plan.pretrain and all(s.hparams["augment"]["hflip"] == 0.0 for s in plan.pretrain)
    assert get_study("demo").pretrain_defaults["augment"]["hflip"] == 0.5


def test_variants_option_flips_one_decision_at_a_time(medmnist_dir, capsys, tmp_path):
    study = get_study("smalldatassl")
    plan = expand(study, "quick", data_dir=medmnist_dir, seeds=[0], methods=["simsiam"], protocols=["knn"],
                  variant_names=["as_published", "each"])
    flipped = sorted(k for s in plan.pretrain for k, v in s.decisions.items() if v == "corrected")
    # one pretraining per flip; the quick profile sets the optimiser and epochs itself (moot decisions)
    assert flipped == ["crop_scale", "grey_input", "simsiam_predictor"]
    assert all("sgd_momentum" not in s.decisions and "pretrain_epochs" not in s.decisions for s in plan.specs)
    assert main(["replicate", "demo", "--variants", "sideways", "--db", str(tmp_path / "x.duckdb"),
                 "--data-dir", str(medmnist_dir), "--dry-run"]) == 2
    assert "unknown variant" in capsys.readouterr().err
