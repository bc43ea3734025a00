"""What a GPU changes, checked on the GPU and, where the check means something there, on the CPU too (CI runs the CPU
twins, which prove the tests' own logic): a seeded pretraining repeats exactly, bf16 autocast keeps a step's loss
near fp32's, channels_last computes what the contiguous layout does, and Ray places runs on the GPU.
`pytest -m cuda` runs the GPU ones (benchmarks/gpu_check.py does, docs/gpu.md); without CUDA they skip."""

from __future__ import annotations

import pytest
import torch

from medssl_core.augment.views import AugmentConfig, BatchAugment
from medssl_core.common.device import autocast, cpu_has_native_bf16, use_bf16
from medssl_core.common.seeding import seed_everything
from medssl_core.config import SSLMethod
from medssl_core.data.batch import Batch
from medssl_core.methods import build_method
from medssl_core.models.backbones import FEATURE_DIMS, build_backbone
from medssl_core.train.pretrain import PretrainConfig, pretrain

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
SIDE, N, BATCH = 28, 64, 32  # two steps an epoch
# SimCLR's augmentation as the bench sets it up, without blur (the studies' 28 px setting)
AUG = {"size": SIDE, "crop_scale": (0.08, 1.0), "hflip": 0.5, "jitter": (0.4, 0.4, 0.0, 0.0), "jitter_p": 0.8,
       "grayscale": 0.2, "mean": (0.5,), "std": (0.5,)}
# bf16 keeps 8 mantissa bits, but autocast accumulates in fp32 and medssl's losses run in fp32: a ResNet-18 forward
# in bf16 moves SimCLR's loss (about 4.9 here) by about 0.01 % on a CPU with native bf16, while the loss itself
# computed in bf16 moves it by about 0.45 %; 0.2 % leaves a GPU's kernels 20x room and still catches the latter
BF16_LOSS_RTOL = 2e-3
# channels_last changes the order of the convolutions' sums only: fp32 rounding, compared with TF32 off
LAYOUT_RTOL, LAYOUT_ATOL = 1e-4, 1e-5


