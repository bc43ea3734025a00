"""Chest X-ray metadata: NIH ChestX-ray14's ``Data_Entry_2017*.csv`` and CheXpert's ``train.csv``/``valid.csv``
read into arrays (labels, views, patient ids) without opening an image, so splits and label fractions can be
computed, and tested, on the full real metadata.

Labels. NIH: int64 (N, 14), 1 where the finding is listed in ``Finding Labels``; ``No Finding`` is a row of
zeros. CheXpert: raw int8 codes per observation, ``POSITIVE`` 1, ``NEGATIVE`` 0, ``UNCERTAIN`` -1 and
``BLANK`` -2 (not mentioned in the report); ``apply_label_policy`` turns them into training labels in
{0, 1, MISSING} under a declared uncertain policy (zeros, ones, ignore) and blank policy (negative, missing).

Views. NIH's ``View Position`` (PA, AP); CheXpert's ``lateral`` for a lateral image, else its ``AP/PA`` value
(AP, PA, LL, RL) or ``frontal`` when that is blank. ``view_mask`` filters by PA, AP, LL, RL, frontal (every
non-lateral image) or lateral.
"""

from __future__ import annotations

import csv
import gc
import gzip
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medssl_core.common.errors import DataError
from medssl_core.data.labels import MISSING

NIH_FINDINGS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")
NIH_NO_FINDING = "No Finding"
# ChestMNIST (NIH at 28-224 px) names the same 14 findings its own way: its name -> NIH's
CHESTMNIST_TO_NIH = dict(zip(("atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
                              "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia"),
                             NIH_FINDINGS, strict=True))
# The 14 observations in the column order of CheXpert's CSVs; the 13 findings leave out 'No Finding'.
CHEXPERT_OBSERVATIONS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
                         "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
                         "Pleural Other", "Fracture", "Support Devices")
CHEXPERT_FINDINGS = CHEXPERT_OBSERVATIONS[1:]
CHEXPERT_COMPETITION = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")

POSITIVE, NEGATIVE, UNCERTAIN, BLANK = 1, 0, -1, -2
UNCERTAIN_POLICIES = ("zeros", "ones", "ignore")  # U-Zeros, U-Ones, U-Ignore (uncertain -> MISSING)
BLANK_POLICIES = ("negative", "missing")
VIEW_FILTERS = ("PA", "AP", "LL", "RL", "frontal", "lateral")
LATERAL, FRONTAL = "lateral", "frontal"

_CHEXPERT_CODES = {"1.0": POSITIVE, "1": POSITIVE, "0.0": NEGATIVE, "0": NEGATIVE, "-1.0": UNCERTAIN,
                   "-1": UNCERTAIN, "": BLANK}
_PATIENT = re.compile(r"patient\d+")


@dataclass(frozen=True, eq=False)  # holds arrays: compared by identity
class ChestMetadata:
    """One CSV's rows as arrays, in the CSV's order."""

    names: np.ndarray  # NIH: image file name; CheXpert: the CSV's relative Path
    labels: np.ndarray  # NIH: int64 0/1; CheXpert: int8 raw codes (POSITIVE, NEGATIVE, UNCERTAIN, BLANK)
    patient_ids: np.ndarray  # str
    views: np.ndarray  # str

    def __len__(self) -> int:
        return len(self.names)


