"""SSL-MIMeta-CTscan (Tübingen student project, 2023): Barlow Twins ResNet-18 on MedIMeta's organ slices and
colorectal histology, readout ("surgical") vs full fine-tuning, 0.5-100 % of the labels.

Source notes: docs/studies/mimeta_barlow.md (code: train.py, finetuning.py, config.yaml; numbers: the 13-page report,
Plot_accuracy.Rmd and the report's figures). Every value below is the code's unless a Decision says
otherwise; each Decision is a point where the code, the config and the report disagree or the code has a
bug, and the runs record which side they took.

Data: MedIMeta as its publisher ships it (data/medimeta.py). Where it is absent the public stand-ins are used
and every result says so: OrganA/C/SMNIST at 224 px for the three organ views (the same LiTS volumes, many more
slices: 58,830 axial images against MedIMeta's 1,645) and PathMNIST for CRC (the same 107,180 NCT-CRC-HE
tiles). MedMNIST orders the organ classes otherwise (bladder, femur-left, ...): labels are renumbered by class
name into MedIMeta's order (heart, left lung, ...), so per-class results read the same on either.

Known deviations, not decisions: lightly's 2023 BarlowTwinsLoss standardised each view with the unbiased
standard deviation, ours with the biased one (BatchNorm's; C differs by a factor (N - 1) / N); lightly's
GaussianBlur takes only sigma, ours a kernel of 10 % of the side; the hand-picked fine-tuning checkpoint (one
of the five with the lowest val loss) is the lowest-val-loss one here.
"""

from medssl_core.models.imagenet import IMAGENET_MEAN, IMAGENET_STD
from medssl_core.plan.study import Comparison, Decision, Method, Profile, Protocol, Reported, Study, StudyDataset

CITATION = ("SSL-MIMeta-CTscan: Self-Supervised Learning for Medical Image Analysis (Barlow Twins on MIMeta; "
            "University of Tübingen student project, 2023; report PDF, Plot_accuracy.Rmd)")

ORGANS = ("heart", "left lung", "right lung", "liver", "spleen", "pancreas", "left kidney", "right kidney",
          "bladder", "left femoral head", "right femoral head")
MEDMNIST_ORGANS = {"bladder": "bladder", "femur-left": "left femoral head", "femur-right": "right femoral head",
                   "heart": "heart", "kidney-left": "left kidney", "kidney-right": "right kidney", "liver": "liver",
                   "lung-left": "left lung", "lung-right": "right lung", "pancreas": "pancreas", "spleen": "spleen"}
TISSUES = ("adipose (ADI)", "background (BACK)", "debris (DEB)", "lymphocytes (LYM)", "mucus (MUC)",
           "smooth muscle (MUS)", "normal colon mucosa (NORM)", "cancer-associated stroma (STR)",
           "colorectal adenocarcinoma epithelium (TUM)")
PATHMNIST_TISSUES = dict(zip(("adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
                              "normal colon mucosa", "cancer-associated stroma",
                              "colorectal adenocarcinoma epithelium"), TISSUES, strict=True))

VIEWS = ("axial", "coronal", "sagittal")
CT_MEDIMETA = "+".join(f"mimeta_organs_{v}" for v in VIEWS)
CT_STAND_IN = "organamnist+organcmnist+organsmnist"
ORGAN_FRACTIONS = (0.1, 0.25, 0.5, 1.0)
CRC_FRACTIONS = (0.005, 0.01, 0.1, 0.25, 0.5, 1.0)
_ORGAN_SPLIT = {"scheme": "official"}  # the decision 'split' sets the code's random 80/10/10


def _organ_view(view: str, stand_in: str) -> StudyDataset:
    return StudyDataset(f"organs_{view}", f"{view.capitalize()} organ slices", (f"mimeta_organs_{view}", stand_in),
                        _ORGAN_SPLIT, pretrained_on=("ct",), fractions=ORGAN_FRACTIONS, classes=ORGANS,
                        class_names={stand_in: MEDMNIST_ORGANS})


DATASETS = (
    *(_organ_view(v, s) for v, s in zip(VIEWS, ("organamnist", "organcmnist", "organsmnist"), strict=True)),
    # CT pretraining: the three views concatenated (4,935 slices), never evaluated as such
    StudyDataset("ct", "CT organ slices, three views", (CT_MEDIMETA, CT_STAND_IN), _ORGAN_SPLIT, evaluated=False,
                 classes=ORGANS, class_names={CT_STAND_IN: MEDMNIST_ORGANS}),
    StudyDataset("crc", "Colorectal cancer histology (NCT-CRC-HE)", ("mimeta_crc", "pathmnist"), _ORGAN_SPLIT,
                 fractions=CRC_FRACTIONS, classes=TISSUES, class_names={"pathmnist": PATHMNIST_TISSUES},
                 methods=("barlow", "imagenet")),  # no from-scratch baseline on CRC
    # smoke data for a CPU (the quick profile): the project's real BreastMNIST, standing in for nothing; it runs
    # the organ slices' path (in-domain pretraining aside): readout, full and from-scratch fine-tuning
    StudyDataset("smoke_breast", "BreastMNIST (smoke data, not the study's)", ("breastmnist",), _ORGAN_SPLIT,
                 fractions=(0.25, 1.0)),
)

