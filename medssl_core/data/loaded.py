"""Readers for the studies' original sources, in the layouts their publishers ship.

Images are decoded once with OpenCV, resized to the requested side, and cached as an npz under the medssl
cache (keyed by the files' contents and the decoding code), so nothing is decoded twice."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Loaded:
    """What a reader returns: the fields of ``dataset.ArrayDataset`` it fills."""

    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    patient_ids: dict[str, np.ndarray] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    views: dict[str, np.ndarray] = field(default_factory=dict)
    source_index: dict[str, np.ndarray] = field(default_factory=dict)
    label_codes: dict[str, np.ndarray] = field(default_factory=dict)
