"""The pretraining dataset as its own axis: transfer between datasets and pretraining on sources merged."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from medssl_core.common.errors import ConfigError, DataError
from medssl_core.data import get_dataset, load_dataset
from medssl_core.paper.generate import generate
from medssl_core.plan.catalog import get_study
from medssl_core.plan.grid import expand
from medssl_core.plan.study import StudyDataset
from medssl_core.store import run_sql
from tests.conftest import cpu_store, execute_cleanly
from tests.medimeta_layout import write_medimeta

DEMO = get_study("demo")
BREAST = StudyDataset("breast", "BreastMNIST", ("breastmnist",), {"scheme": "official"},
                      pretrained_on=("breast", "pneumonia"))
PNEUMONIA = StudyDataset("pneumonia", "PneumoniaMNIST", ("pneumoniamnist",), {"scheme": "official"},
                         pretrained_on=("pneumonia", "breast"))


def transfer_study(epochs: int = 1):
    quick = DEMO.profile("quick")
    profile = replace(quick, name="t", seeds=(0,), image_size={"breastmnist": 28, "pneumoniamnist": 28},
                      overrides={"pretrain": {"pretrain_subset": 256, "train": {"epochs": epochs}}})
    return replace(DEMO, name="transfer_demo", datasets=(BREAST, PNEUMONIA), profiles=(profile,))


def test_each_dataset_is_evaluated_with_its_own_and_the_other_pretraining(medmnist_dir):
    plan = expand(transfer_study(), "t", data_dir=medmnist_dir)
    pre = {s.dataset: s for s in plan.pretrain}
    assert sorted(pre) == ["breast", "pneumonia"]  # one pretraining per dataset, shared by both evaluations
    pairs = sorted((s.dataset, s.pretrain.dataset if s.pretrain else "", s.method, s.protocol)
                   for s in plan.evaluate)
    assert pairs == sorted([(ds, p, "simclr", proto) for ds in ("breast", "pneumonia")
                            for p in ("breast", "pneumonia") for proto in ("knn", "linear")]
                           + [(ds, "", "random_init", proto) for ds in ("breast", "pneumonia")
                              for proto in ("knn", "linear")])
    for s in plan.evaluate:
        if s.pretrain is not None:
            assert s.parent == pre[s.pretrain.dataset].run_id
            assert s.hparams["n_classes"] == 2 and s.dataset_used == get_dataset(s.dataset_used).name
    # asking for one evaluated dataset still plans the other's pretraining that it uses
    only = expand(transfer_study(), "t", data_dir=medmnist_dir, datasets=["breast"])
    assert {s.dataset for s in only.pretrain} == {"breast", "pneumonia"}
    assert {s.dataset for s in only.evaluate} == {"breast"}


def test_transfer_declarations_are_checked(medmnist_dir):
    with pytest.raises(ConfigError, match="unknown pretraining dataset"):
        replace(DEMO, datasets=(replace(BREAST, pretrained_on=("nih",)),))
    # an encoder for 3 channels cannot be evaluated on a backbone of 1
    blood = StudyDataset("blood", "BloodMNIST", ("bloodmnist",), {"scheme": "official"})
    grey = replace(BREAST, hparams={"channel_mode": "native"}, pretrained_on=("blood",))
    study = replace(transfer_study(), datasets=(grey, replace(blood, evaluated=False)))
    study = replace(study, profiles=(replace(study.profiles[0], image_size={"breastmnist": 28, "bloodmnist": 28}),))
    with pytest.raises(ConfigError, match="input channels: 3 vs 1"):
        expand(study, "t", data_dir=medmnist_dir)  # plans bloodmnist's download; fetches nothing
    with pytest.raises(ConfigError, match="no dataset is evaluated"):
        replace(DEMO, datasets=(replace(DEMO.datasets[0], evaluated=False),))


def test_transfer_runs_and_the_tables_show_transfer_cells(tmp_path, medmnist_dir):
    study = transfer_study()
    plan = expand(study, "t", data_dir=medmnist_dir, methods=["simclr"], protocols=["knn"])
    store, ctx = cpu_store(tmp_path, medmnist_dir)
    execute_cleanly(plan, store, ctx)
    rows = run_sql(store.db_path, "SELECT dataset, pretrain_dataset, count(*) FROM runs WHERE kind = 'evaluate' "
                                  "GROUP BY ALL ORDER BY ALL")[1]
    assert rows == [("breast", "breast", 1), ("breast", "pneumonia", 1), ("pneumonia", "breast", 1),
                    ("pneumonia", "pneumonia", 1)]
    generate(study, store.db_path, tmp_path / "paper", data_dir=medmnist_dir, tsne=False)
    table = (tmp_path / "paper" / "t" / "main_as_published.md").read_text()
    header = table.splitlines()[4]
    for column in ("breast (breastmnist)", "breast (breastmnist ← pneumonia)", "pneumonia (pneumoniamnist)",
                   "pneumonia (pneumoniamnist ← breast)"):
        assert f"| {column} accuracy" in header, header


def _organ_view(root, view: str, labels: list[int], shade: int) -> None:
    n = len(labels)
    write_medimeta(root, f"organs_{view}", labels, {"train": list(range(n - 2)), "val": [n - 2], "test": [n - 1]},
                   hdf5=view == "axial", side=8, shade=shade)


def test_merged_sources_load_as_one_dataset(tmp_path):
    _organ_view(tmp_path, "axial", [0, 1, 2, 3, 4], 10)
    _organ_view(tmp_path, "coronal", [5, 6, 7, 8], 100)
    merged = load_dataset("mimeta_organs_axial+mimeta_organs_coronal", 8, tmp_path)
    assert merged.info.kind == "merged" and merged.info.n_classes == 11
    assert merged.labels["train"].tolist() == [0, 1, 2, 5, 6] and merged.labels["test"].tolist() == [4, 8]
    axial = load_dataset("mimeta_organs_axial", 8, tmp_path)
    assert np.array_equal(merged.images["train"][:3], axial.images["train"])
    assert merged.source_index["train"].tolist() == [0, 1, 2, 5, 6]  # offset past the first part: unique
    assert len(merged.files) == len(axial.files) * 2
    with pytest.raises(DataError, match="cannot be merged"):
        get_dataset("breastmnist+bloodmnist")
    with pytest.raises(DataError, match="two or more different"):
        get_dataset("breastmnist+breastmnist")


def test_label_fractions_per_dataset_and_no_labels_beyond_them(medmnist_dir):
    study = transfer_study()
    fractions = replace(study, datasets=(replace(BREAST, fractions=(0.1, 1.0)), PNEUMONIA))
    with pytest.raises(ConfigError, match="checkpoint 'best' is selected by the pretraining's kNN monitor"):
        expand(fractions, "t", data_dir=medmnist_dir)
    plan = expand(replace(fractions, evaluate_defaults={"checkpoint": "last"}), "t", data_dir=medmnist_dir)
    by_dataset = {(s.dataset, s.fraction) for s in plan.evaluate}
    assert by_dataset == {("breast", 0.1), ("breast", 1.0), ("pneumonia", 1.0)}
    with pytest.raises(ConfigError, match="label fractions lie in"):
        replace(BREAST, fractions=(0.0, 1.0))


def test_label_efficiency_figure_needs_two_fractions(tmp_path):
    from medssl_core.paper.figures import efficiency_points, label_efficiency_figure

    def row(fraction, seed, value, config="c"):
        return {"split": "test", "metric": "accuracy", "fraction": fraction, "value": value, "kept_stale": "",
                "tuned": False, "decisions": "crop_scale=as_published", "dataset_used": "breastmnist",
                "dataset": "breastmnist", "method": "simclr", "protocol": "linear", "seed": seed,
                "config_id": f"{config}{fraction}"}

    rows = [row(f, s, 0.6 + f / 4 + s / 100) for f in (0.01, 0.1, 1.0) for s in (0, 1)]
    other = row(1.0, 0, 0.1, config="edited")  # another setting at 100 %: never averaged into that point
    points, several = efficiency_points([*rows, other])
    assert several and points[1.0] == pytest.approx([85.0, 86.0]) and len(points[0.1]) == 2
    written = label_efficiency_figure(DEMO, rows, "accuracy", tmp_path)
    assert [p.name for p in written] == ["label_efficiency.png", "label_efficiency.pdf"]
    assert (tmp_path / "label_efficiency.png").stat().st_size > 10_000
    assert label_efficiency_figure(DEMO, [r for r in rows if r["fraction"] == 1.0], "accuracy", tmp_path) == []
