"""Loading any registered dataset into uint8 arrays, with a clear error for every way a file can be bad."""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medssl_core.common.errors import DataError
from medssl_core.data import sources
from medssl_core.data.download import download
from medssl_core.data.locate import cached_md5, cached_md5s, data_dirs, download_dir
from medssl_core.data.medmnist_info import MEDMNIST
from medssl_core.data.registry import DatasetInfo, get_dataset

SPLITS = ("train", "val", "test")


@dataclass
class ArrayDataset:
    """Per source split: images as uint8 (N, H, W, C) and labels as int64 (N,) or (N, L) for multi-label, where
    ``labels.MISSING`` (-1) marks an unknown label. Optional per-split arrays, present where the source has them:
    patient ids (str), views (``data.chest``), each image's number in the source's own order (CSV row, MedIMeta
    image number), and CheXpert's raw label codes, from which a split's declared uncertain/blank policy
    derives its labels (``labels`` holds them under U-Ignore with blanks missing)."""

    info: DatasetInfo
    size: int | None
    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    patient_ids: dict[str, np.ndarray] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # path -> md5, for provenance
    views: dict[str, np.ndarray] = field(default_factory=dict)
    source_index: dict[str, np.ndarray] = field(default_factory=dict)
    label_codes: dict[str, np.ndarray] = field(default_factory=dict)
    members: tuple[str, ...] = ()  # a merged dataset: the datasets merged, in order
    member: dict[str, np.ndarray] = field(default_factory=dict)  # a merged dataset: per image, its index in members

    @property
    def name(self) -> str:
        return self.info.name

    def member_view(self, m: int) -> ArrayDataset:
        """The images of ``members[m]`` alone, each split in the merged order (a merged dataset only)."""
        keep = {s: self.member[s] == m for s in self.labels}
        pick = {attr: {s: a[keep[s]] for s, a in getattr(self, attr).items()}
                for attr in ("images", "labels", "patient_ids", "views", "source_index", "label_codes")}
        return ArrayDataset(self.info, self.size, files=self.files, **pick)

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.labels.items()}


def find_medmnist(flag: str, size: int, data_dir: str | os.PathLike | None = None) -> Path | None:
    filename = MEDMNIST[flag].filename(size)
    for d in data_dirs(data_dir):
        if (d / filename).is_file():
            return d / filename
    return None


def fetch_medmnist(flag: str, size: int, data_dir=None, *, progress: bool = True) -> Path:
    info = MEDMNIST[flag]
    _check_size(flag, size)
    mirror = os.environ.get("MEDSSL_MIRROR")
    url = f"{mirror.rstrip('/')}/{info.filename(size)}" if mirror else info.url(size)
    return download(url, download_dir(data_dir) / info.filename(size), info.md5[size], progress=progress)


def _check_size(flag: str, size: int) -> None:
    if size not in MEDMNIST[flag].md5:
        raise DataError(f"{flag} exists at sizes {sorted(MEDMNIST[flag].md5)}, not {size}; pass --size with one.")


def verify_medmnist_file(path: Path, flag: str, size: int) -> None:
    """Checksum, keys, dtypes, shapes and official split counts; raises DataError naming file and fix."""
    info = MEDMNIST[flag]
    fix = (f"Delete {path} and run `medssl data fetch {flag} --size {size}` (or copy an intact file there).")
    actual = cached_md5(path)
    if actual != info.md5[size]:
        raise DataError(
            f"{path}: MD5 {actual} does not match the official {flag} ({size} px) release "
            f"{info.md5[size]}; the file is truncated, corrupt or a different version. {fix}"
        )
    arrays = _read_npz(path, fix)
    _check_arrays(arrays, info, size, path, fix)


def _read_npz(path: Path, fix: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, KeyError) as exc:
        raise DataError(f"{path} cannot be read as an npz archive ({exc}). {fix}") from exc


def _check_arrays(arrays: dict, info, size: int, path: Path, fix: str) -> None:
    for split, expected in zip(SPLITS, info.counts):
        for kind in ("images", "labels"):
            key = f"{split}_{kind}"
            if key not in arrays:
                raise DataError(f"{path} has no array {key!r} (found {sorted(arrays)}). {fix}")
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        shape = (expected, size, size) + ((3,) if info.channels == 3 else ())
        if images.dtype != np.uint8 or images.shape != shape:
            raise DataError(f"{path}: {split}_images is {images.dtype}{images.shape}, expected uint8{shape}. {fix}")
        if labels.shape[0] != expected:
            raise DataError(f"{path}: {split} has {labels.shape[0]} labels, the official count is {expected}. {fix}")


def load_medmnist(flag: str, size: int, data_dir=None, *, allow_download: bool = True) -> ArrayDataset:
    _check_size(flag, size)
    info = get_dataset(flag)
    path = find_medmnist(flag, size, data_dir)
    if path is None:
        if not allow_download:
            raise DataError(missing_message(info, data_dir, size))
        path = fetch_medmnist(flag, size, data_dir)
    verify_medmnist_file(path, flag, size)
    arrays = _read_npz(path, "")
    images, labels = {}, {}
    for split in SPLITS:
        img = arrays[f"{split}_images"]
        images[split] = img[..., None] if img.ndim == 3 else img
        lab = arrays[f"{split}_labels"].astype(np.int64)
        labels[split] = lab if info.task == "multi-label" else lab.reshape(-1)
    return ArrayDataset(info, size, images, labels, files={str(path.resolve()): cached_md5(path)})


