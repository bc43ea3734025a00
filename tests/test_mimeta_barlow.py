"""mimeta_barlow: the MedIMeta reader on the publisher's layout, stand-in labels renumbered by class name, the
study's split and label-fraction decisions (torch's random_split, generator carried on), the transductive CT
pretraining, the double softmax, grey CRC, and a reduced quick replication end to end."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from medssl_core.common.errors import ConfigError, DataError
from medssl_core.config import EvaluateHP, FitLoss, Split, spec_form
from medssl_core.data import load_dataset
from medssl_core.data.split_schemes import assign, label_subset
from medssl_core.losses.classification import double_softmax_cross_entropy_loss
from medssl_core.models.imagenet import IMAGENET_MEAN
from medssl_core.paper.generate import generate
from medssl_core.plan.catalog import get_study
from medssl_core.plan.grid import expand
from medssl_core.plan.study import deep_merge
from medssl_core.run.inputs import to_grey
from medssl_core.store import run_sql
from medssl_core.train.finetune import fit_loss
from replications.mimeta_barlow import MEDMNIST_ORGANS, MUSCLE, ORGANS, STROMA, confusion_metric
from tests.conftest import cpu_store, execute_cleanly
from tests.medimeta_layout import image_value, write_medimeta

STUDY = get_study("mimeta_barlow")
MIMETA_SPLIT = Split(scheme="random_split", fractions=(0.8, 0.1, 0.1), fixed_seed=42)


# -- the reader -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("hdf5", [True, False])
def test_reader_reads_the_publishers_layout(tmp_path, hdf5):
    labels = [i % 9 for i in range(12)]
    write_medimeta(tmp_path, "crc", labels, {"train": [0, 2, 3, 5, 6, 8, 9], "val": [1, 4], "test": [7, 10, 11]},
                   hdf5=hdf5, side=8, shade=3)
    ds = load_dataset("mimeta_crc", 8, tmp_path)
    assert ds.images["train"].shape == (7, 8, 8, 3) and ds.images["train"].dtype == np.uint8
    assert ds.source_index["val"].tolist() == [1, 4]
    assert ds.labels["test"].tolist() == [labels[7], labels[10], labels[11]]  # labels by image number
    assert np.array_equal(ds.images["test"][1], image_value(10, 3, 3, 8))  # RGB kept in order (no BGR swap)
    grey = write_medimeta(tmp_path, "organs_axial", [0, 1, 2, 3], {"train": [3, 0], "test": [1, 2]}, hdf5=hdf5,
                          side=8)
    axial = load_dataset("mimeta_organs_axial", 4, tmp_path)  # resized from 8 px, grey with a channel axis
    assert axial.images["train"].shape == (2, 4, 4, 1) and "val" not in axial.labels  # no file: no split
    # image-number order, as medimeta-pytorch sorts a split's numbers
    assert axial.source_index["train"].tolist() == [0, 3]
    assert axial.images["train"][1, 0, 0, 0] == image_value(3, 0, 1, 8)[0, 0, 0]
    (grey / "info.yaml").write_text((grey / "info.yaml").read_text().replace("organs_axial", "organs_coronal"))
    with pytest.raises(DataError, match="describes dataset 'organs_coronal', not 'organs_axial'"):
        load_dataset("mimeta_organs_axial", 4, tmp_path)


def test_registry_names_are_the_publishers():
    """Copied from the publisher's dataset_info/LiTS_organ_slices_axial.yaml and NCT-CRC.yaml (medimeta-dataset-
    scripts, v1.0), which the reader checks every info.yaml against."""
    from medssl_core.data import get_dataset

    axial, crc = get_dataset("mimeta_organs_axial"), get_dataset("mimeta_crc")
    assert (axial.layout, axial.channels) == ({"dataset_id": "organs_axial", "task": "organ label"}, 1)
    assert axial.classes == ("heart", "left lung", "right lung", "liver", "spleen", "pancreas", "left kidney",
                             "right kidney", "bladder", "left femoral head", "right femoral head")
    assert (crc.layout, crc.channels) == ({"dataset_id": "crc", "task": "tissue class"}, 3)
    assert crc.classes == ("adipose (ADI)", "background (BACK)", "debris (DEB)", "lymphocytes (LYM)", "mucus (MUC)",
                           "smooth muscle (MUS)", "normal colon mucosa (NORM)", "cancer-associated stroma (STR)",
                           "colorectal adenocarcinoma epithelium (TUM)")


def test_reader_refuses_other_label_names_and_a_missing_task(tmp_path):
    root = write_medimeta(tmp_path, "organs_sagittal", [0, 1], {"train": [0], "test": [1]}, side=8)
    info = root / "info.yaml"
    info.write_text(info.read_text().replace("left lung", "lung-left"))
    with pytest.raises(DataError, match="another version of MedIMeta"):
        load_dataset("mimeta_organs_sagittal", 8, tmp_path)
    (root / "task_labels" / "organ label.npy").rename(root / "task_labels" / "organ labels.npy")
    info.write_text(info.read_text().replace("lung-left", "left lung"))
    with pytest.raises(DataError, match=r"organ label.npy is missing \(task labels present: \['organ labels.npy'\]"):
        load_dataset("mimeta_organs_sagittal", 8, tmp_path)


# -- stand-ins: labels renumbered by class name ----------------------------------------------------------------
def test_stand_in_labels_are_renumbered_into_medimetas_order(tmp_path):
    paper = expand(STUDY, "paper", data_dir=tmp_path)  # nothing on disk: plans the stand-ins' downloads
    assert paper.stand_ins["organs_axial"] == "organamnist" and paper.stand_ins["crc"] == "pathmnist"
    axial = next(s for s in paper.evaluate if s.dataset == "organs_axial")
    order = axial.hparams["label_order"]
    medmnist = ("bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver",
                "lung-left", "lung-right", "pancreas", "spleen")
    assert [ORGANS[order[i]] for i in range(11)] == [MEDMNIST_ORGANS[n] for n in medmnist]
    assert order[0] == 8 and order[3] == 0  # bladder -> 8, heart -> 0
    crc = next(s for s in paper.evaluate if s.dataset == "crc")
    assert "label_order" not in crc.hparams  # PathMNIST's order is MedIMeta's: nothing to renumber
    ct = next(s for s in paper.pretrain if s.dataset == "ct")
    assert ct.dataset_used == "organamnist+organcmnist+organsmnist" and ct.hparams["label_order"] == order
    with pytest.raises(ConfigError, match="are not exactly its classes"):
        replace(STUDY.dataset("organs_axial"), class_names={"organamnist": {}}).label_order(
            "organamnist", medmnist)


# -- the study's decisions --------------------------------------------------------------------------------------
def test_missing_pretraining_data_leaves_the_runs_that_need_none(tmp_path):
    from replications.mimeta_barlow import CT_MEDIMETA

    only_mimeta = replace(STUDY, datasets=tuple(replace(d, sources=(CT_MEDIMETA,), class_names={})
                                                if d.key == "ct" else d for d in STUDY.datasets))
    plan = expand(only_mimeta, "paper", data_dir=tmp_path)
    assert any("pretrained on ct" in what for what, _ in plan.skipped)
    axial = {(s.method, s.protocol) for s in plan.evaluate if s.dataset == "organs_axial"}
    assert axial == {("random_init", "full")}  # no ImageNet weights here; Barlow Twins has no encoder
    # MedIMeta's axial view present, the other views not: CT pretrains on the stand-ins, so its encoder is
    # not evaluated on MedIMeta's axial slices
    write_medimeta(tmp_path, "organs_axial", [i % 11 for i in range(22)], {"train": list(range(22))}, side=4)
    mixed = expand(STUDY, "paper", data_dir=tmp_path)
    assert any("an encoder pretrained on a stand-in" in why for _, why in mixed.skipped)
    assert not any(s.dataset == "organs_axial" and s.method == "barlow" for s in mixed.evaluate)
    assert any(s.dataset == "organs_coronal" and s.method == "barlow" for s in mixed.evaluate)


def test_random_split_and_its_label_fraction_are_torchs(tmp_path):
    labels = [i % 11 for i in range(1645)]
    write_medimeta(tmp_path, "organs_axial", labels, {"train": list(range(871)), "val": list(range(871, 1027)),
                                                        "test": list(range(1027, 1645))}, side=4)
    ds = load_dataset("mimeta_organs_axial", 4, tmp_path)
    split = assign(ds, MIMETA_SPLIT, 42)
    # one organ view of 1,645 slices: docs/studies/mimeta_barlow.md, 'Datasets and splits'
    assert (len(split.train), len(split.val), len(split.test)) == (1317, 164, 164)
    generator = torch.Generator().manual_seed(42)
    train, _, test = torch.utils.data.random_split(range(1645), [0.8, 0.1, 0.1], generator)
    assert split.train.tolist() == list(train.indices) and split.test.tolist() == list(test.indices)
    kept = torch.utils.data.random_split(train, [0.1, 0.9], generator)[0]  # finetuning.py: same generator
    subset = label_subset(ds, MIMETA_SPLIT.model_copy(update={"label_fraction": "random_split"}), 42,
                          split.pool.labels[split.train], 0.1, run_seed=7)
    assert sorted(split.train[subset].tolist()) == sorted(kept[i] for i in range(len(kept)))
    assert len(subset) == 132  # floor(0.1 * 1317) + the remainder's first image; not stratified
    stratified = label_subset(ds, MIMETA_SPLIT, 42, split.pool.labels[split.train], 0.1, run_seed=7)
    assert np.bincount(split.pool.labels[split.train][stratified]).min() >= 11  # every class, rounded half up


def test_transductive_ct_pretraining_and_its_correction(tmp_path):
    for shade, view in enumerate(("axial", "coronal", "sagittal")):
        write_medimeta(tmp_path, f"organs_{view}", [i % 11 for i in range(60)],
                       {"train": list(range(40)), "val": list(range(40, 50)), "test": list(range(50, 60))},
                       side=4, shade=shade)
    merged = load_dataset("mimeta_organs_axial+mimeta_organs_coronal+mimeta_organs_sagittal", 4, tmp_path)
    views = [load_dataset(f"mimeta_organs_{v}", 4, tmp_path) for v in ("axial", "coronal", "sagittal")]
    # pools run in image-number order, the merge numbering view m's image k as 60 m + k: positions are numbers
    view_tests = {60 * m + int(k) for m, view in enumerate(views) for k in assign(view, MIMETA_SPLIT, 42).test}
    whole = assign(merged, MIMETA_SPLIT, 42)  # as published: 80/10/10 of the 180 slices together
    per_part = assign(merged, MIMETA_SPLIT.model_copy(update={"per_part": True}), 42)
    assert set(whole.train.tolist()) & view_tests  # pretraining sees images a view's evaluation tests on
    assert not set(per_part.train.tolist()) & view_tests
    assert len(per_part.train) == 3 * 48
    with pytest.raises(ConfigError, match="is a single dataset"):
        assign(views[0], MIMETA_SPLIT.model_copy(update={"per_part": True}), 42)


def test_double_softmax_against_a_float64_reference():
    torch.manual_seed(0)
    logits = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 1, -1])
    p = torch.softmax(logits, dim=1)
    per_sample = -(p[torch.arange(6), y.clamp_min(0)] - torch.log(torch.exp(p).sum(dim=1)))
    reference = per_sample[:5].mean()  # the MISSING label (-1) is left out
    assert torch.allclose(double_softmax_cross_entropy_loss(logits, y), reference)
    assert fit_loss("multi-class", FitLoss(name="ce", double_softmax=True))(logits, y).item() == pytest.approx(
        reference.item())
    with pytest.raises(ConfigError, match="double_softmax is a softmax head trained with cross-entropy"):
        fit_loss("multi-class", FitLoss(name="focal", double_softmax=True))


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 12), st.integers(1, 8), st.floats(0.1, 30))
def test_double_softmax_is_bounded_and_flatter_than_cross_entropy(n_classes, n, scale):
    logits = torch.randn(n, n_classes, dtype=torch.float64) * scale
    logits.requires_grad_(True)
    y = torch.randint(0, n_classes, (n,))
    loss = double_softmax_cross_entropy_loss(logits, y, label_smoothing=0.0)
    top = np.log(n_classes - 1 + np.e)
    assert top - 1 - 1e-9 <= loss.item() <= top + 1e-9
    (g,) = torch.autograd.grad(loss, logits)
    (g_ce,) = torch.autograd.grad(F.cross_entropy(logits, y), logits)
    assert g.abs().sum() <= g_ce.abs().sum() + 1e-12


def test_grey_is_pils_luma():
    rgb = np.random.default_rng(0).integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)
    pil = np.stack([np.asarray(Image.fromarray(img).convert("L")) for img in rgb])
    assert np.array_equal(to_grey(rgb)[..., 0], pil)


def test_the_declared_decisions_reach_the_runs(tmp_path):
    paper = expand(STUDY, "paper", data_dir=tmp_path, variant_names=["as_published"])
    crc = [s for s in paper.specs if s.dataset == "crc"]
    assert {s.hparams["channel_mode"] for s in crc} == {"grey"}  # CRC read as grey
    assert {s.hparams["channel_mode"] for s in paper.specs if s.dataset != "crc"} == {"rgb"}
    readout = next(s for s in paper.evaluate if s.protocol == "readout")
    full = next(s for s in paper.evaluate if s.protocol == "full")
    assert readout.hparams["protocol"]["backbone_bn_train"] and "readout_bn" not in full.decisions
    fit = readout.hparams["protocol"]["fit"]
    assert fit["loss"]["double_softmax"] and fit["epochs"] == 1000 and fit["select_metric"] == "loss"
    assert readout.hparams["augment"]["mean"] == [0.0, 0.0, 0.0] and readout.hparams["split"]["fixed_seed"] == 42
    assert readout.hparams["split"]["label_fraction"] == "random_split"
    ct = next(s for s in paper.pretrain if s.dataset == "ct")
    assert ct.hparams["train"]["batch_size"] == 64 and "per_part" not in ct.hparams["split"]  # absent: False
    axial = next(s for s in paper.evaluate if s.dataset == "organs_axial" and s.method == "barlow")
    assert axial.pretrain.dataset == "ct" and axial.decisions["transductive"] == "as_published"
    assert not any(s.method == "random_init" for s in crc)  # no from-scratch baseline on CRC
    corrected = expand(STUDY, "paper", data_dir=tmp_path, variant_names=["corrected"])
    ct = next(s for s in corrected.pretrain if s.dataset == "ct")
    assert ct.hparams["split"] == spec_form(Split(scheme="official", fixed_seed=42, per_part=True))
    e = next(s for s in corrected.evaluate if s.dataset == "crc" and s.protocol == "readout")
    assert e.hparams["channel_mode"] == "rgb" and "double_softmax" not in e.hparams["protocol"]["fit"]["loss"]
    assert EvaluateHP.model_validate(e.hparams).protocol.fit.loss.double_softmax is False
    assert len([r for r in STUDY.reported if r.metric == "accuracy"]) == 3 * 4 * 5 + 6 * 4


def test_ct_pretraining_flips_as_published(tmp_path, medmnist_dir):
    """lightly's SimCLRTransform flips every view with p 0.5, CT slices too, whose classes tell left from right."""
    def pretrainings(variant: str) -> dict:
        plan = expand(STUDY, "paper", data_dir=tmp_path, variant_names=[variant], seeds=[0], methods=["barlow"],
                      protocols=["readout"])
        return {s.dataset: s for s in plan.specs if s.kind == "pretrain" or s.dataset == "organs_axial"}

    published, corrected = pretrainings("as_published"), pretrainings("corrected")
    assert published["ct"].hparams["augment"]["hflip"] == 0.5 and corrected["ct"].hparams["augment"]["hflip"] == 0.0
    assert published["crc"].hparams["augment"]["hflip"] == corrected["crc"].hparams["augment"]["hflip"] == 0.5
    assert "ct_hflip" not in published["crc"].decisions  # no left/right classes: nothing to decide
    assert published["organs_axial"].decisions["ct_hflip"] == "as_published"  # recorded with the numbers
    # lightly's from_torch_dataset replaces the wrapper's Normalize(0.5, 0.5): the image is normalised once, by
    # SimCLRTransform with ImageNet's statistics (docs/studies/mimeta_barlow.md, 'Pretraining')
    augment = published["ct"].hparams["augment"]
    assert tuple(augment["mean"]) == IMAGENET_MEAN and published["ct"].hparams["channel_mode"] == "rgb"
    quick = expand(STUDY, "quick", data_dir=medmnist_dir)  # the smoke data has no left/right classes
    assert not any("ct_hflip" in s.decisions for s in quick.specs) and len(quick.pretrain) == 3


