"""What a reader of an original source returns: images, labels or label codes, patient ids and views per split, and
the files it read (their checksums version the data)."""

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
