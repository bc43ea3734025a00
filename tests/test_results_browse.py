"""Results read from a terminal: `medssl results show|compare|runs|export`, the variant of each run in the paper's
words, the database each command opened, `medssl --version` and the profile names in the help. The database is
written record by record through the store (no training): the demo study with a second decision, so that its
runs cover both whole variants and each decision corrected alone."""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pytest

from medssl_core import __version__, api
from medssl_core.cli import build_parser, main
from medssl_core.common.atomic import atomic_path
from medssl_core.common.errors import ConfigError
from medssl_core.paper.browse import format_show, run_variants, shorten, sparkline
from medssl_core.paper.labels import parse_decisions, variant_label
from medssl_core.plan.catalog import get_study
from medssl_core.plan.grid import expand
from medssl_core.plan.identity import FORMAT_KEY
from medssl_core.plan.study import Decision
from medssl_core.run.record import failed_record, run_row, spec_params
from medssl_core.store import ResultsStore, RunRecord, run_sql

DEMO = get_study("demo")
STUDY = replace(DEMO, decisions=(*DEMO.decisions, Decision("norm", "input std", "augment.std", [0.5], [0.25],
                                                           stage="data")))
# a study whose decision names its sides (as medmnist_ssl's reference_checkpoint does)
LABELLED = replace(DEMO, name="labelled", decisions=(replace(DEMO.decisions[0], labels=("the paper's crop",
                                                                                        "the code's crop")),),
                   profiles=(replace(DEMO.profiles[0], name="labelled_quick"),))
AMBIGUOUS = ("feed0001aaaaaaaa", "feed0002bbbbbbbb")  # two recorded ids sharing the prefix 'feed'
CURVE = [2.0, 1.5, 1.2, 1.1, 1.05]
NO_DATA = {"every_source": True, "fingerprint_data": False, "allow_download": False}  # plans without the data


def ok_record(spec, value: float, artifacts: list[dict] = ()) -> RunRecord:
    curves = [{"step": i + 1, "name": "loss", "value": v} for i, v in enumerate(CURVE)] if spec.kind == "pretrain" \
        else []
    return RunRecord(run=run_row(spec, "ok", None, datetime.now(timezone.utc), wall_s=12.5, device="cpu (2 threads)"),
                     params=spec_params(spec),
                     metrics=[{"split": s, "name": "accuracy", "value": value + (s == "val") / 100}
                              for s in ("test", "val")],
                     curves=curves, artifacts=list(artifacts),
                     environment={"torch": "2.4.1", "git_commit": "abc123", "git_dirty": True, "python": "3.11.7",
                                  "hostname": "node7"})


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """Pretraining and kNN runs of STUDY in every variant (accuracy 0.70, +0.05 per decision corrected), one of them
    recorded under other code (stale, with a long reason), a failed run, two runs whose ids share 'feed'."""
    home = tmp_path_factory.mktemp("browse")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home / "home"))
        mp.setenv("MEDSSL_CACHE", str(home / "cache"))
        plan = expand(STUDY, "quick", seeds=[0], methods=["simclr"], protocols=["knn"], **NO_DATA,
                      variant_names=["as_published", "corrected", "each"])
        failed = expand(STUDY, "quick", seeds=[0], methods=["random_init"], protocols=["knn"], **NO_DATA).evaluate[0]
    store = ResultsStore(home / "r.duckdb")
    kept = home / "encoder_best.pt"
    kept.write_bytes(b"weights")
    for spec in plan.specs:
        corrected = list(spec.decisions.values()).count("corrected")
        artifacts = [{"name": "encoder_best.pt", "path": str(kept), "bytes": 7},
                     {"name": "encoder_last.pt", "path": str(home / "gone.pt"), "bytes": 7}]
        store.record(ok_record(spec, 0.70 + 0.05 * corrected, artifacts if spec.kind == "pretrain" else []))
    old = plan.evaluate[0]
    changed = sorted(k for k in old.code if k != FORMAT_KEY)[:12]
    store.record(ok_record(replace(old, code={**old.code, **dict.fromkeys(changed, "0" * 12)}), 0.5))
    store.record(failed_record(failed, "RuntimeError: the kNN bank does not fit in memory"))
    for run_id in AMBIGUOUS:  # no decisions; no spec, as an older medssl recorded them: stale
        store.record(RunRecord(run={**run_row(failed, "failed", "boom", datetime.now(timezone.utc)),
                                    "run_id": run_id, "decisions": None, "spec_json": "{}"}))
    return store.db_path


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    """The studies as registered here: STUDY as 'demo', and LABELLED."""
    monkeypatch.setattr("medssl_core.plan.catalog.studies", lambda: {"demo": STUDY, "labelled": LABELLED})


