"""Readers for the studies' original sources, in the layouts their publishers ship.

Images are decoded once with OpenCV, resized to the requested side, and cached as an npz under the medssl
cache (keyed by the file list, sizes and mtimes), so nothing is decoded twice.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from medssl_core.atomic import atomic_file
from medssl_core.data.locate import cache_dir, data_dirs
from medssl_core.data.registry import DatasetInfo
from medssl_core.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
CHEXPERT_UNCERTAIN_POLICIES = ("zeros", "ones", "ignore")


@dataclass
class Loaded:
    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    patient_ids: dict[str, np.ndarray] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)


def _root_name(info: DatasetInfo) -> str:
    return f"mimeta/{info.layout['dataset_id']}" if info.kind == "mimeta" else info.layout["root"]


def find_root(info: DatasetInfo, data_dir=None) -> Path | None:
    for d in data_dirs(data_dir):
        if (d / _root_name(info)).is_dir():
            return d / _root_name(info)
    return None


def read_images(paths: list[Path], size: int, channels: int, desc: str = "decoding") -> np.ndarray:
    """Decode and resize images to (N, size, size, C) uint8, cached by file list, sizes and mtimes."""
    h = hashlib.sha256(f"{size}|{channels}".encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    cached = cache_dir() / "decoded" / f"{h.hexdigest()[:24]}.npy"
    if cached.is_file():
        return np.load(cached)
    flag = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR
    out = np.empty((len(paths), size, size, channels), dtype=np.uint8)
    for i, p in enumerate(tqdm(paths, desc=desc, unit="img", disable=len(paths) < 500)):
        img = cv2.imread(str(p), flag)
        if img is None:
            raise DataError(f"{p} cannot be decoded as an image; replace it with an intact copy or remove it.")
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
        out[i] = img[..., None] if channels == 1 else img[..., ::-1]  # BGR -> RGB
    with atomic_file(cached) as f:
        np.save(f, out)
    return out


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _load_folders(info: DatasetInfo, root: Path, size: int) -> Loaded:
    class_dirs = info.layout["class_dirs"]
    images, labels = {}, {}
    for split, sub in info.layout["splits"].items():
        split_dir = root / sub
        names = {c: i for i, c in enumerate(info.classes)} if class_dirs == "sorted" else class_dirs
        paths, ys = [], []
        for cls, label in names.items():
            folder = split_dir / cls
            if not folder.is_dir():
                present = sorted(p.name for p in split_dir.iterdir() if p.is_dir()) if split_dir.is_dir() else []
                raise DataError(
                    f"{info.name}: class folder {folder} is missing (found {present or 'nothing'} in {split_dir}). "
                    f"Expected one folder per class {list(names)}. {info.obtain}"
                )
            found = _list_images(folder)
            if not found:
                raise DataError(f"{info.name}: class folder {folder} holds no images. {info.obtain}")
            paths += found
            ys += [label] * len(found)
        images[split] = read_images(paths, size, info.channels, desc=f"{info.name}/{split}")
        labels[split] = np.asarray(ys, dtype=np.int64)
    return Loaded(images, labels, files={str(root): "folder"})


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        raise DataError(f"{path} is missing.")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise DataError(f"{path} is empty (no data rows); re-download it.")
    return rows


def _load_nih(info: DatasetInfo, root: Path, size: int) -> Loaded:
    lay = info.layout
    rows = _read_csv(root / lay["csv"])
    for col in ("Image Index", "Finding Labels", "Patient ID"):
        if col not in rows[0]:
            raise DataError(f"{root / lay['csv']} has no column {col!r}; is it Data_Entry_2017.csv?")
    by_name = {r["Image Index"]: r for r in rows}
    out = Loaded({}, {}, {}, {str(root / lay["csv"]): "csv"})
    for split, list_file in (("train_val", lay["train_list"]), ("test", lay["test_list"])):
        names = (root / list_file).read_text().split() if (root / list_file).is_file() else None
        if not names:
            raise DataError(f"{root / list_file} is missing or empty: it is the official {split} list.")
        missing = [n for n in names if n not in by_name]
        if missing:
            raise DataError(f"{root / list_file} names {len(missing)} images absent from the CSV, e.g. {missing[0]}.")
        y = np.zeros((len(names), len(info.classes)), dtype=np.int64)
        for i, n in enumerate(names):
            for finding in by_name[n]["Finding Labels"].split("|"):
                if finding in info.classes:
                    y[i, info.classes.index(finding)] = 1
        out.images[split] = read_images([root / lay["images"] / n for n in names], size, 1, f"nih/{split}")
        out.labels[split] = y
        out.patient_ids[split] = np.asarray([by_name[n]["Patient ID"] for n in names])
    return out


def load_chexpert(info: DatasetInfo, root: Path, size: int, uncertain: str = "zeros") -> Loaded:
    """CheXpert-small. ``uncertain`` (-1 labels): 'zeros' (U-Zeros), 'ones' (U-Ones) or 'ignore' (-1 kept;
    metrics must mask it). Blank labels are negative, as in the CheXpert paper."""
    if uncertain not in CHEXPERT_UNCERTAIN_POLICIES:
        raise DataError(f"uncertain-label policy must be one of {CHEXPERT_UNCERTAIN_POLICIES}, not {uncertain!r}")
    out = Loaded({}, {}, {}, {})
    for split, csv_name in (("train", info.layout["train_csv"]), ("valid", info.layout["valid_csv"])):
        rows = _read_csv(root / csv_name)
        missing = [c for c in ("Path", *info.classes) if c not in rows[0]]
        if missing:
            raise DataError(f"{root / csv_name} lacks columns {missing}; is it CheXpert's {csv_name}?")
        y = np.zeros((len(rows), len(info.classes)), dtype=np.int64)
        for i, r in enumerate(rows):
            for j, c in enumerate(info.classes):
                v = float(r[c]) if r[c] not in ("", None) else 0.0
                y[i, j] = {1.0: 1, 0.0: 0, -1.0: {"zeros": 0, "ones": 1, "ignore": -1}[uncertain]}[v]
        # Paths in the CSV start with 'CheXpert-v1.0-small/'; images live beside the CSV.
        paths = [root.parent / r["Path"] for r in rows]
        out.images[split] = read_images(paths, size, 1, f"chexpert/{split}")
        out.labels[split] = y
        out.patient_ids[split] = np.asarray([Path(r["Path"]).parts[2] for r in rows])
        out.files[str(root / csv_name)] = "csv"
    return out


def _load_mimeta(info: DatasetInfo, root: Path, size: int) -> Loaded:
    """MedIMeta layout (medimeta-pytorch): task_labels/<task>.npy, splits/<split>.txt, images/NNNNNN.tiff."""
    label_file = root / "task_labels" / f"{info.layout['task']}.npy"
    if not label_file.is_file():
        labels_dir = root / "task_labels"
        present = sorted(p.name for p in labels_dir.glob("*.npy")) if labels_dir.is_dir() else []
        raise DataError(f"{label_file} is missing (task labels present: {present or 'none'}). {info.obtain}")
    all_labels = np.load(label_file).astype(np.int64).reshape(-1)
    out = Loaded({}, {}, {}, {str(label_file): "npy"})
    for split in ("train", "val", "test"):
        split_file = root / "splits" / f"{split}.txt"
        if not split_file.is_file():
            raise DataError(f"{split_file} is missing: MedIMeta ships splits/train.txt, val.txt, test.txt.")
        idx = [int(Path(line.strip()).stem) for line in split_file.read_text().splitlines() if line.strip()]
        paths = [root / "images" / f"{i:06d}.tiff" for i in idx]
        out.images[split] = read_images(paths, size, info.channels, f"{info.name}/{split}")
        out.labels[split] = all_labels[idx]
    return out


def load(info: DatasetInfo, root: Path, size: int) -> Loaded:
    loader = {"folders": _load_folders, "nih_csv": _load_nih, "chexpert_csv": load_chexpert,
              "mimeta": _load_mimeta}[info.kind]
    return loader(info, root, size)
