from __future__ import annotations

import functools
import http.server
import itertools
import shutil
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medssl_core.cli import main
from medssl_core.data import REGISTRY, get_dataset, load_dataset
from medssl_core.data import dataset as dsmod
from medssl_core.data.locate import data_dirs, md5_file
from medssl_core.data.medmnist_info import MEDMNIST, MedMNISTInfo
from medssl_core.data.sources import load_chexpert
from medssl_core.data.splits import label_fraction, patient_split, stratified_split
from medssl_core.errors import DataError


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


@pytest.fixture
def http_server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


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


def test_nih_reads_labels_and_patients(tmp_path):
    root = tmp_path / "NIH_ChestXray14"
    rows = ["Image Index,Finding Labels,Follow-up #,Patient ID",
            "a.png,Effusion|Mass,0,1", "b.png,No Finding,0,2", "c.png,Hernia,1,2"]
    (root / "images").mkdir(parents=True)
    (root / "Data_Entry_2017.csv").write_text("\n".join(rows))
    (root / "train_val_list.txt").write_text("a.png\nb.png\n")
    (root / "test_list.txt").write_text("c.png\n")
    for n in ("a", "b", "c"):
        _write_png(root / "images" / f"{n}.png", 50, channels=1)
    ds = load_dataset("nih_chestxray14", 16, tmp_path)
    classes = get_dataset("nih_chestxray14").classes
    assert ds.labels["train_val"][0, classes.index("Effusion")] == 1
    assert ds.labels["train_val"][0, classes.index("Mass")] == 1
    assert ds.labels["train_val"][1].sum() == 0
    assert ds.patient_ids["test"].tolist() == ["2"]


def test_chexpert_uncertain_policies(tmp_path):
    root = tmp_path / "CheXpert-v1.0-small"
    header = "Path,Atelectasis,Cardiomegaly,Consolidation,Edema,Pleural Effusion"
    for split in ("train", "valid"):
        p = f"CheXpert-v1.0-small/{split}/patient00001/study1/view1_frontal.jpg"
        _write_png(tmp_path / p, 90, channels=1)
        (root / f"{split}.csv").write_text(f"{header}\n{p},1.0,-1.0,,0.0,-1.0\n")
    info = get_dataset("chexpert_small")
    for policy, expected in (("zeros", [1, 0, 0, 0, 0]), ("ones", [1, 1, 0, 0, 1]), ("ignore", [1, -1, 0, 0, -1])):
        assert load_chexpert(info, root, 8, policy).labels["train"][0].tolist() == expected
    assert load_chexpert(info, root, 8).patient_ids["valid"].tolist() == ["patient00001"]
    with pytest.raises(DataError, match="uncertain-label policy"):
        load_chexpert(info, root, 8, "maybe")


def test_mimeta_layout(tmp_path):
    root = tmp_path / "mimeta" / "crc"
    (root / "task_labels").mkdir(parents=True)
    (root / "splits").mkdir()
    np.save(root / "task_labels" / "tissue class.npy", np.array([0, 3, 8, 1]))
    for i in range(4):
        _write_png(root / "images" / f"{i:06d}.tiff", 20 * i)
    for split, idx in (("train", [0, 1]), ("val", [2]), ("test", [3])):
        (root / "splits" / f"{split}.txt").write_text("\n".join(f"images/{i:06d}.tiff" for i in idx))
    ds = load_dataset("mimeta_crc", 8, tmp_path)
    assert ds.labels["train"].tolist() == [0, 3] and ds.labels["test"].tolist() == [1]


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
