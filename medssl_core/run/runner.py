"""Execute one RunSpec and return its RunRecord: seeds, precision, the run itself, and what it left."""

from __future__ import annotations

import time
import traceback
from datetime import datetime, timezone

import torch

from medssl_core.common.device import device_name, peak_memory_mb, use_bf16
from medssl_core.common.errors import MedsslError
from medssl_core.common.provenance import environment
from medssl_core.common.seeding import seed_everything
from medssl_core.plan.runspec import RunSpec
from medssl_core.run.context import Context, Outcome
from medssl_core.run.evaluate import run_evaluate
from medssl_core.run.pretrain import run_pretrain
from medssl_core.run.record import run_row, spec_params
from medssl_core.store.records import RunRecord


def execute_spec(spec: RunSpec, ctx: Context) -> RunRecord:
    """Run one spec; any failure other than an interrupt becomes a 'failed' record with its error."""
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    flags = seed_everything(spec.seed, deterministic=spec.hparams.get("deterministic", False))
    bf16 = use_bf16(ctx.device, spec.hparams.get("amp", "off"))
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
    status, error = "ok", None
    outcome = Outcome([], [], [], {})
    try:
        outcome = (run_pretrain if spec.kind == "pretrain" else run_evaluate)(spec, ctx, bf16)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # recorded, and the rest of the grid goes on
        status = "failed"
        tb = "".join(traceback.format_exception(exc)[-3:]) if not isinstance(exc, MedsslError) else ""
        error = f"{type(exc).__name__}: {exc}" + (f"\n{tb}" if tb else "")
    params = spec_params(spec)
    params.append({"kind": "runtime", "name": "bf16", "value": str(bf16)})
    params += [{"kind": "runtime", "name": k, "value": str(v)} for k, v in flags.items()]
    dev_name = device_name(ctx.device)
    row = run_row(spec, status, error, started, wall_s=time.perf_counter() - t0,
                  peak_mem_mb=peak_memory_mb(ctx.device), device=dev_name)
    return RunRecord(run=row, params=params, metrics=outcome.metrics, curves=outcome.curves,
                     artifacts=outcome.artifacts,
                     environment=environment(ctx.device, dev_name, flags["deterministic"], outcome.files))
