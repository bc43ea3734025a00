"""NIH ChestX-ray14 and CheXpert on their real metadata, which the torchxrayvision wheel ships
(``Data_Entry_2017_v2020.csv.gz``, ``chexpert_train.csv.gz``), read from the installed package. Tiny PNGs
written into tmp_path stand in for the images of a few real rows."""

from __future__ import annotations

import csv
import gzip
import importlib.util
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from medssl_core.common.errors import ConfigError
from medssl_core.config import Split, parse
from medssl_core.data import ArrayDataset, get_dataset, load_dataset
from medssl_core.data.chest import (
    CHEXPERT_COMPETITION,
    CHEXPERT_OBSERVATIONS,
    NIH_FINDINGS,
    apply_label_policy,
    read_chexpert_metadata,
    read_nih_metadata,
)
from medssl_core.data.labels import MISSING
from medssl_core.data.split_schemes import assign, split_dataset
from medssl_core.data.splits import label_fraction


def _xrv_data() -> Path | None:
    spec = importlib.util.find_spec("torchxrayvision")  # located, never imported (it imports torchvision)
    return Path(spec.submodule_search_locations[0]) / "data" if spec else None


XRV_DATA = _xrv_data()
pytestmark = pytest.mark.skipif(
    XRV_DATA is None, reason="torchxrayvision is not installed: its wheel ships the real NIH ChestX-ray14 and "
    "CheXpert metadata these tests read (it is in the dev extra; pip install -c constraints.txt torchxrayvision)")
NIH_CSV, CHEXPERT_CSV = "Data_Entry_2017_v2020.csv.gz", "chexpert_train.csv.gz"


@pytest.fixture(scope="module")
def nih():
    return read_nih_metadata(XRV_DATA / NIH_CSV)


@pytest.fixture(scope="module")
def chexpert():
    return read_chexpert_metadata(XRV_DATA / CHEXPERT_CSV, CHEXPERT_OBSERVATIONS)


def _whole(name: str, meta) -> ArrayDataset:
    """Metadata as a dataset of one split 'all' in CSV order (no images: schemes never read them)."""
    return ArrayDataset(get_dataset(name), None, {}, {"all": meta.labels}, {"all": meta.patient_ids},
                        views={"all": meta.views}, source_index={"all": np.arange(len(meta))})


def _roles(indices) -> dict[str, np.ndarray]:
    return {r: indices.of(r) for r in ("train", "val", "test")}


# -- the real metadata parses to the published counts ----------------------------------------------------------
def test_nih_metadata_counts(nih):
    assert len(nih) == 112_120
    patients, per_patient = np.unique(nih.patient_ids, return_counts=True)
    assert len(patients) == 30_805 and (per_patient > 1).sum() == 13_302
    assert dict(zip(*np.unique(nih.views, return_counts=True))) == {"AP": 44_810, "PA": 67_310}
    assert (nih.labels.sum(axis=1) == 0).sum() == 60_361  # 'No Finding'
    assert dict(zip(NIH_FINDINGS, nih.labels.sum(axis=0).tolist())) == {
        "Atelectasis": 11_559, "Cardiomegaly": 2_776, "Effusion": 13_317, "Infiltration": 19_894, "Mass": 5_782,
        "Nodule": 6_331, "Pneumonia": 1_431, "Pneumothorax": 5_302, "Consolidation": 4_667, "Edema": 2_303,
        "Emphysema": 2_516, "Fibrosis": 1_686, "Pleural_Thickening": 3_385, "Hernia": 227}


