"""The captured training step (``train.capture``): the same seed's losses agree with the eager step's over 50 steps
(on the CPU with 'compile' here, on CUDA with 'cudagraphs' in the GPU check), its branch-free colour order equals the
eager one exactly, it refuses CUDA graphs without CUDA, and only runs that use it count its code."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medssl_core.augment.views import AugmentConfig, BatchAugment
from medssl_core.common.errors import ConfigError
from medssl_core.config import SSLMethod
from medssl_core.data.batch import Batch
from medssl_core.methods import build_method
from medssl_core.plan import identity
from medssl_core.train.pretrain import PretrainConfig, pretrain

# every operation the step captures: crop, flips, rotation, the four colour operations in random order, greyscale,
# blur, solarize, noise
AUGMENT = AugmentConfig(size=16, crop_scale=(0.3, 1.0), hflip=0.5, vflip=0.2, rotate_degrees=15, rotate_p=0.5,
                        jitter=(0.4, 0.4, 0.4, 0.1), jitter_p=0.8, grayscale=0.2, blur_p=0.5, solarize_p=0.2,
                        noise_p=0.3, noise_std=0.05)
STEPS = 50
# (first step, every step) relative tolerance, in fp32 (TF32 off): the first step differs only by how inductor's fused
# kernels round (the CPU: ~1e-7), and training then carries the difference along chaotically (the CPU: up to 4e-3 by
# step 50). bf16 would add its own 8-bit rounding to both sides (tests/test_cuda.py bounds bf16 against fp32)
TOLERANCE = {"cpu": (1e-5, 1e-2), "cuda": (1e-4, 2e-2)}


def tiny_backbone() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2),
                         nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def losses_per_step(capture: str, device: torch.device, method: str = "simclr") -> list[float]:
    """A run of STEPS epochs of one step each (the curve's per-epoch loss is then each step's loss)."""
    torch.manual_seed(0)
    cfg = SSLMethod(name=method, loss_kwargs={"temperature": 0.5} if method == "simclr" else {}, projector=[32, 16],
                    predictor=[32, 16] if method == "byol" else None)
    m = build_method(cfg, tiny_backbone, 16, 16)
    images = torch.randint(0, 256, (32, 3, 20, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    train = PretrainConfig(epochs=STEPS, batch_size=32, optimizer={"name": "adam", "lr": 1e-3}, monitor_every=0,
                           capture=capture)
    result = pretrain(m, Batch(images.to(device)), BatchAugment(AUGMENT), train, seed=3, device=device, bf16=False,
                      progress=False)
    return [c["value"] for c in result.curves if c["name"] == "loss"]


@pytest.mark.slow
@pytest.mark.parametrize(("device", "capture", "method"), [
    ("cpu", "compile", "simclr"),
    pytest.param("cuda", "cudagraphs", "simclr", marks=pytest.mark.cuda),
    # an EMA teacher updated in place between replays of the graph that reads it
    pytest.param("cuda", "cudagraphs", "byol", marks=pytest.mark.cuda),
])
def test_captured_losses_follow_eager_over_50_steps(device, capture, method):
    from torch._dynamo.utils import counters

    device = torch.device(device)
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        eager = losses_per_step("off", device, method)
        counters.clear()
        captured = losses_per_step(capture, device, method)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    assert len(eager) == len(captured) == STEPS
    differences = [abs(a - b) / max(abs(a), 1e-6) for a, b in zip(eager, captured)]
    first, every = TOLERANCE[device.type]
    assert differences[0] < first and max(differences) < every, \
        f"captured step's loss differs from eager by {differences[0]:.1e} at step 1, {max(differences):.1e} at most"
    assert eager != captured  # a step that ran eagerly after all would match exactly
    assert not counters["inductor"].get("cudagraph_skips"), dict(counters["inductor"])  # replayed, not skipped
    assert not counters["graph_break"], dict(counters["graph_break"])  # one region: augmentation, model, loss
    from medssl_core.train import capture

    assert capture._LAST == {}  # released at the end of the pretraining


def test_branch_free_colour_order_equals_the_eager_order():
    augment = BatchAugment(AUGMENT)
    images = torch.randint(0, 256, (16, 3, 20, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    for seed in range(6):  # several orders of the four colour operations
        draw = augment.draw(images, None, torch.Generator().manual_seed(seed))
        eager, _ = augment.apply(images, None, draw)
        branch_free, _ = augment.apply(images, None, draw, branch_free=True)
        assert torch.equal(eager, branch_free), draw.jitter_order


def test_a_view_is_its_draw_applied_and_draws_nothing_more():
    augment = BatchAugment(AUGMENT)
    images = torch.randint(0, 256, (8, 3, 20, 20), dtype=torch.uint8)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    view, _ = augment.augment(images, None, g1)
    applied, _ = augment.apply(images, None, augment.draw(images, None, g2))
    assert torch.equal(view, applied) and torch.equal(g1.get_state(), g2.get_state())


def test_cudagraphs_need_cuda():
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        losses_per_step("cudagraphs", torch.device("cpu"))


def test_only_captured_runs_count_the_capture_code():
    hp = {"method": {"name": "simclr"}, "train": {"capture": "off"}}
    eager = identity.code_fingerprint("pretrain", "breastmnist", hp)
    captured = identity.code_fingerprint("pretrain", "breastmnist", {**hp, "train": {"capture": "compile"}})
    assert {"captured_step", "release_captured", "_LAST"} <= set(captured) - set(eager)
    assert set(eager) < set(captured)  # the rest is the same


def test_replicate_capture_is_a_setting_of_the_pretrainings(tmp_path, medmnist_dir):
    from medssl_core import api

    def planned(**kw):
        run = api.replicate("demo", db=tmp_path / "r.duckdb", data_dir=str(medmnist_dir), dry_run=True, seeds=[0],
                            device="cpu", say=lambda _: None, **kw)
        return {s.run_id: s for s in run.todo if s.kind == "pretrain"}

    eager, off, captured = planned(), planned(capture="off"), planned(capture="compile")
    assert eager and set(eager) == set(off)  # 'off' is what runs did before the setting existed: the same ids
    assert not set(captured) & set(eager)  # captured runs are never pooled with eager ones
    assert {s.hparams["train"].get("capture") for s in captured.values()} == {"compile"}
    assert all("capture" not in s.hparams["train"] for s in eager.values())
    with pytest.raises(ConfigError, match="'cudagraphs' replays CUDA graphs"):
        planned(capture="cudagraphs")


def test_an_integer_the_method_changes_each_epoch_does_not_compile_the_step_again_each_time(dynamo_without_inductor):
    from torch._dynamo.utils import counters

    from medssl_core.methods.simclr import SimCLR

    class EpochWeighted(SimCLR):  # a loss weight that follows the epoch, as MedSGSSL's mask ratio does
        epoch = 0

        def on_epoch_start(self, epoch: int) -> None:
            self.epoch = epoch

        def training_step(self, views, batch):
            out = super().training_step(views, batch)
            return type(out)(out.loss * (1 + self.epoch / 100))

    torch.manual_seed(0)
    m = EpochWeighted(SSLMethod(name="simclr", projector=[32, 16]), tiny_backbone, 16, 16)
    images = torch.randint(0, 256, (16, 3, 20, 20), dtype=torch.uint8)
    train = PretrainConfig(epochs=12, batch_size=16, optimizer={"name": "adam", "lr": 1e-3}, monitor_every=0,
                           capture="compile")  # more epochs than dynamo's recompile limit (8)
    counters.clear()
    result = pretrain(m, Batch(images), BatchAugment(AUGMENT), train, seed=0, device=torch.device("cpu"), bf16=False,
                      progress=False)
    assert len([c for c in result.curves if c["name"] == "loss"]) == 12
    assert counters["stats"]["unique_graphs"] <= 2, dict(counters["stats"])  # epoch 0, then the epoch as an input


def test_one_compiled_step_is_kept_for_the_same_method_and_released_after():
    from medssl_core.train import capture

    cfg = SSLMethod(name="simclr", projector=[32, 16])
    m, other, augment = build_method(cfg, tiny_backbone, 16, 16), build_method(cfg, tiny_backbone, 16, 16), \
        BatchAugment(AUGMENT)
    cpu = torch.device("cpu")
    first = capture.captured_step(m, augment, "compile", cpu, False)
    assert capture.captured_step(m, augment, "compile", cpu, False) is first  # a benchmark's next pass
    assert capture.captured_step(m, augment, "compile", cpu, True) is not first  # other settings: compiled anew
    assert capture.captured_step(other, augment, "compile", cpu, True) is not first
    capture.release_captured()
    assert capture._LAST == {}  # nothing of the model is held after its pretraining
