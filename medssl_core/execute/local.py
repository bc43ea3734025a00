"""Run the specs of a plan that are not done yet, one after another on this machine.

Before running, ``reconcile`` compares the plan with the recorded runs: a run recorded under other code or
data is stale and is run again (or kept, if asked). The coordinator (this process) is the only writer: each
worker call returns a RunRecord, which is written to its record file and then to the database in one
transaction. An interrupted run leaves no record and is
redone (its pretraining resumes from the last checkpoint); a failed run is recorded with its error and the
grid goes on. An executor (LocalExecutor here, execute_ray.RayExecutor on a cluster) only decides where and when
each pending spec runs.
"""

from __future__ import annotations

import functools
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol, TextIO

from tqdm import tqdm

from medssl_core.models.stand_in import stand_in_caches
from medssl_core.plan.grid import Plan
from medssl_core.plan.runspec import RunSpec
from medssl_core.plan.stale import differences, parse_spec
from medssl_core.run.context import Context
from medssl_core.run.record import failed_record
from medssl_core.run.runner import execute_spec
from medssl_core.store import ResultsStore, RunRecord


@dataclass
class Summary:
    planned: int = 0
    already_done: int = 0
    ran: int = 0
    failed: list[RunRecord] = field(default_factory=list)
    records: list[RunRecord] = field(default_factory=list)


@dataclass
class Reconciled:
    """How a plan meets what is recorded: stale runs (same settings and seed, other code or data), and the
    ones kept anyway (``reuse_stale``)."""

    stale: dict[str, tuple[str, list[str]]] = field(default_factory=dict)  # planned id -> (recorded id, why)
    reused: dict[str, str] = field(default_factory=dict)  # recorded id kept -> why it is stale


def reconcile(plan: Plan, recorded: list[tuple[str, str, str]], *, reuse_stale: bool = False) -> Reconciled:
    """Find the planned runs whose settings and seed were recorded under other code or data.

    ``recorded``: (run_id, status, spec_json), newest first. With ``reuse_stale`` the plan takes the recorded
    runs in their place (evaluations then use the kept pretraining), so nothing stale is run again.
    """
    done = {rid for rid, status, _ in recorded if status == "ok"}
    newest: dict[tuple[str, int], RunSpec] = {}
    for _rid, status, spec_json in recorded:
        spec = parse_spec(spec_json) if status == "ok" else None
        if spec is not None and spec.study == plan.study:
            newest.setdefault((spec.settings_id, spec.seed), spec)
    out = Reconciled()
    kept: dict[str, RunSpec] = {}  # planned id -> the spec that runs in its place (a kept one, or renamed by it)
    specs = []
    for spec in plan.specs:
        planned = spec.run_id
        if spec.pretrain is not None and spec.pretrain.run_id in kept:
            spec = spec.replace_pretrain(kept[spec.pretrain.run_id])
        if spec.start is not None and spec.start.run_id in kept:  # planned before it: already settled
            spec = replace(spec, start=kept[spec.start.run_id])
        old = newest.get((spec.settings_id, spec.seed))
        if spec.run_id not in done and old is not None:
            why = differences(old, spec)
            out.stale[spec.run_id] = (old.run_id, why)
            if reuse_stale:
                out.reused[old.run_id] = "; ".join(why)
                spec = old
        if spec.run_id != planned:
            kept[planned] = spec
        specs.append(spec)
    plan.specs = specs
    return out


def pending(plan: Plan, statuses: dict[str, str], retry_failed: bool) -> list[RunSpec]:
    return [s for s in plan.specs
            if statuses.get(s.run_id) != "ok" and (retry_failed or statuses.get(s.run_id) != "failed")]


class Executor(Protocol):
    """Runs the pending specs and hands each record to ``finish`` as it arrives (the coordinator writes it)."""

    def run(self, todo: list[RunSpec], ctx: Context, runner: Runner, failed: set[str],
            finish: Callable[[RunSpec, RunRecord], None]) -> None: ...


Runner = Callable[[RunSpec, Context], RunRecord]


def blocked(spec: RunSpec, failed: set[str]) -> RunRecord | None:
    """The failed record of a spec whose pretraining (or starting evaluation) failed; None if it may run."""
    broken = [rid for rid in spec.depends_on if rid in failed]
    if not broken:
        return None
    what = "pretraining" if broken[0] == spec.parent else "starting evaluation"
    return failed_record(spec, f"its {what} run {broken[0]} failed; see that run's error")


def with_weights(runner: Runner, spec: RunSpec, ctx: Context) -> RunRecord:
    """Run ``spec``; one whose settings say stand-in weights inside `stand_in_caches`, where its backbone finds
    them as it would find the real ones (a module function: Ray's workers receive it pickled)."""
    backbone = spec.hparams.get("backbone", {})
    if not backbone.get("stand_in_weights"):
        return runner(spec, ctx)
    with stand_in_caches(backbone["arch"], backbone["init"]):
        return runner(spec, ctx)


