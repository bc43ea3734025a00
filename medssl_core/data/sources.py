"""Readers for the studies' original sources, in the layouts their publishers ship.

Images are decoded once with OpenCV, resized to the requested side, and cached as an npz under the medssl
cache (keyed by the files' contents and the decoding code), so nothing is decoded twice."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from medssl_core.common.atomic import atomic_file
from medssl_core.common.code_digest import function_fingerprint
from medssl_core.common.errors import DataError
from medssl_core.data import chest, medimeta
from medssl_core.data.loaded import Loaded
from medssl_core.data.locate import cache_dir, cached_md5s, data_dirs
from medssl_core.data.registry import DatasetInfo

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


def _root_name(info: DatasetInfo) -> str:
    return f"mimeta/{info.layout['dataset_id']}" if info.kind == "mimeta" else info.layout["root"]


def find_root(info: DatasetInfo, data_dir=None) -> Path | None:
    for d in data_dirs(data_dir):
        if (d / _root_name(info)).is_dir():
            return d / _root_name(info)
    return None


def read_images(paths: list[Path], size: int, channels: int, desc: str = "decoding") -> np.ndarray:
    """Decode and resize images to (N, size, size, C) uint8, cached by the files' contents (their MD5s, as the
    data version has them), the decoding code and OpenCV's version: an edit of the resize misses old entries."""
    h = hashlib.sha256(f"{size}|{channels}|{function_fingerprint(read_images)}|{cv2.__version__}".encode())
    sums = cached_md5s(paths)
    for p in paths:
        h.update(f"{sums[p.resolve()]}\n".encode())
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


def _load_nih(info: DatasetInfo, root: Path, size: int) -> Loaded:
    """NIH ChestX-ray14: the Data_Entry CSV, split into the official ``train_val``/``test`` lists when both are
    there, else one split ``all`` in CSV order; images under ``images/`` or Kaggle's ``images_0NN/images/``."""
    lay = info.layout
    csv_path = chest.find_file(root, lay["csv"])
    if csv_path is None:
        raise DataError(f"{root} holds none of {list(lay['csv'])}: the ChestX-ray14 label file. {info.obtain}")
    meta = chest.read_nih_metadata(csv_path, info.classes)
    out = Loaded({}, {}, {}, {str(csv_path): "csv"})
    paths = _nih_image_paths(root, lay["images"], meta.names, info)
    for split, rows in _nih_splits(root, lay, meta.names).items():
        out.images[split] = read_images([paths[r] for r in rows], size, 1, f"nih/{split}")
        out.labels[split] = meta.labels[rows]
        out.patient_ids[split] = meta.patient_ids[rows]
        out.views[split] = meta.views[rows]
        out.source_index[split] = rows
    return out


def _nih_splits(root: Path, lay: dict, names: np.ndarray) -> dict[str, np.ndarray]:
    """CSV rows per split: the official lists (in their order) when both exist, else every row as ``all``."""
    lists = {"train_val": root / lay["train_list"], "test": root / lay["test_list"]}
    present = {s: p for s, p in lists.items() if p.is_file()}
    if not present:
        return {"all": np.arange(len(names))}
    if len(present) == 1:
        missing = next(p for s, p in lists.items() if s not in present)
        raise DataError(f"{missing} is missing while {next(iter(present.values()))} is there: the official split "
                        "needs both lists (or neither, to use every image of the CSV).")
    row_of = {n: i for i, n in enumerate(names)}
    out = {}
    for split, path in lists.items():
        listed = path.read_text().split()
        if not listed:
            raise DataError(f"{path} is empty: it is the official {split} list; re-download it.")
        absent = [n for n in listed if n not in row_of]
        if absent:
            raise DataError(f"{path} names {len(absent)} images absent from the CSV, e.g. {absent[0]}.")
        out[split] = np.asarray([row_of[n] for n in listed], dtype=np.int64)
    return out


def _nih_image_paths(root: Path, images: str, names: np.ndarray, info: DatasetInfo) -> list[Path]:
    """Each CSV image's file: ``images/<name>`` (NIH's box release), else Kaggle's ``images_0NN/images/<name>``."""
    if (root / images).is_dir():
        return [root / images / n for n in names]
    found = {p.name: p for p in root.glob(f"{images}_*/{images}/*.png")}
    if not found:
        raise DataError(f"{root} has neither {images}/ nor {images}_001/{images}/ ... folders of PNGs. {info.obtain}")
    absent = [n for n in names if n not in found]
    if absent:
        raise DataError(f"{len(absent)} images of the CSV are absent from {root}/{images}_*/{images}/, e.g. "
                        f"{absent[0]}; the download is incomplete. {info.obtain}")
    return [found[n] for n in names]


def load_chexpert(info: DatasetInfo, root: Path, size: int, uncertain: str = "ignore",
                  blank: str = "missing") -> Loaded:
    """CheXpert-small: ``train`` and ``valid`` with their views, patient ids and raw label codes; ``labels``
    under ``uncertain`` (-1: 'zeros', 'ones' or 'ignore' = MISSING) and ``blank`` ('negative' or 'missing')."""
    out = Loaded({}, {}, {}, {})
    offset = 0
    for split, csv_name in (("train", info.layout["train_csv"]), ("valid", info.layout["valid_csv"])):
        csv_path = chest.find_file(root, (csv_name,)) or root / csv_name
        meta = chest.read_chexpert_metadata(csv_path, info.classes)
        out.labels[split] = chest.apply_label_policy(meta.labels, uncertain, blank)  # a bad policy fails first
        # Paths in the CSV start with 'CheXpert-v1.0-small/': the images live beside the CSV.
        out.images[split] = read_images([root.parent / p for p in meta.names], size, 1, f"chexpert/{split}")
        out.label_codes[split] = meta.labels
        out.patient_ids[split] = meta.patient_ids
        out.views[split] = meta.views
        out.source_index[split] = offset + np.arange(len(meta))  # valid after train, as CheXpert numbers them
        offset += len(meta)
        out.files[str(csv_path)] = "csv"
    return out


def load(info: DatasetInfo, root: Path, size: int) -> Loaded:
    if info.kind == "mimeta":
        return medimeta.load(info, root, size)
    loader = {"folders": _load_folders, "nih_csv": _load_nih, "chexpert_csv": load_chexpert}[info.kind]
    return loader(info, root, size)
