from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medssl_core.cli import main
from medssl_core.common.errors import ConfigError, DataError
from medssl_core.config import Data, Split, parse
from medssl_core.data import REGISTRY, ArrayDataset, get_dataset, load_dataset
from medssl_core.data import dataset as dsmod
from medssl_core.data.locate import data_dirs, md5_file
from medssl_core.data.medmnist_info import MEDMNIST, MedMNISTInfo
from medssl_core.data.sources import load_chexpert
from medssl_core.data.split_schemes import SCHEMES, get_scheme, split_dataset
from medssl_core.data.splits import label_fraction, patient_split, stratified_split
from medssl_core.plan.runspec import RunSpec
from medssl_core.run import inputs as run_inputs
from medssl_core.run.context import Context


def test_registry_covers_all_medmnist_2d_and_the_original_sources():
    assert len(MEDMNIST) == 12
    assert all(set(i.md5) == {28, 64, 128, 224} for i in MEDMNIST.values())
    for name in ("breakhis400x", "kather2016", "kermany_cxr", "nih_chestxray14", "chexpert_small",
                 "mimeta_organs_axial", "mimeta_crc"):
        assert name in REGISTRY
    assert get_dataset("dermamnist").licence == "CC BY-NC 4.0"
    assert get_dataset("chestmnist").task == "multi-label" and get_dataset("chestmnist").n_classes == 14


def test_unknown_dataset_name_suggests_close_names():
    with pytest.raises(DataError, match="Did you mean pneumoniamnist"):
        get_dataset("pneumonimnist")


def test_real_files_verify_and_load(medmnist_dir):
    for flag, counts in (("pneumoniamnist", (4708, 524, 624)), ("breastmnist", (546, 78, 156))):
        ds = load_dataset(flag, 28, medmnist_dir, allow_download=False)
        assert tuple(ds.counts().values()) == counts
        assert ds.images["train"].shape[1:] == (28, 28, 1) and ds.images["train"].dtype == np.uint8
        assert set(np.unique(ds.labels["test"])) == {0, 1}


