"""SSL methods as modules: the training loop, the hooks, an EMA teacher, masks, two optimiser phases."""

from __future__ import annotations

import itertools
from typing import ClassVar

import pytest
import torch

from medssl_core import losses
from medssl_core.augment.views import AugmentConfig, BatchAugment
from medssl_core.common.errors import ConfigError
from medssl_core.config import SSLMethod, validate
from medssl_core.data.batch import Batch
from medssl_core.methods import METHODS, Method, StepOutput, build_method, register
from medssl_core.models.backbones import build_backbone
from medssl_core.train.pretrain import NonFiniteLossError, PretrainConfig, pretrain

AUG = BatchAugment(AugmentConfig(crop_scale=(0.5, 1.0), hflip=0.5, mean=(0.5,), std=(0.5,)))
CPU = torch.device("cpu")
CFG = PretrainConfig(epochs=3, batch_size=16, optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9})


def method(name="simclr", seed=0, **cfg) -> Method:
    torch.manual_seed(seed)
    spec = SSLMethod(**{"name": name, "projector": [64, 32], **cfg})
    return build_method(spec, lambda: build_backbone("resnet18", 1), 512)


def images(n=48, seed=0):
    return torch.randint(0, 256, (n, 1, 28, 28), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def run(m, cfg=CFG, data=None, **kw):
    return pretrain(m, data or Batch(images()), AUG, cfg, seed=kw.pop("seed", 1), device=CPU, bf16=False,
                    progress=False, **kw)


@pytest.mark.parametrize("name", sorted(n for n, cls in METHODS.items() if not cls.needs_masks and cls.archs is None
                                       and n != "sg_contrastive"))  # those: tests/test_sg_methods.py
def test_every_registered_method_trains_one_epoch(name):
    cfg = {"predictor": [16, 32]} if name in ("byol", "simsiam") else {}
    r = run(method(name, **cfg), PretrainConfig(epochs=1, batch_size=16, optimizer={"name": "adam", "lr": 1e-3}))
    assert torch.isfinite(torch.tensor([c["value"] for c in r.curves])).all()
    assert {c["name"] for c in r.curves} >= {"loss", "lr"}


def test_method_step_equals_the_pure_loss_of_its_embeddings():
    m = method("dclw", loss_kwargs={"symmetric": False}).eval()
    views = AUG.views(Batch(images(16)), torch.Generator().manual_seed(0))
    out = m.training_step(views, Batch(images(16)))
    z0, z1 = (m.embed(v.image)[1] for v in views)
    torch.testing.assert_close(out.loss, losses.dclw(z0, z1, symmetric=False))


def test_vicreg_logs_its_three_terms_and_they_sum_to_the_loss():
    r = run(method("vicreg"), PretrainConfig(epochs=1, batch_size=16, optimizer={"name": "adam", "lr": 1e-3}))
    v = {c["name"]: c["value"] for c in r.curves}
    assert v["loss"] == pytest.approx(v["invariance"] + v["variance"] + v["covariance"], rel=1e-5)


def test_same_seed_same_weights_different_seed_differs():
    cfg = PretrainConfig(epochs=1, batch_size=16, optimizer={"name": "adam", "lr": 1e-3})
    a, b, c = (run(method("vicreg"), cfg, seed=s) for s in (3, 3, 4))
    k = "conv1.weight"
    assert torch.equal(a.last_state[k], b.last_state[k]) and not torch.equal(a.last_state[k], c.last_state[k])


def test_non_finite_loss_stops_with_a_clear_error():
    m = method()
    m.training_step = lambda views, batch: StepOutput(m.embed(views[0].image)[1].sum() * float("nan"))
    with pytest.raises(NonFiniteLossError, match="Lower the learning rate"):
        run(m)


def test_knn_monitor_keeps_best_and_records_curves():
    x, y = images(64), torch.arange(64) % 2
    cfg = PretrainConfig(epochs=2, batch_size=32, optimizer={"name": "sgd", "lr": 0.01}, knn_k=5)
    r = run(method("simsiam"), cfg, data=Batch(x), monitor=(x, y, x[:16], y[:16]),
            eval_augment=BatchAugment(AugmentConfig()))
    assert [c["step"] for c in r.curves if c["name"] == "knn_val_accuracy"] == [1, 2]
    assert r.best_epoch in (1, 2) and 0 <= r.best_knn_val <= 1


def _flat(module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def test_byol_teacher_lags_its_student_on_a_cosine_momentum_schedule():
    m = method("byol", predictor=[16, 32], options={"momentum_base": 0.9})
    start = _flat(m.backbone).clone()
    assert torch.equal(_flat(m.teacher_backbone), start)
    cfg = PretrainConfig(epochs=3, batch_size=16, optimizer={"name": "adam", "lr": 1e-3})
    r = run(m, cfg)
    student, teacher = _flat(m.backbone), _flat(m.teacher_backbone)
    assert not torch.equal(teacher, start)  # the teacher moves ...
    assert (teacher - start).norm() < (student - start).norm()  # ... and lags the student
    assert not any(p.requires_grad for p in m.teacher_backbone.parameters())
    assert not {id(p) for p in m.student_parameters()} & {id(p) for p in m.teacher_backbone.parameters()}
    steps = 48 // 16
    momentum = [c["value"] for c in r.curves if c["name"] == "momentum"]
    expected = [1 - 0.1 * (1 + torch.cos(torch.tensor(torch.pi * e * steps / (3 * steps)))).item() / 2
                for e in (1, 2, 3)]
    assert momentum == pytest.approx(expected)  # 0.925, 0.975, 1.0


@register("test_mask_weighted")
class MaskWeighted(Method):
    """A method that consumes masks: SimCLR on the views with the masked region blanked out."""

    loss = staticmethod(losses.nt_xent)
    seen: ClassVar[list] = []

    def training_step(self, views, batch):
        for v in views:
            assert v.mask is not None and v.mask.shape == (v.image.shape[0], 1, *v.image.shape[2:])
            self.seen.append(v.mask.unique().tolist())
        z0, z1 = (self.embed(v.image * (1 - v.mask.float()))[1] for v in views)
        return StepOutput(self.loss(z0, z1))


def test_a_method_that_consumes_masks_trains():
    x = images()
    masks = (x > 128).to(torch.uint8)
    m = method("test_mask_weighted")
    r = run(m, PretrainConfig(epochs=1, batch_size=16, optimizer={"name": "adam", "lr": 1e-3}),
            data=Batch(x, masks=masks))
    assert MaskWeighted.seen and all(set(u) <= {0, 1} for u in MaskWeighted.seen)
    assert [c["name"] for c in r.curves if c["name"] == "loss"] == ["loss"]


@register("test_frozen_then_all")
class FrozenThenAll(Method):
    """Two optimiser phases: backbone frozen for ``FROZEN`` epochs, then everything trains."""

    loss = staticmethod(losses.nt_xent)
    FROZEN = 2

    def on_epoch_start(self, epoch):
        self.backbone.requires_grad_(epoch >= self.FROZEN)

    def training_step(self, views, batch):
        z0, z1 = (self.embed(v.image)[1] for v in views)
        return StepOutput(self.loss(z0, z1))


def test_two_optimiser_phases_change_which_parameters_move_exactly_at_epoch_n():
    snapshots = []
    m = method("test_frozen_then_all")
    m.on_epoch_start = lambda epoch, f=m.on_epoch_start: (
        snapshots.append((_flat(m.backbone).clone(), _flat(m.projector).clone())), f(epoch))[1]
    cfg = PretrainConfig(epochs=4, batch_size=16, optimizer={"name": "adamw", "lr": 1e-3, "weight_decay": 0.05})
    run(m, cfg)
    snapshots.append((_flat(m.backbone), _flat(m.projector)))
    moved = [(not torch.equal(a[0], b[0]), not torch.equal(a[1], b[1])) for a, b in itertools.pairwise(snapshots)]
    assert moved == [(False, True), (False, True), (True, True), (True, True)]


def test_method_configuration_is_strict():
    with pytest.raises(ConfigError, match="unknown SSL method 'simclrr'"):
        validate(SSLMethod, {"name": "simclrr", "projector": [8]}, "method")
    with pytest.raises(ConfigError, match="no argument"):
        validate(SSLMethod, {"name": "simclr", "projector": [8], "loss_kwargs": {"temprature": 0.1}}, "method")
    with pytest.raises(ConfigError, match="momentum_bse"):
        validate(SSLMethod, {"name": "byol", "projector": [8], "options": {"momentum_bse": 0.9}}, "method")
    with pytest.raises(ConfigError, match="momentum_base"):
        validate(SSLMethod, {"name": "simclr", "projector": [8], "options": {"momentum_base": 0.9}}, "method")
