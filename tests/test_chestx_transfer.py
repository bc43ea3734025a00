"""chestx_transfer (Gravity-2010): the study as data, its plan, and every path of it run end to end on CheXpert
and NIH folders built from the real metadata that the torchxrayvision wheel ships, with synthetic images."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import numpy as np
import pytest
import torch
import torchvision.models as tvm

from medssl_core import models
from medssl_core.common.errors import ConfigError
from medssl_core.config import PretrainHP, Split, parse
from medssl_core.data import get_dataset
from medssl_core.data.dataset import ArrayDataset
from medssl_core.data.split_schemes import assign
from medssl_core.execute.local import reconcile
from medssl_core.paper.generate import generate
from medssl_core.plan.catalog import get_study
from medssl_core.plan.grid import expand
from medssl_core.plan.study import AS_DECLARED, Decision
from medssl_core.run.inputs import run_backbone
from medssl_core.store import run_sql
from replications.chestx_transfer import PHASE4_FRACTIONS
from tests.chest_layout import write_chexpert, write_nih, xrv_data
from tests.conftest import cpu_store, execute_cleanly

STUDY = get_study("chestx_transfer")
SSL_STARTS = ("phase3_linear", "phase4_finetune", "phase4_linear")


def _paper_plan(**kwargs):
    """The paper profile as declared, every source planned, no data read."""
    return expand(STUDY, "paper", every_source=True, fingerprint_data=False, allow_download=False, **kwargs)


def _fit(spec) -> dict:
    return spec.hparams["protocol"]["fit"]


def test_paper_plan_sets_the_codes_values_per_method_and_fraction():
    plan = _paper_plan(variant_names=["as_published"], seeds=[0])
    evals = [s for s in plan.evaluate if s.dataset_used == "chexpert_small"
             and (s.pretrain is None or s.pretrain.dataset == "chexpert")]
    epochs = {s.fraction: _fit(s)["epochs"] for s in evals if s.protocol == "phase4_finetune"}
    assert epochs == {0.01: 5, 0.05: 5, 0.1: 5, 0.25: 10, 0.3: 10, 0.5: 10, 1.0: 10}  # min(10, max(5, 10n/1000))
    lrs = {(s.method, s.protocol): _fit(s)["optimizer"]["lr"] for s in evals}
    assert lrs[("random_init", "phase3_finetune")] == lrs[("random_init", "phase4_finetune")] == 3e-4
    assert lrs[("simclr", "phase3_finetune")] == 1e-4 and lrs[("simclr", "phase4_linear")] == 0.1
    assert lrs[("simclr", "phase3_linear")] == 1e-4  # OneCycleLR's peak, not the optimiser's 0.1
    assert {s.fraction for s in evals if s.protocol.startswith("phase3")} == {1.0}
    assert {s.fraction for s in evals if s.protocol == "phase4_linear"} == set(PHASE4_FRACTIONS)
    assert {_fit(s)["val_limit"] for s in evals if s.protocol.startswith("phase4")} == {320}
    assert {_fit(s)["val_limit"] for s in evals if s.protocol.startswith("phase3")} == {640}
    assert {_fit(s)["score_on"] for s in evals} == {"val"}
    split = evals[0].hparams["split"]
    assert split["patient_fraction"] == 0.7 and split["seed_policy"] == "per_run" and split["views"] == []
    pre = next(s for s in plan.pretrain if s.dataset == "chexpert")
    assert pre.hparams["method"]["projector_hidden_bn"] is False and pre.hparams["train"]["grad_clip"] == 1.0
    # ChestMNIST stands in for NIH with the study's sizes drawn from its official split, NIH's names and order
    mnist = next(s for s in plan.evaluate if s.dataset_used == "chestmnist")
    assert mnist.hparams["split"]["scheme"] == "sample" and mnist.hparams["split"]["base"] == "official"
    assert "label_order" not in mnist.hparams and mnist.hparams["n_classes"] == 14


def test_random_starts_keep_torchvisions_residual_init():
    """resnet50(pretrained=False) / resnet50(weights=None): each residual branch's last BatchNorm starts at 1, not 0,
    for the SimCLR encoder and the random start, in every variant."""
    plan = _paper_plan(seeds=[0], datasets=["chexpert"])
    random_starts = [s for s in plan.specs if s.method in ("simclr", "random_init")]
    assert random_starts and all(s.hparams["backbone"]["zero_init_residual"] is False for s in random_starts)
    assert {v for s in random_starts for v in s.decisions.values()} == {"as_published", "corrected"}
    assert all("zero_init_residual" not in s.hparams["backbone"] for s in plan.specs if s.method == "imagenet")
    pre = next(s for s in plan.pretrain if s.method == "simclr")
    backbone = run_backbone(parse(PretrainHP, pre.hparams, "t"))
    assert all(b.bn3.weight.detach().eq(1).all() for b in backbone.modules() if isinstance(b, tvm.resnet.Bottleneck))


def test_transfer_runs_the_notebooks_recipe_on_nih_with_a_chexpert_encoder():
    plan = _paper_plan(seeds=[0], variant_names=["as_published", "corrected"])
    transfer = [s for s in plan.evaluate if s.protocol.startswith("transfer")]
    # NIH only; SimCLR's encoder from CheXpert only (never NIH's own); random and ImageNet starts have no pretraining
    assert {s.dataset for s in transfer} == {"nih"}
    assert {(s.method, s.protocol, s.pretrain.dataset if s.pretrain else None) for s in transfer} == {
        ("simclr", "transfer_finetune", "chexpert"), ("simclr", "transfer_linear", "chexpert"),
        ("random_init", "transfer_finetune", None), ("imagenet", "transfer_finetune", None)}
    assert {s.fraction for s in transfer} == {1.0}
    ours = [s for s in transfer if s.dataset_used == "nih_chestxray14"]
    published = {(s.method, s.protocol): s.hparams["protocol"] for s in ours
                 if s.decisions["eval_set"] == "as_published" and s.decisions.get("nih_first_images") == "as_published"
                 and s.decisions.get("transfer_shared_layers", "as_published") == "as_published"}
    lrs = {k: p["fit"]["optimizer"]["lr"] for k, p in published.items()}
    assert lrs == {("random_init", "transfer_finetune"): 1e-4, ("imagenet", "transfer_finetune"): 1e-5,
                   ("simclr", "transfer_finetune"): 1e-5, ("simclr", "transfer_linear"): 1e-3}
    for proto in published.values():
        fit = proto["fit"]
        assert proto["head"] == {"type": "linear", "hidden": [512], "activation": "relu", "dropout": 0.5}
        assert (fit["epochs"], fit["batch_size"], fit["schedule"]["name"], fit["score_on"]) == (5, 32, "cosine", "val")
        assert fit["optimizer"]["name"] == "adam" and fit["optimizer"]["weight_decay"] == 0.0
        assert "last_batch" not in fit and "val_limit" not in fit  # drop_last; all of its evaluation set
        aug = fit["augment"]
        assert (aug["rotate_degrees"], aug["rotate_p"], aug["jitter"], aug["hflip"]) == (10, 1.0, [0.2, 0.2, 0, 0], 0.5)
    # the probe's freeze reaches the fine-tuning model's shared layers: its head alone trains, BatchNorm following
    finetune = published[("simclr", "transfer_finetune")]
    assert (finetune["train_backbone"], finetune["backbone_bn_train"]) == (False, True)
    fixed = next(s.hparams["protocol"] for s in ours if s.method == "simclr" and s.protocol == "transfer_finetune"
                 and s.decisions["transfer_shared_layers"] == "corrected")
    assert fixed["train_backbone"] and not fixed["backbone_bn_train"]
    # the notebook's numbers are filed under its recipe, never beside an in-domain Phase 3 cell
    transfer_rows = [r for r in STUDY.reported if r.source == "Transfer_Learning.ipynb"]
    assert {(r.method, r.protocol) for r in transfer_rows} == set(lrs)
    assert not [r for r in STUDY.reported if r.dataset == "nih" and r.protocol.startswith("phase")]
    with pytest.raises(ConfigError, match=r"unknown dataset\(s\) \['padchest'\]"):
        replace(STUDY, protocols=tuple(replace(p, pairings=(("nih", "padchest"),)) if p.name == "transfer_finetune"
                                       else p for p in STUDY.protocols))


def test_nih_is_read_as_the_notebook_read_it_unless_corrected():
    """As published: the first images of train_val_list and of test_list, in list order (validation the first ones of
    the test list, a held-out test the next); corrected: a seeded sample with validation patients from train_val."""
    plan = _paper_plan(seeds=[0], datasets=["nih"], methods=["random_init"], protocols=["phase3_finetune"])
    splits = {s.decisions["nih_first_images"]: s.hparams["split"] for s in plan.evaluate
              if s.dataset_used == "nih_chestxray14"}
    mnist = {s.decisions["nih_first_images"]: s.hparams["split"] for s in plan.evaluate
             if s.dataset_used == "chestmnist"}
    assert mnist["as_published"]["roles"] == {"val": "test"} and mnist["corrected"]["base"] == "official"
    listed = {"train_val": np.arange(100, 140)[::-1], "test": np.arange(0, 30)}  # CSV rows, in each list's order
    patients = {part: np.array([f"p{r // 3}" for r in rows]) for part, rows in listed.items()}
    ds = ArrayDataset(get_dataset("nih_chestxray14"), None, {}, {p: np.zeros((len(r), 14), np.int64)
                                                                 for p, r in listed.items()},
                      patients, source_index=listed)
    sizes = {"train": 12, "val": 5, "test": 6}

    def csv_rows(choice: str) -> dict[str, list[int]]:
        indices = assign(ds, parse(Split, {**splits[choice], "sizes": sizes}, "t"), 0)
        pool = indices.pool
        return {r: [int(listed[pool.parts[pool.part[i]]][pool.row[i]]) for i in indices.of(r)]
                for r in ("train", "val", "test")}

    published = csv_rows("as_published")
    assert published["train"] == listed["train_val"][:12].tolist()  # list order, not CSV order
    assert published["val"] == listed["test"][:5].tolist() and published["test"] == listed["test"][5:11].tolist()
    corrected = csv_rows("corrected")
    assert set(corrected["val"]) <= set(listed["train_val"]) and set(corrected["test"]) <= set(listed["test"])
    assert not {r // 3 for r in corrected["train"]} & {r // 3 for r in corrected["val"]}  # patient-level
    assert corrected["train"] != published["train"]


def test_as_published_ssl_runs_start_from_phase3s_fine_tuned_model_and_corrected_ones_do_not():
    plan = _paper_plan(seeds=[0], datasets=["chexpert"], methods=["simclr"])
    order = {s.run_id: i for i, s in enumerate(plan.specs)}
    for spec in plan.evaluate:
        fit, proto = _fit(spec), spec.hparams["protocol"]
        if spec.protocol not in SSL_STARTS:
            assert spec.start is None
        elif spec.decisions["shared_encoder"] == "as_published":
            start = spec.start
            assert start is not None and start.protocol == "phase3_finetune" and start.fraction == 1.0
            assert start.pretrain == spec.pretrain and start.seed == spec.seed and start.run_id in order
            assert order[start.run_id] < order[spec.run_id]  # planned (and so run) before it
            assert _fit(start)["save_weights"] and not proto["train_backbone"]
            # BatchNorm follows the batches (model.train()) unless the probe's own decision is corrected
            assert proto["backbone_bn_train"] == (spec.decisions.get("probe_bn", "as_published") == "as_published")
            assert spec.hparams["start_from"] == "phase3_finetune"
        else:
            assert spec.start is None and "start_from" not in spec.hparams
            assert proto["train_backbone"] == (spec.protocol == "phase4_finetune")
        if spec.decisions["eval_set"] == "corrected":
            assert "val_limit" not in fit and "score_on" not in fit  # whole val, scored on test
    assert all("start" not in s.to_dict() for s in plan.evaluate if s.start is None)  # ids as before it existed


def test_kept_stale_pretraining_renames_the_runs_that_start_from_its_evaluations():
    """--reuse-stale keeps a pretraining recorded under other code: every evaluation of it is renamed, and a run
    that starts from phase 3's model must start from the renamed one (the run that will hold its weights)."""
    plan = _paper_plan(seeds=[0], datasets=["chexpert"], methods=["simclr"], variant_names=["as_published"])
    pre = next(s for s in plan.pretrain if s.dataset == "chexpert")
    old = replace(pre, code={**pre.code, "train.py": "0" * 12})  # the same settings under other code
    reconciled = reconcile(plan, [(old.run_id, "ok", old.canonical())], reuse_stale=True)
    assert reconciled.reused == {old.run_id: "code changed: train.py"}
    ids = {s.run_id for s in plan.specs}
    chained = [s for s in plan.evaluate if s.start is not None and s.pretrain.run_id == old.run_id]
    assert chained and all(s.start.run_id in ids and s.start.pretrain.run_id == old.run_id for s in chained)