def test_cli_verify_real_and_truncated(medmnist_dir, tmp_path, capsys):
    assert main(["data", "verify", "pneumoniamnist", "--data-dir", str(medmnist_dir)]) == 0
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "pneumoniamnist.npz").write_bytes((medmnist_dir / "pneumoniamnist.npz").read_bytes()[:100_000])
    assert main(["data", "verify", "pneumoniamnist", "--data-dir", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "pneumoniamnist.npz" in err and "truncated" in err and "medssl data fetch" in err


def _patched_info(monkeypatch, flag: str, path: Path, counts) -> None:
    info = MEDMNIST[flag]
    patched = MedMNISTInfo(info.flag, info.task, info.labels, info.channels, counts, {28: md5_file(path)})
    monkeypatch.setitem(dsmod.MEDMNIST, flag, patched)


def test_wrong_split_counts_and_shapes_are_refused(tmp_path, monkeypatch, medmnist_dir):
    src = np.load(medmnist_dir / "breastmnist.npz")
    arrays = {k: src[k] for k in src.files}
    arrays["val_labels"] = arrays["val_labels"][:-1]
    path = tmp_path / "breastmnist.npz"
    np.savez(path, **arrays)
    _patched_info(monkeypatch, "breastmnist", path, (546, 78, 156))
    with pytest.raises(DataError, match="val has 77 labels, the official count is 78"):
        dsmod.verify_medmnist_file(path, "breastmnist", 28)
    arrays = {k: src[k] for k in src.files}
    arrays["test_images"] = arrays["test_images"][:, :27]
    np.savez(path, **arrays)
    _patched_info(monkeypatch, "breastmnist", path, (546, 78, 156))
    with pytest.raises(DataError, match=r"test_images is uint8\(156, 27, 28\), expected uint8\(156, 28, 28\)"):
        dsmod.verify_medmnist_file(path, "breastmnist", 28)


def test_not_an_npz_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "breastmnist.npz"
    path.write_bytes(b"this is not a zip file" * 100)
    _patched_info(monkeypatch, "breastmnist", path, (546, 78, 156))
    with pytest.raises(DataError, match="cannot be read as an npz"):
        dsmod.verify_medmnist_file(path, "breastmnist", 28)


def test_lookup_order(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSSL_DATA", str(tmp_path / "env"))
    dirs = data_dirs(tmp_path / "explicit")
    assert dirs == [tmp_path / "explicit", tmp_path / "env", Path("~/.medmnist").expanduser()]


def test_missing_dataset_without_download_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="medssl data fetch pathmnist"):
        load_dataset("pathmnist", 28, tmp_path, allow_download=False)


def test_download_from_local_server_verifies_and_writes_atomically(http_server, tmp_path, monkeypatch, medmnist_dir):
    root, url = http_server
    shutil.copy(medmnist_dir / "breastmnist.npz", root / "breastmnist.npz")
    monkeypatch.setenv("MEDSSL_MIRROR", url)
    target = tmp_path / "data"
    assert main(["data", "fetch", "breastmnist", "--data-dir", str(target)]) == 0
    assert md5_file(target / "breastmnist.npz") == MEDMNIST["breastmnist"].md5[28]
    assert sorted(p.name for p in target.iterdir()) == ["breastmnist.npz"]
    # and load_dataset downloads on demand
    ds = load_dataset("breastmnist", 28, tmp_path / "other")
    assert ds.counts()["train"] == 546


def test_download_with_wrong_checksum_leaves_nothing(http_server, tmp_path, monkeypatch, medmnist_dir, capsys):
    root, url = http_server
    (root / "breastmnist.npz").write_bytes((medmnist_dir / "breastmnist.npz").read_bytes()[:-10] + b"0123456789")
    monkeypatch.setenv("MEDSSL_MIRROR", url)
    target = tmp_path / "data"
    assert main(["data", "fetch", "breastmnist", "--data-dir", str(target)]) == 2
    assert "MD5" in capsys.readouterr().err
    assert not target.exists() or list(target.iterdir()) == []


def test_download_missing_file_is_a_clear_error(http_server, tmp_path, monkeypatch):
    _, url = http_server
    monkeypatch.setenv("MEDSSL_MIRROR", url)
    with pytest.raises(DataError, match="Could not download"):
        dsmod.fetch_medmnist("breastmnist", 28, tmp_path / "d", progress=False)
    assert not (tmp_path / "d" / "breastmnist.npz").exists()


# -- original sources ---------------------------------------------------------------------------------------
def _write_png(path: Path, value: int, channels: int = 3) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((40, 50, channels) if channels == 3 else (40, 50), value, dtype=np.uint8)
    cv2.imwrite(str(path), img)


def test_breakhis_folders_load_and_missing_class_is_named(tmp_path):
    root = tmp_path / "BreaKHis 400X"
    for split in ("train", "test"):
        for cls, v in (("benign", 10), ("malignant", 200)):
            for i in range(3):
                _write_png(root / split / cls / f"{i}.png", v)
    ds = load_dataset("breakhis400x", 16, tmp_path)
    assert ds.images["train"].shape == (6, 16, 16, 3)
    assert ds.labels["train"].tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.images["train"][0].max() == 10 and ds.images["train"][-1].min() == 200
    shutil.rmtree(root / "test" / "malignant")
    with pytest.raises(DataError, match=r"class folder .*test/malignant is missing"):
        load_dataset("breakhis400x", 17, tmp_path)


def test_nih_empty_csv_is_refused(tmp_path):
    root = tmp_path / "NIH_ChestXray14"
    root.mkdir()
    (root / "Data_Entry_2017.csv").write_text("")
    with pytest.raises(DataError, match="empty"):
        load_dataset("nih_chestxray14", 32, tmp_path)


def _nih_root(tmp_path: Path, lists: bool) -> Path:
    root = tmp_path / "NIH_ChestXray14"
    rows = ["Image Index,Finding Labels,Follow-up #,Patient ID,View Position",
            "a.png,Effusion|Mass,0,1,PA", "b.png,No Finding,0,2,AP", "c.png,Hernia,1,2,PA"]
    (root / "images").mkdir(parents=True)
    (root / "Data_Entry_2017.csv").write_text("\n".join(rows))
    if lists:
        (root / "train_val_list.txt").write_text("b.png\na.png\n")
        (root / "test_list.txt").write_text("c.png\n")
    for v, n in enumerate(("a", "b", "c")):
        _write_png(root / "images" / f"{n}.png", 50 + v, channels=1)
    return root


def test_nih_reads_labels_patients_and_views(tmp_path):
    _nih_root(tmp_path, lists=True)
    ds = load_dataset("nih_chestxray14", 16, tmp_path)
    classes = get_dataset("nih_chestxray14").classes
    assert ds.labels["train_val"][1, classes.index("Effusion")] == 1  # list order: b, a
    assert ds.labels["train_val"][1, classes.index("Mass")] == 1
    assert ds.labels["train_val"][0].sum() == 0
    assert ds.patient_ids["test"].tolist() == ["2"] and ds.views["train_val"].tolist() == ["AP", "PA"]
    assert ds.source_index["train_val"].tolist() == [1, 0] and ds.images["test"][0].max() == 52
    official = split_dataset(ds, parse(Split, {"scheme": "official"}, "t"), 0)  # train <- train_val, in list order
    assert official["train"].patient_ids.tolist() == ["2", "1"] and len(official["val"].labels) == 0
    pooled = split_dataset(ds, parse(Split, {"scheme": "stratified", "test_fraction": 0.34, "val_fraction": 0.5},
                                     "t"), 0)
    assert sorted(int(p.images[i, 0, 0, 0]) for p in pooled.values() for i in range(len(p.labels))) == [50, 51, 52]


def test_nih_without_official_lists_is_one_split_in_csv_order(tmp_path):
    _nih_root(tmp_path, lists=False)
    ds = load_dataset("nih_chestxray14", 16, tmp_path)
    assert list(ds.labels) == ["all"] and ds.patient_ids["all"].tolist() == ["1", "2", "2"]
    assert [int(i[0, 0, 0]) for i in ds.images["all"]] == [50, 51, 52]


def test_nih_unknown_finding_and_half_official_split_are_refused(tmp_path):
    root = _nih_root(tmp_path, lists=True)
    (root / "test_list.txt").unlink()
    with pytest.raises(DataError, match="needs both lists"):
        load_dataset("nih_chestxray14", 16, tmp_path)
    (root / "Data_Entry_2017.csv").write_text("Image Index,Finding Labels,Patient ID,View Position\n"
                                              "a.png,Infiltrate,1,PA\n")
    with pytest.raises(DataError, match="'Infiltrate', which is not one of the 14"):
        load_dataset("nih_chestxray14", 17, tmp_path)


def test_chexpert_uncertain_and_blank_policies(tmp_path):
    root = tmp_path / "CheXpert-v1.0-small"
    header = "Path,Sex,Age,Frontal/Lateral,AP/PA,Atelectasis,Cardiomegaly,Consolidation,Edema,Pleural Effusion"
    for split in ("train", "valid"):
        p = f"CheXpert-v1.0-small/{split}/patient00001/study1/view1_frontal.jpg"
        _write_png(tmp_path / p, 90, channels=1)
        (root / f"{split}.csv").write_text(f"{header}\n{p},Male,50,Frontal,PA,1.0,-1.0,,0.0,-1.0\n")
    info = get_dataset("chexpert_small")
    for policy, blank, expected in (("zeros", "negative", [1, 0, 0, 0, 0]), ("ones", "negative", [1, 1, 0, 0, 1]),
                                    ("ignore", "negative", [1, -1, 0, 0, -1]), ("zeros", "missing", [1, 0, -1, 0, 0]),
                                    ("ignore", "missing", [1, -1, -1, 0, -1])):
        assert load_chexpert(info, root, 8, policy, blank).labels["train"][0].tolist() == expected
    ds = load_chexpert(info, root, 8)
    assert ds.labels["train"][0].tolist() == [1, -1, -1, 0, -1]  # U-Ignore, blank missing: nothing invented
    assert ds.label_codes["train"][0].tolist() == [1, -1, -2, 0, -1]
    assert ds.patient_ids["valid"].tolist() == ["patient00001"] and ds.views["train"].tolist() == ["PA"]
    assert ds.source_index["valid"].tolist() == [1]
    with pytest.raises(DataError, match="uncertain-label policy"):
        load_chexpert(info, root, 8, "maybe")
    with pytest.raises(DataError, match="blank-label policy"):
        load_chexpert(info, root, 8, "zeros", "zero")


# -- splits -------------------------------------------------------------------------------------------------
def test_stratified_split_keeps_class_ratios_and_is_seeded():
    y = np.array([0] * 900 + [1] * 100)
    rest, held = stratified_split(y, 0.1, seed=3)
    assert len(held) == 100 and (y[held] == 1).sum() == 10
    assert set(rest).isdisjoint(held) and len(rest) + len(held) == 1000
    assert np.array_equal(held, stratified_split(y, 0.1, seed=3)[1])
    assert not np.array_equal(held, stratified_split(y, 0.1, seed=4)[1])


def test_patient_split_never_shares_a_patient():
    pids = np.repeat(np.arange(50), np.random.default_rng(0).integers(1, 6, 50))
    rest, held = patient_split(pids, 0.2, seed=1)
    assert set(pids[rest]).isdisjoint(pids[held])
    assert 0.15 < len(held) / len(pids) < 0.3


def test_label_fraction_rounds_each_class_to_nearest_with_at_least_one():
    y = np.concatenate([np.full(n, c) for c, n in enumerate((250, 7, 1000, 149))])
    counts = np.bincount(y[label_fraction(y, 0.01, seed=0)])
    assert counts.tolist() == [3, 1, 10, 1]  # 2.5 -> 3 (halves up), 0.07 -> 1 (every class), 10, 1.49 -> 1
    assert np.bincount(y[label_fraction(y, 0.5, seed=0)]).tolist() == [125, 4, 500, 75]  # 3.5 -> 4, 74.5 -> 75
    assert len(label_fraction(y, 1.0, seed=0)) == len(y)


def test_multilabel_fraction_is_exact_nested_and_keeps_rare_labels():
    rng = np.random.default_rng(0)
    y = (rng.random((5000, 6)) < [0.3, 0.1, 0.05, 0.02, 0.01, 0.004]).astype(np.int64)
    y[rng.random(y.shape) < 0.05] = -1  # MISSING is never a positive
    small, big = label_fraction(y, 0.1, seed=2), label_fraction(y, 0.25, seed=2)
    assert len(small) == 500 and len(big) == 1250 and set(small) <= set(big)
    share = (y[small] == 1).sum(0) / (y == 1).sum(0)
    assert np.all(np.abs(share - 0.1) < 0.03), share
    assert len(label_fraction(y, 0.0001, seed=2)) == 1


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 1000), st.lists(st.integers(5, 200), min_size=2, max_size=6))
def test_label_fractions_are_nested_stratified_and_seeded(seed, class_sizes):
    y = np.concatenate([np.full(n, c) for c, n in enumerate(class_sizes)])
    subsets = [set(label_fraction(y, f, seed)) for f in (0.005, 0.01, 0.1, 0.25, 0.5, 1.0)]
    for small, big in itertools.pairwise(subsets):
        assert small <= big
    assert subsets[-1] == set(range(len(y)))
    assert all(len({int(y[i]) for i in s}) == len(class_sizes) for s in subsets)  # every class present
    assert set(label_fraction(y, 0.1, seed)) == subsets[2]