class LocalExecutor:
    """One run after another in this process, in plan order (a pretraining before its evaluations)."""

    def __init__(self, started: Callable[[RunSpec], None] | None = None):
        self.started = started  # told of each run as it starts (the progress bar shows it)

    def run(self, todo, ctx, runner, failed, finish) -> None:
        for spec in todo:
            record = blocked(spec, failed)
            if record is None:
                if self.started is not None:
                    self.started(spec)
                record = runner(spec, ctx)
            finish(spec, record)


def _error(record: RunRecord) -> str:
    return (record.run.get("error") or "no error recorded").splitlines()[0]


def interactive(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal (progress bars); else a log file or a batch job's output (plain lines)."""
    return bool(getattr(stream, "isatty", lambda: False)())


class Progress:
    """The grid's progress: on a terminal one bar naming the run that is running, with an ETA from the mean
    duration of the finished runs of each kind (pretraining and evaluation differ by orders of magnitude); else
    one line per finished run."""

    def __init__(self, plan: Plan, todo: list[RunSpec], enabled: bool, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.metric, self.left = plan.metric, {s.run_id: s.kind for s in todo}
        self.durations: dict[str, list[float]] = {"pretrain": [], "evaluate": []}
        self.lines = enabled and not interactive(self.stream)
        self.t0 = time.perf_counter()
        self.bar = None
        if enabled and not self.lines and todo:
            self.bar = tqdm(total=len(todo), desc=f"{plan.study} [{plan.profile}]", unit="run", file=self.stream,
                            bar_format="{desc}: {n_fmt}/{total_fmt} runs [{elapsed}{postfix}]")

    def started(self, spec: RunSpec) -> None:
        self.t0 = time.perf_counter()
        if self.bar is not None:
            self.bar.set_postfix_str(f"running {spec.label()}{self._eta()}")

    def finished(self, spec: RunSpec, record: RunRecord) -> None:
        seconds = float(record.run.get("wall_s") or time.perf_counter() - self.t0)
        self.left.pop(spec.run_id, None)
        if record.ok:
            self.durations[spec.kind].append(seconds)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(self._eta().lstrip(", "))
        if self.lines:
            print(self.line(spec, record, seconds), file=self.stream, flush=True)
        elif not record.ok:  # said even without progress
            message = f"FAILED {spec.label()} ({spec.run_id}): {_error(record)}"
            if self.bar is not None:
                self.bar.write(message, file=self.stream)
            else:
                print(message, file=self.stream, flush=True)

    def line(self, spec: RunSpec, record: RunRecord, seconds: float) -> str:
        """'<id prefix> <cell>: <headline metric | ok | FAILED: error> (<seconds> s)'."""
        value = record.metric(self.metric)
        if not record.ok:
            outcome = f"FAILED: {_error(record)}"
        elif value is not None:
            outcome = f"{self.metric} {value:.4f}"
        else:
            outcome = "ok"
        return f"{spec.run_id[:10]} {spec.label()}: {outcome} ({seconds:.1f} s)"

    def _eta(self) -> str:
        """', eta ~[h:]mm:ss' from the finished runs' mean duration per kind ('' before any has finished)."""
        done = [d for ds in self.durations.values() for d in ds]
        if not done or not self.left:
            return ""
        mean = {k: statistics.fmean(ds) if ds else statistics.fmean(done) for k, ds in self.durations.items()}
        seconds = sum(mean[kind] for kind in self.left.values())
        return f", eta ~{tqdm.format_interval(seconds)}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def execute(plan: Plan, store: ResultsStore, ctx: Context, *, retry_failed: bool = False,
            runner: Runner = execute_spec, progress: bool = True, executor: Executor | None = None,
            stream: TextIO | None = None) -> Summary:
    """Run the plan's pending specs and record each; ``progress``: a bar on a terminal, one line per finished run
    otherwise (to ``stream``, default standard error)."""
    store.init()
    store.ingest_pending()
    statuses = store.run_statuses()
    todo = pending(plan, statuses, retry_failed)
    summary = Summary(planned=len(plan.specs), already_done=len(plan.specs) - len(todo))
    failed = {rid for rid, st in statuses.items() if st == "failed"} - ({s.run_id for s in todo})
    shown = Progress(plan, todo, progress, stream)
    if not interactive(sys.stderr):  # the loops' own bars (pretraining, fine-tuning) would fill a log with residue
        ctx = replace(ctx, progress=False)

    def finish(spec: RunSpec, record: RunRecord) -> None:
        store.record(record)
        summary.ran += 1
        summary.records.append(record)
        shown.finished(spec, record)
        if not record.ok:
            failed.add(spec.run_id)
            summary.failed.append(record)

    try:
        (executor or LocalExecutor(shown.started)).run(todo, ctx, functools.partial(with_weights, runner), failed,
                                                      finish)
    finally:
        shown.close()
    return summary