def test_start_from_and_multi_param_decisions_are_checked():
    with pytest.raises(ConfigError, match="tuples of as many values"):
        Decision("d", "two params, one value", ("a.b", "c"), 1, (2, 3), stage="evaluate")
    d = Decision("d", "two params", ("a.b", "c"), (AS_DECLARED, 1), (2, 3), stage="evaluate")
    assert d.settings("as_published") == [("c", 1)] and d.settings("corrected") == [("a.b", 2), ("c", 3)]
    phase3 = STUDY.protocol("phase3_finetune")
    unsaved = replace(phase3, hparams={**phase3.hparams, "fit": {**phase3.hparams["fit"], "save_weights": False}})
    study = replace(STUDY, protocols=tuple(unsaved if p.name == "phase3_finetune" else p for p in STUDY.protocols))
    with pytest.raises(ConfigError, match=r"declare its fit\.save_weights true"):
        expand(study, "paper", every_source=True, fingerprint_data=False, allow_download=False, seeds=[0],
               variant_names=["as_published"], methods=["simclr"], datasets=["chexpert"])
    with pytest.raises(ConfigError, match="unknown protocol"):
        replace(STUDY, protocols=(replace(phase3, per_method={"byol": {}}),))


def test_paper_plan_says_how_to_get_chexpert_and_stands_chestmnist_in_for_nih(tmp_path):
    plan = expand(STUDY, "paper", data_dir=tmp_path, seeds=[0], variant_names=["corrected"], fingerprint_data=False)
    assert plan.stand_ins == {"nih": "chestmnist"}  # downloadable at 224 px, sampled to the study's sizes
    why = dict(plan.skipped)["dataset chexpert"]
    assert "CheXpert-v1.0-small" in why and "train.csv" in why
    assert {s.dataset for s in plan.evaluate} == {"nih"} and {s.dataset_used for s in plan.evaluate} == {"chestmnist"}