# -- split schemes ------------------------------------------------------------------------------------------
def _former_split_arrays(scheme: str, imgs: dict, labs: dict, split: dict, seed: int) -> dict:
    """runner.split_arrays as it was before the scheme registry, verbatim: SmallDataSSL's splits must not move."""
    if scheme == "official":
        return {s: (imgs[s], labs[s]) for s in ("train", "val", "test")}
    if scheme == "merge_val":
        x = np.concatenate([imgs[s] for s in split["merge"]])
        y = np.concatenate([labs[s] for s in split["merge"]])
        rest, held = stratified_split(y, split["val_fraction"], seed)
        return {"train": (x[rest], y[rest]), "val": (x[held], y[held]), "test": (imgs["test"], labs["test"])}
    if scheme == "holdout_val":
        rest, held = stratified_split(labs["train"], split["val_fraction"], seed)
        x, y = imgs["train"], labs["train"]
        return {"train": (x[rest], y[rest]), "val": (x[held], y[held]), "test": (imgs["test"], labs["test"])}
    x, y = imgs["all"], labs["all"]
    rest, test = stratified_split(y, split["test_fraction"], seed)
    tr, va = stratified_split(y[rest], split["val_fraction"], seed)
    return {"train": (x[rest][tr], y[rest][tr]), "val": (x[rest][va], y[rest][va]), "test": (x[test], y[test])}


