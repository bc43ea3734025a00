"""The DuckDB results store: one writing process, a record file per run, read-only SQL for users.

DuckDB admits one read-write process per file and fails fast on a second, so the coordinator opens the
database only for the moment of a write (retrying while a reader holds it) and every finished run is first
written to its own JSON record. The record files are the system of record; the database is rebuilt from
them exactly by `medssl results rebuild`.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import duckdb

from medssl_core.common.errors import StoreError
from medssl_core.store.records import RunRecord, load_records, save_record
from medssl_core.store.schema import ADDED_COLUMNS, APPENDED, RUN_TABLES, TABLES, VIEWS, create_statements

DEFAULT_DB = Path("results/medssl.duckdb")

_RUN_COLUMNS = [c.split()[0] for c in TABLES["runs"].replace("\n", " ").split(",")]
_ENV_COLUMNS = [c.split()[0] for c in TABLES["environment"].replace("\n", " ").split(",")]
_REPORTED_COLUMNS = [c.split()[0] for c in TABLES["reported"].replace("\n", " ").split(",")]


def _is_lock_error(exc: Exception) -> bool:
    return "lock" in str(exc).lower()


def connect(db_path: Path, *, read_only: bool = False, wait_s: float = 0.0) -> duckdb.DuckDBPyConnection:
    """Open the database; while another process holds it, retry for ``wait_s`` seconds, then explain."""
    db_path = Path(db_path)
    if read_only and not db_path.exists():
        raise StoreError(f"No results database at {db_path}. Run `medssl replicate STUDY` first, or pass --db.")
    con = _connect(db_path, read_only, wait_s)
    if read_only and not _schema_is_current(con):  # a database written by an older medssl: upgrade it once
        con.close()
        with _connect(db_path, False, wait_s) as writer:
            for stmt in create_statements():
                writer.execute(stmt)
        con = _connect(db_path, True, wait_s)
    return con


def _schema_is_current(con: duckdb.DuckDBPyConnection) -> bool:
    """Every column added since the first release is there (views are recreated with them)."""
    for table, columns in ADDED_COLUMNS.items():
        have = {r[0] for r in con.execute("SELECT column_name FROM information_schema.columns WHERE table_name = ?",
                                          [table]).fetchall()}
        if have and not {c.split()[0] for c in columns} <= have:
            return False
    return True


def _connect(db_path: Path, read_only: bool, wait_s: float) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + wait_s
    delay = 0.05
    while True:
        try:
            if not read_only:
                db_path.parent.mkdir(parents=True, exist_ok=True)
            return duckdb.connect(str(db_path), read_only=read_only)
        except duckdb.IOException as exc:
            if not _is_lock_error(exc):
                raise StoreError(f"Cannot open {db_path}: {exc}") from exc
            if time.monotonic() >= deadline:
                raise StoreError(
                    f"The results database {db_path} is locked by another process ({exc}). DuckDB allows one "
                    "writer at a time: wait for that process to finish (records are kept on disk and are "
                    "ingested by the next run), or query a copy of the file."
                ) from exc
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


class ResultsStore:
    def __init__(self, db_path: str | os.PathLike = DEFAULT_DB, *, write_wait_s: float = 120.0):
        self.db_path = Path(db_path)
        self.home = self.db_path.parent / f"{self.db_path.stem}_runs"
        self.records_dir = self.home / "records"
        self.artifacts_dir = self.home / "artifacts"
        self.checkpoints_dir = self.home / "checkpoints"
        self.write_wait_s = write_wait_s

    @contextmanager
    def _writer(self):
        con = connect(self.db_path, wait_s=self.write_wait_s)
        try:
            for stmt in create_statements():
                con.execute(stmt)
            yield con
        finally:
            con.close()

    def init(self) -> None:
        with self._writer():
            pass

    # -- writing ------------------------------------------------------------------------------------------
    def record(self, record: RunRecord) -> None:
        """Persist a finished run: record file first (atomic), then one database transaction."""
        save_record(self.records_dir, record)
        with self._writer() as con:
            self._insert(con, [record])

    @staticmethod
    def _insert(con, records: list[RunRecord]) -> None:
        con.execute("BEGIN TRANSACTION")
        try:
            for rec in records:
                for table in RUN_TABLES:
                    con.execute(f"DELETE FROM {table} WHERE run_id = ?", [rec.run_id])
                run = rec.run
                con.execute(
                    f"INSERT INTO runs ({', '.join(_RUN_COLUMNS)}) VALUES ({', '.join('?' * len(_RUN_COLUMNS))})",
                    [run.get(c) for c in _RUN_COLUMNS],
                )
                rid = rec.run_id
                if rec.params:
                    con.executemany("INSERT INTO params VALUES (?, ?, ?, ?)",
                                    [[rid, p["kind"], p["name"], p["value"]] for p in rec.params])
                if rec.metrics:
                    con.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?)",
                                    [[rid, m["split"], m["name"], m["value"]] for m in rec.metrics])
                if rec.curves:
                    con.executemany("INSERT INTO curves VALUES (?, ?, ?, ?)",
                                    [[rid, c["step"], c["name"], c["value"]] for c in rec.curves])
                if rec.environment:
                    env = {**rec.environment, "run_id": rid}
                    con.execute(
                        f"INSERT INTO environment ({', '.join(_ENV_COLUMNS)}) "
                        f"VALUES ({', '.join('?' * len(_ENV_COLUMNS))})",
                        [env.get(c) for c in _ENV_COLUMNS],
                    )
                if rec.artifacts:
                    con.executemany("INSERT INTO artifacts VALUES (?, ?, ?, ?, ?)",
                                    [[rid, a["name"], a["path"], a.get("sha256"), a.get("bytes")]
                                     for a in rec.artifacts])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def sync_reported(self, study: str, rows: list[dict]) -> None:
        """Replace a study's reported numbers (declared in its replication module)."""
        with self._writer() as con:
            self._replace_reported(con, study, rows)

    @staticmethod
    def _replace_reported(con, study: str, rows: list[dict]) -> None:
        con.execute("BEGIN TRANSACTION")
        con.execute("DELETE FROM reported WHERE study = ?", [study])
        if rows:
            con.executemany(
                f"INSERT INTO reported VALUES ({', '.join('?' * len(_REPORTED_COLUMNS))})",
                [[study if c == "study" else r.get(c) for c in _REPORTED_COLUMNS] for r in rows],
            )
        con.execute("COMMIT")

    def ingest_pending(self) -> int:
        """Ingest record files whose run is missing from the database (e.g. after a crash mid-write)."""
        if not self.records_dir.is_dir():
            return 0
        known = self.run_statuses()
        records, unreadable = load_records(self.records_dir)
        for path, why in unreadable:
            print(f"warning: run record {path} is unreadable ({why}); skipped. `medssl results rebuild` lists "
                  "every such file.", file=sys.stderr)
        pending = [r for r in records if known.get(r.run_id) != r.run["status"]]
        if pending:
            with self._writer() as con:
                self._insert(con, pending)
        return len(pending)

    def rebuild(self, reported: dict[str, list[dict]]) -> tuple[int, list[tuple[Path, str]]]:
        """Recreate the database from the readable record files (and the studies' reported numbers),
        atomically. Returns the number of runs and the unreadable files (skipped)."""
        tmp = self.db_path.with_name(f".{self.db_path.name}.rebuild.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        records, unreadable = load_records(self.records_dir) if self.records_dir.is_dir() else ([], [])
        carried = {table: self._carried_rows(table) for table in ("reused", *APPENDED)}
        con = duckdb.connect(str(tmp))
        try:
            for stmt in create_statements():
                con.execute(stmt)
            self._insert(con, sorted(records, key=lambda r: r.run_id))
            for study, rows in sorted(reported.items()):
                self._replace_reported(con, study, rows)
            for table, rows in carried.items():
                if rows:
                    con.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(rows[0]))})", rows)
        finally:
            con.close()
        with self._exclusive():
            os.replace(tmp, self.db_path)
        Path(f"{self.db_path}.wal").unlink(missing_ok=True)
        return len(records), unreadable

    def _carried_rows(self, table: str) -> list[tuple]:
        """Rows that are not in the record files (the --reuse-stale choices, bench figures, tuning trials):
        carried over from the old database."""
        if not self.db_path.exists():
            return []
        try:
            with self.reader() as con:
                return con.execute(f"SELECT * FROM {table}").fetchall()
        except (duckdb.Error, StoreError):  # an old or damaged database: nothing to carry over
            return []

    def append(self, table: str, rows: list[dict]) -> None:
        """Append rows to a table of schema.APPENDED ('bench', 'trials'); each row a dict of its columns."""
        columns = APPENDED[table]
        with self._writer() as con:
            con.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(columns))})",
                            [[r[c] for c in columns] for r in rows])

    def mark_reused(self, study: str, reasons: dict[str, str]) -> None:
        """Record that these (stale) runs were kept on purpose."""
        with self._writer() as con:
            con.executemany("INSERT OR REPLACE INTO reused VALUES (?, ?, ?, now())",
                            [[rid, study, why] for rid, why in reasons.items()])

    @contextmanager
    def _exclusive(self):
        """Fail clearly (instead of replacing a file under a live writer) if someone holds the database."""
        if self.db_path.exists():
            connect(self.db_path, wait_s=self.write_wait_s).close()
        yield

    # -- reading ------------------------------------------------------------------------------------------
    def run_statuses(self) -> dict[str, str]:
        if not self.db_path.exists():
            return {}
        with self._writer() as con:
            return dict(con.execute("SELECT run_id, status FROM runs").fetchall())

    def recorded(self, study: str | None = None) -> list[tuple[str, str, str]]:
        """(run_id, status, spec_json) of the recorded runs, newest first; nothing if there is no database.
        Opens read-only, so it creates nothing (what `--dry-run` needs)."""
        if not self.db_path.exists():
            return []
        with self.reader() as con:
            return con.execute("SELECT run_id, status, spec_json FROM runs WHERE $1 IS NULL OR study = $1 "
                               "ORDER BY finished_at DESC", [study]).fetchall()

    @contextmanager
    def reader(self):
        with connect(self.db_path, read_only=True, wait_s=self.write_wait_s) as con:
            yield con

    # -- coordination -------------------------------------------------------------------------------------
    @contextmanager
    def coordinator_lock(self):
        """One coordinating process per database: a second `medssl replicate` on it fails fast."""
        self.home.mkdir(parents=True, exist_ok=True)
        lock_path = self.home / "coordinator.lock"
        with open(lock_path, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "unknown"
                raise StoreError(
                    f"Another medssl process ({holder}) is already writing to {self.db_path}. Wait for it to "
                    "finish, or give this one its own database with --db."
                ) from None
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()}")
            f.flush()
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


