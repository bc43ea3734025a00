"""The `medssl` command: data, replicate, weights, results, paper, studies, study, augment."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from tabulate import tabulate

from medssl_core.common.errors import ConfigError, MedsslError
from medssl_core.paper.labels import CELL_SOURCE_SQL, format_fraction, parse_decisions, secondary_metric, variant_label


def _csv_list(text: str | None, option: str) -> list[str] | None:
    """Comma-separated names; None when the option is not given (an empty one is a mistake, not 'all')."""
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ConfigError(f"{option} names nothing ({text!r}): give comma-separated names, or leave {option} out "
                          "for the profile's")
    return names


def _seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(t) for t in text.split(",")]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0:
        raise ConfigError(f"--seeds takes comma-separated integers, each non-negative, e.g. 0,1,2; not {text!r} "
                          "(leave --seeds out for the profile's seeds)")
    return seeds


def _check_data_dir(args) -> None:
    """A --data-dir that does not exist is a mistyped path, not an empty folder: refused, so that no command plans
    zero runs or downloads into a new folder by accident (`data fetch` creates the folder it is given)."""
    folder = getattr(args, "data_dir", None)
    if folder is None or args.fn is cmd_data_fetch or Path(folder).expanduser().is_dir():
        return
    fix = "give the folder that holds the datasets (`medssl data list --data-dir DIR` shows what one holds)"
    if hasattr(args, "no_download"):  # replicate and tune download missing MedMNIST files into --data-dir
        fix += f"; to download MedMNIST files into a new folder, create it first (mkdir -p {folder})"
    raise ConfigError(f"--data-dir {folder} is not an existing folder: {fix}.")


# -- data -------------------------------------------------------------------------------------------------------
def cmd_data_list(args) -> int:
    from medssl_core.data import REGISTRY, is_available

    rows = []
    for name, info in REGISTRY.items():
        sizes = info.sizes or (None,)
        present = [str(s or "yes") for s in sizes if is_available(name, s, args.data_dir)]
        rows.append([name, info.task, info.n_classes, info.channels, ",".join(map(str, info.sizes)) or "original",
                     ",".join(present) or "-", info.licence.split(" (")[0]])
    print(tabulate(rows, ["dataset", "task", "classes", "ch", "sizes", "present", "licence"]))
    return 0


def cmd_data_verify(args) -> int:
    from medssl_core.data import get_dataset, load_dataset

    info = get_dataset(args.name)
    ds = load_dataset(args.name, args.size, args.data_dir, allow_download=False)
    counts = ", ".join(f"{k} {v}" for k, v in ds.counts().items())
    print(f"OK {info.name}" + (f" ({args.size} px)" if info.kind == "medmnist" else "") + f": {counts}; "
          + "; ".join(f"{p} md5 {m}" for p, m in ds.files.items()))
    return 0


def cmd_data_fetch(args) -> int:
    from medssl_core.data import get_dataset
    from medssl_core.data.dataset import fetch_medmnist, find_medmnist, verify_medmnist_file

    info = get_dataset(args.name)
    if info.kind != "medmnist":
        raise ConfigError(f"{info.name} cannot be downloaded automatically. {info.obtain}")
    path = find_medmnist(info.name, args.size, args.data_dir) or fetch_medmnist(info.name, args.size, args.data_dir)
    verify_medmnist_file(path, info.name, args.size)
    print(f"OK {path}")
    return 0


# -- replicate --------------------------------------------------------------------------------------------------
def cmd_replicate(args) -> int:
    from medssl_core.api import replicate

    run = replicate(args.study, args.profile, db=args.db, seeds=_seeds(args.seeds),
                    datasets=_csv_list(args.datasets, "--datasets"), methods=_csv_list(args.methods, "--methods"),
                    protocols=_csv_list(args.protocols, "--protocols"),
                    variants=_csv_list(args.variants, "--variants"), data_dir=args.data_dir, device=args.device,
                    threads=args.threads, amp=args.amp, overrides=args.overrides, download=not args.no_download,
                    allow_slow=args.allow_slow, retry_failed=args.retry_failed, reuse_stale=args.reuse_stale,
                    dry_run=args.dry_run, progress=not args.no_progress, executor=args.executor,
                    address=args.address, cpus_per_task=args.cpus_per_task, artifacts_dir=args.artifacts_dir,
                    stand_in_weights=args.stand_in_weights, capture=args.capture)
    from medssl_core.plan.catalog import get_study

    if args.dry_run:
        declared = get_study(run.study).decisions
        for spec in run.todo:
            print(f"{spec.run_id}  {spec.kind:9s} {spec.label():45s} {variant_label(spec.decisions, declared)}")
        return 0
    if run.interrupted:
        print("\nInterrupted. Every finished run is recorded; run the same command again to resume.",
              file=sys.stderr)
        return 130
    from medssl_core.store import ResultsStore

    stand_ins = {s.config_id for s in run.plan.specs if s.hparams.get("backbone", {}).get("stand_in_weights")}
    print_summary(ResultsStore(run.db), get_study(run.study), run.profile, run.run_ids, stand_ins)
    print(f"{run.ran} runs executed, {run.already_done} already done, {len(run.failed)} failed.", file=sys.stderr)
    if run.failed:
        print("Failed runs are recorded with their error (`medssl results runs --status failed`); "
              "`--retry-failed` runs them again.", file=sys.stderr)
    return 1 if run.failed else 0


def print_summary(store, study, profile: str, run_ids: list[str], stand_ins: set[str] = frozenset()) -> None:
    """Test metrics of this plan's runs, one line per config id (never pooling settings); the configs in
    ``stand_ins`` ran with stand-in weights, and their method says so."""

    metrics = [study.main_metric, secondary_metric(study.main_metric)]
    with store.reader() as con:
        rows = con.execute(
            f"""SELECT config_id, {CELL_SOURCE_SQL} AS used, method, protocol, fraction, decisions, metric, count(*),
                       avg(value), stddev_samp(value)
               FROM run_metrics WHERE run_id IN (SELECT unnest(?)) AND split = 'test' AND metric IN (SELECT unnest(?))
               GROUP BY config_id, used, method, protocol, fraction, decisions, metric
               ORDER BY used, method, protocol, fraction, decisions, metric""",
            [run_ids, metrics]).fetchall()
    cells: dict[tuple, dict] = {}
    for config_id, used, method, protocol, fraction, decisions, metric, n, mean, std in rows:
        shown = method + (" [stand-in weights]" if config_id in stand_ins else "")
        key = (used, shown, protocol, format_fraction(fraction),
               variant_label(parse_decisions(decisions), study.decisions))
        cells.setdefault(key, {})[metric] = (n, mean, std)
    table = []
    for key, by_metric in cells.items():
        line = list(key)
        for m in metrics:
            n, mean, std = by_metric.get(m, (0, None, None))
            line.append("-" if mean is None else f"{mean:.4f}" + ("" if std is None else f" ± {std:.4f}") + f" (n={n})")
        table.append(line)
    print(f"\n{study.name} [{profile}]: test {' and '.join(metrics)} (mean ± std over seeds, one line per config)")
    print(tabulate(table, ["dataset", "method", "protocol", "labels", "decisions", *metrics]))


# -- weights ----------------------------------------------------------------------------------------------------
def cmd_weights(args) -> int:
    from medssl_core.api import weights

    found = weights(args.study, args.profile, fetch=args.weights_cmd == "fetch")
    print(f"{found.study} [{found.profile}]: the ImageNet weights its runs start from")
    print(tabulate([[arch, init, "present" if path else "missing", path or "-"]
                    for (arch, init), path in found.files.items()], ["arch", "init", "status", "file"]))
    if not found.files:
        print("(none: every run starts from a random init)")
    if found.missing:
        print(f"`medssl weights fetch {found.study} --profile {found.profile}` downloads the missing ones "
              "(on a machine with internet); `replicate --stand-in-weights` runs a cheap profile without them.",
              file=sys.stderr)
    return 1 if found.missing else 0


# -- results ----------------------------------------------------------------------------------------------------
def _format(columns, rows, fmt: str) -> str:
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(columns)
        w.writerows(rows)
        return buf.getvalue().rstrip("\n")
    if fmt == "json":
        return json.dumps([dict(zip(columns, r)) for r in rows], default=str, indent=1)
    return tabulate(rows, columns)


def cmd_results_sql(args) -> int:
    from medssl_core.api import query

    columns, rows = query(args.db, args.query, data_dir=args.data_dir)
    print(_format(columns, rows, args.format))
    return 0


RUN_LIST_SHOWN = ("run_id", "config_id", "kind", "study", "dataset_used", "method", "protocol", "fraction", "seed",
                  "profile", "variant", "status", "stale", "stale_why", "wall_s", "error")
CELL_WIDTH = 60  # a table's long texts (stale_why, error) are cut between words to this width; csv and json: whole


def cmd_results_runs(args) -> int:
    from medssl_core.api import runs
    from medssl_core.paper.browse import shorten

    listed = runs(args.db, study=args.study, method=args.method, variant=args.variant, status=args.status,
                  stale=args.stale, data_dir=args.data_dir)
    long_texts = ("stale_why", "error") if args.format == "table" else ()
    rows = [[shorten(r[c], CELL_WIDTH) if c in long_texts else r[c] for c in RUN_LIST_SHOWN] for r in listed]
    print(_format(RUN_LIST_SHOWN, rows, args.format))
    return 0


def cmd_results_show(args) -> int:
    from medssl_core.api import show
    from medssl_core.paper.browse import format_show

    shown = show(args.run_id, args.db, data_dir=args.data_dir, paper_dir=args.paper_dir)
    print(json.dumps(shown, default=str, indent=1) if args.format == "json" else format_show(shown))
    return 0


def cmd_results_compare(args) -> int:
    from medssl_core.api import compare
    from medssl_core.paper.browse import format_compare

    compared = compare(args.run_a, args.run_b, args.db, data_dir=args.data_dir)  # no run_b: the other variant
    print(json.dumps(compared, default=str, indent=1) if args.format == "json" else format_compare(compared))
    return 0


def cmd_results_export(args) -> int:
    from medssl_core.api import export

    path = export(args.out, args.db, table=args.table, fmt=args.format, data_dir=args.data_dir)
    print(f"wrote {path}")
    return 0


def cmd_results_rebuild(args) -> int:
    from medssl_core.plan.catalog import studies
    from medssl_core.store import ResultsStore

    store = ResultsStore(args.db)
    with store.coordinator_lock():
        n, unreadable = store.rebuild({name: s.reported_rows() for name, s in studies().items()})
    print(f"Rebuilt {args.db} from {n} run records in {store.records_dir}.")
    for path, why in unreadable:
        print(f"SKIPPED unreadable record {path}: {why}", file=sys.stderr)
    if unreadable:
        print(f"{len(unreadable)} record file(s) could not be read and were left out. Their runs are missing "
              "from the database: delete those files and run `medssl replicate` again to redo the runs (or "
              "restore the files from a backup and rebuild again).", file=sys.stderr)
        return 1
    return 0


def cmd_studies(args) -> int:
    from medssl_core.plan.catalog import studies

    rows = [[s.name, s.title, len(s.datasets), len(s.methods), len(s.protocols), len(s.decisions),
             ", ".join(p.name for p in s.profiles)] for s in studies().values()]
    print(tabulate(sorted(rows), ["study", "title", "datasets", "methods", "protocols", "decisions", "profiles"]))
    return 0


def cmd_study_show(args) -> int:
    from medssl_core.plan.catalog import get_study
    from medssl_core.plan.study import describe

    print(describe(get_study(args.name)))
    return 0


# -- paper and augment ------------------------------------------------------------------------------------------
def cmd_paper(args) -> int:
    from medssl_core.api import paper

    result = paper(args.study, db=args.db, out=args.out, profile=args.profile, data_dir=args.data_dir,
                   report=args.all, include_stale=args.include_stale)
    for name, written in result.written.items():
        print(f"{name}: wrote {len(written)} files to {Path(args.out) / name}")
        for p in written:
            print(f"  {p}")
    for name, why in result.not_written.items():
        print(f"{name}: not written: {why}", file=sys.stderr)
    for p in result.report:
        print(f"wrote {p}")
    return 0


def cmd_tune(args) -> int:
    from medssl_core.api import choose_profile
    from medssl_core.common.device import resolve_device
    from medssl_core.execute.tune import tune, write_overrides
    from medssl_core.plan.catalog import get_study
    from medssl_core.run.context import Context
    from medssl_core.store import ResultsStore

    study = get_study(args.study)
    study.method(args.method)  # validated before a search is created under a misspelt name
    study.protocol(args.protocol)
    if args.dataset is not None:
        study.dataset(args.dataset)
    if args.seed < 0:
        raise ConfigError(f"--seed takes a non-negative integer, e.g. 0; not {args.seed}")
    device = resolve_device(args.device)
    profile, notice = choose_profile(study, args.profile, device, args.allow_slow)
    if notice:
        print(notice, file=sys.stderr)
    store = ResultsStore(args.db)
    journal = Path(args.journal) if args.journal else store.home / "optuna.journal"
    with store.coordinator_lock():
        store.init()
        ctx = Context(args.data_dir, device, store.artifacts_dir, store.checkpoints_dir,
                      allow_download=not args.no_download, progress=False)
        result = tune(study, profile, args.method, args.protocol, trials=args.trials, store=store, ctx=ctx,
                      journal=journal, seed=args.seed, dataset=args.dataset, variant=args.variant,
                      fraction=args.fraction, device=device, allow_download=not args.no_download)
    print(f"{result.name}: {result.trials} trials; best validation {study.main_metric} {result.best_value:.4f} with "
          f"{json.dumps(result.best_params)}")
    print(f"every trial: SELECT * FROM trials WHERE optuna_study = '{result.name}' (database {args.db}); Optuna's "
          f"journal: {journal}", file=sys.stderr)
    if args.write:
        write_overrides(result, args.method, args.protocol, Path(args.write))
        print(f"wrote {args.write}: `medssl replicate {study.name} --overrides {args.write}` applies it",
              file=sys.stderr)
    return 0


def cmd_bench(args) -> int:
    import torch
    from tabulate import tabulate

    from medssl_core.common.device import resolve_device, use_bf16
    from medssl_core.store import ResultsStore
    from medssl_core.train.bench import GRIDS, PIPELINES, RATIO_HEADERS, bench, default_workers, device_capture, ratios

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    grid = "quick" if args.quick else args.grid
    bf16 = use_bf16(device, args.amp)
    channels_last = not args.no_channels_last
    workers = default_workers() if args.workers is None else args.workers
    pipelines = tuple(_csv_list(args.pipelines, "--pipelines") or PIPELINES)
    unknown = sorted(set(pipelines) - set(PIPELINES))
    if unknown:
        raise ConfigError(f"--pipelines {args.pipelines!r}: unknown {unknown}; choose among {', '.join(PIPELINES)}.")
    print(f"medssl bench [{grid}] on {device}: {len(GRIDS[grid])} cases x {len(pipelines)} pipelines, {args.steps} "
          f"steps x {args.repeats} repeats after a warm-up, bf16 {bf16}, channels_last {channels_last}, {workers} "
          f"loader workers{' (min(8, cores))' if args.workers is None else ''}, {torch.get_num_threads()} threads, "
          f"captured step: train.capture {device_capture(device)!r}", file=sys.stderr)
    store, rows = ResultsStore(args.db), []
    for case, measured in bench(grid, device, steps=args.steps, repeats=args.repeats, workers=workers,
                                bf16=bf16, channels_last=channels_last, pipelines=pipelines):
        store.append("bench", measured)  # case by case: an interruption keeps what was measured
        rows += measured
        print(f"  {case.arch} {case.size} px {case.method} batch {case.batch}: "
              f"{measured[0]['pairs_per_s']:,.0f} pairs/s", file=sys.stderr)
    print(tabulate(ratios(rows), RATIO_HEADERS))
    print(f"{len(rows)} rows added to table 'bench' of {args.db}", file=sys.stderr)
    return 0


def cmd_augment_show(args) -> int:
    from medssl_core.paper.augment_show import show

    path = show(args.study, args.dataset, Path(args.out), data_dir=args.data_dir, profile=args.profile)
    print(f"wrote {path}")
    return 0


def cmd_masks_show(args) -> int:
    from medssl_core.paper.masks_show import show

    path = show(args.dataset, Path(args.out), data_dir=args.data_dir, size=args.size, n=args.n)
    print(f"wrote {path}")
    return 0


PROFILES = "{profiles}"  # in a help text: the registered studies' profile names, found when the help is printed


def profile_names() -> str:
    from medssl_core.plan.catalog import studies

    return ", ".join(sorted({p.name for s in studies().values() for p in s.profiles}))


class ProfileHelp(argparse.HelpFormatter):
    """Fills in PROFILES only when a help page shows it: finding the studies imports them all (seconds), which
    `medssl --help` and every command that does not print this page need not wait for."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = super()._get_help_string(action) or ""
        return text.replace(PROFILES, profile_names()) if PROFILES in text else text


