"""The record of a run as the store keeps it: its runs-table row and its parameters, from its spec."""

from __future__ import annotations

from datetime import datetime, timezone

from medssl_core.config.validation import dotted_paths
from medssl_core.plan.runspec import RunSpec
from medssl_core.store.records import RunRecord


def run_row(spec: RunSpec, status: str, error: str | None, started: datetime, *, wall_s: float = 0.0,
            peak_mem_mb: float | None = None, device: str | None = None) -> dict:
    """The runs-table row of a spec."""
    return {"run_id": spec.run_id, "config_id": spec.config_id, "kind": spec.kind, "study": spec.study,
            "dataset": spec.dataset, "dataset_used": spec.dataset_used, "method": spec.method,
            "protocol": spec.protocol, "fraction": spec.fraction, "seed": spec.seed, "profile": spec.profile,
            "decisions": ",".join(f"{k}={v}" for k, v in sorted(spec.decisions.items())),
            "parent_run_id": spec.parent, "code_version": spec.code_version, "data_version": spec.data,
            "pretrain_dataset": spec.pretrain.dataset if spec.pretrain is not None else None,
            "status": status, "error": error, "started_at": started.isoformat(),
            "finished_at": datetime.now(timezone.utc).isoformat(), "wall_s": wall_s, "peak_mem_mb": peak_mem_mb,
            "device": device, "spec_json": spec.canonical()}


def spec_params(spec: RunSpec) -> list[dict]:
    """The params-table rows of a spec: its decisions and every hyper-parameter by dotted path."""
    params = [{"kind": "decision", "name": k, "value": v} for k, v in sorted(spec.decisions.items())]
    if spec.start is not None:  # the evaluation whose fine-tuned model it starts from
        params.append({"kind": "start", "name": "run_id", "value": spec.start.run_id})
    return params + [{"kind": "hparam", "name": k, "value": str(v)} for k, v in dotted_paths(spec.hparams).items()]


def failed_record(spec: RunSpec, error: str) -> RunRecord:
    """A run that could not start (its pretraining failed): recorded so the summary and SQL show why."""
    return RunRecord(run=run_row(spec, "failed", error, datetime.now(timezone.utc)))
