"""CheXpert-v1.0-small and NIH ChestX-ray14 folders in their publishers' layouts, built from real rows of the
metadata that the torchxrayvision wheel ships (read from the installed package, never committed), with small
synthetic images in place of the radiographs."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import cv2
import numpy as np


def xrv_data() -> Path | None:
    spec = importlib.util.find_spec("torchxrayvision")  # located, never imported (it imports torchvision)
    return Path(spec.submodule_search_locations[0]) / "data" if spec else None


def _lines(name: str) -> list[str]:
    return gzip.decompress((xrv_data() / name).read_bytes()).decode().splitlines()


def _image(path: Path, rng: np.random.Generator, side: int) -> None:
    """A chest-like picture: a bright body, two darker 'lungs', noise; PNG whatever the suffix."""
    img = np.full((side, side), 200, np.uint8)
    for cx in (side // 3, 2 * side // 3):
        cv2.ellipse(img, (cx, side // 2), (side // 7, side // 3), 0, 0, 360, 60, -1)
    img = np.clip(img + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cv2.imencode(".png", img)[1].tobytes())


def write_chexpert(data_dir: Path, n_train: int = 800, n_valid: int = 40, side: int = 40) -> Path:
    """``CheXpert-v1.0-small/{train,valid}.csv`` from the first real rows (valid.csv: the next rows, moved under
    valid/) and an image for each row."""
    header, *rows = _lines("chexpert_train.csv.gz")
    train, valid = rows[:n_train], [r.replace("/train/", "/valid/", 1) for r in rows[n_train:n_train + n_valid]]
    root = data_dir / "CheXpert-v1.0-small"
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, part in (("train.csv", train), ("valid.csv", valid)):
        (root / name).write_text("\n".join([header, *part]) + "\n")
        for line in part:
            _image(data_dir / line.split(",")[0], rng, side)
    return root


def write_nih(data_dir: Path, n: int = 800, test_share: float = 0.2, side: int = 40) -> Path:
    """``NIH_ChestXray14/`` with the first real rows of Data_Entry_2017_v2020.csv, images under images/, and
    train_val_list.txt / test_list.txt that keep each patient on one side (the last patients are the test)."""
    header, *rows = _lines("Data_Entry_2017_v2020.csv.gz")
    rows = rows[:n]
    root = data_dir / "NIH_ChestXray14"
    root.mkdir(parents=True)
    (root / "Data_Entry_2017_v2020.csv").write_text("\n".join([header, *rows]) + "\n")
    names = [r.split(",")[0] for r in rows]
    patients = [r.split(",")[3] for r in rows]
    order = sorted(set(patients))
    test_patients = set(order[int(len(order) * (1 - test_share)):])
    (root / "train_val_list.txt").write_text("\n".join(n for n, p in zip(names, patients) if p not in test_patients))
    (root / "test_list.txt").write_text("\n".join(n for n, p in zip(names, patients) if p in test_patients))
    rng = np.random.default_rng(1)
    for name in names:
        _image(root / "images" / name, rng, side)
    return root
