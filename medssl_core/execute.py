"""Run the specs of a plan that are not done yet, one after another on this machine.

The coordinator (this process) is the only writer: each worker call returns a RunRecord, which is written
to its record file and then to the database in one transaction. An interrupted run leaves no record and is
redone (its pretraining resumes from the last checkpoint); a failed run is recorded with its error and the
grid goes on. A cluster executor only has to replace the loop that calls ``runner``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tqdm import tqdm

from medssl_core.grid import Plan
from medssl_core.runner import Context, execute_spec, failed_record
from medssl_core.runspec import RunSpec
from medssl_core.store import ResultsStore, RunRecord


@dataclass
class Summary:
    planned: int = 0
    already_done: int = 0
    ran: int = 0
    failed: list[RunRecord] = field(default_factory=list)
    records: list[RunRecord] = field(default_factory=list)


def pending(plan: Plan, statuses: dict[str, str], retry_failed: bool) -> list[RunSpec]:
    return [s for s in plan.specs
            if statuses.get(s.run_id) != "ok" and (retry_failed or statuses.get(s.run_id) != "failed")]


def execute(plan: Plan, store: ResultsStore, ctx: Context, *, retry_failed: bool = False,
            runner: Callable[[RunSpec, Context], RunRecord] = execute_spec, progress: bool = True) -> Summary:
    store.init()
    store.ingest_pending()
    statuses = store.run_statuses()
    todo = pending(plan, statuses, retry_failed)
    summary = Summary(planned=len(plan.specs), already_done=len(plan.specs) - len(todo))
    failed = {rid for rid, st in statuses.items() if st == "failed"} - ({s.run_id for s in todo})
    bar = tqdm(todo, desc=f"{plan.study} [{plan.profile}]", unit="run", disable=not progress)
    for spec in bar:
        bar.set_postfix_str(spec.label())
        if spec.parent is not None and spec.parent in failed:
            record = failed_record(spec, f"its pretraining run {spec.parent} failed; see that run's error")
        else:
            record = runner(spec, ctx)
        store.record(record)
        summary.ran += 1
        summary.records.append(record)
        if not record.ok:
            failed.add(spec.run_id)
            summary.failed.append(record)
            tqdm.write(f"FAILED {spec.label()} ({spec.run_id}): {record.run['error'].splitlines()[0]}")
    return summary