def test_chexpert_metadata_counts_and_uncertain_policies(chexpert):
    assert len(chexpert) == 223_414 and len(np.unique(chexpert.patient_ids)) == 64_540
    assert dict(zip(*np.unique(chexpert.views, return_counts=True))) == {
        "AP": 161_590, "PA": 29_420, "LL": 16, "RL": 1, "lateral": 32_387}  # frontal: 191,027
    atelectasis = chexpert.labels[:, CHEXPERT_OBSERVATIONS.index("Atelectasis")]
    assert dict(zip(*np.unique(atelectasis, return_counts=True))) == {-2: 154_971, -1: 33_739, 0: 1_328, 1: 33_376}
    codes = atelectasis[:, None]
    assert (apply_label_policy(codes, "zeros", "negative") == 1).sum() == 33_376
    assert (apply_label_policy(codes, "ones", "negative") == 1).sum() == 33_376 + 33_739
    assert (apply_label_policy(codes, "ignore", "negative") == MISSING).sum() == 33_739
    assert (apply_label_policy(codes, "ignore", "missing") == MISSING).sum() == 33_739 + 154_971
    assert (apply_label_policy(codes, "zeros", "missing") == 0).sum() == 1_328 + 33_739


# -- splits on the full real metadata ---------------------------------------------------------------------------
def test_medsgssl_patient_split_is_reproduced_on_real_nih(nih):
    """MedSGSSL: train_test_split(unique patients, 0.02, random_state=42), then 0.052 of the rest (options 1-6:
    train 103,847 / val 5,974 / test 2,299 images), 0.054 for options 7/8/10 (103,634 / 6,187 / 2,299)."""
    ds = _whole("nih_chestxray14", nih)
    split = parse(Split, {"scheme": "patient", "test_fraction": 0.02, "val_fraction": 0.052, "fixed_seed": 42}, "t")
    roles = _roles(assign(ds, split, 42))
    assert [len(v) for v in roles.values()] == [103_847, 5_974, 2_299]
    sides = {r: set(nih.patient_ids[v]) for r, v in roles.items()}
    assert [len(p) for p in sides.values()] == [28_618, 1_570, 617]
    assert not (sides["train"] & sides["val"] or sides["train"] & sides["test"] or sides["val"] & sides["test"])
    assert all(np.all(np.diff(v) > 0) for v in roles.values())  # CSV order, as df[df.isin(...)] keeps it
    assert abs(2_299 / len(nih) - 0.02) < 0.002 and abs(5_974 / (len(nih) - 2_299) - 0.052) < 0.005
    again = _roles(assign(ds, split, 42))
    assert all(np.array_equal(roles[r], again[r]) for r in roles)
    other = _roles(assign(ds, split, 7))
    assert not np.array_equal(roles["test"], other["test"]) and len(set(nih.patient_ids[other["test"]])) == 617
    wider = split.model_copy(update={"val_fraction": 0.054})
    assert [len(v) for v in _roles(assign(ds, wider, 42)).values()] == [103_634, 6_187, 2_299]


def test_patient_split_of_official_parts_follows_the_csv_order(nih):
    """The official train_val/test lists (not shipped) as two parts in another order: the pool is CSV order."""
    rows = np.random.default_rng(0).permutation(len(nih))
    parts = {"train_val": rows[:86_524], "test": rows[86_524:]}
    ds = ArrayDataset(get_dataset("nih_chestxray14"), None, {}, {p: nih.labels[r] for p, r in parts.items()},
                      {p: nih.patient_ids[r] for p, r in parts.items()}, source_index=parts)
    split = parse(Split, {"scheme": "patient", "merge": ["train_val", "test"], "test_fraction": 0.02,
                          "val_fraction": 0.052}, "t")
    indices = assign(ds, split, 42)
    assert [len(v) for v in _roles(indices).values()] == [103_847, 5_974, 2_299]
    pool = indices.pool
    csv_row = np.empty(len(pool), dtype=np.int64)
    for k, part in enumerate(pool.parts):
        csv_row[pool.part == k] = parts[part][pool.row[pool.part == k]]
    assert np.array_equal(csv_row, np.arange(len(nih)))  # pool position = CSV row
    expected = _roles(assign(_whole("nih_chestxray14", nih), split.model_copy(update={"merge": ()}), 42))
    assert all(np.array_equal(indices.of(r), expected[r]) for r in expected)


