from __future__ import annotations

import subprocess
import sys
import textwrap

import duckdb
import pytest

from medssl_core.cli import main
from medssl_core.common.errors import StoreError
from medssl_core.store import ResultsStore, RunRecord, run_sql

TABLES = ("runs", "params", "metrics", "curves", "environment", "artifacts", "reported")


def record(run_id: str, seed: int, acc: float, status: str = "ok", method: str = "simclr") -> RunRecord:
    return RunRecord(
        run={"run_id": run_id, "config_id": f"cfg-{method}",
             "kind": "evaluate", "study": "s", "dataset": "d", "dataset_used": "d", "method": method,
             "protocol": "knn", "fraction": 1.0, "seed": seed, "profile": "quick", "decisions": "crop=as_published",
             "parent_run_id": None, "status": status, "error": None if status == "ok" else "boom",
             "started_at": "2026-01-01T00:00:00+00:00", "finished_at": "2026-01-01T00:01:00+00:00", "wall_s": 60.0,
             "peak_mem_mb": 100.0, "device": "cpu", "spec_json": "{}"},
        params=[{"kind": "hparam", "name": "lr", "value": "0.01"}],
        metrics=[{"split": "test", "name": "accuracy", "value": acc},
                 {"split": "val", "name": "accuracy", "value": acc}],
        curves=[{"step": 1, "name": "loss", "value": 2.0}, {"step": 2, "name": "loss", "value": 1.5}],
        environment={"git_commit": "abc", "git_dirty": False, "python": "3.11", "torch": "2.13.0", "threads": 2,
                     "deterministic": False, "packages": "{}", "data_checksums": "{}"},
        artifacts=[{"name": "encoder.pt", "path": "/x", "sha256": "00", "bytes": 3}],
    )


def dump(db) -> dict:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {t: sorted(map(repr, con.execute(f"SELECT * FROM {t}").fetchall())) for t in TABLES}
    finally:
        con.close()


def test_record_summary_views_and_idempotent_rewrite(tmp_path):
    store = ResultsStore(tmp_path / "r.duckdb")
    for i, acc in enumerate((0.8, 0.9, 0.85)):
        store.record(record(f"id{i}", i, acc))
    store.record(record("id0", 0, 0.8))  # the same run written twice stays one run
    store.sync_reported("s", [{"dataset": "d", "method": "simclr", "protocol": "knn", "fraction": 1.0,
                               "metric": "accuracy", "value": 0.9, "source": "paper", "note": ""}])
    _cols, rows = run_sql(store.db_path, "SELECT n, round(mean, 4), round(std, 4), run_ids, reported, round(diff, 4) "
                                        "FROM reported_vs_reproduced WHERE split = 'test'")
    assert rows == [(3, 0.85, 0.05, ["id0", "id1", "id2"], 0.9, -0.05)]
    assert run_sql(store.db_path, "SELECT count(*) FROM metrics WHERE run_id = 'id0'")[1] == [(2,)]


def test_rebuild_recreates_the_database_exactly(tmp_path):
    store = ResultsStore(tmp_path / "r.duckdb")
    for i in range(3):
        store.record(record(f"id{i}", i, 0.7 + i / 10, status="failed" if i == 2 else "ok"))
    reported = {"s": [{"dataset": "d", "method": "simclr", "protocol": "knn", "fraction": 1.0,
                       "metric": "accuracy", "value": 0.9, "source": "paper", "note": ""}]}
    store.sync_reported("s", reported["s"])
    before = dump(store.db_path)
    store.db_path.unlink()
    assert store.rebuild(reported) == (3, [])
    assert dump(store.db_path) == before


