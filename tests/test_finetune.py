"""Fine-tuning as the studies do it: dropout heads, frozen-then-trained backbones, early stopping, selection by
validation loss, train-time augmentation, saved weights; and the recorded features the paper's t-SNE reads."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from medssl_core import config
from medssl_core.augment.views import AugmentConfig, BatchAugment
from medssl_core.common.errors import ConfigError
from medssl_core.models.heads import build_head
from medssl_core.plan.catalog import get_study
from medssl_core.plan.grid import expand
from medssl_core.plan.study import Protocol
from medssl_core.run import inputs as run_inputs
from medssl_core.run.inputs import DatasetCache
from medssl_core.store import run_sql
from medssl_core.train import pretrain as train
from medssl_core.train.finetune import Classifier, fit_classifier, predict
from tests.conftest import cpu_store, execute_cleanly

DEMO = get_study("demo")


def _data(n: int = 64, flip_val: bool = False, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for split in ("train", "val", "test"):
        x = torch.randn(n, 4, generator=g)
        y = (x[:, 0] > 0).long()
        out[split] = (x, 1 - y if flip_val and split == "val" else y)
    return out


def _fit(model, data, **fit):
    cfg = config.Fit(**{"epochs": 3, "batch_size": 16, "optimizer": {"name": "adam", "lr": 0.05}, **fit})
    return fit_classifier(model, data, "binary", cfg, prepare=lambda t: t, seed=0, device=torch.device("cpu"))


def test_head_dropout_sits_before_the_last_linear_layer():
    assert isinstance(build_head({"type": "linear"}, 8, 3), nn.Linear)  # no dropout: the plain layer, as before
    linear = build_head({"type": "linear", "dropout": 0.5}, 8, 3)
    assert [type(m) for m in linear] == [nn.Dropout, nn.Linear] and linear[0].p == 0.5
    mlp = build_head({"type": "mlp", "hidden": [16], "dropout": 0.2}, 8, 3)
    assert [type(m) for m in mlp] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout, nn.Linear]
    with pytest.raises(ConfigError, match="dropout"):
        config.validate(config.Head, {"dropout": 1.0}, "head")


def test_backbone_stays_frozen_for_the_first_epochs_then_trains():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    model = Classifier(backbone, nn.Linear(4, 2), train_backbone=True)
    seen = []  # (weight, BN in train mode) at every training step's forward

    def hook(module, inputs, output):
        if model.training:  # not the validation and test predictions
            seen.append((module[0].weight.detach().clone(), module[1].training))

    backbone.register_forward_hook(hook)
    start = backbone[0].weight.detach().clone()
    _fit(model, _data(), freeze_backbone_epochs=2)
    steps = 64 // 16
    frozen, trained = seen[:2 * steps], seen[2 * steps:]
    assert len(trained) == steps
    assert all(torch.equal(w, start) and not bn for w, bn in frozen)  # no update, BN statistics kept
    assert all(bn for _, bn in trained) and not torch.equal(trained[-1][0], start)
    assert not torch.equal(backbone[0].weight, start)
    with pytest.raises(ConfigError, match="train_backbone is false"):
        config.validate(config.FitProtocol, {"kind": "fit", "head": {}, "fit": {
            "epochs": 3, "batch_size": 8, "optimizer": {"name": "adam", "lr": 1e-3}, "freeze_backbone_epochs": 1}},
            "protocol")


def test_standardising_probe_stays_linear_and_learns_the_training_features_statistics():
    head = build_head({"type": "linear", "input_norm": "batchnorm"}, 4, 2)
    assert [type(m) for m in head] == [nn.BatchNorm1d, nn.Linear] and not head[0].affine
    data = _data(n=256)
    scale = torch.tensor([0.01, 100.0, 1.0, 5.0])  # features of very different scales: what the norm is for
    shift = torch.tensor([0.0, 50.0, -3.0, 1.0])
    data = {s: (x * scale + shift, y) for s, (x, y) in data.items()}
    result = _fit(Classifier(None, head), data, epochs=30)
    head.eval()
    x_train = data["train"][0]
    # the running statistics are the training features' (BatchNorm's momentum over 30 epochs of batches)
    assert torch.allclose(head[0].running_mean, x_train.mean(0), rtol=0.05, atol=0.05 * scale.max())
    assert torch.allclose(head[0].running_var.sqrt(), x_train.std(0), rtol=0.15)
    # at test time a linear function of the features: f(a x1 + (1 - a) x2) = a f(x1) + (1 - a) f(x2)
    x1, x2 = data["test"][0][:8], data["test"][0][8:16]
    with torch.no_grad():
        assert torch.allclose(head(0.3 * x1 + 0.7 * x2), 0.3 * head(x1) + 0.7 * head(x2), atol=1e-4)
    assert result.metrics["test"]["auc"] > 0.95  # the label is the sign of the tiny-scaled first feature


def test_early_stopping_and_selection_by_validation_loss():
    torch.manual_seed(0)
    # val labels are the opposite of train's: learning makes validation worse every epoch
    result = _fit(Classifier(None, nn.Linear(4, 2)), _data(flip_val=True), epochs=20, select_metric="loss",
                  early_stopping=2)
    val_loss = [c["value"] for c in result.curves if c["name"] == "val_loss"]
    assert len(val_loss) == 3 and result.best_epoch == 1  # the best epoch, then two worse: stopped
    assert val_loss == sorted(val_loss)
    assert {c["name"] for c in result.curves} == {"train_loss", "val_loss"}
    torch.manual_seed(0)
    full = _fit(Classifier(None, nn.Linear(4, 2)), _data(), epochs=6, select_metric="loss")
    losses = [c["value"] for c in full.curves if c["name"] == "val_loss"]
    assert full.best_epoch == 1 + max(i for i, v in enumerate(losses) if v == min(losses))


def test_scored_weights_are_the_selected_or_the_last_epochs_and_ties_go_as_configured():
    data = _data(flip_val=True)  # learning makes validation worse every epoch: selection prefers epoch 1
    x_val, y_val = data["val"]

    def val_loss(model):
        p = predict(model, x_val, lambda t: t, "binary", torch.device("cpu"), False)
        return float(-np.log(p[np.arange(len(y_val)), y_val.numpy()]).mean())

    results = {}
    for scored in ("selected", "last"):
        torch.manual_seed(0)
        model = Classifier(None, nn.Linear(4, 2))
        results[scored] = (_fit(model, data, epochs=6, select_metric="loss", scored=scored), val_loss(model))
    (selected, selected_loss), (last, last_loss) = results["selected"], results["last"]
    curve = [c["value"] for c in selected.curves if c["name"] == "val_loss"]
    assert selected.best_epoch == last.best_epoch == 1 and last.last_epoch == 6
    assert selected_loss == pytest.approx(curve[0], rel=1e-5) and last_loss == pytest.approx(curve[-1], rel=1e-5)
    assert last_loss > selected_loss
    # lr 0: every epoch scores the same; the later epoch wins ties by default, the earlier under 'earlier'
    for ties, epoch in (("later", 4), ("earlier", 1)):
        still = _fit(Classifier(None, nn.Linear(4, 2)), _data(), epochs=4, optimizer={"name": "adam", "lr": 0.0},
                     select_ties=ties)
        assert still.best_epoch == epoch


def test_unscorable_validation_neither_improves_nor_stops_and_keeps_the_last_epoch():
    data = _data()
    data["val"] = (data["val"][0], torch.zeros_like(data["val"][1]))  # one class: AUC is NaN every epoch
    fits = {}
    for scored in ("selected", "last"):
        torch.manual_seed(0)
        model = Classifier(None, nn.Linear(4, 2))
        fits[scored] = (_fit(model, data, epochs=4, select_metric="auc", early_stopping=1, scored=scored), model)
    (selected, selected_model), (_, last_model) = fits["selected"], fits["last"]
    assert (selected.best_epoch, selected.last_epoch) == (4, 4)
    for k, v in last_model.state_dict().items():
        assert torch.equal(selected_model.state_dict()[k], v), k


def test_nan_validation_epochs_between_scored_ones_change_neither_selection_nor_patience(monkeypatch):
    nan = float("nan")
    values = iter([nan, nan, 0.6, nan, 0.5, nan, 0.4, 0.3])
    monkeypatch.setattr("medssl_core.train.finetune._selection_value", lambda metrics, name: next(values))
    result = _fit(Classifier(None, nn.Linear(4, 2)), _data(), epochs=8, select_metric="auc", early_stopping=2)
    assert (result.best_epoch, result.last_epoch) == (3, 7)  # two scored epochs without improvement: 5 and 7


def test_train_time_augmentation_feeds_training_batches_only():
    calls = {"augment": 0, "prepare": 0}

    def spy(name):
        def fn(t):
            calls[name] += 1
            return t
        return fn

    cfg = config.Fit(epochs=2, batch_size=16, optimizer={"name": "adam", "lr": 0.05})
    fit_classifier(Classifier(None, nn.Linear(4, 2)), _data(), "binary", cfg, prepare=spy("prepare"), seed=0,
                   device=torch.device("cpu"), augment_train=spy("augment"))
    assert calls["augment"] == 2 * 4  # every training step
    assert calls["prepare"] == 2 + 3  # validation each epoch, then the three splits once


def test_fine_tuning_features_end_to_end_and_recorded_features(tmp_path, medmnist_dir):
    finetune = Protocol("finetune", "fine-tuning", {
        "kind": "fit", "head": {"type": "linear", "dropout": 0.2}, "train_backbone": True,
        "fit": {"epochs": 2, "batch_size": 64, "optimizer": {"name": "adam", "lr": 1e-3},
                "schedule": {"name": "warmup_cosine", "warmup_epochs": 1}, "freeze_backbone_epochs": 1,
                "early_stopping": 5, "select_metric": "loss", "save_weights": True,
                "augment": {"crop_scale": [0.6, 1.0], "hflip": 0.5}}})
    study = replace(DEMO, protocols=(*DEMO.protocols, finetune))
    plan = expand(study, "quick", data_dir=medmnist_dir, seeds=[0], methods=["simclr"],
                  protocols=["knn", "finetune"], overrides={"pretrain": {"train": {"epochs": 1}}})
    store, ctx = cpu_store(tmp_path, medmnist_dir)
    execute_cleanly(plan, store, ctx)
    artifacts = dict(run_sql(store.db_path, "SELECT r.protocol || '/' || a.name, a.path FROM artifacts a "
                                            "JOIN runs r USING (run_id) WHERE r.kind = 'evaluate'")[1])
    assert set(artifacts) == {"knn/test_features.npz", "finetune/finetuned.pt", "finetune/test_scores.npz"}
    with np.load(artifacts["knn/test_features.npz"]) as saved:
        assert saved["features"].shape == (156, 512) and saved["features"].dtype == np.float16
        assert saved["labels"].shape == (156,)
    # the saved weights are the selected model: they reproduce the recorded test accuracy
    spec = next(s for s in plan.evaluate if s.protocol == "finetune")
    hp = config.EvaluateHP.model_validate(spec.hparams)
    weights = torch.load(artifacts["finetune/finetuned.pt"], weights_only=True)
    backbone, head = run_inputs.run_backbone(hp), build_head(hp.protocol.head.model_dump(), 512, 2)
    backbone.load_state_dict(weights["backbone"])
    head.load_state_dict(weights["head"])
    splits, _ = run_inputs.split_arrays(spec, hp, ctx)
    aug = BatchAugment(AugmentConfig(size=28, mean=hp.augment.mean, std=hp.augment.std), channels_last=True)
    x = run_inputs.images_to_device(splits["test"][0], ctx.device, hp.input_channels)
    scores = predict(Classifier(backbone, head), x, lambda t: aug(t, g=torch.Generator()), "binary", ctx.device,
                     False)
    acc = float((scores.argmax(1) == splits["test"][1]).mean())
    with np.load(artifacts["finetune/test_scores.npz"]) as saved:  # the scores ROC curves are drawn from
        assert np.allclose(saved["scores"], scores, atol=1e-6) and np.array_equal(saved["labels"], splits["test"][1])
    recorded = run_sql(store.db_path, "SELECT value FROM run_metrics WHERE protocol = 'finetune' AND split = 'test' "
                                      "AND metric = 'accuracy'")[1][0][0]
    assert acc == pytest.approx(recorded, abs=1e-9)


def test_dataset_cache_is_bounded_by_bytes(monkeypatch):
    loads = []

    def fake_load(name, size, data_dir, allow_download):
        loads.append(name)
        return type("D", (), {"images": {"train": np.zeros(100, np.uint8)}})()

    monkeypatch.setattr(run_inputs, "load_dataset", fake_load)
    cache = DatasetCache(max_bytes=250)
    for name in ("a", "b", "a", "c", "a", "b"):
        cache.get(name, 28, None, False, "v1")
    # a and b fit (200 bytes); c pushes out the least recently used (b), a stays; b is loaded again
    assert loads == ["a", "b", "c", "b"] and cache.held_bytes() == 200
    tiny = DatasetCache(max_bytes=10)
    tiny.get("a", 28, None, False, "v1")
    assert tiny.held_bytes() == 100  # the one in use is kept, whatever its size


def test_monitor_bank_caps_the_knn_bank(monkeypatch, tmp_path, medmnist_dir):
    banks = []
    real = train.knn_score

    def spy(backbone, monitor, *args):
        banks.append(monitor[0].shape[0])
        return real(backbone, monitor, *args)

    monkeypatch.setattr(train, "knn_score", spy)
    plan = expand(DEMO, "quick", data_dir=medmnist_dir, seeds=[0], methods=["simclr"], protocols=["knn"],
                  overrides={"pretrain": {"train": {"epochs": 1, "monitor_bank": 100}}})
    store, ctx = cpu_store(tmp_path, medmnist_dir)
    execute_cleanly(replace(plan, specs=plan.pretrain), store, ctx)
    assert banks == [100]
    names = run_sql(store.db_path, "SELECT DISTINCT name FROM curves WHERE name LIKE 'knn%'")[1]
    assert names == [("knn_val_accuracy",)]


def test_evaluations_of_one_encoder_extract_its_features_once(monkeypatch, tmp_path, medmnist_dir):
    from medssl_core.run import evaluate as run_evaluate

    calls = []
    real = run_evaluate.extract_features
    monkeypatch.setattr(run_evaluate, "extract_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    plan = expand(DEMO, "quick", data_dir=medmnist_dir, seeds=[0], overrides={"pretrain": {"train": {"epochs": 1}}})
    store, ctx = cpu_store(tmp_path, medmnist_dir)
    execute_cleanly(plan, store, ctx)
    assert sorted((s.method, s.protocol) for s in plan.evaluate) == [
        ("random_init", "knn"), ("random_init", "linear"), ("simclr", "knn"), ("simclr", "linear")]
    # SimCLR's kNN and probe share one extraction of 3 splits; each random-init run extracts its own
    assert len(calls) == 3 + 2 * 3


@pytest.mark.parametrize(("last_batch", "sizes"), [("drop", [16] * 4), ("keep", [16] * 4 + [6])])
def test_the_last_partial_batch_is_dropped_or_kept_as_a_dataloader_keeps_it(last_batch, sizes):
    seen = []

    def spy(t):
        seen.append(len(t))
        return t

    cfg = config.Fit(epochs=1, batch_size=16, optimizer={"name": "adam", "lr": 0.05}, last_batch=last_batch)
    fit_classifier(Classifier(None, nn.Linear(4, 2)), _data(n=70), "binary", cfg, prepare=lambda t: t, seed=0,
                   device=torch.device("cpu"), augment_train=spy)
    assert seen == sizes