def run_ids(db: Path, where: str) -> list[str]:
    return [r for (r,) in run_sql(db, f"SELECT run_id FROM runs WHERE {where} ORDER BY run_id")[1]]


def test_show_prints_a_run_whole_from_a_prefix(db, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where --paper-dir's default, ./paper, holds nothing yet
    (pretrain,) = run_ids(db, "kind = 'pretrain' AND decisions = 'crop_scale=corrected,norm=as_published'")
    assert main(["results", "show", pretrain[:6], "--db", str(db)]) == 0
    out, err = capsys.readouterr()
    assert err.strip() == f"database: {db.resolve()}"  # one line on stderr; stdout is the run
    assert out.startswith(f"run {pretrain}  pretrain  demo [quick]  variant: corrected: crop_scale\nstatus: ok\n")
    assert "stale: no (recorded under the current code and data)" in out
    assert "\n  hparams:\n    amp: off\n    augment:\n" in out  # the settings, an indented tree
    assert "crop_scale: corrected (augment.crop_scale = [0.08, 1.0])\n  norm: as published (augment.std = [0.5])" in out
    assert "  code: " in out and " definitions fingerprinted" in out
    metrics = out.split("\nmetrics:\n")[1].split("\n\n")[0].splitlines()
    assert metrics[0].split() == ["metric", "test", "val"] and metrics[2].split() == ["accuracy", "0.75", "0.76"]
    curve = next(line.split() for line in out.splitlines() if line.startswith("  loss "))
    assert curve == ["loss", sparkline(CURVE), "1-5", "(5)", "2", "1.05", "2", "1.05"]
    assert [line.split()[-1] for line in out.splitlines() if "encoder_" in line] == ["yes", "MISSING"]
    for line in ("torch: 2.4.1", "device: cpu (2 threads)", "git_commit: abc123", "git_dirty: True",
                 "python: 3.11.7", "hostname: node7"):
        assert f"\n  {line}\n" in out + "\n"

    assert "figure:" not in out
    figure = tmp_path / "paper" / "demo" / "quick" / "pretraining_curves.png"
    figure.parent.mkdir(parents=True)
    figure.write_bytes(b"png")
    assert main(["results", "show", pretrain, "--db", str(db), "--paper-dir", str(tmp_path / "paper")]) == 0
    assert f"\n  figure: {figure}\n" in capsys.readouterr().out

    assert main(["results", "show", pretrain, "--db", str(db), "--format", "json"]) == 0
    shown = api.show(pretrain, db)  # the same as plain data
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(shown, default=str))
    assert shown["metrics"] == {"test": {"accuracy": pytest.approx(0.75)}, "val": {"accuracy": pytest.approx(0.76)}}
    assert [c["min"] for c in shown["curves"]] == [1.05] and json.dumps(shown, default=str)
    evaluation = api.show(run_ids(db, f"parent_run_id = '{pretrain}'")[0], db)
    assert evaluation["settings"]["pretrain"]["kind"] == "pretrain"  # the spec whole; the text names the run:
    assert f"\n  pretrain: run {pretrain} (`medssl results show` it" in format_show(evaluation)


