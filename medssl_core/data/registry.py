"""Registry of every dataset the five studies use: what it is, where it comes from, how it is read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from medssl_core.common.errors import DataError, did_you_mean
from medssl_core.data.chest import CHEXPERT_COMPETITION, CHEXPERT_FINDINGS, CHEXPERT_OBSERVATIONS, NIH_FINDINGS
from medssl_core.data.medmnist_info import MEDMNIST, MedMNISTInfo

Task = Literal["binary", "multi-class", "multi-label", "ordinal"]
SourceKind = Literal["medmnist", "folders", "nih_csv", "chexpert_csv", "mimeta", "merged"]
MERGE = "+"  # "a+b+c": the registered datasets a, b and c as one (e.g. MIMeta's three organ views)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    task: Task
    classes: tuple[str, ...]
    channels: int
    licence: str
    source: str  # where a user obtains it (URL or citation)
    kind: SourceKind
    # kind-specific layout description (folder names, CSV names, MedIMeta ids)
    layout: dict = field(default_factory=dict, hash=False, compare=False)
    has_patient_ids: bool = False
    official_splits: bool = False
    sizes: tuple[int, ...] = ()  # MedMNIST image sizes; empty for original sources
    obtain: str = ""  # how to get it, printed when it is missing

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def lateral_classes(self) -> bool:
        """Classes name left/right structures (Organ*): a horizontal flip would change the label."""
        return any("left" in c.lower() for c in self.classes)


def _medmnist_entry(info: MedMNISTInfo) -> DatasetInfo:
    return DatasetInfo(
        name=info.flag,
        task=info.task,
        classes=info.labels,
        channels=info.channels,
        licence=info.licence,
        source="https://zenodo.org/records/10519652 (MedMNIST v3 / MedMNIST+; Yang et al., Sci Data 2023)",
        kind="medmnist",
        official_splits=True,
        sizes=(28, 64, 128, 224),
        obtain=f"`medssl data fetch {info.flag} --size N` downloads it (MD5-checked) into the data directory.",
    )


_ORGAN_CLASSES = ("heart", "left lung", "right lung", "liver", "spleen", "pancreas", "left kidney", "right kidney",
                  "bladder", "left femoral head", "right femoral head")


def _mimeta(dataset_id: str, task: str, classes: tuple[str, ...], channels: int, licence: str) -> DatasetInfo:
    """A MedIMeta dataset (data/medimeta.py); ids, task names and label names as its info.yaml gives them."""
    return DatasetInfo(
        name=f"mimeta_{dataset_id}",
        task="multi-class",
        classes=classes,
        channels=channels,
        licence=licence,
        source="https://zenodo.org/records/7884735 (MedIMeta, Woerner et al. 2024)",
        kind="mimeta",
        layout={"dataset_id": dataset_id, "task": task},
        official_splits=True,
        obtain=f"Download {dataset_id}.zip of MedIMeta from https://zenodo.org/records/7884735 and unzip it into "
        f"'<data-dir>/mimeta/{dataset_id}/' (info.yaml, images.hdf5 or images/, task_labels/, splits/).",
    )


def _chexpert(suffix: str, classes: tuple[str, ...]) -> DatasetInfo:
    """CheXpert-v1.0-small with one label set: the 5 competition labels, the 13 findings or all 14 observations
    (the same files; the split declares the uncertain and blank policies and any view filter)."""
    return DatasetInfo(
        name=f"chexpert_small{suffix}",
        task="multi-label",
        classes=classes,
        channels=1,
        licence="Stanford University CheXpert Dataset Research Use Agreement",
        source="https://stanfordmlgroup.github.io/competitions/chexpert/ (CheXpert-v1.0-small)",
        kind="chexpert_csv",
        layout={"root": "CheXpert-v1.0-small", "train_csv": "train.csv", "valid_csv": "valid.csv"},
        has_patient_ids=True,
        obtain="Obtain CheXpert-v1.0-small under the Stanford research use agreement and unzip it so that "
        "'<data-dir>/CheXpert-v1.0-small/{train.csv,valid.csv,train/,valid/}' exist.",
    )


_ORIGINALS = [
    DatasetInfo(
        name="breakhis400x",
        task="binary",
        classes=("benign", "malignant"),
        channels=3,
        licence="BreaKHis: free for research use (Spanhol et al., IEEE TBME 2016)",
        source="https://www.kaggle.com/datasets/forderation/breakhis-400x",
        kind="folders",
        layout={"root": "BreaKHis 400X", "splits": {"train": "train", "test": "test"},
                "class_dirs": {"benign": 0, "malignant": 1}},
        obtain="Download https://www.kaggle.com/datasets/forderation/breakhis-400x and unzip it so that "
        "'<data-dir>/BreaKHis 400X/{train,test}/{benign,malignant}/*.png' exist.",
    ),
    DatasetInfo(
        name="kather2016",
        task="multi-class",
        classes=("01_TUMOR", "02_STROMA", "03_COMPLEX", "04_LYMPHO", "05_DEBRIS", "06_MUCOSA",
                 "07_ADIPOSE", "08_EMPTY"),
        channels=3,
        licence="CC BY 4.0 (Kather et al., Sci Rep 2016; zenodo 53169)",
        source="https://zenodo.org/record/53169 (Kather_texture_2016_image_tiles_5000.zip)",
        kind="folders",
        layout={"root": "Kather_texture_2016_image_tiles_5000", "splits": {"all": "."},
                "class_dirs": "sorted"},
        obtain="Download Kather_texture_2016_image_tiles_5000.zip from https://zenodo.org/record/53169 and "
        "unzip it into the data directory ('<data-dir>/Kather_texture_2016_image_tiles_5000/01_TUMOR/...').",
    ),
    DatasetInfo(
        name="kermany_cxr",
        task="binary",
        classes=("NORMAL", "PNEUMONIA"),
        channels=1,
        licence="CC BY 4.0 (Kermany et al., Cell 2018; Mendeley 10.17632/rscbjbr9sj.2)",
        source="https://www.kaggle.com/datasets/paultimothymooney/chest-xray-pneumonia",
        kind="folders",
        layout={"root": "chest_xray", "splits": {"train": "train", "val": "val", "test": "test"},
                "class_dirs": {"NORMAL": 0, "PNEUMONIA": 1}},
        obtain="Download https://www.kaggle.com/datasets/paultimothymooney/chest-xray-pneumonia and unzip so "
        "that '<data-dir>/chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg' exist. "
        "PneumoniaMNIST (`medssl data fetch pneumoniamnist`) is the same data at 28-224 px.",
    ),
    DatasetInfo(
        name="nih_chestxray14",
        task="multi-label",
        classes=NIH_FINDINGS,
        channels=1,
        licence="CC0 1.0 (NIH Clinical Center; Wang et al., CVPR 2017)",
        source="https://nihcc.app.box.com/v/ChestXray-NIHCC",
        kind="nih_csv",
        layout={"root": "NIH_ChestXray14", "csv": ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv"),
                "train_list": "train_val_list.txt", "test_list": "test_list.txt", "images": "images"},
        has_patient_ids=True,
        official_splits=True,
        obtain="Download the NIH ChestX-ray14 release (or Kaggle's nih-chest-xrays/data) and place "
        "Data_Entry_2017.csv (or Data_Entry_2017_v2020.csv), train_val_list.txt, test_list.txt and the images "
        "(images/ or images_001/images/ ... images_012/images/) under '<data-dir>/NIH_ChestXray14/'. Without "
        "the two lists every image of the CSV forms one split, 'all'.",
    ),
    *(_chexpert(suffix, classes) for suffix, classes in
      (("", CHEXPERT_COMPETITION), ("_13", CHEXPERT_FINDINGS), ("_14", CHEXPERT_OBSERVATIONS))),
    # 1,645 CT slices each (LiTS)
    *(_mimeta(f"organs_{view}", "organ label", _ORGAN_CLASSES, 1, "CC BY-NC-SA 4.0 (MedIMeta; LiTS organ slices)")
      for view in ("axial", "coronal", "sagittal")),
    # 107,180 H&E tiles: NCT-CRC-HE-100K + CRC-VAL-HE-7K (Kather et al. 2019), the images of PathMNIST
    _mimeta("crc", "tissue class",
            ("adipose (ADI)", "background (BACK)", "debris (DEB)", "lymphocytes (LYM)", "mucus (MUC)",
             "smooth muscle (MUS)", "normal colon mucosa (NORM)", "cancer-associated stroma (STR)",
             "colorectal adenocarcinoma epithelium (TUM)"), 3, "CC BY-SA 4.0 (MedIMeta; NCT-CRC-HE, Kather et al.)"),
]

REGISTRY: dict[str, DatasetInfo] = {
    **{flag: _medmnist_entry(info) for flag, info in MEDMNIST.items()},
    **{d.name: d for d in _ORIGINALS},
}


def get_dataset(name: str) -> DatasetInfo:
    if MERGE in name:
        return merged_dataset(tuple(name.split(MERGE)))
    try:
        return REGISTRY[name]
    except KeyError:
        raise DataError(f"Unknown dataset {name!r}.{did_you_mean(name, REGISTRY)} `medssl data list` shows the "
                        f"{len(REGISTRY)} known datasets.") from None


def merged_dataset(parts: tuple[str, ...]) -> DatasetInfo:
    """Several registered datasets read as one, split by split (a pretraining on sources merged). They must
    label the same classes with the same task and channels, so that one label space describes them all."""
    infos = [get_dataset(p) for p in parts]
    if len(set(parts)) != len(parts) or len(parts) < 2:
        raise DataError(f"a merged dataset names two or more different datasets, not {MERGE.join(parts)!r}")
    first = infos[0]
    for info in infos[1:]:
        if (info.task, info.classes, info.channels) != (first.task, first.classes, first.channels):
            raise DataError(f"{info.name} cannot be merged with {first.name}: task, classes and channels must "
                            f"agree ({info.task}, {info.n_classes} classes, {info.channels} channels vs "
                            f"{first.task}, {first.n_classes}, {first.channels}).")
    if len({i.kind == "medmnist" for i in infos}) > 1:
        raise DataError(f"{MERGE.join(parts)!r} mixes MedMNIST files with original sources; merge like with like.")
    return DatasetInfo(
        name=MERGE.join(parts), task=first.task, classes=first.classes, channels=first.channels,
        licence="; ".join(dict.fromkeys(i.licence for i in infos)), source=" + ".join(i.source for i in infos),
        kind="merged", layout={"parts": parts}, has_patient_ids=all(i.has_patient_ids for i in infos),
        official_splits=all(i.official_splits for i in infos), sizes=first.sizes if first.kind == "medmnist" else (),
        obtain=" ".join(i.obtain for i in infos))
