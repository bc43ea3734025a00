"""Results that travel between machines and survive growth: every paper output averages the runs of one config id
(fp32 and bf16 runs of a cell never pool), numbers whose runs ran in different environments say so, staleness
follows the run an evaluation starts from, tuned runs reach the paper as their own variant, and `medssl paper
--all` writes every study it can. Most databases here are written record by record through the store (no training);
the tune flow runs for real, on the demo study shrunk to seconds."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pytest

from medssl_core import api
from medssl_core.cli import main
from medssl_core.paper.figures import accuracy_bars
from medssl_core.paper.generate import generate
from medssl_core.paper.rows import load_rows
from medssl_core.paper.selection import select
from medssl_core.plan.catalog import get_study
from medssl_core.plan.grid import expand
from medssl_core.plan.runspec import RunSpec
from medssl_core.plan.study import Comparison, Decision, Protocol
from medssl_core.run.record import run_row, spec_params
from medssl_core.store import ResultsStore, RunRecord, run_sql
from medssl_core.store.records import save_record

DEMO = get_study("demo")
# a decision of every run (the data's normalisation), so that random init meets SimCLR in each variant; a claim
TWO_DECISIONS = replace(DEMO, decisions=(*DEMO.decisions, Decision("norm", "input std", "augment.std", [0.5], [0.25],
                                                                   stage="data")),
                        comparisons=(Comparison("SimCLR beats random init", ("simclr",), "random_init", "knn"),))
CPU, GPU = ("2.4.1", "cpu (2 threads)"), ("2.5.1", "NVIDIA H200")


def record(spec: RunSpec, value: float, environment: tuple[str, str] = CPU) -> RunRecord:
    """A finished evaluation as a run leaves it, without running it: test accuracy and AUC ``value``."""
    torch_version, device = environment
    bf16 = {"kind": "runtime", "name": "bf16", "value": str(spec.hparams["amp"] == "bf16")}
    return RunRecord(run=run_row(spec, "ok", None, datetime.now(timezone.utc), device=device),
                     params=[*spec_params(spec), bf16],
                     metrics=[{"split": "test", "name": m, "value": value} for m in ("accuracy", "auc")],
                     environment={"torch": torch_version, "device_name": device})


def write(db: Path, records: list[RunRecord]) -> None:
    store = ResultsStore(db)
    for r in records:
        save_record(store.records_dir, r)
    store.ingest_pending()


def two_precisions(db: Path, data_dir: Path) -> None:
    """Each evaluation of TWO_DECISIONS in fp32 and in bf16 (two config ids a cell), 3 seeds each: 0.70 + seed/100
    for random init, 0.10 more for SimCLR, 0.05 more corrected, 0.20 less in bf16. The fp32 as-published kNN runs
    of random init: seed 2 on a GPU under another torch."""
    records = []
    for amp in ("off", "bf16"):
        plan = expand(TWO_DECISIONS, "quick", data_dir=data_dir, seeds=[0, 1, 2], variant_names=[
            "as_published", "corrected"], overrides={"pretrain": {"amp": amp}, "evaluate": {"amp": amp}})
        for spec in plan.evaluate:
            corrected = set(spec.decisions.values()) == {"corrected"}
            value = (0.70 + 0.10 * (spec.method == "simclr") + 0.05 * corrected - 0.20 * (amp == "bf16")
                     + spec.seed / 100)
            moved = (amp, spec.method, spec.protocol, corrected, spec.seed) == ("off", "random_init", "knn", False, 2)
            records.append(record(spec, value, GPU if moved else CPU))
    write(db, records)


def table_rows(path: Path) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in path.read_text().splitlines()
            if line.startswith("|") and not line.startswith("|--")][1:]


def test_every_output_averages_one_config_id(tmp_path, medmnist_dir):
    """fp32 and bf16 runs of each cell: every table row and figure bar holds the 3 seeds of one config id (pooled,
    they read n=6 and the claims test six seeds a side)."""
    db, out = tmp_path / "r.duckdb", tmp_path / "paper"
    two_precisions(db, medmnist_dir)
    generate(TWO_DECISIONS, db, out, data_dir=medmnist_dir, tsne=False)
    quick = out / "quick"
    for variant in ("as_published", "corrected"):
        main_rows = table_rows(quick / f"main_{variant}.md")
        assert sorted(r[0] for r in main_rows) == ["Random init [bf16]", "Random init [bf16]", "Random init [fp32]",
                                                   "Random init [fp32]", "SimCLR [bf16]", "SimCLR [bf16]",
                                                   "SimCLR [fp32]", "SimCLR [fp32]"]
        assert all("(n=3)" in r[4] for r in main_rows)
    with open(quick / "cells.csv") as f:
        cells = list(csv.DictReader(f))
    assert len(cells) == 32 and {c["n"] for c in cells} == {"3"} and {c["setting"] for c in cells} == {"fp32", "bf16"}
    assert {c["metric"] for c in cells} == {"accuracy", "auc"}  # the secondary metric too, for the report
    assert all(len(set(run_sql(db, "SELECT config_id FROM runs WHERE run_id IN (SELECT unnest(?))",
                               [c["run_ids"].split()])[1])) == 1 for c in cells)

    decisions = table_rows(quick / "decisions.md")  # SimCLR: all corrected; random init: norm (= all, shown once)
    assert len(decisions) == 2 * 2 * 2  # protocols x precisions x rows
    assert sum(r[5] == "all decisions corrected" for r in decisions) == 4
    for row in decisions:
        assert "(n=3)" in row[7] and "(n=3)" in row[8] and float(row[9]) == pytest.approx(5), row
        assert row[2].endswith(("[fp32]", "[bf16]"))
        bf16 = row[2].endswith("[bf16]")
        base = 71 + 10 * row[2].startswith("SimCLR") - 20 * bf16
        assert row[7].startswith(f"{base:.2f} ± 1.00"), row  # as published: one precision's seeds

    claims = table_rows(quick / "claims.md")
    assert len(claims) == 4  # (as published, corrected) x (fp32, bf16)
    for row in claims:
        assert "(n=3)" in row[6] and "(n=3)" in row[7] and float(row[8]) == pytest.approx(10), row
        assert row[5] in ("SimCLR [fp32]", "SimCLR [bf16]") and row[7].endswith(row[5][-6:])

    rows = load_rows(TWO_DECISIONS, db, {r: "" for (r,) in run_sql(db, "SELECT run_id FROM runs")[1]})
    bars, several = accuracy_bars(rows, "accuracy")
    assert several and len(bars) == 2 and all(len(v) == 3 for b in bars.values() for v in b.values())
    # one precision's three seeds (which one, with equal seeds, follows the config ids), never both
    assert [round(v) for v in sorted(bars[("as_published", "breastmnist")][("knn", "random_init")])] in (
        [70, 71, 72], [50, 51, 52])


def test_numbers_whose_runs_ran_in_different_environments_say_so(tmp_path, medmnist_dir):
    """One seed of a config ran on a GPU under another torch: its cell, and every row that compares it, is marked
    and its footnote lists the environments; the cross-study report says it beside the number."""
    db, out = tmp_path / "r.duckdb", tmp_path / "paper"
    two_precisions(db, medmnist_dir)
    generate(TWO_DECISIONS, db, out, data_dir=medmnist_dir, tsne=False)
    quick = out / "quick"
    listed = "torch 2.4.1, cpu, fp32 (2 runs); torch 2.5.1, NVIDIA H200, fp32 (1 run)"
    text = (quick / "main_as_published.md").read_text()
    (cell,) = [r[4] for r in table_rows(quick / "main_as_published.md") if "§" in r[4]]
    assert cell == "71.00 ± 1.00 (n=3) §1" and f"kNN (k=20), 100 %: {listed}." in text
    assert "§" not in (quick / "main_corrected.md").read_text()
    for stem, column in (("decisions", 8), ("claims", 6)):
        marked = [r for r in table_rows(quick / f"{stem}.md") if "§" in r[column]]
        assert marked and all("[fp32]" in r[2 if stem == "decisions" else 5] for r in marked), stem
        assert listed.replace("2 runs", "5 runs") in (quick / f"{stem}.md").read_text()  # with the other side's
    assert len(table_rows(quick / "claims.md")) - len([r for r in table_rows(quick / "claims.md") if "§" in r[6]]) == 3
    summary = json.loads((quick / "summary.json").read_text())
    assert [c["environments"] for c in summary["cells"] if c["environments"]] == [listed, listed]  # accuracy, AUC


CHAINED = replace(DEMO, protocols=(
    Protocol("finetune", "Fine-tuning", {"kind": "fit", "head": {"type": "linear"}, "train_backbone": True, "fit": {
        "epochs": 1, "batch_size": 64, "optimizer": {"name": "adam", "lr": 1e-3}, "save_weights": True}}),
    Protocol("probe", "Probe of the fine-tuned model", {"kind": "fit", "head": {"type": "linear"}, "fit": {
        "epochs": 1, "batch_size": 64, "optimizer": {"name": "adam", "lr": 1e-3}}})),
    profiles=(replace(DEMO.profiles[0], overrides={"protocols": {"probe": {"start_from": "finetune"}}}),))


def test_staleness_follows_the_run_an_evaluation_starts_from(tmp_path, medmnist_dir):
    """The probe starts from the fine-tuned model of a run recorded under other code: left out as stale (or shown
    marked with --include-stale), and marked kept stale where `--reuse-stale` kept that run."""
    (start, probe), = [(s.start, s) for s in expand(CHAINED, "quick", data_dir=medmnist_dir, seeds=[0],
                                                    methods=["random_init"]).evaluate if s.start is not None]
    old_start = replace(start, code={**start.code, "metrics.py": "0" * 12})  # as if metrics.py had changed since
    probe = replace(probe, start=old_start)  # current code itself: stale only through the run it starts from
    recorded = [(r.run_id, "ok", r.canonical()) for r in (old_start, probe)]
    why = "its starting run is stale (code changed: metrics.py)"
    chosen = select(CHAINED, recorded, set(), data_dir=medmnist_dir)
    assert chosen.accepted == {} and dict((r, w) for r, _, w in chosen.left_out)[probe.run_id] == f"stale: {why}"
    shown = select(CHAINED, recorded, set(), data_dir=medmnist_dir, include_stale=True).accepted
    assert shown[probe.run_id] == f"stale (shown with --include-stale): {why}"

    db = tmp_path / "r.duckdb"
    write(db, [record(old_start, 0.8), record(probe, 0.7)])
    ResultsStore(db).mark_reused(CHAINED.name, {old_start.run_id: "code changed: metrics.py"})
    generate(CHAINED, db, tmp_path / "paper", data_dir=medmnist_dir, tsne=False)
    rows = {r[1]: r[0] for r in table_rows(tmp_path / "paper" / "quick" / "main_as_published.md")}
    assert rows == {"Fine-tuning": "Random init [‡ kept stale (--reuse-stale): code changed: metrics.py]",
                    "Probe of the fine-tuned model": "Random init [‡ kept stale (--reuse-stale): its starting run "
                                                     "is a kept stale run]"}


def test_paper_all_writes_every_study_it_can_and_says_what_it_left_out(tmp_path, medmnist_dir, monkeypatch, capsys):
    """Three studies: one with current runs (and one stale), one whose only runs are stale, one with none. `paper
    --all` writes the first and the report, names the others with why (exit 0); --include-stale shows the stale
    ones, marked with the module that changed."""
    ok, stale_only, empty = (replace(DEMO, name=n) for n in ("alpha", "beta", "gamma"))
    monkeypatch.setattr("medssl_core.plan.catalog.studies", lambda: {s.name: s for s in (DEMO, ok, stale_only, empty)})
    records = []
    for study in (ok, stale_only):
        for spec in expand(study, "quick", data_dir=medmnist_dir, seeds=[0, 1], methods=["random_init"],
                           protocols=["knn"]).evaluate:
            if study is stale_only or spec.seed == 1:
                spec = replace(spec, code={**spec.code, "metrics.py": "0" * 12})
            records.append(record(spec, 0.7 + spec.seed / 100))
    db, out = tmp_path / "r.duckdb", tmp_path / "paper"
    write(db, records)
    args = ["paper", "--all", "--db", str(db), "--out", str(out), "--data-dir", str(medmnist_dir)]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert re.search(r"beta: not written: None of the 2 runs of beta .* stale: code changed: metrics.py \(2\)\. .*"
                     r"`medssl paper --include-stale`", err)
    assert "gamma: not written:" in err and "holds no finished runs of gamma" in err
    report = (out / "REPORT.md").read_text()
    assert "not written: None of the 2 runs of beta" in report
    assert re.search(r"<a id=\"gamma\"></a>\n### .*\n\nno runs in this database", report)
    assert "- stale: code changed: metrics.py: 1 runs" in (out / "alpha" / "README.md").read_text()
    assert not (out / "beta").exists()

    assert main([*args, "--include-stale"]) == 0
    (row,) = table_rows(out / "beta" / "quick" / "main_as_published.md")
    assert row[0] == "Random init [‡ stale (shown with --include-stale): code changed: metrics.py]"
    assert "(n=2)" in row[4]
    assert "## Shown although stale (2 runs" in (out / "beta" / "README.md").read_text()
    capsys.readouterr()
    assert main(["paper", "beta", "--db", str(db), "--out", str(out)]) == 2  # a study named: no paper, exit 2
    assert "None of the 2 runs of beta" in capsys.readouterr().err


# the demo shrunk to seconds: 160 of its images, one pretraining epoch, one probe epoch
TINY = replace(DEMO, profiles=(replace(DEMO.profiles[0], overrides={
    "pretrain": {"split": {"scheme": "sample", "base": "official", "sizes": {"train": 64, "val": 48, "test": 48}},
                 "train": {"epochs": 1, "batch_size": 32}},
    "protocols": {"linear": {"protocol": {"fit": {"epochs": 1}}}}}),))


def test_tuned_runs_reach_the_paper_as_their_own_variant(tmp_path, medmnist_dir, monkeypatch):
    """`tune --write best.json`, `replicate --overrides best.json`, `paper`: the tuned runs are rows of their own
    ('tuned'), beside the declared settings' runs and never pooled with them; the other trial is left out as such."""
    pytest.importorskip("optuna", reason="the tune extra (pip install 'medssl[tune]') brings Optuna")
    monkeypatch.setattr("replications.demo.STUDY", TINY)
    db, best, out = tmp_path / "r.duckdb", tmp_path / "best.json", tmp_path / "paper"
    common = ["--db", str(db), "--data-dir", str(medmnist_dir), "--device", "cpu"]
    assert main(["tune", "demo", "--method", "simclr", "--protocol", "linear", "--profile", "quick", "--trials", "2",
                 "--write", str(best), "--no-download", *common]) == 0
    for extra in (["--overrides", str(best), "--seeds", "0,1"], ["--methods", "simclr", "--seeds", "0"]):
        assert main(["replicate", "demo", "--protocols", "linear", "--no-progress", *extra, *common]) == 0
    assert main(["paper", "demo", "--out", str(out), "--db", str(db), "--data-dir", str(medmnist_dir)]) == 0
    rows = {r[0]: r[4] for r in table_rows(out / "demo" / "quick" / "main_as_published.md")}
    assert {title: re.search(r"\(n=\d\)", cell)[0] for title, cell in rows.items()} == {
        "SimCLR": "(n=1)", "SimCLR [tuned]": "(n=2)", "Random init": "(n=2)"}
    tuned_ids = json.loads((out / "demo" / "quick" / "summary.json").read_text())["tuned"]
    assert len(tuned_ids) == 6  # the best trial's pretraining and probe (corrected), 2 seeds' as published
    # the results commands name them as the paper does
    labelled = api.query(db, "SELECT run_id FROM run_variants WHERE variant = 'tuned'")[1]
    assert sorted(r for (r,) in labelled) == sorted(tuned_ids)
    assert sorted(r["run_id"] for r in api.runs(db, variant="tuned")) == sorted(tuned_ids)
    assert not {r["run_id"] for r in api.runs(db, variant="corrected")} & set(tuned_ids)
    readme = (out / "demo" / "README.md").read_text()
    assert "not its best values: 2 runs" in readme and "settings no longer declared" not in readme