SMALLDATASSL_SPLITS = (  # replications/smalldatassl.py's declarations (Kermany, BreaKHis, Kather)
    ("pneumoniamnist", {"scheme": "merge_val", "merge": ["train", "val"], "val_fraction": 0.1}),
    ("breastmnist", {"scheme": "holdout_val", "val_fraction": 0.1}),
    ("kather2016", {"scheme": "stratified", "test_fraction": 0.2, "val_fraction": 0.1}),
    ("breastmnist", {"scheme": "official"}),
)


@pytest.mark.parametrize(("name", "split"), SMALLDATASSL_SPLITS)
@pytest.mark.parametrize("seed_policy", ["fixed", "per_script"])
def test_split_arrays_gives_smalldatassl_the_splits_of_before(name, split, seed_policy, medmnist_dir, monkeypatch,
                                                              tmp_path):
    ds = load_dataset("pneumoniamnist" if name == "pneumoniamnist" else "breastmnist", 28, medmnist_dir,
                      allow_download=False)
    if split["scheme"] == "stratified":  # Kather's layout: one split 'all' (BreastMNIST's images pooled)
        ds = ArrayDataset(ds.info, 28, {"all": np.concatenate(list(ds.images.values()))},
                          {"all": np.concatenate(list(ds.labels.values()))})
    monkeypatch.setattr(run_inputs.DATASETS, "get", lambda *a: ds)
    hp = parse(Data, {"image_size": 28, "channels": 1, "n_classes": 2, "task": "binary",
                      "split": {**split, "seed_policy": seed_policy, "script": "linear.py"}}, "test")
    spec = RunSpec("smalldatassl", "evaluate", "d", name, "simclr", 3, "quick", {})
    ctx = Context(None, torch.device("cpu"), tmp_path, tmp_path)
    got, _ = run_inputs.split_arrays(spec, hp, ctx)
    seed = 16 if seed_policy == "fixed" else run_inputs.split_seed(spec, hp)
    want = _former_split_arrays(split["scheme"], ds.images, ds.labels, split, seed)
    for role in ("train", "val", "test"):
        assert np.array_equal(got[role][0], want[role][0]) and np.array_equal(got[role][1], want[role][1])
        assert got[role][1].dtype == want[role][1].dtype
    assert split["scheme"] != "official" or got["train"][0] is ds.images["train"]  # no copy of a whole split