@pytest.mark.slow
def test_quick_profile_on_real_pneumonia_radiographs(tmp_path, medmnist_dir):
    """Smoke data (PneumoniaMNIST, a binary chest task): phase 3's fine-tuning and probe, Grad-CAM on real chest
    X-rays with their lung masks, the embedding, the stored scores."""
    plan = expand(STUDY, "quick", data_dir=medmnist_dir, methods=["simclr"],
                  protocols=["phase3_finetune", "phase3_linear"],
                  overrides={"pretrain": {"train": {"epochs": 1}}, "evaluate": {"protocol": {"fit": {"epochs": 1}}}})
    assert len(plan.pretrain) == 1 and len(plan.evaluate) == 4
    store, ctx = cpu_store(tmp_path, medmnist_dir)
    execute_cleanly(plan, store, ctx)
    metric = dict(((rid, split, name), v) for rid, split, name, v in run_sql(
        store.db_path, "SELECT run_id, split, metric, value FROM run_metrics")[1])
    for spec in plan.evaluate:
        as_published = spec.decisions["eval_set"] == "as_published"
        assert metric[(spec.run_id, "test", "n_images")] == (524 if as_published else 624)  # all of val: 524
        assert metric[(spec.run_id, "train", "n_labelled")] == 1000
        assert 0 < metric[(spec.run_id, "test", "cam_focus")] < 1
        assert 0 < metric[(spec.run_id, "test", "cam_lung_energy")] < 1
        assert -1 <= metric[(spec.run_id, "test", "silhouette")] <= 1
        with np.load(store.artifacts_dir / spec.run_id / "gradcam.npz") as cams:
            coverage = cams["masks"].mean(axis=(1, 2))
            assert coverage.min() > 0.05 and 0.1 < np.median(coverage) < 0.6, coverage  # lungs found (28 px)
        assert (spec.start is not None) == (spec.protocol == "phase3_linear" and as_published)


