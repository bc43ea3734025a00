"""A captured training step (``train.capture``): the views' augmentation and the method's forward pass and loss as one
``torch.compile`` region (its backward compiled with it by AOTAutograd), replayed as CUDA graphs with 'cudagraphs'.

Small images leave a GPU step bound by kernel launches and Python rather than arithmetic; a captured step fuses the
augmentation's and the model's small kernels and launches them together. The random parameters are drawn eagerly on
the CPU, exactly as the eager step draws them, and moved to the device without blocking; inside the region the
colour operations follow their random order branch-free (``BatchAugment.apply``), so one graph serves every batch.
Shapes are fixed (every step sees a full batch). The optimiser step, the method's step hooks (EMA teachers) and the
gradient clipping stay eager. The setting is part of a run's settings: captured and eager runs are never pooled.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import replace

import torch

from medssl_core.augment.views import BatchAugment
from medssl_core.common.device import autocast
from medssl_core.common.errors import ConfigError
from medssl_core.data.batch import Batch, View
from medssl_core.methods import Method
from medssl_core.methods.base import StepOutput


def check_capture(capture: str, device: torch.device) -> None:
    """Refuse a capture this device cannot run (also before a replication plans anything)."""
    if capture == "cudagraphs" and device.type != "cuda":
        raise ConfigError(f"train.capture 'cudagraphs' replays CUDA graphs and needs a CUDA device, not {device}; use "
                          "'compile' (or 'off') on the CPU.")


def captured_step(method: Method, augment: BatchAugment, capture: str, device: torch.device,
                  bf16: bool) -> Callable[[Batch, torch.Generator], StepOutput]:
    """The step ``(batch, generator) -> StepOutput`` compiled as ``capture`` asks: 'compile' (inductor's default
    mode) or 'cudagraphs' (its 'reduce-overhead' mode: CUDA graphs, CUDA only)."""
    check_capture(capture, device)
    if capture not in ("compile", "cudagraphs"):
        raise ConfigError(f"Unknown train.capture {capture!r}; use off, compile or cudagraphs.")

    def views_and_loss(batch: Batch, draws: list) -> StepOutput:
        views = [View(*augment.apply(batch.images, batch.masks, d, branch_free=True)) for d in draws]
        with autocast(device, bf16):
            return method.training_step(views, batch)

    settings = (capture, device, bf16)
    if _LAST.get("method") is method and _LAST.get("augment") is augment and _LAST.get("settings") == settings:
        return _LAST["step"]  # the same method again (a benchmark's next pass)
    # a new model: drop what was compiled for earlier ones, which would count towards dynamo's recompile limit and,
    # past it, leave the step silently eager (the limit is also made to fail loudly below)
    torch._dynamo.reset()
    compiled = torch.compile(views_and_loss, mode="reduce-overhead" if capture == "cudagraphs" else "default")

    def step(batch: Batch, g: torch.Generator) -> StepOutput:
        draws = [augment.draw(batch.images, batch.masks, g).to(device) for _ in range(method.n_views)]
        if capture == "cudagraphs":  # a new iteration: the previous replay's outputs may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        with torch._dynamo.config.patch(_DYNAMO):
            # what methods read of a batch is tensors; patient ids (strings) and positions would only add guards
            return compiled(replace(batch, patients=None, index=None), draws)

    _LAST.update(method=method, augment=augment, settings=settings, step=step)
    return step


def release_captured() -> None:
    """Forget the compiled step and what dynamo compiled (CUDA graphs' memory pool included)."""
    _LAST.clear()
    torch._dynamo.reset()


# a method's integer attributes that change between steps (MedSGSSL's epoch) become inputs instead of constants that
# compile the step again each time they change; past the recompile limit, an error rather than a silently eager step.
# Only the switches this torch has (an older one, as on a lent GPU machine, may lack one)
_DYNAMO = {k: True for k in ("allow_unspec_int_on_nn_module", "fail_on_recompile_limit_hit")
           if hasattr(torch._dynamo.config, k)}
if len(_DYNAMO) < 2:
    warnings.warn(f"torch {torch.__version__} lacks torch._dynamo.config switches the captured step sets (it has "
                  f"{sorted(_DYNAMO)}): a step compiled too often may run eagerly without an error", stacklevel=1)
# the last compiled step and what it was made for: one model at a time (a replacement frees the previous one)
_LAST: dict = {}