def test_fixed_split_seed_is_declared_in_the_split():
    hp = parse(Data, {"image_size": 28, "channels": 1, "n_classes": 2, "task": "binary",
                      "split": {"scheme": "holdout_val", "val_fraction": 0.1}}, "test")
    spec = RunSpec("s", "pretrain", "d", "breastmnist", "m", 0, "quick", {})
    assert hp.split.fixed_seed == 16 and run_inputs.split_seed(spec, hp) == 16
    assert run_inputs.split_seed(spec, hp.model_copy(update={"split": hp.split.model_copy(
        update={"fixed_seed": 42})})) == 42


def test_unknown_scheme_and_misdeclared_fields_are_config_errors():
    with pytest.raises(ConfigError, match="unknown split scheme 'patients'; valid schemes: official, merge_val, "
                                          "holdout_val, stratified, random_split, patient, sample"):
        parse(Split, {"scheme": "patients"}, "study x")
    with pytest.raises(ConfigError, match="unknown split scheme"):
        get_scheme("patients")
    for bad, message in (({"scheme": "merge_val", "val_fraction": 0.1}, "needs split.merge"),
                         ({"scheme": "official", "val_fraction": 0.1}, "val_fraction is not read by scheme"),
                         ({"scheme": "stratified", "test_fraction": 1.5, "val_fraction": 0.1}, r"in \(0, 1\)"),
                         ({"scheme": "random_split", "fractions": [0.8, 0.1]}, "three, >= 0, summing to 1"),
                         ({"scheme": "sample", "base": "sample", "sizes": {"train": 5}}, "split.base must name"),
                         ({"scheme": "sample", "base": "patient", "sizes": {"train": 5}}, "needs split.val_fraction"),
                         ({"scheme": "official", "views": ["PA", "oblique"]}, "unknown view"),
                         ({"scheme": "official", "uncertain": "maybe"}, "uncertain"),
                         ({"scheme": "official", "shuffle": True}, "unknown key")):
        with pytest.raises(ConfigError, match=message):
            parse(Split, bad, "study x")
    assert set(SCHEMES) == {"official", "merge_val", "holdout_val", "stratified", "random_split", "patient", "sample"}


