"""`medssl bench`: SSL pretraining throughput (image pairs per second) and peak memory of three pipelines feeding
the same model, loss and optimiser step (Adam, batch 256 by default):

- ``medssl``: medssl's own training loop end to end (``train.pretrain``: uint8 images on the device, batched
  on-device two-view augmentation, bf16 and channels_last where the device has them, no per-step host sync);
- ``seed_style``: what the studies' code does: PIL images, per-sample torchvision transforms in a DataLoader with
  worker processes, float batches copied to the device;
- ``ceiling``: the same step on views made once beforehand: the model's own speed, no augmentation at all;
- ``captured``: medssl's loop with the captured step (``train.capture``: 'cudagraphs' on CUDA, 'compile' on a CPU),
  the compilation done in the untimed warm-up pass.

Each figure is the median of ``repeats`` timed passes of ``steps`` steps after one untimed warm-up pass, the
device synchronised, the pipelines' passes taking turns; the ratios medssl / seed-style, medssl / ceiling and
captured / ceiling say what the pipeline is worth. Peak memory is the device's (CUDA), or on a CPU the process's
peak resident set so far. The images are random bytes of the benchmark's size (speed does not depend on what they
show). Each row also states the arithmetic it achieved (TFLOP/s: the step's FLOPs as torch's FLOP counter counts
them, times steps per second) next to the device's peak as measured here (a large matrix product in the step's
precision). Rows go to the ``bench`` table of the results database with the environment, so figures from several
machines compare in SQL.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import torch
from PIL import Image

from medssl_core.augment.views import AugmentConfig, BatchAugment
from medssl_core.common.device import autocast, device_name, peak_memory_mb
from medssl_core.common.provenance import environment
from medssl_core.config import SSLMethod
from medssl_core.data.batch import Batch, View
from medssl_core.methods import build_method
from medssl_core.models.backbones import FEATURE_DIMS, build_backbone
from medssl_core.train.optim import build_optimizer
from medssl_core.train.pretrain import PretrainConfig, pretrain

PIPELINES = ("medssl", "seed_style", "ceiling", "captured")
METHODS = {  # SimCLR as lightly/solo-learn set it up; Barlow Twins with its 2048-d projector
    "simclr": lambda dim: SSLMethod(name="simclr", loss_kwargs={"temperature": 0.5}, projector=[dim, 128]),
    "barlow_twins": lambda dim: SSLMethod(name="barlow_twins", projector=[2048, 2048, 2048], projector_last_bn=True,
                                          projector_last_bn_affine=False),
}
# SimCLR's augmentation: crop 0.08-1, flip, colour jitter 0.4/0.4 (p 0.8), greyscale 0.2, blur 0.5
_AUG = {"crop_scale": (0.08, 1.0), "hflip": 0.5, "jitter": (0.4, 0.4, 0.0, 0.0), "jitter_p": 0.8, "grayscale": 0.2,
        "blur_p": 0.5, "mean": (0.5,), "std": (0.5,)}
_OPTIMIZER = {"name": "adam", "lr": 1e-3}


@dataclass(frozen=True)
class Case:
    arch: str
    size: int
    method: str
    batch: int = 256


GRIDS = {
    "full": [Case(a, s, m) for a in ("resnet18", "resnet50") for s in (28, 64, 224) for m in METHODS],
    "quick": [Case("resnet18", s, m) for s in (28, 64) for m in METHODS],  # about 15 minutes on 2 CPU cores
    # the launch-bound sizes where the captured step matters most (the GPU check's captured bench: two compilations)
    "small": [Case("resnet18", s, "simclr") for s in (28, 64)],
    "smoke": [Case("resnet18", 28, "simclr", 32)],  # CI: every pipeline runs, the numbers say little
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def default_workers() -> int:
    """The seed-style pipeline's DataLoader workers: one per core, at most 8 (what the studies' scripts ask for)."""
    return min(8, os.cpu_count() or 1)


def device_capture(device: torch.device) -> str:
    """The captured pipeline's ``train.capture`` on this device."""
    return "cudagraphs" if device.type == "cuda" else "compile"