def find_file(root: Path, names: Iterable[str]) -> Path | None:
    """The first of ``names`` present under ``root``, plain or gzipped (``name.gz``)."""
    for name in names:
        for candidate in (root / name, root / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def read_csv(path: Path) -> tuple[list[str], list[tuple[str, ...]]]:
    """Header and columns (one tuple of strings each) of a CSV, gzipped or not; a missing, empty or truncated
    file is a DataError."""
    if not path.is_file():
        raise DataError(f"{path} is missing.")
    raw = path.read_bytes()
    text = gzip.decompress(raw).decode() if path.suffix == ".gz" else raw.decode()
    collecting = gc.isenabled()
    gc.disable()  # hundreds of thousands of small lists would trigger collection after collection
    try:
        rows = list(csv.reader(io.StringIO(text)))
        if len(rows) < 2:
            raise DataError(f"{path} is empty (no data rows); re-download it.")
        short = next((i for i, r in enumerate(rows) if len(r) < len(rows[0])), None)
        if short is not None:
            raise DataError(f"{path}: line {short + 1} has fewer fields than the header; the file is truncated or "
                            "corrupt, re-download it.")
        return rows[0], list(zip(*rows[1:]))
    finally:
        if collecting:
            gc.enable()


def _columns(path: Path, header: list[str], columns: list[tuple[str, ...]], wanted: Iterable[str],
             what: str) -> dict[str, tuple[str, ...]]:
    """The named columns; a missing column names the file and what it should be."""
    missing = [c for c in wanted if c not in header]
    if missing:
        raise DataError(f"{path} has no column(s) {missing} (found {header}); is it {what}?")
    return {c: columns[header.index(c)] for c in wanted}


def read_nih_metadata(path: Path, classes: tuple[str, ...] = NIH_FINDINGS) -> ChestMetadata:
    """NIH ``Data_Entry_2017.csv`` (or the v2020 file): 14 findings as 0/1, ``No Finding`` all zeros. A finding
    that is neither one of ``classes`` nor ``No Finding`` is refused: it means another file or spelling."""
    header, columns = read_csv(path)
    cols = _columns(path, header, columns, ("Image Index", "Finding Labels", "Patient ID", "View Position"),
                    "NIH ChestX-ray14's Data_Entry_2017.csv")
    column = {c: j for j, c in enumerate(classes)}
    labels = np.zeros((len(cols["Image Index"]), len(classes)), dtype=np.int64)
    for i, findings in enumerate(cols["Finding Labels"]):
        for finding in findings.split("|"):
            if finding in column:
                labels[i, column[finding]] = 1
            elif finding != NIH_NO_FINDING:
                raise DataError(f"{path}: row {i + 2} lists the finding {finding!r}, which is not one of the "
                                f"{len(classes)} ChestX-ray14 labels {list(classes)}; is it Data_Entry_2017.csv?")
    patients = np.asarray([p.strip() for p in cols["Patient ID"]])
    return ChestMetadata(np.asarray(cols["Image Index"]), labels, patients, np.asarray(cols["View Position"]))


def read_chexpert_metadata(path: Path, classes: tuple[str, ...] = CHEXPERT_COMPETITION) -> ChestMetadata:
    """CheXpert's ``train.csv``/``valid.csv``: raw label codes for ``classes``, views and the patient id that
    each ``Path`` names (``patientNNNNN``)."""
    header, columns = read_csv(path)
    cols = _columns(path, header, columns, ("Path", "Frontal/Lateral", "AP/PA", *classes),
                    f"CheXpert's {path.name}")
    n = len(cols["Path"])
    labels = np.zeros((n, len(classes)), dtype=np.int8)
    for j, c in enumerate(classes):
        labels[:, j] = _chexpert_codes(path, c, cols[c])
    views = [LATERAL if side == "Lateral" else (projection or FRONTAL)
             for side, projection in zip(cols["Frontal/Lateral"], cols["AP/PA"])]
    return ChestMetadata(np.asarray(cols["Path"]), labels, _chexpert_patients(path, cols["Path"]), np.asarray(views))


def _chexpert_codes(path: Path, column: str, values: tuple[str, ...]) -> np.ndarray:
    unknown = sorted(set(values) - set(_CHEXPERT_CODES))
    if unknown:
        raise DataError(f"{path}: column {column!r} holds {unknown[:3]}; CheXpert labels are 1.0, 0.0, -1.0 "
                        "(uncertain) or blank. Is it CheXpert's CSV?")
    return np.asarray([_CHEXPERT_CODES[v] for v in values], dtype=np.int8)


def _chexpert_patients(path: Path, paths: tuple[str, ...]) -> np.ndarray:
    found = _PATIENT.findall("\n".join(paths))  # one regex pass over every path
    if len(found) != len(paths):
        bad = next(p for p in paths if len(_PATIENT.findall(p)) != 1)
        raise DataError(f"{path}: the Path {bad!r} does not name one patient (patientNNNNN); is it CheXpert's CSV?")
    return np.asarray(found)


def apply_label_policy(codes: np.ndarray, uncertain: str, blank: str) -> np.ndarray:
    """Raw CheXpert codes -> int64 labels in {0, 1, MISSING}: uncertain (-1) to 0 (zeros), 1 (ones) or MISSING
    (ignore); blank to 0 (negative) or MISSING (missing)."""
    if uncertain not in UNCERTAIN_POLICIES:
        raise DataError(f"uncertain-label policy must be one of {UNCERTAIN_POLICIES}, not {uncertain!r}")
    if blank not in BLANK_POLICIES:
        raise DataError(f"blank-label policy must be one of {BLANK_POLICIES}, not {blank!r}")
    labels = codes.astype(np.int64)
    labels[codes == UNCERTAIN] = {"zeros": 0, "ones": 1, "ignore": MISSING}[uncertain]
    labels[codes == BLANK] = {"negative": 0, "missing": MISSING}[blank]
    return labels


def view_mask(views: np.ndarray, wanted: Iterable[str]) -> np.ndarray:
    """True for each image whose view is one of ``wanted`` (``frontal``: every image that is not lateral)."""
    wanted = tuple(wanted)
    unknown = sorted(set(wanted) - set(VIEW_FILTERS))
    if unknown:
        raise DataError(f"unknown view(s) {unknown}; views are {', '.join(VIEW_FILTERS)}")
    keep = np.isin(views, [w for w in wanted if w != FRONTAL])
    if FRONTAL in wanted:
        keep |= views != LATERAL
    return keep