def test_gravity_chexpert_patient_split_then_sampled_subsets(chexpert):
    """Gravity-2010: patient-level 85/15 of CheXpert train (frontal filter here), then df.sample(5000) of train and
    df.sample(1000) of val with random_state=42."""
    ds = _whole("chexpert_small_14", chexpert)
    ds.label_codes["all"] = chexpert.labels
    split = parse(Split, {"scheme": "patient", "val_fraction": 0.15, "views": ["frontal"], "uncertain": "zeros",
                          "blank": "negative", "seed_policy": "per_run"}, "t")
    base = assign(ds, split, 1001)
    train_p, val_p = (set(chexpert.patient_ids[base.pool.row[base.of(r)]]) for r in ("train", "val"))
    assert not train_p & val_p and len(base.test) == 0
    assert len(val_p) == int(np.ceil(0.15 * (len(train_p) + len(val_p))))
    assert len(base.train) + len(base.val) == 191_027
    assert np.all(chexpert.views[base.pool.row[np.concatenate([base.train, base.val])]] != "lateral")
    sampled = split.model_copy(update={"scheme": "sample", "base": "patient", "sizes": {"train": 5000, "val": 1000},
                                       "sample_seed": 42})
    subsets = assign(ds, parse(Split, sampled.model_dump(), "t"), 1001)
    assert len(subsets.train) == 5000 and len(subsets.val) == 1000
    assert set(subsets.train) <= set(base.train) and set(subsets.val) <= set(base.val)
    pick = np.random.RandomState(42).choice(len(base.train), 5000, replace=False)  # pandas' DataFrame.sample
    assert np.array_equal(subsets.train, base.train[pick])
    assert set(np.unique(base.pool.labels)) == {0, 1}  # U-Zeros, blanks negative


def test_gravity_70_percent_of_patients_on_real_chexpert(chexpert):
    """np.random.choice(unique patients, int(0.7 n), replace=False): 45,178 of 64,540 patients, as the study
    printed, every image of each; then the patient-level 85/15 split of those patients only."""
    ds = _whole("chexpert_small_14", chexpert)
    ds.label_codes["all"] = chexpert.labels
    split = parse(Split, {"scheme": "patient", "val_fraction": 0.15, "patient_fraction": 0.7, "uncertain": "zeros",
                          "blank": "negative"}, "t")
    indices = assign(ds, split, 3)
    kept = np.concatenate([indices.train, indices.val])
    patients = chexpert.patient_ids[indices.pool.row[kept]]
    assert len(np.unique(patients)) == 45_178
    assert len(kept) == np.isin(chexpert.patient_ids, patients).sum()  # all their images, nobody else's
    assert 150_000 < len(kept) < 163_000  # the study's cells: 156,649 / 156,573 / 156,159
    train_p, val_p = (set(chexpert.patient_ids[indices.pool.row[indices.of(r)]]) for r in ("train", "val"))
    assert not train_p & val_p and len(val_p) == int(np.ceil(0.15 * 45_178))
    other = assign(ds, split, 4)
    assert not np.array_equal(np.sort(other.train), np.sort(indices.train))  # the seed draws the patients


def test_pandas_sample_label_fraction_is_the_same_for_every_seed():
    """label_fraction 'sample': train.sample(int(f n), random_state=sample_seed), whatever the run's seed."""
    from medssl_core.data.split_schemes import label_subset

    labels = np.zeros((500, 5), dtype=np.int64)
    split = parse(Split, {"scheme": "sample", "base": "official", "sizes": {"train": 10}, "sample_seed": 42,
                          "label_fraction": "sample"}, "t")
    picked = [label_subset(None, split, 0, labels, 0.05, seed) for seed in (0, 1)]
    assert np.array_equal(picked[0], picked[1]) and len(picked[0]) == 25
    assert np.array_equal(picked[0], np.random.RandomState(42).choice(500, 25, replace=False))


