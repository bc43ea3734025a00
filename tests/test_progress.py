"""What `replicate` shows while it runs: one plain line per finished run when its output is not a terminal (a log
file, a batch job), a bar naming the running run and an ETA per run kind on a terminal."""

from __future__ import annotations

import io
import time
from datetime import datetime, timezone

from conftest import cpu_store

from medssl_core.execute.local import execute
from medssl_core.plan.catalog import get_study
from medssl_core.plan.grid import expand
from medssl_core.run.record import failed_record, run_row
from medssl_core.store.records import RunRecord


def _plan():
    return expand(get_study("demo"), "quick", every_source=True, fingerprint_data=False, allow_download=False,
                  seeds=[0])


def _fake(spec, ctx) -> RunRecord:
    """A finished run without computing anything: 2 s for a pretraining, 1 s for an evaluation."""
    wall = 2.0 if spec.kind == "pretrain" else 1.0
    record = RunRecord(run_row(spec, "ok", None, datetime.now(timezone.utc), wall_s=wall))
    if spec.kind == "evaluate":
        record.metrics.append({"split": "test", "name": "accuracy", "value": 0.75})
    return record


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_without_a_terminal_each_finished_run_is_one_line_and_no_bar(tmp_path):
    plan = _plan()
    store, ctx = cpu_store(tmp_path, None)
    out, broken = io.StringIO(), plan.evaluate[-1]

    def runner(spec, ctx):
        return failed_record(spec, "boom\nthe traceback") if spec is broken else _fake(spec, ctx)

    summary = execute(plan, store, ctx, runner=runner, stream=out)
    lines = out.getvalue().splitlines()
    assert summary.ran == len(plan.specs) == len(lines)
    for spec, line in zip(plan.specs, lines, strict=True):
        assert line.startswith(f"{spec.run_id[:10]} {spec.label()}: ")
        if spec is not broken:
            assert line.endswith("ok (2.0 s)" if spec.kind == "pretrain" else "accuracy 0.7500 (1.0 s)")
    assert lines[-1].split(": ", 1)[1].startswith("FAILED: boom (")
    assert "\r" not in out.getvalue() and "run/s" not in out.getvalue() and "it/s" not in out.getvalue()
    again = io.StringIO()
    assert execute(plan, store, ctx, runner=_fake, stream=again).ran == 0
    assert again.getvalue() == ""  # nothing to run: no '0run [00:00, ?run/s]'


def test_on_a_terminal_the_bar_names_the_running_run_and_estimates_by_kind(tmp_path):
    plan = _plan()
    store, ctx = cpu_store(tmp_path, None)
    out, shown = Terminal(), []

    def runner(spec, ctx):
        time.sleep(0.01)
        shown.append(out.getvalue().rsplit("\r", 1)[-1])  # the bar as the run runs
        return _fake(spec, ctx)

    execute(plan, store, ctx, runner=runner, stream=out)
    assert all(f"running {spec.label()}" in bar for spec, bar in zip(plan.specs, shown, strict=True))
    pretrainings = sum(s.kind == "pretrain" for s in plan.specs[1:])
    evaluations = len(plan.specs) - 1 - pretrainings
    # after the first run (a pretraining of 2 s) every kind is estimated from it; then each kind from its own
    assert plan.specs[0].kind == "pretrain" and f"eta ~00:{2 * (pretrainings + evaluations):02d}" in shown[1]
    assert "?run/s" not in out.getvalue()