def test_sql_is_read_only_and_select_works(tmp_path, capsys):
    store = ResultsStore(tmp_path / "r.duckdb")
    store.record(record("id0", 0, 0.8))
    db = str(store.db_path)
    for stmt in ("DROP TABLE runs", "DELETE FROM runs", "INSERT INTO reported (study, source) VALUES ('x', 'y')",
                 "CREATE TABLE t (a INT)"):
        assert main(["results", "sql", stmt, "--db", db]) == 2
        assert "read-only" in capsys.readouterr().err
    assert main(["results", "sql", "SELECT run_id, status FROM runs", "--db", db, "--format", "json"]) == 0
    assert '"run_id": "id0"' in capsys.readouterr().out
    assert main(["results", "sql", "SELECT 1 AS one", "--db", db, "--format", "csv"]) == 0
    assert capsys.readouterr().out.strip() == "one\n1"
    assert run_sql(store.db_path, "SELECT count(*) FROM runs")[1] == [(1,)]


def test_missing_database_is_a_clear_error(tmp_path, capsys):
    assert main(["results", "runs", "--db", str(tmp_path / "none.duckdb")]) == 2
    assert "No results database" in capsys.readouterr().err


HOLDER = textwrap.dedent("""
    import duckdb, sys, time
    con = duckdb.connect(sys.argv[1])
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
""")


def test_locked_database_gives_clear_errors_and_loses_nothing(tmp_path):
    store = ResultsStore(tmp_path / "r.duckdb", write_wait_s=0.5)
    store.record(record("id0", 0, 0.8))
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(store.db_path), "20"], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreError, match="locked by another process"):
            run_sql(store.db_path, "SELECT 1")
        with pytest.raises(StoreError, match="locked by another process"):
            store.record(record("id1", 1, 0.9))
        assert (store.records_dir / "id1.json").is_file()  # the record survives the failed write
    finally:
        holder.kill()
        holder.wait()
    assert store.ingest_pending() == 1
    assert run_sql(store.db_path, "SELECT run_id FROM runs ORDER BY run_id")[1] == [("id0",), ("id1",)]


def test_writer_waits_for_a_short_lived_reader(tmp_path):
    store = ResultsStore(tmp_path / "r.duckdb", write_wait_s=30)
    store.record(record("id0", 0, 0.8))
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(store.db_path), "1.5"], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "locked"
    store.record(record("id1", 1, 0.9))
    holder.wait()
    assert run_sql(store.db_path, "SELECT count(*) FROM runs")[1] == [(2,)]


def test_second_coordinator_is_refused(tmp_path):
    store = ResultsStore(tmp_path / "r.duckdb")
    second = ResultsStore(tmp_path / "r.duckdb")
    with store.coordinator_lock(), pytest.raises(StoreError, match="already writing"), second.coordinator_lock():
        pass
    with store.coordinator_lock():  # released afterwards
        pass


def test_transaction_rolls_back_on_a_bad_row(tmp_path):
    store = ResultsStore(tmp_path / "r.duckdb")
    store.record(record("id0", 0, 0.8))
    bad = record("id1", 1, 0.9)
    bad.metrics.append({"split": "test", "name": "x", "value": "not a number"})
    with pytest.raises(duckdb.Error):
        store.record(bad)
    assert run_sql(store.db_path, "SELECT count(*) FROM runs WHERE run_id = 'id1'")[1] == [(0,)]
    assert run_sql(store.db_path, "SELECT count(*) FROM curves WHERE run_id = 'id1'")[1] == [(0,)]


def test_readers_upgrade_a_database_written_by_an_older_medssl(tmp_path):
    store = ResultsStore(tmp_path / "r.duckdb")
    store.record(record("id0", 0, 0.8))
    con = duckdb.connect(str(store.db_path))
    con.execute("DROP VIEW reported_vs_reproduced; DROP VIEW metric_summary; DROP VIEW run_metrics")
    con.execute("ALTER TABLE runs DROP COLUMN pretrain_dataset")  # as the release before transfer runs wrote it
    con.execute("CREATE VIEW run_metrics AS SELECT r.run_id, m.value FROM runs r JOIN metrics m USING (run_id)")
    con.close()
    _cols, rows = run_sql(store.db_path, "SELECT run_id, pretrain_dataset, value FROM run_metrics WHERE split = 'test'")
    assert rows == [("id0", None, 0.8)]
