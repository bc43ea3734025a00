"""A small MedIMeta dataset folder in exactly the publisher's layout (zenodo 7884735, medimeta-pytorch):
info.yaml, images.hdf5 (grey (N, H, W), colour (N, H, W, 3)) or images/NNNNNN.tiff, splits/*.txt with lines
``images/000123.tiff`` and no trailing newline, task_labels/<task name with spaces>.npy."""

from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np
import yaml

from medssl_core.data.registry import get_dataset


def write_medimeta(data_dir: Path, dataset_id: str, labels: list[int], splits: dict[str, list[int]], *,
                   hdf5: bool = True, side: int = 16, shade: int = 0) -> Path:
    """The folder ``<data_dir>/mimeta/<dataset_id>/``; image i is filled with (shade + 7 i) % 256 (channel c
    of a colour image adds 50 c), so a test can tell which image went where."""
    info = get_dataset(f"mimeta_{dataset_id}")
    root = data_dir / "mimeta" / dataset_id
    (root / "task_labels").mkdir(parents=True)
    (root / "splits").mkdir()
    channels = info.channels
    task = info.layout["task"]
    meta = {"id": dataset_id, "name": info.name, "domain": "test",
            "tasks": [{"task_name": task, "task_target": "MULTICLASS_CLASSIFICATION",
                       "labels": dict(enumerate(info.classes))}],
            "input_size": [channels, side, side], "total_num_samples": len(labels),
            "splits_num_samples": {k: len(v) for k, v in splits.items()}}
    (root / "info.yaml").write_text(yaml.safe_dump(meta))
    np.save(root / "task_labels" / f"{task}.npy", np.asarray(labels, dtype=np.int64))
    images = np.stack([image_value(i, shade, channels, side) for i in range(len(labels))])
    if hdf5:
        with h5py.File(root / "images.hdf5", "w") as f:
            f.create_dataset("images", data=images if channels == 3 else images[..., 0])
    else:
        (root / "images").mkdir()
        for i, img in enumerate(images):
            cv2.imwrite(str(root / "images" / f"{i:06d}.tiff"), img if channels == 1 else img[..., ::-1])
    for split, numbers in splits.items():
        if numbers:
            (root / "splits" / f"{split}.txt").write_text("\n".join(f"images/{n:06d}.tiff" for n in numbers))
    return root


def image_value(i: int, shade: int, channels: int, side: int) -> np.ndarray:
    return np.stack([np.full((side, side), (shade + 7 * i + 50 * c) % 256, dtype=np.uint8)
                     for c in range(channels)], axis=-1)
