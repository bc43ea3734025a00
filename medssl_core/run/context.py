"""What a run is given and what it hands back: where it may write (Context) and its results (Outcome), and the
one way it writes an artifact. Workers never open the database: the coordinator records what they return."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medssl_core.common.atomic import write_atomic


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
    metrics: list[dict]  # {split, name, value}
    curves: list[dict]  # {step, name, value}
    artifacts: list[dict]  # save_artifact's rows
    files: dict[str, str]  # data file -> checksum, for provenance


def save_artifact(ctx: Context, run_id: str, name: str, obj) -> dict:
    """``obj`` under the run's artifacts: a dict of arrays as '.npz' (readable without torch), else torch.save."""
    buf = io.BytesIO()
    if name.endswith(".npz"):
        np.savez_compressed(buf, **obj)
    else:
        torch.save(obj, buf)
    data = buf.getvalue()
    path = ctx.artifacts_dir / run_id / name
    write_atomic(path, data)
    return {"name": name, "path": str(path), "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
