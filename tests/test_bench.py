"""`medssl bench` smoke: every pipeline runs the same step (the captured one compiled), the rows land in the 'bench'
table with the machine and the TFLOP/s achieved against the measured peak, the ratios are printed, and a rebuilt
database keeps them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medssl_core.cli import main
from medssl_core.methods import build_method
from medssl_core.store import ResultsStore, run_sql
from medssl_core.train import bench


def tiny_method(case, device, channels_last):
    """The case's method on a two-layer backbone: compiling a ResNet-18 takes over a minute on CI's cores."""
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten())
    m = build_method(bench.METHODS[case.method](8), lambda: backbone, 8, case.size).to(device)
    return m.to(memory_format=torch.channels_last) if channels_last else m


def test_bench_smoke_writes_rows_and_prints_ratios(tmp_path, capsys, monkeypatch, dynamo_without_inductor):
    monkeypatch.setattr(bench, "case_method", tiny_method)
    db = tmp_path / "r.duckdb"
    assert main(["bench", "--grid", "smoke", "--steps", "2", "--repeats", "1", "--workers", "1", "--device", "cpu",
                 "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "medssl / seed-style" in out and "captured / ceiling" in out and "resnet18" in out
    rows = run_sql(db, "SELECT pipeline, pairs_per_s, peak_mem_mb, arch, size, method, batch, device, environment, "
                       "tflops, peak_tflops, capture FROM bench ORDER BY pipeline")[1]
    assert [(r[0], r[11]) for r in rows] == [("captured", "compile"), ("ceiling", "off"), ("medssl", "off"),
                                             ("seed_style", "off")]
    assert all(r[1] > 0 and r[2] > 0 and r[3:7] == ("resnet18", 28, "simclr", 32) and '"torch"' in r[8] for r in rows)
    assert all(0 < r[9] < r[10] for r in rows)  # achieved TFLOP/s, below the measured peak
    ResultsStore(db).rebuild({})  # the record files do not hold bench rows: carried over
    assert run_sql(db, "SELECT count(*) FROM bench")[1] == [(4,)]


def test_bench_measures_the_pipelines_asked_for_and_refuses_unknown_ones(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "case_method", tiny_method)
    db = tmp_path / "r.duckdb"
    assert main(["bench", "--grid", "smoke", "--steps", "1", "--repeats", "1", "--device", "cpu", "--db", str(db),
                 "--pipelines", "medssl,ceiling"]) == 0
    assert run_sql(db, "SELECT pipeline FROM bench ORDER BY pipeline")[1] == [("ceiling",), ("medssl",)]
    assert "(min(8, cores))" in capsys.readouterr().err
    assert main(["bench", "--grid", "smoke", "--device", "cpu", "--db", str(db), "--pipelines", "medssl,fast"]) == 2
    assert "unknown ['fast']; choose among medssl, seed_style, ceiling, captured" in capsys.readouterr().err


def test_step_flops_count_forward_and_backward():
    lin = nn.Linear(64, 32, bias=False)

    def step(v1, v2):
        (lin(v1).sum() + lin(v2).sum()).backward()
    x = torch.randn(16, 64)
    # forward 2 x (2 * 16 * 64 * 32) FLOPs; backward the weight's gradient only (inputs need none): as many again
    assert bench.step_tflop(step, x, x) * 1e12 == pytest.approx(4 * 2 * 16 * 64 * 32)
