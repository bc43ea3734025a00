"""MedIMeta (Woerner et al. 2024, zenodo record 7884735) read from the folders its publisher ships.

One folder per dataset id (``organs_axial``, ``crc``, ...): ``info.yaml`` (id, tasks with ``task_name``,
``task_target`` and ``labels`` {index: name}, ``input_size`` [C, H, W]), ``images.hdf5`` (dataset ``images``:
uint8 (N, H, W) grey or (N, H, W, C) colour) and/or ``images/NNNNNN.tiff``, ``splits/{train,val,test}.txt``
(lines ``images/000123.tiff``; a split without images has no file) and ``task_labels/<task_name>.npy`` (one
label per image of the whole dataset, by image number; the name keeps its spaces: ``organ label.npy``).
As medimeta-pytorch does, the HDF5 file is read when present, the TIFFs otherwise. Each split keeps its
images' numbers (``source_index``), so a split drawn over the whole dataset goes in image-number order, as
``torch.utils.data.random_split`` over a MedIMeta dataset does.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml

from medssl_core.common.errors import DataError
from medssl_core.data.loaded import Loaded
from medssl_core.data.registry import DatasetInfo

SPLITS = ("train", "val", "test")
TASK_TARGETS = {"multi-class": "MULTICLASS_CLASSIFICATION", "binary": "BINARY_CLASSIFICATION",
                "multi-label": "MULTILABEL_CLASSIFICATION", "ordinal": "ORDINAL_REGRESSION"}


def read_info(root: Path, info: DatasetInfo) -> dict:
    """``info.yaml``, checked against the registry: the id, the task (target and label names) and channels."""
    path = root / "info.yaml"
    if not path.is_file():
        raise DataError(f"{path} is missing: a MedIMeta dataset folder holds info.yaml. {info.obtain}")
    meta = yaml.safe_load(path.read_text())
    dataset_id, task_name = info.layout["dataset_id"], info.layout["task"]
    if not isinstance(meta, dict) or meta.get("id") != dataset_id:
        found = meta.get("id") if isinstance(meta, dict) else None
        raise DataError(f"{path} describes dataset {found!r}, not {dataset_id!r}: the folder "
                        f"'<data-dir>/mimeta/{dataset_id}/' must hold that dataset's files. {info.obtain}")
    tasks = {t.get("task_name"): t for t in meta.get("tasks", [])}
    if task_name not in tasks:
        raise DataError(f"{path} has no task {task_name!r} (its tasks: {sorted(map(str, tasks))}).")
    task = tasks[task_name]
    if task.get("task_target") != TASK_TARGETS[info.task]:
        raise DataError(f"{path}: task {task_name!r} is a {task.get('task_target')}, the registry reads it as "
                        f"{TASK_TARGETS[info.task]}.")
    names = tuple(str(task["labels"][k]) for k in sorted(task["labels"]))
    if names != info.classes:
        raise DataError(f"{path}: the labels of {task_name!r} are {list(names)}, the registry expects "
                        f"{list(info.classes)}; the download is another version of MedIMeta than medssl knows.")
    channels = meta.get("input_size", [None])[0]
    if channels != info.channels:
        raise DataError(f"{path}: input_size {meta.get('input_size')} has {channels} channel(s), the registry "
                        f"expects {info.channels}.")
    return meta


def split_indices(root: Path) -> dict[str, np.ndarray]:
    """Image numbers per split, sorted, from ``splits/*.txt`` (a split without images has no file)."""
    out = {}
    for split in SPLITS:
        path = root / "splits" / f"{split}.txt"
        if path.is_file():
            lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            try:
                numbers = [int(Path(line).stem) for line in lines]
            except ValueError as exc:
                raise DataError(f"{path}: a line is not an image path such as images/000123.tiff ({exc}).") from None
            if numbers:  # in image-number order, as medimeta-pytorch sorts them
                out[split] = np.sort(np.asarray(numbers, dtype=np.int64))
    if not out:
        raise DataError(f"{root / 'splits'} holds none of train.txt, val.txt, test.txt: re-extract the dataset.")
    return out


def read_labels(root: Path, info: DatasetInfo) -> np.ndarray:
    path = root / "task_labels" / f"{info.layout['task']}.npy"
    if not path.is_file():
        present = sorted(p.name for p in (root / "task_labels").glob("*.npy")) if path.parent.is_dir() else []
        raise DataError(f"{path} is missing (task labels present: {present or 'none'}). {info.obtain}")
    labels = np.load(path)
    if labels.ndim != 1:
        raise DataError(f"{path}: labels of shape {labels.shape}; one class index per image expected.")
    return labels.astype(np.int64)


def read_images(root: Path, info: DatasetInfo, splits: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """uint8 (N, size, size, C) per split, the images with these numbers: from images.hdf5 when present (read
    once, whole: the splits cover it, and h5py's reads of scattered indices are slow), else the TIFFs."""
    hdf5 = root / "images.hdf5"
    if hdf5.is_file():
        import h5py  # only MedIMeta needs it

        with h5py.File(hdf5, "r") as f:
            if "images" not in f:
                raise DataError(f"{hdf5} has no dataset 'images' (it has {sorted(f)}); re-download it.")
            stored = f["images"][()]
        last = max((int(n.max()) for n in splits.values() if n.size), default=-1)
        if last >= len(stored):
            raise DataError(f"{hdf5} holds {len(stored)} images; the splits name image {last}.")
        raw = {split: stored[numbers] for split, numbers in splits.items()}
    else:
        raw = {split: _read_tiffs(root, info, numbers) for split, numbers in splits.items()}
    return {split: _to_size(images, info, size) for split, images in raw.items()}


def _read_tiffs(root: Path, info: DatasetInfo, numbers: np.ndarray) -> np.ndarray:
    paths = [root / "images" / f"{n:06d}.tiff" for n in numbers]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{root} has no images.hdf5 and {len(missing)} of the split's TIFFs are missing, e.g. "
                        f"{missing[0]}. {info.obtain}")
    flag = cv2.IMREAD_GRAYSCALE if info.channels == 1 else cv2.IMREAD_COLOR
    decoded = [cv2.imread(str(p), flag) for p in paths]
    bad = [p for p, img in zip(paths, decoded, strict=True) if img is None]
    if bad:
        raise DataError(f"{bad[0]} cannot be decoded as an image; replace it with an intact copy.")
    return np.stack([img if info.channels == 1 else img[..., ::-1] for img in decoded])  # BGR -> RGB


def _to_size(images: np.ndarray, info: DatasetInfo, size: int) -> np.ndarray:
    """(N, H, W[, C]) -> (N, size, size, C), channels checked against the registry."""
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[-1] != info.channels:
        raise DataError(f"{info.name}: images with {images.shape[-1]} channel(s), {info.channels} expected.")
    if images.shape[1:3] != (size, size):
        images = np.stack([_resize(img, size) for img in images])
    return images


def load(info: DatasetInfo, root: Path, size: int) -> Loaded:
    """Every split of a MedIMeta dataset: images, labels and image numbers."""
    read_info(root, info)
    splits = split_indices(root)
    images = read_images(root, info, splits, size)
    labels = read_labels(root, info)
    hdf5 = root / "images.hdf5"
    read = [root / "info.yaml", root / "task_labels" / f"{info.layout['task']}.npy",
            *(root / "splits" / f"{s}.txt" for s in splits), hdf5 if hdf5.is_file() else root / "images"]
    out = Loaded({}, {}, files={str(p): p.suffix.lstrip(".") or "folder" for p in read})
    for split, numbers in splits.items():
        if numbers.max() >= len(labels):
            raise DataError(f"{root}/splits/{split}.txt names image {numbers.max()}; the labels cover "
                            f"{len(labels)} images.")
        out.images[split] = images[split]
        out.labels[split] = labels[numbers]
        out.source_index[split] = numbers
    return out


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    out = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return out[..., None] if out.ndim == 2 else out
