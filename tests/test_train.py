from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from medssl_core.evaluate.features import knn_predict
from medssl_core.evaluate.metrics import classification_metrics
from medssl_core.models.backbones import build_backbone
from medssl_core.models.heads import build_head
from medssl_core.models.imagenet import imagenet_missing_message
from medssl_core.train.optim import lr_factor


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_knn_matches_sklearn(metric):
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(200, 8)), rng.normal(size=(50, 8))
    y = rng.integers(0, 3, 200)
    ours, _ = knn_predict(torch.tensor(train), torch.tensor(y), torch.tensor(test), k=15, metric=metric)
    sk = KNeighborsClassifier(15, metric=metric, algorithm="brute").fit(train, y).predict(test)
    assert (ours.numpy() == sk).mean() > 0.95  # ties may be broken differently


def test_metrics_and_collapse_flag():
    y = np.array([0, 0, 1, 1, 1])
    s = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8], [0.55, 0.45]])
    m = classification_metrics("binary", y, s)
    assert m["accuracy"] == pytest.approx(0.8) and m["auc"] == pytest.approx(1.0) and m["collapsed"] == 0.0
    collapsed = classification_metrics("binary", y, np.tile([0.2, 0.8], (5, 1)))
    assert collapsed["collapsed"] == 1.0 and collapsed["accuracy"] == pytest.approx(0.6)
    multi = classification_metrics("multi-class", np.array([0, 1, 2, 2]), np.eye(3)[[0, 1, 2, 1]])
    assert multi["accuracy"] == 0.75 and multi["auc"] > 0.5
    ml = classification_metrics("multi-label", np.array([[1, 0], [0, 1], [1, 1]]),
                                np.array([[0.9, 0.2], [0.1, 0.8], [0.7, 0.6]]))
    assert ml["auc"] == 1.0 and ml["label_accuracy"] == 1.0 and "accuracy" not in ml  # never a headline there


def test_schedules():
    assert lr_factor({"name": "none"}, 5, 0, 10, 10) == 1.0
    step = {"name": "step", "step_size": 25, "gamma": 0.5, "start_epoch": 25}
    # SmallDataSSL's linear.py: `if epoch > 25: scheduler.step()` after each 0-based epoch, StepLR(25, 0.5): the lr
    # halves after (1-based) epochs 51, 76 and 101, i.e. from 0-based epochs 51, 76, 101
    epochs = (0, 25, 26, 50, 51, 75, 76, 100, 101)
    assert [lr_factor(step, e, 0, 1, 200) for e in epochs] == [1, 1, 1, 1, 0.5, 0.5, 0.25, 0.25, 0.125]
    plain = {"name": "step", "step_size": 10, "gamma": 0.1}  # torch StepLR stepped after every epoch
    assert [lr_factor(plain, e, 0, 1, 30) for e in (9, 10, 19, 20)] == pytest.approx([1, 0.1, 0.1, 0.01])
    assert lr_factor({"name": "cosine"}, 10, 0, 1, 10) == pytest.approx(0.0)
    warm = {"name": "warmup_cosine", "warmup_epochs": 2}
    assert lr_factor(warm, 0, 0, 10, 10) == pytest.approx(0.05) and lr_factor(warm, 2, 0, 10, 10) == pytest.approx(1)


@pytest.mark.parametrize(("name", "kwargs", "torch_scheduler"), [
    ("multistep", {"milestones": (5, 8), "gamma": 0.1},
     lambda opt: torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[5, 8], gamma=0.1)),  # stepped per epoch
    ("onecycle", {"pct_start": 0.3, "div_factor": 25.0, "final_div_factor": 1e4},
     lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10 * 7)),  # stepped per step
])
def test_schedules_match_torch(name, kwargs, torch_scheduler):
    """Every lr the schedule gives equals torch's scheduler's, step by step (10 epochs of 7 steps)."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = torch_scheduler(opt)
    for epoch in range(10):
        for step in range(7):
            ours = 0.1 * lr_factor({"name": name, **kwargs}, epoch, step, 7, 10)
            assert ours == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9, abs=1e-15), (epoch, step)
            opt.step()
            if name == "onecycle":
                sched.step()
        if name != "onecycle":
            sched.step()


@pytest.mark.parametrize("arch,channels,small", [("resnet18", 1, True), ("resnet50", 2, False),
                                                  ("mobilenet_v2", 3, False), ("resnet18", 3, False)])
def test_backbones_any_channels(arch, channels, small):
    m = build_backbone(arch, channels, small_stem=small).eval()
    out = m(torch.randn(2, channels, 32, 32))
    assert out.shape == (2, {"resnet18": 512, "resnet50": 2048, "mobilenet_v2": 1280}[arch])


def test_vit_small_and_heads():
    vit = build_backbone("vit_small", 1, image_size=32).eval()
    assert vit(torch.randn(2, 1, 32, 32)).shape == (2, 384)
    assert sum(p.numel() for p in vit.parameters()) > 21e6  # ViT-S/16 ~ 21.7M parameters
    head = build_head({"type": "mlp", "hidden": [512], "activation": "leaky_relu"}, 2048, 3)
    assert [type(m).__name__ for m in head] == ["Linear", "BatchNorm1d", "LeakyReLU", "Linear"]


def test_imagenet_weights_missing_is_clear(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(Exception, match="never downloads"):
        build_backbone("resnet50", 3, init="imagenet")
    assert "resnet50-0676ba61.pth" in imagenet_missing_message("resnet50")


def test_grey_conv_from_rgb_weights_equals_replicated_input():
    rgb = build_backbone("resnet18", 3).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in rgb.parameters():
            p.normal_(0, 0.05)
    from medssl_core.models.backbones import _adapt_first_conv

    grey_conv = _adapt_first_conv(rgb.conv1, 1)
    x = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(grey_conv(x), rgb.conv1(x.repeat(1, 3, 1, 1)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cfg", [{"name": "sgd", "lr": 0.1}, {"name": "sgd", "lr": 0.1, "momentum": 0.9},
                                 {"name": "adam", "lr": 0.1}, {"name": "adamw", "lr": 0.1, "weight_decay": 0.01},
                                 {"name": "lars", "lr": 5.0, "momentum": 0.9}])
def test_every_optimiser_minimises_a_quadratic(cfg):
    from medssl_core.train.optim import build_optimizer

    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 8)
    x = torch.randn(64, 8)
    target = x @ torch.randn(8, 8)
    opt = build_optimizer(layer, cfg)
    first = None
    for _ in range(60):
        loss = ((layer(x) - target) ** 2).mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_unknown_optimiser_and_schedule_refused():
    from medssl_core.common.errors import ConfigError
    from medssl_core.train.optim import build_optimizer

    with pytest.raises(ConfigError, match=r"optimizer: invalid configuration\n  name: Input should be .sgd."):
        build_optimizer(torch.nn.Linear(2, 2), {"name": "rmsprop", "lr": 1})
    with pytest.raises(ConfigError, match=r"schedule: invalid configuration\n  name: Input should be .none."):
        lr_factor({"name": "poly"}, 0, 0, 1, 1)
