"""`medssl bench` smoke: every pipeline runs the same step, the rows land in the 'bench' table with the machine,
the ratios are printed, and a rebuilt database keeps them."""

from __future__ import annotations

from medssl_core.cli import main
from medssl_core.store import ResultsStore, run_sql


def test_bench_smoke_writes_rows_and_prints_ratios(tmp_path, capsys):
    db = tmp_path / "r.duckdb"
    assert main(["bench", "--grid", "smoke", "--steps", "2", "--repeats", "1", "--workers", "1", "--device", "cpu",
                 "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "medssl / seed-style" in out and "resnet18" in out
    rows = run_sql(db, "SELECT pipeline, pairs_per_s, peak_mem_mb, arch, size, method, batch, device, environment "
                       "FROM bench ORDER BY pipeline")[1]
    assert [r[0] for r in rows] == ["ceiling", "medssl", "seed_style"]
    assert all(r[1] > 0 and r[2] > 0 and r[3:7] == ("resnet18", 28, "simclr", 32) and '"torch"' in r[8] for r in rows)
    ResultsStore(db).rebuild({})  # the record files do not hold bench rows: carried over
    assert run_sql(db, "SELECT count(*) FROM bench")[1] == [(3,)]
