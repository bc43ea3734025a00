"""The Python API: what the `medssl` commands do, as functions a notebook calls (the CLI calls them too).

    from medssl_core import api as medssl

    run = medssl.replicate("demo", seeds=[0], db="results/demo.duckdb")   # plans, resumes, runs, records
    medssl.results(run.db, "SELECT method, avg(value) FROM run_metrics WHERE metric = 'accuracy' GROUP BY 1")
    medssl.paper("demo", db=run.db)                                         # tables and figures, as `medssl paper`

Messages that the commands print (stand-ins, downloads, stale runs) go to ``say`` (default: standard error).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medssl_core.common.errors import ConfigError, MedsslError, StoreError, did_you_mean


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


Say = Callable[[str], None]


def choose_profile(study, requested: str, device, allow_slow: bool) -> tuple[str, str | None]:
    """Return (profile, notice). A GPU-sized profile never starts silently on a CPU."""
    if requested == "auto":
        gpu_profiles = [p.name for p in study.profiles if p.needs_gpu]
        if device.type == "cuda" and gpu_profiles:
            return gpu_profiles[0], None
        cpu = next((p.name for p in study.profiles if not p.needs_gpu), study.profiles[0].name)
        note = None
        if gpu_profiles:
            note = (f"No CUDA GPU found: running the '{cpu}' profile (minutes on a CPU; every run is labelled "
                    f"'{cpu}'). The study's own settings are `--profile {gpu_profiles[0]}`, which needs a GPU "
                    "(add --allow-slow to start it on a CPU anyway).")
        return cpu, note
    profile = study.profile(requested)
    if profile.needs_gpu and device.type != "cuda" and not allow_slow:
        raise ConfigError(f"Profile '{profile.name}' of {study.name} is sized for a GPU ({profile.description}) "
                          "and no CUDA device is in use. Use --profile quick, or add --allow-slow to run it on "
                          "the CPU anyway.")
    return profile.name, None


def read_overrides(path: str | Path) -> dict:
    """The 'overrides' object of a JSON file (`medssl tune --write`'s)."""
    try:
        return json.loads(Path(path).read_text())["overrides"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"--overrides {path}: not a readable JSON file with an 'overrides' object "
                          f"({type(exc).__name__}: {exc}); `medssl tune --write FILE` writes one.") from exc


def _planned_downloads(plan, data_dir: str | None) -> list[str]:
    """The files the planned runs read that are not present, as 'name (side px)': the runs download them."""
    from medssl_core.data import is_available

    read = {(s.dataset_used, s.hparams.get("source_size") or s.hparams["image_size"]) for s in plan.specs}
    return [f"{name} ({side} px)" for name, side in sorted(read) if not is_available(name, side, data_dir)]


@dataclass
class Replication:
    """What `replicate` planned and did. ``todo``: the specs it ran (or, for a dry run, would run)."""

    study: str
    profile: str
    db: Path
    plan: Any  # grid.Plan
    todo: list = field(default_factory=list)
    ran: int = 0
    already_done: int = 0
    failed: list = field(default_factory=list)  # RunRecords of the runs that failed
    interrupted: bool = False

    @property
    def run_ids(self) -> list[str]:
        return [s.run_id for s in self.plan.specs]

    def metrics(self, split: str = "test"):
        """This plan's runs' metrics on ``split`` as a DataFrame, one row per run and metric."""
        return results(self.db, "SELECT * FROM run_metrics JOIN run_variants USING (run_id) "
                       "WHERE run_id IN (SELECT unnest(?)) AND split = ?", [self.run_ids, split])


def replicate(study: str, profile: str = "auto", *, db: str | Path | None = None, seeds: Sequence[int] | None = None,
              datasets: Sequence[str] | None = None, methods: Sequence[str] | None = None,
              protocols: Sequence[str] | None = None, variants: Sequence[str] | None = None,
              data_dir: str | None = None, device: str = "auto", threads: int | None = None, amp: str | None = None,
              overrides: dict | str | Path | None = None, download: bool = True, allow_slow: bool = False,
              retry_failed: bool = False, reuse_stale: bool = False, dry_run: bool = False, progress: bool = True,
              executor: str = "local", address: str | None = None, cpus_per_task: int = 1,
              artifacts_dir: str | Path | None = None, stand_in_weights: bool = False, capture: str | None = None,
              say: Say = _stderr) -> Replication:
    """Plan a study's runs under a profile and run what is not recorded yet, as `medssl replicate` does: under the
    database's lock, resuming interrupted runs, re-running stale ones (unless ``reuse_stale``). ``overrides``: a
    dict of settings, or the path of `medssl tune --write`'s file. A Ctrl-C leaves every finished run recorded
    (the Replication says ``interrupted``). ``stand_in_weights``: runs whose ImageNet weights are missing start from
    a labelled random stand-in (their settings say so: their own ids; cheap profiles only) instead of being
    skipped. ``capture``: every pretraining's ``train.capture`` (off, compile, cudagraphs: CUDA only), a setting of
    the runs like ``amp``."""
    import torch

    from medssl_core.common.device import resolve_device
    from medssl_core.execute.local import execute, pending, reconcile
    from medssl_core.plan.catalog import get_study
    from medssl_core.plan.grid import expand
    from medssl_core.plan.stale import summarise
    from medssl_core.plan.study import deep_merge
    from medssl_core.run.context import Context
    from medssl_core.store import DEFAULT_DB, ResultsStore

    the_study = get_study(study)
    for name, values in (("seeds", seeds), ("datasets", datasets), ("methods", methods), ("protocols", protocols),
                         ("variants", variants)):
        if values is not None and not list(values):
            raise ConfigError(f"{name} names nothing: give at least one, or None for the profile's")
    if seeds is not None and (any(not isinstance(s, int) or s < 0 for s in seeds)):
        raise ConfigError(f"seeds must be non-negative integers, e.g. [0, 1, 2]; not {list(seeds)}")
    dev = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    profile, notice = choose_profile(the_study, profile, dev, allow_slow)
    if notice:
        say(notice)
    settings = {"pretrain": {"amp": amp}, "evaluate": {"amp": amp}} if amp else {}
    if capture is not None:
        from medssl_core.train.capture import check_capture

        check_capture(capture, dev)
        settings = deep_merge(settings, {"pretrain": {"train": {"capture": capture}}})
    if overrides is not None:
        settings = deep_merge(settings, overrides if isinstance(overrides, dict) else read_overrides(overrides))
    plan = expand(the_study, profile, seeds=list(seeds) if seeds is not None else None,
                  datasets=_names(datasets), methods=_names(methods), protocols=_names(protocols),
                  variant_names=_names(variants), data_dir=data_dir, allow_download=download, device=dev,
                  overrides=settings, stand_in_weights=stand_in_weights)
    for arch, init in sorted(plan.stand_in_weights):
        say(f"STAND-IN WEIGHTS {arch} ({init}): not present; its runs start from medssl's labelled random stand-in "
            f"and say 'stand_in_weights' in their settings (`medssl weights fetch {the_study.name}` gets the real "
            "ones, whose runs are others).")
    for what, why in plan.skipped:
        say(f"SKIPPED {what}: {why}")
    titles = {d.key: d.title for d in the_study.datasets}
    for key, used in plan.stand_ins.items():
        say(f"STAND-IN {key}: {titles[key]} is not present; using {used} instead (its own official split); "
            f"every result says '{key} ({used})'.")
    downloads = _planned_downloads(plan, data_dir) if download else []
    if downloads:  # never silently, least of all into a folder that does not exist yet
        from medssl_core.data.locate import download_dir

        target = download_dir(data_dir)
        say(f"DOWNLOAD {', '.join(downloads)}: not present; the runs download the MedMNIST files into {target}"
            + ("" if target.is_dir() else " (a new folder)") + "; --no-download runs only what is present.")
    db = Path(db) if db is not None else DEFAULT_DB
    store = ResultsStore(db)
    recorded = store.recorded(the_study.name)
    fix = reconcile(plan, recorded, reuse_stale=reuse_stale)
    todo = pending(plan, {rid: status for rid, status, _ in recorded}, retry_failed)
    out = Replication(the_study.name, profile, db, plan, todo)
    say(f"{the_study.name} [{profile}]: {the_study.profile(profile).description}.")
    say(f"{the_study.name} [{profile}] on {dev}: {len(plan.pretrain)} pretraining + {len(plan.evaluate)} "
        f"evaluation runs planned, {len(todo)} to run; database {db}")
    if fix.stale:
        why = summarise([w for _, w in fix.stale.values()])
        if reuse_stale:
            say(f"{len(fix.reused)} stale runs kept (--reuse-stale; recorded in table 'reused'): {why}")
        else:
            say(f"{len(fix.stale)} runs are stale and run again ({why}); --reuse-stale keeps them.")
    if dry_run:  # reads the database if there is one; writes nothing
        return out
    with store.coordinator_lock():
        store.init()
        store.sync_reported(the_study.name, the_study.reported_rows())
        if fix.reused:
            store.mark_reused(the_study.name, fix.reused)
        shared = Path(artifacts_dir) if artifacts_dir else None
        ctx = Context(data_dir, dev, shared / "artifacts" if shared else store.artifacts_dir,
                      shared / "checkpoints" if shared else store.checkpoints_dir,
                      allow_download=download, progress=progress)
        runner = None
        if executor == "ray":
            from medssl_core.execute.ray_cluster import RayExecutor

            runner = RayExecutor(address=address, cpus_per_task=cpus_per_task)
        elif executor != "local":
            raise ConfigError(f"executor {executor!r}: 'local' or 'ray'")
        try:
            summary = execute(plan, store, ctx, retry_failed=retry_failed, progress=progress, executor=runner)
        except KeyboardInterrupt:
            out.interrupted = True
            return out
    out.ran, out.already_done, out.failed = summary.ran, summary.already_done, list(summary.failed)
    return out


@dataclass
class Weights:
    """The ImageNet weights a study's profile starts runs from: (arch, init) -> the local file, or None."""

    study: str
    profile: str
    files: dict[tuple[str, str], Path | None]

    @property
    def missing(self) -> list[tuple[str, str]]:
        return [k for k, path in self.files.items() if path is None]


def weights(study: str, profile: str = "auto", *, fetch: bool = False, say: Say = _stderr) -> Weights:
    """The ImageNet weights the runs of a study's profile need (every dataset and source it may read, as planned
    without data), and where each is; ``fetch``: download the missing ones first (`medssl weights fetch`)."""
    from medssl_core.common.device import resolve_device
    from medssl_core.models.imagenet import imagenet_weights_path
    from medssl_core.models.weights_fetch import fetch_imagenet
    from medssl_core.plan.catalog import get_study
    from medssl_core.plan.grid import expand

    the_study = get_study(study)
    profile, _ = choose_profile(the_study, profile, resolve_device("auto"), allow_slow=True)
    plan = expand(the_study, profile, every_source=True, fingerprint_data=False, allow_download=False)
    files = {}
    for arch, init in sorted(plan.weights):
        path = imagenet_weights_path(arch, init)
        if path is None and fetch:
            say(f"fetching the {init} weights of {arch} ...")
            path = fetch_imagenet(arch, init)
        files[arch, init] = path
    return Weights(the_study.name, profile, files)


def _names(values: Sequence[str] | None) -> list[str] | None:
    return None if values is None else list(values)


def database(db: str | Path | None) -> Path:
    """The results database ``db`` names (default: store.DEFAULT_DB); one that does not exist is an error."""
    from medssl_core.store import DEFAULT_DB

    db = Path(db) if db is not None else DEFAULT_DB
    if not db.is_file():
        raise StoreError(f"No results database at {db}: run `medssl replicate STUDY` (or medssl.replicate) first, or "
                         "pass --db.")
    return db


EVERY_RUN = "SELECT * FROM runs JOIN run_variants USING (run_id)"


def query(db: str | Path | None = None, sql: str = EVERY_RUN, params: list | None = None, *,
          data_dir: str | None = None) -> tuple[list[str], list[tuple]]:
    """A read-only SQL query: (column names, rows). Beside the tables and views, the temporary tables
    ``run_staleness`` (run_id, stale, why) and ``run_variants`` (run_id, variant: as the paper's tables name it)
    are there to join; they need the code and the studies here, which the database does not hold."""
    from medssl_core.paper.browse import run_variants, tuned_runs
    from medssl_core.plan.stale import staleness_rows
    from medssl_core.store import run_sql

    db = database(db)
    recorded = run_sql(db, "SELECT run_id, study, decisions, spec_json, status FROM runs")[1]
    has_trials = run_sql(db, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'trials'")[1][0][0]
    trials = run_sql(db, "SELECT optuna_study, trial, run_id, params, value FROM trials WHERE value IS NOT NULL"
                     )[1] if has_trials else []  # a database from before `medssl tune` has no trials table
    tuned = tuned_runs([(r[0], r[1], r[4], r[3]) for r in recorded], trials) if trials else set()
    return run_sql(db, sql, params, staleness=staleness_rows([(r[0], r[3]) for r in recorded], data_dir),
                   variants=run_variants([r[:3] for r in recorded], tuned))


def results(db: str | Path | None = None, sql: str = EVERY_RUN, params: list | None = None, *,
            data_dir: str | None = None):
    """``query`` as a pandas DataFrame (views: runs, run_metrics, metric_summary, reported_vs_reproduced; join
    run_staleness and run_variants USING (run_id)); by default every run with its variant."""
    try:
        import pandas as pd
    except ImportError:
        raise ConfigError("results() returns a pandas DataFrame: `pip install pandas` (or use `medssl results sql`, "
                          "which needs none)") from None
    columns, rows = query(db, sql, params, data_dir=data_dir)
    return pd.DataFrame(rows, columns=columns)


RUN_LIST = """
    SELECT r.run_id, r.config_id, r.kind, r.study, r.dataset_used, r.method, r.protocol, r.fraction, r.seed, r.profile,
           v.variant, r.status, s.stale, s.why AS stale_why, round(r.wall_s, 1) AS wall_s, r.error, r.decisions
    FROM runs r JOIN run_staleness s USING (run_id) JOIN run_variants v USING (run_id)
    WHERE ($1 IS NULL OR r.study = $1) AND ($2 IS NULL OR r.method = $2) AND ($3 IS NULL OR r.status = $3)
      AND ($4 IS NULL OR s.stale = $4)
    ORDER BY r.study, r.finished_at"""
STATUSES = ("ok", "failed")


def runs(db: str | Path | None = None, *, study: str | None = None, method: str | None = None,
         variant: str | None = None, status: str | None = None, stale: bool | None = None,
         data_dir: str | None = None) -> list[dict]:
    """The recorded runs, one dict each (with their variant and whether they are stale, and why), as `medssl
    results runs` lists them. ``variant``: as_published, corrected, each (one decision corrected) or tuned
    (`medssl tune`'s best values); ``stale``:
    True for the stale runs only, False for the current ones."""
    from medssl_core.paper.browse import TUNED, in_variant_choice
    from medssl_core.plan.catalog import studies
    from medssl_core.plan.study import ALL_VARIANTS
    from medssl_core.store import run_sql

    db = database(db)
    if variant is not None and variant not in (*ALL_VARIANTS, TUNED):
        raise ConfigError(f"variant {variant!r}: one of {', '.join((*ALL_VARIANTS, TUNED))}")
    if status is not None and status not in STATUSES:
        raise ConfigError(f"status {status!r}: one of {', '.join(STATUSES)}")
    for option, value, column, registered in (
            ("study", study, "study", lambda: set(studies())),
            ("method", method, "method", lambda: {m.name for s in studies().values() for m in s.methods})):
        if value is not None:  # a misspelt name would list nothing, as if it had no runs
            known = registered() | {v for (v,) in run_sql(db, f"SELECT DISTINCT {column} FROM runs")[1] if v}
            if value not in known:
                raise ConfigError(f"--{option} {value!r} is neither registered nor recorded in {db}; {option}s: "
                                  f"{sorted(known)}.{did_you_mean(value, known)}")
    columns, rows = query(db, RUN_LIST, [study, method, status, stale], data_dir=data_dir)
    listed = [dict(zip(columns, row)) for row in rows]
    if variant == TUNED:
        return [r for r in listed if r["variant"] == TUNED]
    return [r for r in listed if variant is None or (r["variant"] != TUNED and in_variant_choice(r["decisions"],
                                                                                              variant))]


def show(run_id: str, db: str | Path | None = None, *, data_dir: str | None = None,
         paper_dir: str | Path | None = "paper") -> dict:
    """Everything recorded about one run (``run_id``: the id or its first characters, as long as one run has them):
    settings (its spec), decisions with their sides' names, metrics by split, curves, artifacts (and whether their
    files exist), environment, staleness; ``paper_dir``: where `medssl paper` wrote (its pretraining-curves
    figure)."""
    from medssl_core.paper.browse import show_data

    return show_data(database(db), run_id, data_dir=data_dir, paper_dir=paper_dir)


def compare(a: str, b: str | None = None, db: str | Path | None = None, *, data_dir: str | None = None) -> dict:
    """Two runs (ids or unique prefixes): the settings that differ, by dotted path, and each metric of either side
    by side with b − a. Without ``b``: ``a``'s counterpart in the other variant (same cell and seed, every
    decision on the other side)."""
    from medssl_core.paper.browse import compare_data, other_variant

    db = database(db)
    return compare_data(db, a, b if b is not None else other_variant(db, a), data_dir=data_dir)


EXPORT_FORMATS = ("csv", "parquet")


def export(out: str | Path, db: str | Path | None = None, *, table: str = "runs", fmt: str = "csv",
           data_dir: str | None = None) -> Path:
    """Write one table or view (or run_staleness, run_variants) to a CSV or Parquet file, whole or not at all."""
    from medssl_core.common.atomic import atomic_path
    from medssl_core.store.store import EXPORTABLE

    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"format {fmt!r}: one of {', '.join(EXPORT_FORMATS)}")
    if table not in EXPORTABLE:
        raise ConfigError(f"--table {table!r} is not a table or view of the results database; one of "
                          f"{', '.join(EXPORTABLE)}.{did_you_mean(table, EXPORTABLE)}")
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder: give the file to write, e.g. {out / f'{table}.{fmt}'}")
    options = "FORMAT csv, HEADER" if fmt == "csv" else "FORMAT parquet"
    with atomic_path(out) as tmp:
        query(db, f"COPY (SELECT * FROM {table}) TO '{str(tmp).replace(chr(39), chr(39) * 2)}' ({options})",
              data_dir=data_dir)
    return out


@dataclass
class PaperOutput:
    """What `paper` wrote: files per study, the studies it could not write and why, the report's files."""

    written: dict[str, list[Path]] = field(default_factory=dict)
    not_written: dict[str, str] = field(default_factory=dict)
    report: list[Path] = field(default_factory=list)


def paper(study: str | None = None, *, db: str | Path | None = None, out: str | Path = "paper",
          profile: str | None = None, data_dir: str | None = None, report: bool = False,
          include_stale: bool = False) -> PaperOutput:
    """Tables and figures of one study (or of every study with runs) into ``out``/<study>/, as `medssl paper`;
    ``report``: also the cross-study REPORT.md and REPORT.html (every study, no study named). ``data_dir``: where
    the data is (to tell runs whose data changed, for figures that show images); default: the folder the runs
    read their files from, then the usual lookup."""
    from medssl_core.paper.generate import generate
    from medssl_core.paper.provenance import recorded_data_dir
    from medssl_core.plan.catalog import get_study, studies
    from medssl_core.store import DEFAULT_DB

    if report and study:
        raise ConfigError("--all writes every study and the cross-study report; name no study with it")
    db, out = (Path(db) if db is not None else DEFAULT_DB), Path(out)
    if data_dir is None and db.is_file():
        data_dir = recorded_data_dir(db)
    names = [study] if study else sorted(studies())
    if profile and not study:  # the studies that declare the profile (a named study checks its own)
        declared = {n: [p.name for p in get_study(n).profiles] for n in names}
        names = [n for n in names if profile in declared[n]]
        if not names:
            profiles = sorted({p for ps in declared.values() for p in ps})
            raise ConfigError(f"--profile {profile!r}: no study declares it; profiles: {profiles}."
                              f"{did_you_mean(profile, profiles)}")
    result = PaperOutput()
    for name in names:
        try:
            result.written[name] = generate(get_study(name), db, out / name, data_dir=data_dir, profile=profile,
                                            include_stale=include_stale)
        except StoreError as exc:
            if study:
                raise
            result.not_written[name] = str(exc)  # no study named: each study that can be is written all the same
    if not result.written:
        raise StoreError(_nothing_written(db, profile, result.not_written))
    if report:
        from medssl_core.paper.report import write_report

        shown = [n for n in names if n in result.written or n in result.not_written]
        result.report = write_report(out, {n: get_study(n) for n in shown}, db, data_dir, result.not_written)
    return result


def _nothing_written(db: Path, profile: str | None, not_written: dict[str, str]) -> str:
    """Why `paper` wrote no study: the database holds no finished run (of a study declaring ``profile``), with
    the studies and profiles it does hold runs of; or each study's reason."""
    from medssl_core.store import run_sql

    if not all("holds no finished runs" in why for why in not_written.values()):
        return f"no study could be written from {db}: " + "; ".join(f"{n}: {why}" for n, why in not_written.items())
    held = run_sql(db, "SELECT study, profile, count(*) FROM runs WHERE status = 'ok' GROUP BY ALL ORDER BY ALL")[1]
    where = f" of a study declaring profile {profile!r}" if profile else " of any study"
    return (f"{db} holds no finished runs{where}" + (": it holds " + ", ".join(
        f"{n} runs of {s} (profile {p})" for s, p, n in held) + (" (drop --profile)" if profile else "")
        if held else ": run `medssl replicate STUDY` first") + ".")


__all__ = ["MedsslError", "PaperOutput", "Replication", "choose_profile", "compare", "database", "export", "paper",
           "query", "read_overrides", "replicate", "results", "runs", "show"]