def _add_db(parser: argparse.ArgumentParser) -> None:
    from medssl_core.store import DEFAULT_DB

    parser.add_argument("--db", default=str(DEFAULT_DB), help="the results database (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    from medssl_core import __version__
    from medssl_core.api import EXPORT_FORMATS, STATUSES
    from medssl_core.plan.study import ALL_VARIANTS
    from medssl_core.store.store import EXPORTABLE

    p = argparse.ArgumentParser(prog="medssl", description="Reproducible replications of SSL studies in "
                                "medical imaging.")
    p.add_argument("--version", action="version", version=f"medssl {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="list, verify and fetch datasets").add_subparsers(dest="data_cmd",
                                                                                          required=True)
    for name, fn, helptext in (("list", cmd_data_list, "every registered dataset and whether it is present"),
                               ("verify", cmd_data_verify, "check a dataset's files (checksum, shapes, counts)"),
                               ("fetch", cmd_data_fetch, "download a MedMNIST dataset (MD5-checked)")):
        sp = data.add_parser(name, help=helptext)
        if name != "list":
            sp.add_argument("name")
            sp.add_argument("--size", type=int, default=28, help="MedMNIST size 28/64/128/224; for original "
                            "sources, the side images are resized to")
        sp.add_argument("--data-dir", help="looked in first; then $MEDSSL_DATA, then ~/.medmnist")
        sp.set_defaults(fn=fn)

    r = sub.add_parser("replicate", help="run a study's grid (only runs not yet done)", formatter_class=ProfileHelp)
    r.add_argument("study")
    r.add_argument("--profile", default="auto", help=f"auto (the study's GPU profile on a GPU, else its CPU one) or "
                   f"a profile of the study: {PROFILES} (`medssl study show STUDY` describes them)")
    r.add_argument("--seeds", help="comma-separated, e.g. 0,1,2 (default: the profile's)")
    r.add_argument("--datasets", help="comma-separated study dataset keys")
    r.add_argument("--methods", help="comma-separated method names")
    r.add_argument("--protocols", help="comma-separated protocol names")
    r.add_argument("--variants", help="decision variants: as_published, corrected, each (one decision corrected "
                   "at a time); default: the profile's")
    r.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    r.add_argument("--threads", type=int, help="torch CPU threads")
    r.add_argument("--data-dir")
    _add_db(r)
    r.add_argument("--retry-failed", action="store_true", help="run failed runs again")
    r.add_argument("--reuse-stale", action="store_true", help="keep runs recorded under older code or data "
                   "instead of running them again (recorded in table 'reused'; tables mark them)")
    r.add_argument("--amp", choices=("off", "bf16"), help="precision (default: the study's; 'auto' there means "
                   "bf16 where the device has it). The studies' code trains in fp32: --amp off for fidelity")
    r.add_argument("--no-download", action="store_true", help="never download missing MedMNIST files")
    r.add_argument("--allow-slow", action="store_true", help="start a GPU-sized profile on a CPU anyway")
    r.add_argument("--dry-run", action="store_true", help="list the runs that would execute; writes nothing")
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("--capture", choices=("off", "compile", "cudagraphs"), help="every pretraining's training step: "
                   "eager (off, the default), compiled by torch.compile, or compiled and replayed as CUDA graphs "
                   "(CUDA only; fastest for small images). A setting of the runs: their own ids, never pooled")
    r.add_argument("--overrides", help="a JSON file of settings merged into the runs (`medssl tune --write`'s); "
                   "they are part of each run's settings and identity")
    r.add_argument("--executor", choices=("local", "ray"), default="local", help="local: one run after another "
                   "here; ray: on a Ray cluster (pip install 'medssl[cluster]'), a GPU or --cpus-per-task CPUs a run")
    r.add_argument("--address", help="Ray cluster address (e.g. auto, ray://HOST:10001); default: a local Ray")
    r.add_argument("--cpus-per-task", type=int, default=1, help="Ray, CPU runs: CPU slots (and torch threads) a run")
    r.add_argument("--artifacts-dir", help="where runs write artifacts and checkpoints (default: beside --db); on a "
                   "cluster, a folder every node mounts. Keep it the same when resuming")
    r.add_argument("--stand-in-weights", action="store_true", help="quick/tiny profiles: runs whose ImageNet "
                   "weights are missing start from a labelled random stand-in (their settings say so) instead of "
                   "being skipped")
    r.set_defaults(fn=cmd_replicate)

    w = sub.add_parser("weights", help="the ImageNet weights a study's runs need").add_subparsers(
        dest="weights_cmd", required=True)
    for name, helptext in (("list", "needed weights and whether each is present"),
                           ("fetch", "download the missing ones (torchvision's and timm's loaders, hashes checked)")):
        wp = w.add_parser(name, help=helptext)
        wp.add_argument("study")
        wp.add_argument("--profile", default="auto", help="quick | tiny | paper | auto (as replicate)")
        wp.set_defaults(fn=cmd_weights)

    res = sub.add_parser("results", help="query and browse the results database (each command names the database "
                         "it opened on standard error)").add_subparsers(dest="results_cmd", required=True)
    q = res.add_parser("sql", help="run a read-only SQL query (temporary tables run_staleness and run_variants "
                       "are there to join USING (run_id))")
    q.add_argument("query")
    q.add_argument("--format", choices=("table", "csv", "json"), default="table")
    _add_db(q)
    q.add_argument("--data-dir", help="where the data is, to tell runs whose data changed (run_staleness)")
    q.set_defaults(fn=cmd_results_sql)
    runs = res.add_parser("runs", help="list runs, with their variant and whether they are stale (and why)")
    runs.add_argument("--study")
    runs.add_argument("--method")
    runs.add_argument("--variant", choices=(*ALL_VARIANTS, "tuned"), help="as_published, corrected (every "
                      "decision on that side; runs no decision concerns belong to both), each (one decision "
                      "corrected), tuned (`medssl tune`'s best values)")
    runs.add_argument("--status", choices=STATUSES)
    fresh = runs.add_mutually_exclusive_group()
    fresh.add_argument("--stale", action="store_const", const=True, dest="stale", help="only stale runs")
    fresh.add_argument("--current", action="store_const", const=False, dest="stale", help="only current runs")
    runs.add_argument("--data-dir", help="where the data is, to tell runs whose data changed")
    runs.add_argument("--format", choices=("table", "csv", "json"), default="table", help="table: long texts cut "
                      "between words; csv, json: whole")
    _add_db(runs)
    runs.set_defaults(fn=cmd_results_runs)
    sh_run = res.add_parser("show", help="one run: settings, decisions, metrics, curves, artifacts, environment, "
                            "staleness")
    sh_run.add_argument("run_id", help="a run id, or its first characters (as long as one run has them)")
    sh_run.add_argument("--paper-dir", default="paper", help="where `medssl paper` wrote (its --out), to name the "
                        "pretraining-curves figure (default: %(default)s)")
    sh_run.add_argument("--format", choices=("text", "json"), default="text")
    sh_run.add_argument("--data-dir", help="where the data is, to tell whether the run's data changed")
    _add_db(sh_run)
    sh_run.set_defaults(fn=cmd_results_show)
    cmp = res.add_parser("compare", help="two runs, or a run and its other variant: the settings that differ, and "
                         "their metrics side by side")
    cmp.add_argument("run_a", help="a run id or its first characters")
    cmp.add_argument("run_b", nargs="?", help="a run id or its first characters; left out: RUN_A's run in "
                     "the other variant (same cell and seed, every decision on the other side)")
    cmp.add_argument("--format", choices=("text", "json"), default="text")
    cmp.add_argument("--data-dir", help="where the data is, to tell whether the runs' data changed")
    _add_db(cmp)
    cmp.set_defaults(fn=cmd_results_compare)
    ex = res.add_parser("export", help="write a table or view to a CSV or Parquet file (whole or not at all)")
    ex.add_argument("--out", required=True, help="the file to write (replaced whole)")
    ex.add_argument("--format", choices=EXPORT_FORMATS, default="csv")
    ex.add_argument("--table", default="runs", choices=EXPORTABLE, metavar="TABLE", help="a table or view: "
                    f"{', '.join(EXPORTABLE)} (default: %(default)s)")
    ex.add_argument("--data-dir", help="where the data is, for run_staleness")
    _add_db(ex)
    ex.set_defaults(fn=cmd_results_export)
    rb = res.add_parser("rebuild", help="recreate the database from the run record files")
    _add_db(rb)
    rb.set_defaults(fn=cmd_results_rebuild)

    pp = sub.add_parser("paper", help="generate a study's tables and figures from the database",
                        formatter_class=ProfileHelp)
    pp.add_argument("study", nargs="?", help="default: every study with runs")
    pp.add_argument("--all", action="store_true", help="every study, and the cross-study report (REPORT.md and a "
                    "self-contained REPORT.html)")
    _add_db(pp)
    pp.add_argument("--out", default="paper")
    pp.add_argument("--profile", help=f"the profile whose runs to use: {PROFILES} (default: every profile with "
                    "runs)")
    pp.add_argument("--data-dir", help="where the data is: for the t-SNE figure, and to leave out runs whose data "
                    "changed")
    pp.add_argument("--include-stale", action="store_true", help="show stale runs, marked ‡ with the definitions or "
                    "data that changed, instead of leaving them out (`replicate` re-runs them)")
    pp.set_defaults(fn=cmd_paper)

    t = sub.add_parser("tune", help="Optuna over what a study leaves open (its search_space), on a validation "
                       "metric; every trial is a run (table 'trials')", formatter_class=ProfileHelp)
    t.add_argument("study")
    t.add_argument("--method", required=True)
    t.add_argument("--protocol", required=True, help="the evaluation whose validation metric is the objective")
    t.add_argument("--trials", type=int, default=20)
    t.add_argument("--profile", default="auto", help=f"auto (the study's GPU profile on a GPU, else its CPU one) or "
                   f"a profile of the study: {PROFILES}")
    t.add_argument("--dataset", help="the study dataset to tune on (default: the only one planned)")
    t.add_argument("--variant", default="corrected", choices=("as_published", "corrected"))
    t.add_argument("--fraction", type=float, default=1.0, help="the label fraction of the scored evaluation")
    t.add_argument("--seed", type=int, default=0, help="the runs' seed and the sampler's")
    t.add_argument("--journal", help="Optuna's journal file (default: beside --db); re-running resumes the search")
    t.add_argument("--write", help="write the best values to this JSON file for `replicate --overrides`")
    t.add_argument("--device", default="auto")
    t.add_argument("--data-dir")
    _add_db(t)
    t.add_argument("--no-download", action="store_true")
    t.add_argument("--allow-slow", action="store_true", help="tune on a GPU-sized profile on a CPU anyway")
    t.set_defaults(fn=cmd_tune)

    b = sub.add_parser("bench", help="pretraining throughput: medssl's loop vs a seed-style DataLoader vs the "
                       "model's ceiling vs the captured step (table 'bench')")
    b.add_argument("--grid", choices=("full", "quick", "small", "smoke"), default="full", help="full: ResNet-18/50 at "
                   "28, 64, 224 px, SimCLR and Barlow Twins; quick: ResNet-18 at 28 and 64 px; small: its SimCLR "
                   "cases; smoke: one small case")
    b.add_argument("--quick", action="store_true", help="the quick grid (about 15 minutes on 2 CPU cores, most of it "
                   "compiling the captured step: --pipelines medssl,seed_style,ceiling takes 8)")
    b.add_argument("--steps", type=int, default=4, help="steps a timed pass (the images: steps x batch)")
    b.add_argument("--repeats", type=int, default=5, help="timed passes; the median is reported")
    b.add_argument("--workers", type=int, help="DataLoader workers of the seed-style pipeline (default: min(8, cores))")
    b.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    b.add_argument("--threads", type=int, help="torch CPU threads")
    b.add_argument("--amp", choices=("auto", "off", "bf16"), default="auto", help="auto: bf16 where the device has "
                   "it natively")
    b.add_argument("--no-channels-last", action="store_true")
    b.add_argument("--pipelines", help="comma-separated, of medssl, seed_style, ceiling, captured (default: all; "
                   "captured compiles first: about a minute per case on a CPU)")
    _add_db(b)
    b.set_defaults(fn=cmd_bench)

    st = sub.add_parser("studies", help="list the registered studies")
    st.set_defaults(fn=cmd_studies)
    sh = sub.add_parser("study", help="describe a study").add_subparsers(dest="study_cmd", required=True)
    show_study = sh.add_parser("show", help="datasets, methods, protocols, decisions, profiles, reported numbers")
    show_study.add_argument("name")
    show_study.set_defaults(fn=cmd_study_show)

    aug = sub.add_parser("augment", help="augmentation tools").add_subparsers(dest="augment_cmd", required=True)
    show = aug.add_parser("show", help="write a PNG grid of images and their two views")
    show.add_argument("study")
    show.add_argument("--dataset", required=True, help="a study dataset key or a registry dataset name")
    show.add_argument("--profile", default="quick")
    show.add_argument("--data-dir")
    show.add_argument("--out", default="paper/augment")
    show.set_defaults(fn=cmd_augment_show)

    masks = sub.add_parser("masks", help="lung-mask tools").add_subparsers(dest="masks_cmd", required=True)
    mshow = masks.add_parser("show", help="write a PNG of chest X-rays with their rule-based lung masks")
    mshow.add_argument("dataset", help="a registered chest X-ray dataset, e.g. pneumoniamnist, nih_chestxray14")
    mshow.add_argument("--size", type=int, default=224, help="image side in px (MedMNIST: 28, 64, 128 or 224)")
    mshow.add_argument("--n", type=int, default=8)
    mshow.add_argument("--data-dir")
    mshow.add_argument("--out", default="paper/masks")
    mshow.set_defaults(fn=cmd_masks_show)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _check_data_dir(args)
        if args.command == "results":  # on standard error: standard output stays the command's data
            print(f"database: {Path(args.db).resolve()}", file=sys.stderr)
        return args.fn(args)
    except MedsslError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