def test_reported_confusions_and_coronal_recalls_name_the_studys_classes():
    """The report's text: CRC's muscle/stroma confusions of BT readout; coronal readout per organ (Figs. 2, 3)."""
    rows = {(r.dataset, r.method, r.fraction, r.metric): r for r in STUDY.reported if r.metric != "accuracy"}
    confusions = {(f, m): r.value for (ds, _, f, m), r in rows.items() if m.startswith("confusion:")}
    muscle_to_stroma, stroma_to_muscle = confusion_metric(MUSCLE, STROMA), confusion_metric(STROMA, MUSCLE)
    assert confusions == {(1.0, muscle_to_stroma): 0.0507, (1.0, stroma_to_muscle): 0.056,
                          (0.005, stroma_to_muscle): 0.0896, (0.005, muscle_to_stroma): 0.1203}
    coronal = {(method, m.split(":", 1)[1]): r for (ds, method, _, m), r in rows.items() if ds == "organs_coronal"}
    assert {organ for _, organ in coronal} == set(ORGANS)  # the names paper_classes' recall table looks up
    assert {r.protocol for r in coronal.values()} == {"readout"} and {r.fraction for r in coronal.values()} == {1.0}
    assert coronal[("barlow", "heart")].value == 1.0 and coronal[("imagenet", "left kidney")].value == 0.4286
    assert coronal[("imagenet", "right lung")].value == 0.0
    assert coronal[("barlow", "pancreas")].value is None and "above 90 %" in coronal[("barlow", "pancreas")].note