def step_tflop(step: Callable[[torch.Tensor, torch.Tensor], None], v1: torch.Tensor, v2: torch.Tensor) -> float:
    """TFLOP of one optimiser step (forward and backward; torch's FLOP counter counts matrix products and
    convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step(v1, v2)
    return counter.get_total_flops() / 1e12


def peak_tflops(device: torch.device, bf16: bool, n: int | None = None, repeats: int = 5) -> float:
    """The device's matrix-product TFLOP/s in the step's precision, measured: the best of ``repeats`` products of
    two n x n matrices (2048 on a CPU, 8192 on a GPU)."""
    n = n or (8192 if device.type == "cuda" else 2048)
    dtype = torch.bfloat16 if bf16 else torch.float32
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e12


def case_method(case: Case, device: torch.device, channels_last: bool):
    """The case's method (its backbone and projector), seeded, on the device."""
    torch.manual_seed(0)
    dim = FEATURE_DIMS[case.arch]
    m = build_method(METHODS[case.method](dim), lambda: build_backbone(case.arch, 3), dim, case.size).to(device)
    return m.to(memory_format=torch.channels_last) if channels_last else m


def optimiser_step(method, device: torch.device, bf16: bool) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One optimiser step of ``method`` on two float views already on the device (what every pipeline ends in)."""
    optimizer = build_optimizer([{"params": list(method.student_parameters())}], _OPTIMIZER)

    def step(v1: torch.Tensor, v2: torch.Tensor) -> None:
        placeholder = Batch(torch.empty((len(v1), 1, 1, 1), dtype=torch.uint8, device=device))  # not read
        with autocast(device, bf16):
            out = method.training_step([View(v1), View(v2)], placeholder)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
    return step


class _SeedStyleDataset(torch.utils.data.Dataset):
    """PIL images and per-sample torchvision transforms, two views each, as the studies' Dataset classes do."""

    def __init__(self, images: np.ndarray, size: int):
        from torchvision import transforms as T

        self.images = images
        self.transform = T.Compose([
            T.RandomResizedCrop(size, scale=_AUG["crop_scale"]), T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.4, 0.4)], p=0.8), T.RandomGrayscale(0.2),
            T.RandomApply([T.GaussianBlur(max(3, size // 10 // 2 * 2 + 1))], p=0.5), T.ToTensor(),
            T.Normalize([0.5] * 3, [0.5] * 3)])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        image = Image.fromarray(self.images[i]).convert("RGB")
        return self.transform(image), self.transform(image)


def timed_in_turns(passes: dict[str, Callable[[], None]], repeats: int,
                   device: torch.device) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Each pass's seconds over ``repeats`` rounds after one untimed warm-up round (allocator, oneDNN/cuDNN
    kernels, worker start-up code paths), the passes taking turns within a round so that a machine whose speed
    drifts (a shared VM) slows all of them alike; and each pass's peak memory (``peak_memory_mb``)."""
    for run_pass in passes.values():
        run_pass()
        _sync(device)
    times: dict[str, list[float]] = {name: [] for name in passes}
    peaks = dict.fromkeys(passes, 0.0)
    for _ in range(repeats):
        for name, run_pass in passes.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t0 = time.perf_counter()
            run_pass()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
            peaks[name] = max(peaks[name], peak_memory_mb(device))
    return times, peaks


def run_case(case: Case, device: torch.device, *, steps: int, repeats: int, workers: int, bf16: bool,
             channels_last: bool, pipelines: tuple[str, ...] = PIPELINES) -> list[dict]:
    """The pipelines' pairs/s (median over ``repeats`` timed passes after a warm-up pass each, taking turns:
    ``timed_in_turns``) and peak memory for one case."""
    n = case.batch * steps
    images = np.random.default_rng(0).integers(0, 256, (n, case.size, case.size), dtype=np.uint8)
    on_device = torch.from_numpy(images[:, None]).expand(-1, 3, -1, -1).contiguous().to(device)
    augment = BatchAugment(AugmentConfig(size=case.size, **_AUG), channels_last=channels_last)
    memory = torch.channels_last if channels_last else torch.contiguous_format

    cfg = PretrainConfig(epochs=1, batch_size=case.batch, optimizer=_OPTIMIZER, monitor_every=0)
    captured_cfg = cfg.model_copy(update={"capture": device_capture(device)})

    def loop(train_cfg: PretrainConfig) -> Callable[[], None]:
        method = case_method(case, device, channels_last)
        return lambda: pretrain(method, Batch(on_device), augment, train_cfg, seed=0, device=device, bf16=bf16,
                                progress=False, keep_compiled=True)

    def seed_style() -> Callable[[], None]:
        step = optimiser_step(case_method(case, device, channels_last), device, bf16)
        # workers started per pass, as a DataLoader does by default (and the studies' code): none outlives its pass
        # to compete with the other pipelines for the cores
        loader = torch.utils.data.DataLoader(_SeedStyleDataset(images, case.size), batch_size=case.batch,
                                             shuffle=True, num_workers=workers, drop_last=True)

        def run() -> None:
            for v1, v2 in loader:
                step(v1.to(device, memory_format=memory, non_blocking=True),
                     v2.to(device, memory_format=memory, non_blocking=True))
        return run

    def views(count: int) -> list:  # the first ``count`` batches' views, made beforehand
        g = torch.Generator().manual_seed(0)
        return [augment.views(Batch(on_device[i * case.batch:(i + 1) * case.batch]), g) for i in range(count)]

    def ceiling() -> Callable[[], None]:
        step, made = optimiser_step(case_method(case, device, channels_last), device, bf16), views(steps)

        def run() -> None:
            for v1, v2 in made:
                step(v1.image, v2.image)
        return run

    (v1, v2), = views(1)
    tflop = step_tflop(optimiser_step(case_method(case, device, channels_last), device, bf16), v1.image, v2.image)
    builders = {"medssl": lambda: loop(cfg), "seed_style": seed_style, "ceiling": ceiling,
                "captured": lambda: loop(captured_cfg)}
    times, peaks = timed_in_turns({p: builders[p]() for p in pipelines}, repeats, device)
    return [{"pipeline": p, "pairs_per_s": n / statistics.median(times[p]), "peak_mem_mb": peaks[p],
             "tflops": tflop * steps / statistics.median(times[p]), "arch": case.arch, "size": case.size,
             "method": case.method, "batch": case.batch,
             "capture": captured_cfg.capture if p == "captured" else "off"} for p in pipelines]


def bench(grid: str, device: torch.device, *, steps: int, repeats: int, workers: int, bf16: bool,
          channels_last: bool, pipelines: tuple[str, ...] = PIPELINES) -> Iterator[tuple[Case, list[dict]]]:
    """Each case of ``grid`` as it is measured, with its rows (the settings and environment included), ready to
    store: what finished is kept if the rest is interrupted."""
    at = datetime.now(timezone.utc)
    env = environment(device, device_name(device), False, {})
    peak = peak_tflops(device, bf16)
    for case in GRIDS[grid]:
        rows = run_case(case, device, steps=steps, repeats=repeats, workers=workers, bf16=bf16,
                        channels_last=channels_last, pipelines=pipelines)
        yield case, [{**row, "measured_at": at, "grid": grid, "steps": steps, "repeats": repeats, "workers": workers,
                      "device": env["device_name"], "bf16": bf16, "channels_last": channels_last, "peak_tflops": peak,
                      "threads": torch.get_num_threads(), "git_commit": env["git_commit"],
                      "environment": json.dumps(env, default=str, sort_keys=True)} for row in rows]


def ratios(rows: list[dict]) -> list[list]:
    """A table row per case: pairs/s of each pipeline, medssl / seed-style, medssl / ceiling, captured / ceiling, the
    TFLOP/s the best pipeline achieved against the device's peak, and peak memory."""
    out = []
    cases = sorted({(r["arch"], r["size"], r["method"], r["batch"]) for r in rows}, key=str)
    for case in cases:
        by = {r["pipeline"]: r for r in rows if (r["arch"], r["size"], r["method"], r["batch"]) == case}
        speed = {p: by[p]["pairs_per_s"] if p in by else None for p in PIPELINES}  # None: not measured
        best = max(by.values(), key=lambda r: r["pairs_per_s"])
        out.append([*case, *("-" if v is None else f"{v:,.0f}" for v in speed.values()),
                    _ratio(speed, "medssl", "seed_style", "x"), _ratio(speed, "medssl", "ceiling"),
                    _ratio(speed, "captured", "ceiling"),
                    f"{best['tflops']:.2f} / {best['peak_tflops']:.0f}",
                    f"{max(r['peak_mem_mb'] for r in by.values()):,.0f}"])
    return out


def _ratio(speed: dict[str, float | None], a: str, b: str, unit: str = "") -> str:
    return "-" if speed[a] is None or speed[b] is None else f"{speed[a] / speed[b]:.2f}{unit}"


RATIO_HEADERS = ["arch", "px", "method", "batch", "medssl pairs/s", "seed-style pairs/s", "ceiling pairs/s",
                 "captured pairs/s", "medssl / seed-style", "medssl / ceiling", "captured / ceiling",
                 "best TFLOP/s / peak", "peak MB"]