METHODS = (
    # lightly BarlowTwinsProjectionHead(512, 2048, 2048): Linear-BN-ReLU, Linear-BN-ReLU, Linear; lightly's
    # BarlowTwinsLoss default lambda 5e-3 (not the official 0.0051)
    Method("barlow", "Barlow Twins", {"name": "barlow_twins", "loss_kwargs": {"lambda_offdiag": 5e-3},
                                      "projector": [2048, 2048, 2048]}),
    Method("imagenet", "ImageNet ResNet-18", None, init="imagenet"),
    Method("random_init", "No pretraining", None),
)

# Lightning's DataLoader keeps the last partial batch
_FIT = {"epochs": 1000, "batch_size": 128, "optimizer": {"name": "adam", "lr": 1e-4}, "select_metric": "loss",
        "last_batch": "keep"}
PROTOCOLS = (
    # trainall: False: Adam over the head only; the decision 'readout_bn' sets the backbone's BN mode
    Protocol("readout", "Readout (surgical) fine-tuning", {
        "kind": "fit", "head": {"type": "linear"}, "train_backbone": False, "fit": _FIT},
             methods=("barlow", "imagenet"), script="finetuning.py"),
    Protocol("full", "Full fine-tuning", {"kind": "fit", "head": {"type": "linear"}, "train_backbone": True,
                                          "fit": _FIT}, script="finetuning.py"),
)

_SPLIT_80_10_10 = {"scheme": "random_split", "fractions": [0.8, 0.1, 0.1], "seed_policy": "fixed", "fixed_seed": 42}
DECISIONS = (
    Decision("split", "random 80/10/10 split of the whole dataset, seed 42 (utils/data.py; the report says the "
             "MedIMeta splits were 'diligently adhered to')", "split", _SPLIT_80_10_10,
             {"scheme": "official", "fixed_seed": 42}, stage="data"),  # 42 seeds a label subset drawn under it
    Decision("label_subset", "labelled fraction drawn by random_split(train, [f, 1 - f]) with the split's generator "
             "carried on: unstratified, the same for every seed", "split.label_fraction", "random_split",
             "stratified", stage="evaluate"),
    Decision("crc_colour", "CRC histology read as grey, replicated to 3 channels (MIMetaWrapper converts to 'L', "
             "fine-tuning applies Grayscale(3))", "channel_mode", "grey", "rgb", stage="data", datasets=("crc",)),
    Decision("double_softmax", "readout head ends in a softmax and F.cross_entropy softmaxes it again",
             "protocol.fit.loss.double_softmax", True, False, stage="evaluate"),
    Decision("readout_bn", "backbone in train() mode during readout: its BatchNorm statistics keep updating",
             "protocol.backbone_bn_train", True, False, stage="evaluate", protocols=("readout",)),
    Decision("finetune_norm", "fine-tuning input not normalised at all (ToTensor only, also for ImageNet weights) "
             "vs the pretraining's ImageNet normalisation", "augment",
             {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "resize_mode": "bilinear"},
             {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "resize_mode": "bilinear"}, stage="evaluate"),
    Decision("pretrain_batch", "pretraining batch 64 (config.yaml) vs 256 (report; the checkpoint name "
             "epoch=999-step=84000 implies about 1,024 over 4 GPUs)", "train.batch_size", 64, 256, stage="pretrain",
             methods=("barlow",)),
    Decision("transductive", "CT pretraining splits the 4,935 concatenated slices 80/10/10 itself, so its training "
             "part holds most of each view's test images; corrected: each view split alone, training images only",
             "split.per_part", False, True, stage="pretrain", datasets=("ct",)),
    Decision("finetune_length", "about 1,000 fine-tuning epochs (epoch=983 checkpoint), checkpoint by val loss; "
             "corrected: 100 epochs, the same selection", "protocol.fit.epochs", 1000, 100, stage="evaluate"),
    # CRC and the smoke data have no left/right classes: they keep the flip either way
    Decision("ct_hflip", "CT pretraining flips horizontally with p 0.5 (SimCLRTransform's default) although the "
             "organ classes tell left from right; corrected: no flip", "augment.hflip", 0.5, 0.0, stage="pretrain",
             methods=("barlow",), datasets=("ct",)),
)