def test_reduced_quick_replication_end_to_end(tmp_path, medmnist_dir):
    quick = STUDY.profile("quick")
    overrides = deep_merge(quick.overrides, {
        "pretrain": {"pretrain_subset": 256, "train": {"epochs": 1, "monitor_every": 1}},
        "protocols": {p: {"protocol": {"fit": {"epochs": 2}}} for p in ("readout", "full")}})
    ci = replace(quick, name="ci", seeds=(0,), variant_seeds={}, datasets=("smoke_breast",), overrides=overrides)
    study = replace(STUDY, profiles=(*STUDY.profiles, ci))
    plan = expand(study, "ci", data_dir=medmnist_dir)
    assert len(plan.pretrain) == 2 and len(plan.evaluate) == 2 * 3 * 2  # variants x (readout, full, scratch) x 2
    store, ctx = cpu_store(tmp_path, medmnist_dir)
    execute_cleanly(plan, store, ctx)
    n = run_sql(store.db_path, "SELECT decisions LIKE '%split=as_published%', fraction, min(value) FROM run_metrics "
                               "WHERE metric = 'n_labelled' GROUP BY ALL ORDER BY ALL")[1]
    # as published: 80 % of BreastMNIST's 780 images, then random_split(train, [0.25, 0.75]); corrected: the
    # official 546 training images, a stratified 25 %
    assert n == [(False, 0.25, 137.0), (False, 1.0, 546.0), (True, 0.25, 156.0), (True, 1.0, 624.0)]
    confusion = run_sql(store.db_path, "SELECT sum(value) FROM run_metrics WHERE split = 'test' AND metric LIKE "
                                       "'confusion%' GROUP BY run_id")[1]
    assert {c for (c,) in confusion} == {156.0, 78.0}  # official test 156 images, the random 10 % 78
    out = tmp_path / "paper"
    generate(study, store.db_path, out)
    assert (out / "ci" / "confusion_smoke_breast.png").stat().st_size > 10_000
    # the corrected readout probes frozen features and saves them: t-SNE without a kNN evaluation
    assert (out / "ci" / "tsne.png").stat().st_size > 10_000
    assert "decisions.md" in {p.name for p in (out / "ci").iterdir()}


