"""Exact resume: for every registered method, a pretraining interrupted in its second epoch (after the first epoch's
checkpoint) and resumed gives the uninterrupted run's per-epoch losses and, on the CPU, bitwise its final weights,
though methods draw from the global generators (Dropout, random token masking)."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from medssl_core import losses
from medssl_core.augment.views import AugmentConfig, BatchAugment
from medssl_core.common.seeding import seed_everything
from medssl_core.config import SSLMethod
from medssl_core.data.batch import Batch
from medssl_core.methods import METHODS, Method, StepOutput, build_method, register
from medssl_core.models.backbones import build_backbone
from medssl_core.train.pretrain import PretrainConfig, pretrain

CPU = torch.device("cpu")
SIDE, N, BATCH, EPOCHS = 32, 8, 4, 3  # 32 px: the sg pixel decoder's smallest size, two ViT-S/16 patches a side
AUG = BatchAugment(AugmentConfig(size=SIDE, crop_scale=(0.5, 1.0), hflip=0.5, mean=(0.5,), std=(0.5,)))


@register("test_draws_every_global_generator")
class DrawsEveryGlobalGenerator(Method):
    """SimCLR whose loss is scaled by a draw from each of torch's, numpy's and Python's global generators."""

    loss = staticmethod(losses.nt_xent)

    def training_step(self, views, batch):
        z0, z1 = (self.embed(v.image)[1] for v in views)
        scale = 1 + float(torch.rand(())) + float(np.random.rand()) + random.random()
        return StepOutput(scale * self.loss(z0, z1))


TINY_DIM = 16


class TinyEncoder(nn.Module):
    """A small CNN with Dropout, as MedSGSSL's encoders end: for methods that work with any backbone."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, TINY_DIM), nn.Dropout(0.3))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def one_block_vit() -> nn.Module:
    """ViT-S/16 cut to one block: anatomy_vit's backbone (12 blocks would make every step and checkpoint 12x)."""
    vit = build_backbone("vit_small", 1, image_size=SIDE)
    vit.vit.blocks = vit.vit.blocks[:1]
    return vit


# options 7/8's optimiser, rebuilt after the frozen first epoch without the projector; option 10's terms
ANATOMY_OPTIONS = {"freeze_epochs": 1, "projector_after_unfreeze": False, "gamma_bias": True, "layer_tau": 2.0,
                   "mask_ratio": (0.3, 0.75), "domain_weight": 0.1, "attention_after": 0}
# what a method needs beyond the tiny encoder: (backbone, its feature dim, method options, SSLMethod fields)
SETUPS: dict[str, tuple[Callable[[], nn.Module], int, dict, dict]] = {
    "byol": (TinyEncoder, TINY_DIM, {}, {"predictor": [16, 32]}),
    "simsiam": (TinyEncoder, TINY_DIM, {}, {"predictor": [16, 32]}),
    "sg_contrastive": (TinyEncoder, TINY_DIM, {"mask_weight": 0.3}, {}),
    "sg_attention": (lambda: build_backbone("sg_guided_cnn", 1), 256, {}, {}),
    "anatomy_vit": (one_block_vit, 384, ANATOMY_OPTIONS, {}),
}
BUILTIN = sorted(n for n, cls in METHODS.items() if cls.__module__.startswith("medssl_core."))
# (method, the 1-based epoch the run dies in): every method after its first epoch; anatomy_vit also after the
# restart of its optimiser at epoch 2
CASES = [(name, 2) for name in [*BUILTIN, "test_draws_every_global_generator"]] + [("anatomy_vit", 3)]


def build(name: str, seed: int) -> Method:
    """The method with fresh weights, and every global generator seeded (as a new process would)."""
    backbone, dim, options, fields = SETUPS.get(name, (TinyEncoder, TINY_DIM, {}, {}))
    seed_everything(seed)
    spec = SSLMethod(name=name, projector=[dim, 32], options=options, **fields)
    return build_method(spec, backbone, dim, SIDE)


def data() -> Batch:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (N, 1, SIDE, SIDE), generator=g, dtype=torch.uint8)
    masks = torch.zeros(N, 1, SIDE, SIDE, dtype=torch.uint8)
    masks[:, :, 4:-4, 2:SIDE // 2 - 1] = masks[:, :, 4:-4, SIDE // 2 + 1:-2] = 1  # two "lungs"
    return Batch(images, masks=masks, domains=torch.arange(N) % 2)


def run(m: Method, **kw):
    cfg = PretrainConfig(epochs=EPOCHS, batch_size=BATCH, optimizer={"name": "adamw", "lr": 1e-3})
    return pretrain(m, data(), AUG, cfg, seed=1, device=CPU, bf16=False, progress=False, **kw)


def losses_of(result) -> list[float]:
    return [c["value"] for c in result.curves if c["name"] == "loss"]


class Interrupted(Exception):
    pass


@pytest.fixture(autouse=True)
def one_thread():
    """Models this small gain nothing from a second thread, and lose much waiting on it where others share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(("name", "dies_in"), CASES)
def test_resumed_run_equals_uninterrupted(name, dies_in, tmp_path):
    reference = build(name, seed=0)
    uninterrupted = run(reference)

    m = build(name, seed=0)
    calls = {"n": 0}
    step = m.training_step

    def dies(views, batch):
        calls["n"] += 1
        if calls["n"] == (dies_in - 1) * (N // BATCH) + 2:  # its 2nd step: the previous epoch is checkpointed
            raise Interrupted
        return step(views, batch)

    m.training_step = dies
    checkpoint = tmp_path / "train.pt"
    with pytest.raises(Interrupted):
        run(m, checkpoint=checkpoint)
    assert checkpoint.is_file() and not list(tmp_path.glob(".*tmp"))  # written whole, by rename
    # a new process: other weights, other global generator states
    restarted = build(name, seed=99)
    resumed = run(restarted, checkpoint=checkpoint)

    assert losses_of(resumed) == losses_of(uninterrupted)
    expected, got = reference.state_dict(), restarted.state_dict()  # backbone, heads and teacher
    differ = [k for k, v in expected.items() if not torch.equal(got[k], v)]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"
