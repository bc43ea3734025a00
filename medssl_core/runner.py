"""Execute one RunSpec and return its RunRecord. Workers never open the database: they read data, train,
write artifacts and checkpoints under the store's folders, and hand a record back to the coordinator."""

from __future__ import annotations

import functools
import hashlib
import io
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from medssl_core.atomic import write_atomic
from medssl_core.config import Data
from medssl_core.data import load_dataset
from medssl_core.data.split_schemes import split_dataset
from medssl_core.device import device_name, peak_memory_mb, use_bf16
from medssl_core.errors import MedsslError
from medssl_core.models import build_backbone
from medssl_core.provenance import environment
from medssl_core.runspec import RunSpec
from medssl_core.seeding import seed_everything
from medssl_core.store.records import RunRecord


@dataclass
class Context:
    data_dir: str | None
    device: torch.device
    artifacts_dir: Path
    checkpoints_dir: Path
    allow_download: bool = True
    progress: bool = True


@dataclass
class Outcome:
    metrics: list[dict]
    curves: list[dict]
    artifacts: list[dict]
    files: dict[str, str]


@functools.lru_cache(maxsize=4)
def _load(name: str, size: int, data_dir: str | None, allow_download: bool, version: str | None):
    """Decoded once per process and data version: a file replaced under the same name is loaded (and verified)
    again."""
    return load_dataset(name, size, data_dir, allow_download=allow_download)


def split_seed(spec: RunSpec, hp: Data) -> int:
    policy = hp.split.seed_policy
    if policy == "fixed":
        return hp.split.fixed_seed
    if policy == "per_run":
        return spec.seed + 1_000
    # per_script: each script of the study's code shuffles on its own (unseeded in the original)
    return int(hashlib.sha256(f"{spec.seed}|{hp.split.script}".encode()).hexdigest()[:8], 16)


def split_arrays(spec: RunSpec, hp: Data, ctx: Context):
    """train/val/test (images, labels) as numpy, as the spec's split scheme (data.split_schemes) assigns them."""
    ds = _load(spec.dataset_used, hp.source_size or hp.image_size, ctx.data_dir, ctx.allow_download, spec.data)
    parts = split_dataset(ds, hp.split, split_seed(spec, hp))
    return {role: (part.images, part.labels) for role, part in parts.items()}, ds.files


def images_to_device(x: np.ndarray, device: torch.device, channels: int | None = None) -> torch.Tensor:
    """uint8 (N, H, W, C) numpy -> uint8 (N, C, H, W) tensor on ``device``; grey replicated to ``channels``."""
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)
    if channels is not None and channels != t.shape[1]:
        t = t.expand(-1, channels, -1, -1).contiguous()
    return t


def run_backbone(hp: Data) -> torch.nn.Module:
    """The backbone a run's configuration describes (random or ImageNet init; weights loaded by the caller)."""
    b = hp.backbone
    return build_backbone(b.arch, hp.input_channels, small_stem=b.small_stem, init=b.init, image_size=hp.image_size)


def save_artifact(ctx: Context, run_id: str, name: str, obj) -> dict:
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    path = ctx.artifacts_dir / run_id / name
    write_atomic(path, data)
    return {"name": name, "path": str(path), "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def _flatten(prefix: str, value, out: list) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else k, v, out)
    else:
        out.append({"kind": "hparam", "name": prefix, "value": str(value)})


def execute_spec(spec: RunSpec, ctx: Context) -> RunRecord:
    """Run one spec; any failure other than an interrupt becomes a 'failed' record with its error."""
    from medssl_core.run_evaluate import run_evaluate
    from medssl_core.run_pretrain import run_pretrain

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
    params = [{"kind": "decision", "name": k, "value": v} for k, v in sorted(spec.decisions.items())]
    _flatten("", spec.hparams, params)
    params.append({"kind": "runtime", "name": "bf16", "value": str(bf16)})
    params += [{"kind": "runtime", "name": k, "value": str(v)} for k, v in flags.items()]
    dev_name = device_name(ctx.device)
    row = run_row(spec, status, error, started, wall_s=time.perf_counter() - t0,
                  peak_mem_mb=peak_memory_mb(ctx.device), device=dev_name)
    return RunRecord(run=row, params=params, metrics=outcome.metrics, curves=outcome.curves,
                     artifacts=outcome.artifacts,
                     environment=environment(ctx.device, dev_name, flags["deterministic"], outcome.files))


def run_row(spec: RunSpec, status: str, error: str | None, started: datetime, *, wall_s: float = 0.0,
            peak_mem_mb: float | None = None, device: str | None = None) -> dict:
    """The runs-table row of a spec."""
    return {"run_id": spec.run_id, "config_id": spec.config_id, "kind": spec.kind, "study": spec.study,
            "dataset": spec.dataset, "dataset_used": spec.dataset_used, "method": spec.method,
            "protocol": spec.protocol, "fraction": spec.fraction, "seed": spec.seed, "profile": spec.profile,
            "decisions": ",".join(f"{k}={v}" for k, v in sorted(spec.decisions.items())),
            "parent_run_id": spec.parent, "code_version": spec.code_version, "data_version": spec.data,
            "status": status, "error": error, "started_at": started.isoformat(),
            "finished_at": datetime.now(timezone.utc).isoformat(), "wall_s": wall_s, "peak_mem_mb": peak_mem_mb,
            "device": device, "spec_json": spec.canonical()}


def failed_record(spec: RunSpec, error: str) -> RunRecord:
    """A run that could not start (its pretraining failed): recorded so the summary and SQL show why."""
    return RunRecord(run=run_row(spec, "failed", error, datetime.now(timezone.utc)))