def test_the_recall_table_sets_the_reported_confusion_rates_beside_the_runs():
    """The report's muscle -> stroma rates (declared as confusion:<true>-><predicted>) sit beside the same cell of
    the runs' row-normalised test confusion matrices, as the recalls sit beside its diagonal."""
    from medssl_core.paper.classes import recall_table

    study = get_study("mimeta_barlow")
    names = list(study.dataset("crc").classes)
    m, s = names.index(MUSCLE), names.index(STROMA)
    rows = []
    for seed, confused in ((0, 5), (1, 7)):  # of 100 muscle images, this many predicted as stroma
        counts = np.eye(len(names)) * 100
        counts[m, m], counts[m, s] = 100 - confused, confused
        rows += [{"split": "test", "metric": f"confusion_{t}_{p}", "value": float(counts[t, p]), "run_id": f"r{seed}",
                  "dataset": "crc", "dataset_used": "mimeta_crc", "method": "barlow", "protocol": "readout",
                  "fraction": 1.0, "decisions": "", "config_id": "c" * 16, "precision": "fp32", "environment": "x",
                  "tuned": None, "kept_stale": ""}
                 for t in range(len(names)) for p in range(len(names))]
    _, table = recall_table(study, rows)
    rate = next(r for r in table if r[6] == f"{MUSCLE} -> {STROMA}")
    assert rate[7].startswith("6.00 ± 1.41 (n=2)") and rate[8] == "5.07" and rate[9] == "+0.93"
    recall = next(r for r in table if r[6] == MUSCLE)
    assert recall[7].startswith("94.00") and confusion_metric(MUSCLE, STROMA) == f"confusion:{MUSCLE}->{STROMA}"
    assert len(table) == len(names) + 2  # every recall, and the two rates the report quotes at 100 %