PRETRAIN = {
    "backbone": {"arch": "resnet18", "small_stem": False},  # torchvision resnet18(zero_init_residual=True), random
    "channel_mode": "rgb",  # Grayscale(num_output_channels=3): three channels for every backbone
    # lightly SimCLRTransform(input_size=224) defaults; the grid drops hflip where classes are left/right organs,
    # which the decision 'ct_hflip' puts back as published
    "augment": {"crop_scale": [0.08, 1.0], "hflip": 0.5, "jitter": [0.8, 0.8, 0.8, 0.2], "jitter_p": 0.8,
                "grayscale": 0.2, "blur_p": 0.5, "blur_sigma": [0.1, 2.0], "mean": IMAGENET_MEAN, "std": IMAGENET_STD},
    "train": {"epochs": 1000, "batch_size": 256, "optimizer": {"name": "adam", "lr": 0.03, "weight_decay": 0.03},
              "schedule": {"name": "none"}, "monitor_every": 10, "knn_k": 20, "knn_metric": "cosine",
              "monitor_bank": 10_000},
    "amp": "auto",
}

R, RMD, F = "report text", "Plot_accuracy.Rmd", "read off the report's figure (+-0.6 pp)"
_COLUMNS = (("barlow", "readout"), ("barlow", "full"), ("imagenet", "readout"), ("imagenet", "full"),
            ("random_init", "full"))
# docs/studies/mimeta_barlow.md, 'Reported numbers': accuracy % on the test split; None where the study has no such run
_TABLE = {
    "organs_sagittal": (R, {0.1: (63.41, 68.9, 54.27, 62.2, 40.2), 0.25: (71.34, 75.0, 48.78, 71.95, 52.4),
                            0.5: (77.44, 78.66, 47.56, 79.88, 50.6), 1.0: (79.27, 78.05, 50.0, 76.22, 56.1)}),
    "organs_axial": (RMD, {0.1: (84.15, 85.98, 64.02, 80.49, 73.78), 0.25: (90.24, 93.90, 71.95, 89.02, 86.59),
                           0.5: (92.68, 93.29, 75.00, 95.12, 89.02), 1.0: (93.90, 95.73, 78.05, 92.68, 90.85)}),
    "organs_coronal": (F, {0.1: (75.6, 86.0, 47.0, 85.4, 62.8), 0.25: (89.6, 90.9, 60.4, 95.1, 76.8),
                           0.5: (89.6, 93.9, 58.5, 92.1, 83.5), 1.0: (94.5, 94.5, 78.0, 92.7, 87.8)}),
    "crc": (R, {0.005: (91.25, 88.93, 85.91, 89.30, None), 0.01: (93.26, 92.03, 88.66, 93.00, None),
                0.1: (95.78, 96.34, 92.40, 95.98, None), 0.25: (96.29, 96.42, 93.11, 94.57, None),
                0.5: (96.43, 97.34, 93.49, 97.74, None), 1.0: (96.64, 97.97, 93.61, 96.86, None)}),
}


def _source(dataset: str, method: str, default: str) -> str:
    # sagittal's no-pretraining column is only in Fig. 1
    return F if dataset == "organs_sagittal" and method == "random_init" else default


def confusion_metric(true: str, predicted: str) -> str:
    """A reported confusion rate: the share of class ``true``'s test images predicted as ``predicted``, a cell of
    the row-normalised confusion matrix off its diagonal (whose cells are the ``recall:<class>`` rows)."""
    return f"confusion:{true}->{predicted}"


MUSCLE, STROMA = TISSUES[5], TISSUES[7]
# coronal readout with every label, from the report's text on its Figs. 2 (BT) and 3 (ImageNet): per class, the
# recall (%) it states, or only a bound ('>' a value: declared without a value, the bound in the note)
_CORONAL = {
    "barlow": {**dict.fromkeys(("heart", "left lung", "right lung", "liver", "left femoral head",
                                "right femoral head"), 100.0),
               **dict.fromkeys(("pancreas", "right kidney"), ">90"),
               **dict.fromkeys(("spleen", "left kidney", "bladder"), ">80")},
    "imagenet": {**dict.fromkeys(("heart", "left lung", "right lung"), 0.0), "left kidney": 42.86,
                 **dict.fromkeys(("liver", "pancreas", "right kidney", "left femoral head"), ">80"),
                 # the text names right kidney a second time (> 70 %) and the right femoral head nowhere
                 **dict.fromkeys(("spleen", "bladder", "right femoral head"), ">70")},
}


def _coronal(method: str, organ: str, value: float | str) -> Reported:
    metric = f"recall:{organ}"
    if not isinstance(value, str):
        return Reported("organs_coronal", method, "readout", metric, round(value / 100, 6), R)
    guess = (": the text's second 'right kidney', read as this class"
             if (method, organ) == ("imagenet", "right femoral head") else "")
    return Reported("organs_coronal", method, "readout", metric, None, R,
                    note=f"above {value[1:]} % (the report gives only this bound){guess}")