# What the database cannot compute itself (it needs the code and the studies here), offered to a query as
# temporary tables: name -> columns
ABOUT_RUNS = {"run_staleness": "run_id VARCHAR PRIMARY KEY, stale BOOLEAN, why VARCHAR",
              "run_variants": "run_id VARCHAR PRIMARY KEY, variant VARCHAR"}
EXPORTABLE = (*TABLES, *VIEWS, *ABOUT_RUNS)  # what `medssl results export` writes


def run_sql(db_path: Path, sql: str, params: list | None = None,
            staleness: list[tuple[str, bool, str]] | None = None,
            variants: list[tuple[str, str]] | None = None) -> tuple[list[str], list[tuple]]:
    """Run one query on a read-only connection; write statements are refused with a clear message.
    ``staleness``: (run_id, stale, why) rows, offered to the query as the temporary table run_staleness;
    ``variants``: (run_id, variant) rows, as run_variants."""
    con = connect(Path(db_path), read_only=True, wait_s=5.0)
    try:
        for table, rows in (("run_staleness", staleness), ("run_variants", variants)):
            if rows is not None:
                con.execute(f"CREATE TEMP TABLE {table} ({ABOUT_RUNS[table]})")
                if rows:
                    con.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(rows[0]))})", rows)
        cur = con.execute(sql, params or [])
        columns = [d[0] for d in cur.description] if cur.description else []
        return columns, cur.fetchall() if columns else []
    except duckdb.Error as exc:
        if "read-only" in str(exc).lower():
            raise StoreError(
                "`medssl results sql` opens the database read-only, so statements that change it are refused "
                f"({exc}). The store is written only by `medssl replicate` and `medssl results rebuild`."
            ) from exc
        raise StoreError(f"SQL error: {exc}") from exc
    finally:
        con.close()


def dumps_json(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