def _toy(parts: dict[str, int], seed: int = 0, **extra) -> ArrayDataset:
    rng = np.random.default_rng(seed)
    images = {p: rng.integers(0, 255, (n, 2, 2, 1), dtype=np.uint8) for p, n in parts.items()}
    labels = {p: rng.integers(0, 3, n) for p, n in parts.items()}
    return ArrayDataset(get_dataset("breastmnist"), 2, images, labels, **extra)


def test_random_split_is_torchs_random_split_over_the_whole_dataset_in_source_order():
    # MIMeta organ slices: 1,645 images, random_split([0.8, 0.1, 0.1], manual_seed(42)) -> 1,317 / 164 / 164
    n = {"train": 1000, "val": 300, "test": 345}
    order = np.random.default_rng(1).permutation(1645)  # the source numbers its images across its splits
    cuts = np.cumsum([0, *n.values()])
    ds = _toy(n, source_index={p: order[a:b] for p, a, b in zip(n, cuts[:-1], cuts[1:])})
    split = parse(Split, {"scheme": "random_split", "fractions": [0.8, 0.1, 0.1], "fixed_seed": 42}, "t")
    got = split_dataset(ds, split, 42)
    assert [len(got[r].labels) for r in ("train", "val", "test")] == [1317, 164, 164]
    subsets = torch.utils.data.random_split(range(1645), [0.8, 0.1, 0.1], torch.Generator().manual_seed(42))
    by_number = np.concatenate(list(ds.labels.values()))[np.argsort(order)]  # labels in the source's numbering
    for role, subset in zip(("train", "val", "test"), subsets):
        assert np.array_equal(got[role].labels, by_number[subset.indices])


def test_sample_draws_what_pandas_sample_draws_or_the_first_n():
    ds = _toy({"train": 300, "val": 50, "test": 80})
    first = parse(Split, {"scheme": "sample", "base": "official", "sizes": {"train": 40, "test": 10}}, "t")
    got = split_dataset(ds, first, 0)
    assert np.array_equal(got["train"].images, ds.images["train"][:40]) and len(got["val"].labels) == 50
    seeded = first.model_copy(update={"sample_seed": 42})
    got = split_dataset(ds, seeded, 0)
    pandas = pytest.importorskip("pandas")
    rows = pandas.DataFrame({"i": range(300)}).sample(40, random_state=42)["i"].to_numpy()
    assert np.array_equal(got["train"].labels, ds.labels["train"][rows])
    with pytest.raises(ConfigError, match="cannot sample 81 images"):
        split_dataset(ds, first.model_copy(update={"sizes": {"test": 81}}), 0)


def test_view_filter_and_policies_need_a_source_that_has_them():
    ds = _toy({"train": 10, "val": 5, "test": 5})
    with pytest.raises(ConfigError, match="records no views"):
        split_dataset(ds, parse(Split, {"scheme": "official", "views": ["PA"]}, "t"), 0)
    with pytest.raises(ConfigError, match="has no uncertain or blank labels"):
        split_dataset(ds, parse(Split, {"scheme": "official", "uncertain": "zeros"}, "t"), 0)
    with pytest.raises(ConfigError, match="no patient ids"):
        split_dataset(ds, parse(Split, {"scheme": "patient", "val_fraction": 0.2}, "t"), 0)