REPORTED = (
    *(Reported(ds, method, protocol, "accuracy", round(value / 100, 6), _source(ds, method, src), fraction)
      for ds, (src, rows) in _TABLE.items() for fraction, values in rows.items()
      for (method, protocol), value in zip(_COLUMNS, values, strict=True) if value is not None),
    # per-class recall of BT readout quoted in the report (CRC, 100 % and 0.5 % of the labels)
    *(Reported("crc", "barlow", "readout", f"recall:{TISSUES[i]}", round(value / 100, 6), R, fraction)
      for fraction, recalls in ((1.0, (99.54, 99.83, 97.08, 99.68, 95.72, 93.68, 95.62, 90.39, 97.71)),
                                (0.005, (97.69, 95.91, 88.22, 99.37, 90.24, 84.03, 89.74, 79.57, 95.29)))
      for i, value in enumerate(recalls)),
    # and its confusions between smooth muscle and stroma
    *(Reported("crc", "barlow", "readout", confusion_metric(true, predicted), round(value / 100, 6), R, fraction)
      for fraction, true, predicted, value in ((1.0, MUSCLE, STROMA, 5.07), (1.0, STROMA, MUSCLE, 5.60),
                                               (0.005, STROMA, MUSCLE, 8.96), (0.005, MUSCLE, STROMA, 12.03))),
    *(_coronal(method, organ, value) for method, recalls in _CORONAL.items() for organ, value in recalls.items()),
)

READOUT_CLAIM = ("Barlow Twins pretraining beats ImageNet weights with readout fine-tuning (README: sagittal ~79 % "
                 "vs 50 %, CRC ~97 % vs 94 %)")
FULL_CLAIM = "Barlow Twins pretraining beats no pretraining with full fine-tuning on the organ slices (report Fig. 1)"
CLAIMS = (READOUT_CLAIM, FULL_CLAIM,
          "Sagittal ImageNet readout accuracy falls as labels grow (54 -> 50 %), attributed to the small test set.")

QUICK = {
    # ResNet-18 at 28 px for a CPU: 30 epochs of Adam at a rate that does not diverge in so few steps
    "pretrain": {"train": {"epochs": 30, "batch_size": 128, "monitor_every": 10,
                           "optimizer": {"name": "adam", "lr": 1e-3, "weight_decay": 1e-6}}},
    # 20 epochs are 100 steps on 546 images: at the study's Adam 1e-4 a readout head barely leaves its init and
    # predicts the majority class, so the quick profile fine-tunes at 1e-3
    "protocols": {p: {"protocol": {"fit": {"epochs": 20, "optimizer": {"lr": 1e-3}}}} for p in ("readout", "full")},
}

STUDY = Study(
    name="mimeta_barlow",
    title="Barlow Twins on MedIMeta organ slices and CRC (SSL-MIMeta-CTscan)",
    citation=CITATION,
    datasets=DATASETS,
    methods=METHODS,
    protocols=PROTOCOLS,
    decisions=DECISIONS,
    profiles=(
        Profile("paper", "the study's settings: ResNet-18 from scratch, 1,000 pretraining epochs at 224 px, readout "
                "and full fine-tuning at 10-100 % (organs) and 0.5-100 % (CRC) of the labels, 3 seeds, every "
                "decision one at a time; MedIMeta, else its MedMNIST stand-ins (downloaded); GPU-days",
                seeds=(0, 1, 2), variants=("as_published", "each", "corrected"),
                image_size={s: 224 for s in (*CT_MEDIMETA.split("+"), CT_MEDIMETA, "mimeta_crc", "organamnist",
                                              "organcmnist", "organsmnist", CT_STAND_IN, "pathmnist")},
                datasets=("organs_axial", "organs_coronal", "organs_sagittal", "crc"), needs_gpu=True),
        Profile("quick", "smoke data only (BreastMNIST at 28 px, not the study's data): ResNet-18, 30 epochs of "
                "Adam, 20 fine-tuning epochs at lr 1e-3, labels 25 and 100 %; minutes on a CPU", seeds=(0, 1),
                variants=("as_published", "corrected"), variant_seeds={"as_published": (0,)},
                image_size={"breastmnist": 28}, datasets=("smoke_breast",),
                overrides=QUICK,
                moot_decisions=("pretrain_batch", "finetune_length")),
    ),
    pretrain_defaults=PRETRAIN,
    evaluate_defaults={"checkpoint": "last"},  # the final pretraining checkpoint (epoch=999)
    reported=REPORTED,
    claims=CLAIMS,
    comparisons=(Comparison(READOUT_CLAIM, ("barlow",), "imagenet", "readout"),
                 Comparison(FULL_CLAIM, ("barlow",), "random_init", "full")),
)
