"""Results store: DuckDB tables and views, per-run record files, read-only SQL."""

from medssl_core.store.records import RunRecord
from medssl_core.store.store import DEFAULT_DB, ResultsStore, run_sql

__all__ = ["DEFAULT_DB", "ResultsStore", "RunRecord", "run_sql"]