@pytest.mark.slow
@pytest.mark.skipif(xrv_data() is None, reason="torchxrayvision (dev extra) ships the real CheXpert/NIH metadata")
def test_tiny_profile_runs_every_path_on_real_chest_metadata(tmp_path, monkeypatch):
    data = tmp_path / "data"
    write_chexpert(data)
    write_nih(data)
    # the four starts need ImageNet weights, which CI cannot download: a random ResNet-18 under the name of
    # IMAGENET1K_V2 weights in a private torch hub (nothing here tests what ImageNet weights learnt)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setitem(models.IMAGENET_V2_FILES, "resnet18", "resnet18-stand-in.pth")
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(tvm.resnet18().state_dict(), hub / "resnet18-stand-in.pth")
    plan = expand(STUDY, "tiny", data_dir=data)
    assert not plan.skipped
    assert {s.method for s in plan.evaluate if s.protocol == "phase3_finetune"} == {"simclr", "imagenet",
                                                                                    "random_init"}
    store, ctx = cpu_store(tmp_path, data)
    execute_cleanly(plan, store, ctx)
    db = store.db_path
    pairs = run_sql(db, "SELECT DISTINCT dataset, pretrain_dataset FROM runs WHERE kind = 'evaluate' AND "
                        "method = 'simclr' ORDER BY ALL")[1]
    assert pairs == [("chexpert", "chexpert"), ("chexpert", "nih"), ("nih", "chexpert"), ("nih", "nih")]
    metric = dict(((rid, split, name), v) for rid, split, name, v in run_sql(
        db, "SELECT run_id, split, metric, value FROM run_metrics")[1])
    names_of = defaultdict(set)  # run id -> (split, metric): one pass, not one per run
    for rid, split, name in metric:
        names_of[rid].add((split, name))
    for spec in plan.evaluate:
        n_test = metric[(spec.run_id, "test", "n_images")]
        if spec.decisions["eval_set"] == "as_published":  # scored on the first 32 val images that chose the epoch
            assert n_test == metric[(spec.run_id, "val", "n_images")] == 32
            assert metric[(spec.run_id, "test", "auc")] == metric[(spec.run_id, "val", "auc")]
        else:  # CheXpert's valid.csv, NIH's official test list
            assert n_test == 24 and metric[(spec.run_id, "val", "n_images")] == 48
        labelled = metric[(spec.run_id, "train", "n_labelled")]
        assert labelled == (48 if spec.fraction == 0.5 else 96)
        n_labels = 5 if spec.dataset == "chexpert" else 14
        per_label = {name for split, name in names_of[spec.run_id] if split == "test" and name.startswith("auc_label")}
        assert per_label and per_label <= {f"auc_label{j}" for j in range(n_labels)}  # a label needs both classes
    analysed = [s for s in plan.evaluate if s.protocol.startswith("phase3")]
    for spec in analysed:  # Grad-CAM of 8 images and a t-SNE of the test features: Phase 3's four starts
        assert 0 <= metric[(spec.run_id, "test", "cam_focus")] <= 1
        assert -1 <= metric[(spec.run_id, "test", "silhouette")] <= 1
        with np.load(store.artifacts_dir / spec.run_id / "gradcam.npz") as cams:
            assert cams["cams"].shape == cams["masks"].shape == cams["images"].shape == (8, 32, 32)
            energy = cams["lung_energy"][np.isfinite(cams["lung_energy"])]
            assert np.all((energy >= 0) & (energy <= 1))
    assert sum((s.run_id, "test", "cam_lung_energy") in metric for s in analysed) >= len(analysed) // 2
    assert not any((s.run_id, "test", "cam_focus") in metric for s in plan.evaluate if s not in analysed)
    starts = run_sql(db, "SELECT count(*) FROM params WHERE kind = 'start'")[1][0][0]
    assert starts == sum(s.start is not None for s in plan.evaluate) == 2 * 2 * 3  # datasets x pretrainings x 3
    with np.load(next(iter(store.artifacts_dir.glob("*/test_scores.npz")))) as saved:
        assert saved["scores"].shape[0] == saved["labels"].shape[0] and saved["scores"].ndim == 2

    # a run that starts from phase 3's model has its backbone: frozen, its convolutions are that model's
    keep = expand(STUDY, "tiny", data_dir=data, datasets=["nih"], methods=["simclr"], protocols=["phase3_linear"],
                  variant_names=["as_published"], overrides={"evaluate": {"protocol": {"fit": {"save_weights": True}}}})
    execute_cleanly(keep, store, ctx)
    for spec in (s for s in keep.evaluate if s.protocol == "phase3_linear"):
        probe = torch.load(store.artifacts_dir / spec.run_id / "finetuned.pt", weights_only=True)["backbone"]
        start = torch.load(store.artifacts_dir / spec.start.run_id / "finetuned.pt", weights_only=True)["backbone"]
        encoder = torch.load(store.artifacts_dir / spec.parent / "encoder_last.pt", weights_only=True)
        assert torch.equal(probe["conv1.weight"], start["conv1.weight"])
        assert not torch.equal(probe["conv1.weight"], encoder["conv1.weight"])

    generate(STUDY, db, tmp_path / "paper", data_dir=data, tsne=False)
    paper = tmp_path / "paper" / "tiny"
    table = (paper / "main_as_published.md").read_text()
    assert "nih_chestxray14 ← chexpert" in table and "chexpert_small ← nih" in table
    per_label = (paper / "per_label_auc_nih_chestxray14_chexpert.md").read_text()
    assert "Pleural_Thickening" in per_label and "Hernia" in per_label
    for kind in ("roc", "gradcam", "embedding"):
        for cell in ("chexpert_small", "chexpert_small_nih", "nih_chestxray14", "nih_chestxray14_chexpert"):
            for variant in ("as_published", "corrected"):
                assert (paper / f"{kind}_{cell}_{variant}.png").is_file()