def test_label_fraction_on_real_nih_labels(nih):
    """1 % of the 14-label set is 1 % of the images (1,121 of 112,120), each label near 1 % of its positives."""
    labels = nih.labels
    one, ten = label_fraction(labels, 0.01, seed=0), label_fraction(labels, 0.1, seed=0)
    assert len(one) == 1_121 and len(ten) == 11_212 and set(one) <= set(ten)
    for f, keep in ((0.01, one), (0.1, ten)):
        expected = f * labels.sum(axis=0)
        got = labels[keep].sum(axis=0)
        assert np.all(np.abs(got - expected) <= 3 * np.sqrt(expected) + 1), (f, got, expected)
        assert abs((labels[keep].sum(axis=1) == 0).sum() - f * 60_361) <= 3 * np.sqrt(f * 60_361)
    assert labels[one].sum(axis=0).min() >= 1  # Hernia, 227 images, keeps 2
    assert np.array_equal(one, label_fraction(labels, 0.01, seed=0))


# -- the readers on real rows, with tiny PNGs for the images ------------------------------------------------------
def _real_lines(name: str, rows: np.ndarray) -> tuple[str, list[str]]:
    lines = gzip.decompress((XRV_DATA / name).read_bytes()).decode().splitlines()
    return lines[0], [lines[r + 1] for r in rows]


