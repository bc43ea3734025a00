"""One seeding function for python, numpy and torch, with optional deterministic algorithms; the generators' states
for a checkpoint, and their restoration on resume."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int, *, deterministic: bool = False) -> dict:
    """Seed every generator medssl touches; returns the flags to record with the run."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    return {"seed": seed, "deterministic": deterministic, "cudnn_benchmark": not deterministic}


def rng_states() -> dict:
    """Every global generator's state: torch's CPU one, each CUDA device's (once CUDA is in use), numpy's, Python's.
    A checkpoint holds them so that a resumed run draws (Dropout, random masking) what the uninterrupted one did."""
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "numpy": np.random.get_state(), "python": random.getstate()}


def restore_rng_states(states: dict) -> None:
    """Set the generators to :func:`rng_states`'s ``states``; a checkpoint loaded onto a device holds them there."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"].cpu())
    for device, state in enumerate(states["cuda"][:torch.cuda.device_count()]):  # as many devices as are here
        torch.cuda.set_rng_state(state.cpu(), device)