def missing_message(info: DatasetInfo, data_dir=None, size: int | None = None) -> str:
    if info.kind == "merged":
        return " | ".join(missing_message(get_dataset(p), data_dir, size) for p in info.layout["parts"]
                          if not is_available(p, size, data_dir))
    where = ", ".join(str(d) for d in data_dirs(data_dir))
    what = MEDMNIST[info.name].filename(size or 28) if info.kind == "medmnist" else info.layout.get("root", "")
    return f"Dataset {info.name} ({what}) was not found in: {where}. {info.obtain}"


def is_available(name: str, size: int | None, data_dir=None) -> bool:
    info = get_dataset(name)
    if info.kind == "merged":
        return all(is_available(p, size, data_dir) for p in info.layout["parts"])
    if info.kind == "medmnist":
        return find_medmnist(name, size or 28, data_dir) is not None
    return sources.find_root(info, data_dir) is not None


def load_dataset(name: str, size: int | None = None, data_dir=None, *, allow_download: bool = True) -> ArrayDataset:
    """Load a registered dataset. ``size`` is the MedMNIST size, or the side images are resized to."""
    info = get_dataset(name)
    if info.kind == "merged":
        return merge_datasets(info, [load_dataset(p, size, data_dir, allow_download=allow_download)
                                     for p in info.layout["parts"]])
    if info.kind == "medmnist":
        return load_medmnist(name, size or 28, data_dir, allow_download=allow_download)
    root = sources.find_root(info, data_dir)
    if root is None:
        raise DataError(missing_message(info, data_dir))
    if size is None:
        raise DataError(f"{name} is read from its original files: give the image size to resize them to.")
    loaded = sources.load(info, root, size)
    return ArrayDataset(info, size, loaded.images, loaded.labels, loaded.patient_ids, loaded.files,
                        views=loaded.views, source_index=loaded.source_index, label_codes=loaded.label_codes)


def data_version(name: str, size: int | None, data_dir=None, *, allow_download: bool = False) -> str | None:
    """A version of the bytes a run on ``name`` reads: the file's MD5 for MedMNIST (the official one for a file
    still to be downloaded, which the download verifies), a digest of every file's MD5 for original sources.
    None when the data is absent. Checksums are cached by path, size and modification time."""
    info = get_dataset(name)
    if info.kind == "merged":
        versions = [data_version(p, size, data_dir, allow_download=allow_download) for p in info.layout["parts"]]
        return None if None in versions else hashlib.md5(" ".join(versions).encode()).hexdigest()
    if info.kind == "medmnist":
        path = find_medmnist(name, size or 28, data_dir)
        if path is not None:
            return cached_md5(path)
        return MEDMNIST[name].md5.get(size or 28) if allow_download else None
    root = sources.find_root(info, data_dir)
    if root is None:
        return None
    files = sorted(p for p in root.rglob("*") if p.is_file())
    sums = cached_md5s(files)
    lines = "".join(f"{p.relative_to(root)} {sums[p.resolve()]}\n" for p in files)
    return hashlib.md5(lines.encode()).hexdigest()


def merge_datasets(info: DatasetInfo, parts: list[ArrayDataset]) -> ArrayDataset:
    """Concatenate ``parts`` split by split, in the order named. Patient ids are prefixed with their dataset's
    name (two sources never share a patient by accident) and source indices are offset past the previous
    part's, so that both stay unique in the merged set."""
    splits = [tuple(p.labels) for p in parts]
    if len(set(splits)) != 1:
        raise DataError(f"{info.name}: the merged datasets have different splits "
                        f"({', '.join(f'{p.name}: {list(s)}' for p, s in zip(parts, splits, strict=True))}).")
    out = ArrayDataset(info, parts[0].size, {}, {}, files={k: v for p in parts for k, v in p.files.items()},
                       members=tuple(p.name for p in parts))
    offsets = np.cumsum([0] + [1 + max((int(a.max()) for a in p.source_index.values() if a.size), default=-1)
                               for p in parts[:-1]])
    for split in splits[0]:
        out.images[split] = np.concatenate([p.images[split] for p in parts])
        out.labels[split] = np.concatenate([p.labels[split] for p in parts])
        out.member[split] = np.concatenate([np.full(len(p.labels[split]), m) for m, p in enumerate(parts)])
        if all(split in p.patient_ids for p in parts):
            out.patient_ids[split] = np.concatenate([np.char.add(f"{p.name}:", p.patient_ids[split].astype(str))
                                                     for p in parts])
        if all(split in p.source_index for p in parts):
            out.source_index[split] = np.concatenate([o + p.source_index[split]
                                                      for o, p in zip(offsets, parts, strict=True)])
        for attr in ("views", "label_codes"):
            if all(split in getattr(p, attr) for p in parts):
                getattr(out, attr)[split] = np.concatenate([getattr(p, attr)[split] for p in parts])
    return out