def _write_image(path: Path, value: int) -> None:
    """A PNG whatever the suffix (OpenCV reads by content), so pixel values survive exactly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cv2.imencode(".png", np.full((12, 10), value, dtype=np.uint8))[1].tobytes())


def test_nih_reader_on_real_rows(tmp_path, nih):
    hernia = np.flatnonzero(nih.labels[:, NIH_FINDINGS.index("Hernia")])
    hernia = hernia[hernia >= 30][:10]
    ap = np.setdiff1d(np.flatnonzero(nih.views == "AP"), np.concatenate([np.arange(30), hernia]))[:10]
    rows = np.unique(np.concatenate([np.arange(30), hernia, ap]))  # 50 real rows, both views, 10+ Hernia
    header, lines = _real_lines(NIH_CSV, rows)
    root = tmp_path / "NIH_ChestXray14"
    root.mkdir()
    with gzip.open(root / NIH_CSV, "wt") as f:  # the v2020 name, gzipped
        f.write("\n".join([header, *lines]) + "\n")
    for k, line in enumerate(lines):  # Kaggle's layout: images_001/images/, images_002/images/
        _write_image(root / f"images_{1 + k % 2:03d}" / "images" / line.split(",")[0], 3 * k + 1)
    ds = load_dataset("nih_chestxray14", 8, tmp_path)
    assert list(ds.labels) == ["all"] and len(ds.labels["all"]) == len(rows) == 50
    assert ds.labels["all"][:, NIH_FINDINGS.index("Hernia")].sum() >= 10 and set(ds.views["all"]) == {"AP", "PA"}
    parsed = list(csv.reader(lines))
    for k, fields in enumerate(parsed):  # Finding Labels, Patient ID, View Position from the raw text
        found = set(fields[1].split("|"))
        assert ds.labels["all"][k].tolist() == [int(c in found) for c in NIH_FINDINGS]
        assert ds.patient_ids["all"][k] == fields[3] and ds.views["all"][k] == fields[6]
        assert ds.images["all"][k].min() == ds.images["all"][k].max() == 3 * k + 1
    pa = split_dataset(ds, parse(Split, {"scheme": "official", "roles": {"train": "all"}, "views": ["PA"]}, "t"), 0)
    assert len(pa["train"].labels) == sum(f[6] == "PA" for f in parsed) and len(pa["test"].labels) == 0
    assert set(pa["train"].images[:, 0, 0, 0].tolist()) == {3 * k + 1 for k, f in enumerate(parsed) if f[6] == "PA"}
    by_patient = split_dataset(ds, parse(Split, {"scheme": "patient", "test_fraction": 0.2, "val_fraction": 0.2},
                                         "t"), 42)
    sides = [set(by_patient[r].patient_ids) for r in ("train", "val", "test")]
    assert sum(len(by_patient[r].labels) for r in by_patient) == 50 and all(sides)
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])


_CODES = {"1.0": 1, "0.0": 0, "-1.0": -1, "": -2}


def test_chexpert_reader_on_real_rows(tmp_path, chexpert):
    pa, ll = np.flatnonzero(chexpert.views == "PA")[:6], np.flatnonzero(chexpert.views == "LL")[:2]
    rows = np.unique(np.concatenate([np.arange(40), pa, ll]))
    header, lines = _real_lines(CHEXPERT_CSV, rows)
    root = tmp_path / "CheXpert-v1.0-small"
    root.mkdir()
    valid = [line.replace("/train/", "/valid/", 1) for line in lines[:4]]
    for name, part in (("train.csv", lines), ("valid.csv", valid)):
        (root / name).write_text("\n".join([header, *part]) + "\n")
        for k, line in enumerate(part):
            _write_image(tmp_path / line.split(",")[0], k + 1)
    ds = load_dataset("chexpert_small_14", 8, tmp_path)
    assert len(ds.labels["train"]) == len(rows) and len(ds.labels["valid"]) == 4
    raw = list(csv.DictReader([header, *lines]))
    codes = np.asarray([[_CODES[r[c]] for c in CHEXPERT_OBSERVATIONS] for r in raw])
    assert np.array_equal(ds.label_codes["train"], codes)
    assert ds.patient_ids["train"].tolist() == [re.search(r"patient\d+", r["Path"]).group(0) for r in raw]
    lateral = np.asarray([r["Frontal/Lateral"] == "Lateral" for r in raw])
    assert lateral.any() and {"PA", "AP", "LL"} <= set(ds.views["train"].tolist())
    declared = {"scheme": "official", "views": ["frontal"]}
    with pytest.raises(ConfigError, match=r"declare split\.uncertain"):
        split_dataset(ds, parse(Split, declared, "t"), 0)
    for uncertain, blank, expected in (("zeros", "negative", np.where(codes == 1, 1, 0)),
                                       ("ones", "negative", np.where((codes == 1) | (codes == -1), 1, 0)),
                                       ("ignore", "missing", np.where(codes < 0, MISSING, codes))):
        got = split_dataset(ds, parse(Split, {**declared, "uncertain": uncertain, "blank": blank}, "t"), 0)
        assert np.array_equal(got["train"].labels, expected[~lateral])
        assert got["train"].images[:, 0, 0, 0].tolist() == [k + 1 for k in np.flatnonzero(~lateral)]
        assert len(got["val"].labels) == (~lateral[:4]).sum() == 3  # CheXpert's valid plays val
        assert len(got["test"].labels) == 0
    only_lateral = split_dataset(ds, parse(Split, {"scheme": "official", "views": ["lateral"], "uncertain": "zeros",
                                                   "blank": "negative"}, "t"), 0)
    assert len(only_lateral["train"].labels) == lateral.sum()
    ssl_pool = split_dataset(ds, parse(Split, {"scheme": "official", "roles": {"train": ["train", "valid"], "val": []},
                                               "views": ["frontal"], "uncertain": "zeros", "blank": "negative"},
                                         "t"), 0)  # MedSGSSL's SSL set: CheXpert train + valid, frontal only
    assert len(ssl_pool["train"].labels) == (~lateral).sum() + 3 and len(ssl_pool["val"].labels) == 0
    five = load_dataset("chexpert_small", 8, tmp_path)  # the competition labels: columns of the 14, in order
    columns = [CHEXPERT_OBSERVATIONS.index(c) for c in CHEXPERT_COMPETITION]
    assert np.array_equal(five.label_codes["train"], codes[:, columns])