def test_show_of_stale_and_failed_runs_says_why(db, capsys):
    (stale,) = run_ids(db, "run_id IN (SELECT run_id FROM metrics WHERE value = 0.5 AND split = 'test')")
    shown = api.show(stale, db)
    assert shown["stale"] and shown["stale_why"].startswith("code changed: ")
    assert main(["results", "show", stale, "--db", str(db)]) == 0
    assert f"stale: yes, {shown['stale_why']}\n" in capsys.readouterr().out
    (failed,) = run_ids(db, "error LIKE 'RuntimeError%'")
    assert main(["results", "show", failed, "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "status: failed  error: RuntimeError: the kNN bank does not fit in memory\n" in out
    assert "metrics:\n  - (none)" in out


def test_unknown_ambiguous_and_empty_prefixes_are_clear_errors(db, capsys):
    assert main(["results", "show", "feed", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert "'feed' is ambiguous" in err and all(r in err for r in AMBIGUOUS) and "more characters" in err
    assert api.show("feed0001", db)["run_id"] == AMBIGUOUS[0]
    with pytest.raises(ConfigError, match=r"no run id in .* starts with 'zz'.*medssl results runs"):
        api.show("zz", db)
    with pytest.raises(ConfigError, match="empty run id"):
        api.show(" ", db)
    assert main(["results", "compare", "feed0001", "feed0001", "--db", str(db)]) == 2
    assert "name the same run" in capsys.readouterr().err


def test_compare_lists_differing_settings_and_metrics_side_by_side(db, capsys):
    (a,) = run_ids(db, "kind = 'evaluate' AND decisions = 'crop_scale=as_published,norm=as_published' "
                   "AND run_id NOT IN (SELECT run_id FROM metrics WHERE value = 0.5)")
    (b,) = run_ids(db, "kind = 'evaluate' AND decisions = 'crop_scale=corrected,norm=corrected'")
    compared = api.compare(a[:8], b[:8], db)
    differ = {s["path"]: (s["a"], s["b"]) for s in compared["settings"]}
    assert differ["decisions.norm"] == ("as_published", "corrected")
    assert differ["pretrain.hparams.augment.crop_scale"] == ([0.08, 0.1], [0.08, 1.0])
    assert "hparams.augment.std" in differ and "seed" not in differ and "method" not in differ
    test = next(m for m in compared["metrics"] if (m["split"], m["metric"]) == ("test", "accuracy"))
    assert (test["a"], test["b"], test["diff"]) == pytest.approx((0.70, 0.80, 0.10))
    assert (compared["a"]["variant"], compared["b"]["variant"]) == ("as published", "corrected")

    assert main(["results", "compare", a, b, "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "\n  decisions.norm " in out and "as_published" in out
    assert next(line for line in out.splitlines() if line.split()[:2] == ["test", "accuracy"]).split() == [
        "test", "accuracy", "0.7", "0.8", "+0.1"]
    assert main(["results", "compare", a, b, "--db", str(db), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["settings"] == json.loads(json.dumps(compared["settings"]))

    # a run and its other variant: the same cell and seed with every decision on the other side
    counterpart = api.compare(a[:8], db=db)
    assert counterpart["b"]["variant"] == "corrected" and counterpart["b"]["run_id"] != a
    assert "seed" not in {d["path"] for d in counterpart["settings"]}  # the same seed, and cell
    assert not {d["path"] for d in counterpart["settings"]} & {"method", "dataset", "protocol.name"}
    assert next(m["diff"] for m in counterpart["metrics"] if (m["split"], m["metric"]) == ("test", "accuracy")) \
        == pytest.approx(0.10)
    assert main(["results", "compare", a[:8], "--db", str(db)]) == 0 and "corrected" in capsys.readouterr().out
    (free,) = run_ids(db, "decisions IS NULL OR decisions = ''")[:1]
    with pytest.raises(ConfigError, match="belongs to both variants"):
        api.compare(free, db=db)


def test_run_list_filters_and_variant_in_the_papers_words(db, capsys):
    listed = api.runs(db)
    assert {r["variant"] for r in listed} == {"as published", "corrected", "corrected: crop_scale",
                                              "corrected: norm", "-"}
    assert all(r["variant"] == variant_label(parse_decisions(r["decisions"]), STUDY.decisions) for r in listed)
    every = api.results(db)  # a notebook's DataFrame: every run with its variant
    assert dict(zip(every["run_id"], every["variant"])) == {r["run_id"]: r["variant"] for r in listed}
    by = {f: {r["run_id"] for r in api.runs(db, variant=f)} for f in ("as_published", "corrected", "each")}
    assert {r["variant"] for r in api.runs(db, variant="each")} == {"corrected: crop_scale", "corrected: norm"}
    assert {r["variant"] for r in api.runs(db, variant="corrected")} == {"corrected", "-"}  # shared by both
    assert not by["as_published"] & by["each"] and by["as_published"] & by["corrected"]
    assert {r["method"] for r in api.runs(db, method="random_init")} == {"random_init"}
    assert {r["status"] for r in api.runs(db, status="failed")} == {"failed"}
    assert [r["stale"] for r in api.runs(db, stale=True)] == [True] * 3  # the old code's, two without a spec
    assert not any(r["stale"] for r in api.runs(db, stale=False))
    with pytest.raises(ConfigError, match=r"--method 'simclrr'.*Did you mean simclr"):
        api.runs(db, method="simclrr")
    with pytest.raises(ConfigError, match="variant 'fixed'"):
        api.runs(db, variant="fixed")
    assert run_variants([("x", "labelled", "crop_scale=corrected"), ("y", "gone", "a=corrected")]) == [
        ("x", "the code's crop"), ("y", "corrected")]

    assert main(["results", "runs", "--db", str(db), "--stale", "--method", "simclr"]) == 0
    out, err = capsys.readouterr()
    assert err.strip() == f"database: {db.resolve()}"
    (row,) = out.splitlines()[2:]
    (full,) = [r["stale_why"] for r in api.runs(db, stale=True, method="simclr")]
    assert len(full) > 60 and shorten(full, 60) in row and shorten(full, 60).endswith(" …")
    words = shorten(full, 60)[:-2].split()
    assert full.split()[:len(words)] == words  # cut between words, never inside one
    assert main(["results", "runs", "--db", str(db), "--current", "--variant", "each", "--format", "csv"]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert {r["variant"] for r in rows} == {"corrected: crop_scale", "corrected: norm"} and len(rows) == 4
    with pytest.raises(SystemExit):
        main(["results", "runs", "--db", str(db), "--stale", "--current"])
    assert "--current: not allowed with argument --stale" in capsys.readouterr().err


def test_export_writes_a_whole_file_or_none(db, tmp_path, capsys):
    out = tmp_path / "x" / "run_metrics.csv"
    assert main(["results", "export", "--db", str(db), "--table", "run_metrics", "--out", str(out)]) == 0
    with open(out) as f:
        exported = list(csv.DictReader(f))
    assert len(exported) == run_sql(db, "SELECT count(*) FROM run_metrics")[1][0][0] > 0
    parquet = tmp_path / "x" / "variants.parquet"
    api.export(parquet, db, table="run_variants", fmt="parquet")
    with duckdb.connect() as con:
        assert sorted(con.execute(f"SELECT * FROM read_parquet('{parquet}')").fetchall()) == sorted(
            run_variants(run_sql(db, "SELECT run_id, study, decisions FROM runs")[1]))
    assert sorted(os.listdir(tmp_path / "x")) == ["run_metrics.csv", "variants.parquet"]  # no temporary file left
    before = out.read_bytes()
    with pytest.raises(ConfigError, match=r"'runz' is not a table.*Did you mean runs"):
        api.export(out, db, table="runz")
    with pytest.raises(ConfigError, match="is a folder"):
        api.export(tmp_path / "x", db)
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:  # a writer that fails halfway leaves the old file
        tmp.write_text("half")
        raise RuntimeError
    assert out.read_bytes() == before and sorted(os.listdir(tmp_path / "x")) == ["run_metrics.csv", "variants.parquet"]
    with pytest.raises(SystemExit):
        main(["results", "export", "--db", str(db), "--out", str(out), "--format", "json"])
    assert "invalid choice: 'json'" in capsys.readouterr().err


def test_version_db_defaults_and_lazy_profile_names(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"medssl {__version__}"

    def taking_db(parser: argparse.ArgumentParser):
        """Every (sub)command that takes --db."""
        for action in parser._actions:
            if "--db" in action.option_strings:
                yield parser
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from taking_db(sub)

    helps = {p.prog: " ".join(p.format_help().split()) for p in taking_db(build_parser())}
    assert {"medssl results show", "medssl results export", "medssl replicate", "medssl paper"} <= set(helps)
    assert all("--db DB the results database (default: results/medssl.duckdb)" in h for h in helps.values())

    with pytest.raises(SystemExit):
        main(["replicate", "--help"])
    # the profiles of the registered studies (here: `registered`'s), not a list typed into the help
    assert "a profile of the study: labelled_quick, quick (`medssl study show" in " ".join(
        capsys.readouterr().out.split())
    lazy = subprocess.run([sys.executable, "-c", "import sys; from medssl_core.cli import build_parser; "
                           "build_parser(); print(sorted(m for m in sys.modules if m.startswith('replications')))"],
                          capture_output=True, text=True, cwd=Path(__file__).parent.parent, check=True)
    assert lazy.stdout.strip() == "[]"  # building the parser imports no study
