"""benchmarks/gpu_check.py without a GPU: its dry run writes the folder and summary.md the GPU run writes, and a step
that fails or runs out of time is reported (with its log's last lines) while the others go on."""

from __future__ import annotations

import importlib.util
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pytest

from medssl_core.store import ResultsStore
from medssl_core.store.schema import APPENDED

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
gpu_check = sys.modules["gpu_check"] = importlib.util.module_from_spec(_spec)  # a script, not a package module
_spec.loader.exec_module(gpu_check)


def python_step(name: str, code: str, weight: float = 1.0) -> gpu_check.Step:
    return gpu_check.Step(name, "quick", [sys.executable, "-c", code], weight)


def test_a_failing_and_a_hung_step_are_reported_and_the_others_run(tmp_path, monkeypatch):
    steps = [python_step("hangs", "import time; print('started', flush=True); time.sleep(60)"),
             python_step("fails", "import sys; print('boom: the last words'); sys.exit(3)"),
             python_step("works", "print('fine')"),
             gpu_check.Step("absent", "quick", [], 1.0, skip="skipped: nothing to run it on")]
    monkeypatch.setattr(gpu_check, "plan_steps", lambda *a: steps)
    # what the steps run on and the catalog are not what this test checks: instant, so the budget is the steps'
    monkeypatch.setattr(gpu_check, "machine", lambda env: {"gpu": None, "torch": "x", "cpus": 2})
    monkeypatch.setattr(gpu_check, "read_catalog", lambda data_dir: None)
    # a 6 s budget, one job: the hung step, first, gets a third of it (2 s), then 1 s to stop
    monkeypatch.setattr(gpu_check, "RESERVE_S", 0.0)
    monkeypatch.setattr(gpu_check, "STOP_GRACE_S", 1.0)
    monkeypatch.setattr(gpu_check, "MIN_STEP_S", 0.1)
    out = tmp_path / "check"
    assert gpu_check.main(["--dry-run", "--out", str(out), "--budget-s", "6", "--jobs", "1",
                           "--scratch", str(tmp_path / "scratch")]) == 1
    summary = (out / "summary.md").read_text()
    assert "- result: 1 ok, 1 failed, 1 timed out, 1 skipped" in summary
    rows = {line.split(" | ")[0].strip("| "): line for line in summary.splitlines() if line.startswith("| ")}
    assert " | ok | " in rows["works"]
    assert " | failed rc 3 | " in rows["fails"]
    assert " | timed out after 2 s | " in rows["hangs"]
    assert " | skipped: nothing to run it on | " in rows["absent"]
    failures = summary.split("## Failures")[1].split("## Bench")[0]
    assert "### fails: failed rc 3" in failures and "boom: the last words" in failures
    assert "### hangs: timed out" in failures and "started" in failures
    assert "fine" not in failures  # an ok step's log stays in its file
    assert (out / "logs" / "works.log").read_text().endswith("fine\n")
    assert "(no bench database)" in summary


