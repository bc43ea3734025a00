"""The Python API a notebook uses: replicate, results, paper (the CLI calls the same functions)."""

from __future__ import annotations

import pytest

from medssl_core import api
from medssl_core.common.errors import ConfigError, StoreError

FAST = {"methods": ["random_init"], "protocols": ["knn"], "seeds": [0], "device": "cpu", "progress": False}


def test_replicate_results_and_paper_from_python(tmp_path, medmnist_dir):
    db = tmp_path / "r.duckdb"
    said: list[str] = []
    dry = api.replicate("demo", db=db, data_dir=str(medmnist_dir), dry_run=True, say=said.append, **FAST)
    assert len(dry.todo) == 1 and not db.exists() and any("1 to run" in m for m in said)
    run = api.replicate("demo", db=db, data_dir=str(medmnist_dir), say=said.append, **FAST)
    assert (run.ran, run.failed, run.interrupted) == (1, [], False)
    again = api.replicate("demo", db=db, data_dir=str(medmnist_dir), say=said.append, **FAST)
    assert (again.ran, again.already_done) == (0, 1)  # resumed: nothing runs twice
    metrics = run.metrics()
    assert set(metrics["metric"]) >= {"accuracy", "auc"} and set(metrics["run_id"]) == set(run.run_ids)
    runs = api.results(db, "SELECT r.run_id, s.stale FROM runs r JOIN run_staleness s USING (run_id)")
    assert list(runs["stale"]) == [False]
    out = api.paper("demo", db=db, out=tmp_path / "paper")
    assert (tmp_path / "paper" / "demo" / "README.md") in out.written["demo"] and not out.not_written


def test_bad_arguments_are_refused_before_anything_runs(tmp_path, medmnist_dir):
    with pytest.raises(ConfigError, match="non-negative"):
        api.replicate("demo", db=tmp_path / "r.duckdb", seeds=[-1], dry_run=True)
    with pytest.raises(ConfigError, match="names nothing"):
        api.replicate("demo", db=tmp_path / "r.duckdb", methods=[], dry_run=True)
    with pytest.raises(ConfigError, match="smalldatassl"):
        api.replicate("smalldatasl", db=tmp_path / "r.duckdb", dry_run=True)
    with pytest.raises(StoreError, match="No results database"):
        api.results(tmp_path / "none.duckdb")