@pytest.fixture(autouse=True)
def restore_global_settings(monkeypatch):
    """seed_everything(deterministic=True) and the TF32 switch are process-wide: put them back for later tests. One
    CPU thread: models this small gain nothing from a second, and lose much waiting on it where others share the
    cores."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS; restored afterwards
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.backends.cudnn.allow_tf32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.backends.cudnn.allow_tf32 = saved[2:]
    torch.set_num_threads(threads)


def simclr(seed: int):
    torch.manual_seed(seed)
    spec = SSLMethod(name="simclr", loss_kwargs={"temperature": 0.5}, projector=[FEATURE_DIMS["resnet18"], 128])
    return build_method(spec, lambda: build_backbone("resnet18", 1), FEATURE_DIMS["resnet18"], SIDE)


def images(device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (N, 1, SIDE, SIDE), generator=g, dtype=torch.uint8).to(device)


def pretrain_losses(device: torch.device, seed: int) -> list[float]:
    """Per-epoch losses of a 2-epoch SimCLR pretraining. On CUDA as a GPU run trains (bf16 autocast, channels_last)
    with deterministic algorithms on; on the CPU, whose kernels are deterministic anyway, in fp32 as the quick
    profiles train there (deterministic mode and bf16 would make this CPU twin minutes long)."""
    on_gpu = device.type == "cuda"
    seed_everything(seed, deterministic=on_gpu)
    method = simclr(seed)
    augment = BatchAugment(AugmentConfig(**AUG), channels_last=on_gpu)
    cfg = PretrainConfig(epochs=2, batch_size=BATCH, optimizer={"name": "adam", "lr": 1e-3})
    result = pretrain(method, Batch(images(device.type)), augment, cfg, seed=seed, device=device,
                      bf16=on_gpu and use_bf16(device, "auto"), progress=False)
    return [c["value"] for c in result.curves if c["name"] == "loss"]


@pytest.mark.parametrize("device", DEVICES)
def test_the_same_seed_pretrains_identically(device):
    device = torch.device(device)
    first, again, other = pretrain_losses(device, 0), pretrain_losses(device, 0), pretrain_losses(device, 1)
    assert len(first) == 2
    assert first == again, f"seed 0 twice on {device}: {first} vs {again}"
    assert first != other  # the seed reaches the run: identical losses are not a constant


BF16_DEVICES = [pytest.param("cpu", marks=pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no "
                                                             "native bf16 (avx512_bf16 or amx_bf16)")),
                pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.mark.parametrize("device", BF16_DEVICES)
def test_bf16_autocast_keeps_the_loss_of_a_step_near_fp32(device):
    device = torch.device(device)
    method = simclr(0).to(device)
    batch = Batch(images(device.type))
    views = BatchAugment(AugmentConfig(**AUG)).views(batch, torch.Generator().manual_seed(1))
    with torch.no_grad():
        fp32 = method.training_step(views, batch).loss.item()
        with autocast(device, True):
            bf16 = method.training_step(views, batch).loss.item()
    assert bf16 != fp32  # autocast took effect
    assert abs(bf16 - fp32) <= BF16_LOSS_RTOL * abs(fp32), f"fp32 {fp32:.5f} vs bf16 {bf16:.5f}"


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
@pytest.mark.parametrize("device", DEVICES)
def test_channels_last_computes_what_contiguous_does(device, arch):
    torch.backends.cudnn.allow_tf32 = False  # TF32 rounds per algorithm, and the layouts pick different ones
    torch.manual_seed(0)
    backbone = build_backbone(arch, 1).to(device).eval()
    x = torch.randn(8, 1, SIDE, SIDE, device=device)
    with torch.no_grad():
        contiguous = backbone(x)
        backbone.to(memory_format=torch.channels_last)
        last = backbone(x.contiguous(memory_format=torch.channels_last))
    conv = next(m for m in backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)  # the layout did change
    torch.testing.assert_close(last, contiguous, rtol=LAYOUT_RTOL, atol=LAYOUT_ATOL)


@pytest.mark.cuda
def test_ray_places_the_demo_runs_on_the_gpu(tmp_path, request):
    """The demo study on a local Ray that declares the GPU: every run is recorded ok, on the GPU."""
    ray = pytest.importorskip("ray", reason="the cluster extra (pip install 'medssl[cluster]') brings Ray")
    medmnist_dir = request.getfixturevalue("medmnist_dir")  # after the import: no Ray, no need for the data
    from medssl_core.execute.local import execute
    from medssl_core.execute.ray_cluster import RayExecutor
    from medssl_core.plan.catalog import get_study
    from medssl_core.plan.grid import expand
    from medssl_core.run.context import Context
    from medssl_core.store import ResultsStore, run_sql

    cuda = torch.device("cuda")
    plan = expand(get_study("demo"), "quick", data_dir=medmnist_dir, seeds=[0], device=cuda)
    store = ResultsStore(tmp_path / "r.duckdb")
    ctx = Context(str(medmnist_dir), cuda, store.artifacts_dir, store.checkpoints_dir, progress=False)
    ray.init(num_cpus=2, num_gpus=1, object_store_memory=128 * 2**20, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        summary = execute(plan, store, ctx, progress=False, executor=RayExecutor())
    finally:
        ray.shutdown()
    assert summary.ran == len(plan.specs) > 0 and not summary.failed, [r.run["error"] for r in summary.failed]
    devices = {d for (d,) in run_sql(store.db_path, "SELECT DISTINCT device FROM runs")[1]}
    assert devices == {torch.cuda.get_device_name(0)}


@pytest.mark.cuda
@pytest.mark.parametrize("method", ["simclr", "byol"])
def test_a_training_step_never_waits_for_the_gpu(method):
    """Augmentation, forward, loss, backward, clipping, the optimiser and an EMA update queue work without one host
    sync (a blocking copy, an .item()): torch raises on any while its sync debug mode is 'error'. One such wait a step
    idles the GPU while Python prepares the next launch."""
    from medssl_core.train.optim import build_optimizer

    device = torch.device("cuda")
    torch.manual_seed(0)
    spec = SSLMethod(name=method, projector=[256, 64], predictor=[256, 64] if method == "byol" else None,
                     loss_kwargs={"temperature": 0.5} if method == "simclr" else {})
    m = build_method(spec, lambda: build_backbone("resnet18", 1), FEATURE_DIMS["resnet18"], SIDE).to(device)
    m.on_fit_start(4, 1)
    optimizer = build_optimizer([{"params": list(m.student_parameters())}], {"name": "adam", "lr": 1e-3})
    augment = BatchAugment(AugmentConfig(**AUG, blur_p=0.5, solarize_p=0.2), channels_last=True)
    data = Batch(images("cuda"))
    order = torch.randperm(N, generator=torch.Generator().manual_seed(0))
    device_order = order.to(device)
    g = torch.Generator().manual_seed(0)
    for step in range(2):  # the first step warms the caches (cuDNN, the augmentation's constants) up
        mode = "error" if step else "default"
        torch.cuda.set_sync_debug_mode(mode)
        try:
            batch = data.take(device_order[:BATCH], order[:BATCH])
            with autocast(device, True):
                out = m.training_step(augment.views(batch, g, m.n_views), batch)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(m.student_parameters(), 3.0)
            optimizer.step()
            m.on_step_end(0, step)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(out.loss).item()