def test_the_bench_table_pivots_every_pipeline_and_runs_are_counted(tmp_path):
    bench = tmp_path / "bench.duckdb"
    at = datetime.now(timezone.utc)
    rows = []
    for pipeline, speed in (("medssl", 800.0), ("seed_style", 200.0), ("ceiling", 1000.0), ("captured", 1200.0),
                            ("a_later_one", 5.0)):
        row = dict.fromkeys(APPENDED["bench"])  # every column the schema has, also ones added later
        row.update(measured_at=at, arch="resnet18", size=28, method="simclr", batch=256, pipeline=pipeline,
                   pairs_per_s=speed, peak_mem_mb=100.0, device="GPU X", tflops=speed / 100, peak_tflops=790.0)
        rows.append(row)
    ResultsStore(bench).append("bench", rows)
    table = gpu_check.bench_table(bench)
    assert "device: GPU X" in table[0]
    assert table[2] == ("| arch | px | method | batch | medssl | seed_style | ceiling | captured | a_later_one | "
                        "medssl / seed-style | medssl / ceiling | captured / ceiling | TFLOP/s / peak | peak MB |")
    assert table[4] == ("| resnet18 | 28 | simclr | 256 | 800 | 200 | 1,000 | 1,200 | 5 | 4.00x | 0.80 | 1.20 | "
                        "12.0 / 790 | 100 |")

    runs = tmp_path / "quick-demo.duckdb"
    ResultsStore(runs).init()
    con = duckdb.connect(str(runs))
    con.executemany("INSERT INTO runs (run_id, kind, study, dataset, method, profile, status, error, device, "
                    "spec_json) VALUES (?, 'pretrain', 'demo', 'breastmnist', 'simclr', 'quick', ?, ?, 'GPU X', '{}')",
                    [["a", "ok", None], ["b", "ok", None], ["c", "failed", "Traceback\nRuntimeError: CUDA OOM"]])
    con.close()
    counts = "\n".join(gpu_check.run_counts([runs]))
    assert "| study | profile | ok | failed | devices | databases |" in counts
    assert "| demo | quick | 2 | 1 | GPU X | quick-demo.duckdb |" in counts
    assert "- quick-demo.duckdb: c breastmnist/simclr: RuntimeError: CUDA OOM" in counts  # its error's last line


@pytest.mark.slow  # about 25 s on 2 cores: a smoke bench, two replicate plans and a pytest collection
def test_the_dry_run_writes_the_folder_and_summary_a_gpu_run_does(tmp_path, medmnist_dir):
    out = tmp_path / "check"
    assert gpu_check.main(["--dry-run", "--out", str(out), "--data-dir", str(medmnist_dir), "--jobs", "2",
                           "--only", "bench,quick-demo,reference-breastmnist-resnet50_224,reference-pneumoniamnist,"
                                     "pytest-cuda",
                           "--scratch", str(tmp_path / "scratch")]) == 0
    summary = (out / "summary.md").read_text()
    assert "- mode: dry run on the CPU" in summary and "machine: no CUDA device" in summary
    assert "- result: 4 ok, 0 failed, 0 timed out, 2 skipped" in summary
    assert ("`medssl bench --device cpu --db $OUT/db/bench.duckdb --grid smoke --steps 2 --repeats 1 --workers 1 "
            "--pipelines medssl,seed_style,ceiling`") in summary
    assert "| bench-captured | skipped: compiling a ResNet-18 step takes minutes on a CPU" in summary
    # the reference: one step a network on BreastMNIST (its profile's subset), PneumoniaMNIST named and why not
    assert "| reference-breastmnist-resnet50_224 | ok |" in summary
    assert "| reference-pneumoniamnist | skipped: not in --reference-datasets (4,708 training images" in summary
    notes = summary.split("## What the steps said")[1]
    assert "- quick-demo:\n  - planned 5 runs (1 pretraining), 5 to run" in notes
    assert "- reference-breastmnist-resnet50_224:\n  - planned 4 runs (0 pretraining), 4 to run" in notes
    skipped = re.search(r"tests: 0 passed, 0 failed, 0 errors, (\d+) skipped", notes)
    assert skipped and int(skipped.group(1)) >= 5  # tests/test_cuda.py's GPU halves at least
    bench = summary.split("## Bench")[1]
    assert "| resnet18 | 28 | simclr | 32 |" in bench and "| medssl | seed_style | ceiling |" in bench
    assert "(no study database: replicate --dry-run writes none)" in summary
    assert sorted(p.name for p in (out / "logs").glob("*.log")) == sorted(
        ["bench.log", "quick-demo.log", "pytest-cuda.log", "reference-breastmnist-resnet50_224.log"])
    assert [p.name for p in (out / "db").iterdir()] == ["bench.duckdb"]  # replicate --dry-run writes nothing
