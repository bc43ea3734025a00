"""Gravity-2010 SimCLR chest X-ray project (UMBC course project, 2025): SimCLR ResNet-50 on CheXpert, label
efficiency against random and ImageNet starts, transfer between CheXpert and NIH ChestX-ray14.

Source notes: docs/studies/chestx_transfer.md (code: CheXpertResNet_(1).ipynb for pretraining, "Phase 3" and "Phase 4";
3Models.ipynb for Grad-CAM and embeddings; Transfer_Learning.ipynb for CheXpert -> NIH). Every value below is
the code's unless a Decision says otherwise.

The published SSL curve is contaminated: the SSL encoder is one object, fine-tuned in Phase 3 and then reused,
frozen, by Phase 3's linear probe and by both SSL columns of Phase 4 (decision ``shared_encoder``). Every number
is the best epoch's mean AUC on the first 5 or 10 validation batches, the same images that chose the epoch
(``eval_set``). The corrected variant starts each run from a fresh copy of the pretrained encoder, selects on the
validation subset and scores once on a held-out test set: CheXpert's radiologist-labelled valid.csv, NIH's
official test list (both patient-disjoint from training).

Transfer: SimCLR pretrained on CheXpert is fine-tuned and tested on NIH with the transfer notebook's own recipe
(``transfer_finetune``, ``transfer_linear``: they run only on NIH with a CheXpert encoder, so their reported
numbers sit beside no in-domain cell); Phase 3 and 4 run both ways too, as the README promises both (the
original's CheXpert -> NIH run read blank images). NIH is read as the notebook read it, the first images of its
official lists, unless ``nih_first_images`` is corrected. Each dataset is scored in its own label space (5
CheXpert findings, 14 NIH findings); SHARED_LABELS names the five findings both label.

Known deviations, not decisions: the original pretrained on the first 5,000 rows of the 70 %-patient frame
(patients of its later validation split among them), here on the 5,000 training images; its min-train-loss
checkpoint is the last one here (no labels are read to pick an encoder); evaluation resizes 256 -> 224 where the
code centre-crops 224; Phase 3's fp16 autocast is bf16 on CUDA; a label without both classes among the scored
images is left out of the mean where the code scored it 0.5; the encoder is not carried from one label fraction
to the next (the code's BatchNorm statistics drifted across fractions); the transfer probe starts from the
pretrained encoder, where the code's shared layers carried the BatchNorm statistics that 'SSL fine-tuned' had
just updated; the transfer recipe's cosine schedule decays per step to 0, the code's per epoch to 1e-6. The
original's silent fallbacks
(ImageNet weights when an SSL checkpoint fails, grey dummy images with random labels when a file fails) are
never reproduced: a missing checkpoint or image is an error.
"""

from medssl_core.data.chest import CHESTMNIST_TO_NIH, NIH_FINDINGS
from medssl_core.models.imagenet import IMAGENET_MEAN, IMAGENET_STD
from medssl_core.plan.study import (
    AS_DECLARED,
    Comparison,
    Decision,
    Method,
    Profile,
    Protocol,
    Reported,
    Study,
    StudyDataset,
)

CITATION = ("Gravity-2010 (G. Jain), Self-supervised learning for medical imaging: SimCLR on CheXpert and NIH "
            "ChestX-ray14, UMBC computer vision course project, 2025 (github.com/Gravity-2010)")

# the findings both datasets label (the notebook's chexpert_to_nih_mapping): CheXpert name -> NIH name
SHARED_LABELS = {"Atelectasis": "Atelectasis", "Cardiomegaly": "Cardiomegaly", "Consolidation": "Consolidation",
                 "Edema": "Edema", "Pleural Effusion": "Effusion"}

# train_data/val_data: 70 % of the patients (unseeded np.random.choice), then a patient-level 85/15 split;
# train_subset/val_subset: .sample(5000 / 1000, random_state=42); U-zeros; test: CheXpert's valid.csv
CHEXPERT_SPLIT = {"scheme": "sample", "base": "patient", "patient_fraction": 0.7, "val_fraction": 0.15,
                  "sizes": {"train": 5000, "val": 1000}, "sample_seed": 42, "uncertain": "zeros",
                  "blank": "negative", "roles": {"test": "valid"}, "label_fraction": "sample"}
# corrected (decision nih_first_images): a seeded sample, val drawn by patient from train_val_list, test from
# test_list; as published, the first 5,000 of train_val_list and the first 1,000 of test_list (its only evaluation set)
NIH_SPLIT = {"scheme": "sample", "base": "patient", "val_fraction": 0.1, "sizes": {"train": 5000, "val": 1000,
             "test": 1000}, "sample_seed": 42, "label_fraction": "sample"}
CHESTMNIST_SPLIT = {"scheme": "sample", "base": "official", "sizes": {"train": 5000, "val": 1000, "test": 1000},
                    "sample_seed": 42, "label_fraction": "sample"}
_GREY_AS_RGB = {"channel_mode": "rgb"}  # .convert('RGB')

DATASETS = (
    StudyDataset("chexpert", "CheXpert-v1.0-small, 5 competition findings", ("chexpert_small",), CHEXPERT_SPLIT,
                 _GREY_AS_RGB, pretrained_on=("chexpert", "nih")),
    StudyDataset("nih", "NIH ChestX-ray14, 14 findings", ("nih_chestxray14", "chestmnist"), NIH_SPLIT, _GREY_AS_RGB,
                 pretrained_on=("nih", "chexpert"), classes=NIH_FINDINGS, class_names={"chestmnist": CHESTMNIST_TO_NIH},
                 source_split={"chestmnist": CHESTMNIST_SPLIT}),
    # smoke data for a CPU (the quick profile): the real PneumoniaMNIST, a binary chest X-ray task, 1,000 images
    StudyDataset("smoke_pneumonia", "PneumoniaMNIST (smoke data, not the study's)", ("pneumoniamnist",),
                 {"scheme": "official"}, _GREY_AS_RGB,
                 source_split={"pneumoniamnist": {"scheme": "sample", "base": "official", "sizes": {"train": 1000},
                                                  "sample_seed": 42, "label_fraction": "sample"}}),
)

# resnet50(pretrained=False) / resnet50(weights=None): torchvision's default, residual BatchNorms not zeroed
_TORCHVISION_INIT = {"backbone": {"zero_init_residual": False}}
METHODS = (
    # SimCLRModel: resnet50(pretrained=False), fc = Identity; ProjectionHead 2048-512-128 without BN; NT-Xent 0.5
    Method("simclr", "SimCLR", {"name": "simclr", "loss_kwargs": {"temperature": 0.5}, "projector": [512, 128],
                                "projector_hidden_bn": False}, hparams=_TORCHVISION_INIT),
    Method("imagenet", "ImageNet (IMAGENET1K_V2)", None, init="imagenet_v2"),
    Method("random_init", "Random init", None, hparams=_TORCHVISION_INIT),
)

# train_transform: Resize(256, 256), RandomCrop(224), RandomHorizontalFlip: a fixed 224/256 crop, no scaling
_TRAIN_AUG = {"crop_scale": [(224 / 256) ** 2] * 2, "crop_ratio": [1.0, 1.0], "hflip": 0.5}
_ADAMW = {"name": "adamw", "lr": 1e-4, "weight_decay": 1e-4}
_ONECYCLE = {"name": "onecycle"}  # OneCycleLR(max_lr=...): torch's defaults, the optimiser's lr is the peak


def _fit(epochs: int, batch: int, lr: float, schedule: dict, val_limit: int, **extra) -> dict:
    return {"epochs": epochs, "batch_size": batch, "optimizer": {**_ADAMW, "lr": lr}, "schedule": schedule,
            "select_metric": "auc", "augment": _TRAIN_AUG, "last_batch": "keep", "val_limit": val_limit, **extra}


def _phase4_epochs(fraction: float, n: int = 5000) -> int:
    """train_low_data: min(10, max(5, int(10 * n_images / 1000)))."""
    return min(10, max(5, int(10 * int(n * fraction) / 1000)))


# 3Models.ipynb analyses Phase 3's four models: Grad-CAM (here of the first 8 test images) and a 2-D embedding of
# the test features (UMAP there; t-SNE here unless umap-learn is installed and a profile asks for it)
_ANALYSIS = {"gradcam": 8, "embedding": "tsne"}
PHASE4_FRACTIONS = (0.01, 0.05, 0.1, 0.25, 0.3, 0.5, 1.0)  # as coded, plus the README's 25 % and 100 %
_SCRATCH_LR = {"random_init": {"protocol": {"fit": {"optimizer": {"lr": 3e-4}}}}}
TRANSFER = (("nih", "chexpert"),)  # the notebook's one direction: NIH evaluated with a CheXpert encoder
_TRANSFER_HEAD = {"type": "linear", "dropout": 0.5}  # Dropout(0.5) + Linear(2048, 14)


def _transfer_fit(lr: float) -> dict:
    """train_model: Adam without weight decay, CosineAnnealingLR over the 5 epochs, BCE, batch 32 with drop_last;
    Resize(256) + RandomCrop(224), flip, RandomRotation(10), ColorJitter(brightness 0.2, contrast 0.2); the best
    epoch's mean AUC on its one evaluation set, all of it."""
    return {"epochs": 5, "batch_size": 32, "optimizer": {"name": "adam", "lr": lr}, "schedule": {"name": "cosine"},
            "select_metric": "auc", "augment": {**_TRAIN_AUG, "rotate_degrees": 10, "rotate_p": 1.0,
                                                "jitter": [0.2, 0.2, 0.0, 0.0], "jitter_p": 1.0}}

PROTOCOLS = (
    # fast_train_5_epochs: batch 64, OneCycleLR, best epoch's AUC on the first 10 val batches (640 images);
    # Phase 3's SSL-FT model is what the as-published SSL runs start from, so it is kept
    Protocol("phase3_finetune", "Phase 3: fine-tuning, 5,000 images, 5 epochs", {
        "kind": "fit", "head": {"type": "linear"}, "train_backbone": True, **_ANALYSIS,
        "fit": _fit(5, 64, 1e-4, _ONECYCLE, 640, save_weights=True)}, per_method=_SCRATCH_LR, fractions=(1.0,),
             script="phase3"),
    # the linear probe's AdamW lr 0.1 is overridden by OneCycleLR(max_lr=1e-4): it ran at 1e-4; model.train()
    # keeps the frozen encoder's BatchNorm updating
    Protocol("phase3_linear", "Phase 3: linear probe, 5,000 images, 3 epochs", {
        "kind": "fit", "head": {"type": "linear"}, "train_backbone": False, "backbone_bn_train": True, **_ANALYSIS,
        "fit": _fit(3, 64, 1e-4, _ONECYCLE, 640)}, methods=("simclr",), fractions=(1.0,), script="phase3"),
    # train_low_data: batch 32, AdamW, no schedule, the best epoch's AUC on the first 5 val batches (320 images)
    Protocol("phase4_finetune", "Phase 4: fine-tuning on a label fraction", {
        "kind": "fit", "head": {"type": "linear"}, "train_backbone": True,
        "fit": _fit(10, 32, 1e-4, {"name": "none"}, 320)}, per_method=_SCRATCH_LR,
             per_fraction={f: {"protocol": {"fit": {"epochs": _phase4_epochs(f)}}} for f in PHASE4_FRACTIONS},
             script="phase4"),
    Protocol("phase4_linear", "Phase 4: linear probe on a label fraction", {
        "kind": "fit", "head": {"type": "linear"}, "train_backbone": False, "backbone_bn_train": True,
        "fit": _fit(5, 32, 0.1, {"name": "none"}, 320)}, methods=("simclr",), script="phase4"),
    # Transfer_Learning.ipynb, CheXpert -> NIH: an encoder pretrained on CheXpert (random and ImageNet starts have no
    # pretraining) fine-tuned or probed on NIH with its own recipe
    Protocol("transfer_finetune", "Transfer CheXpert -> NIH: fine-tuning, 5,000 images, 5 epochs", {
        "kind": "fit", "head": _TRANSFER_HEAD, "train_backbone": True, "fit": _transfer_fit(1e-5)},
             per_method={"random_init": {"protocol": {"fit": {"optimizer": {"lr": 1e-4}}}}}, fractions=(1.0,),
             script="transfer", pairings=TRANSFER),
    # the probe: Adam 1e-3 on the head alone; model.train() keeps the frozen encoder's BatchNorm updating
    Protocol("transfer_linear", "Transfer CheXpert -> NIH: linear probe, 5,000 images, 5 epochs", {
        "kind": "fit", "head": _TRANSFER_HEAD, "train_backbone": False, "backbone_bn_train": True,
        "fit": _transfer_fit(1e-3)}, methods=("simclr",), fractions=(1.0,), script="transfer", pairings=TRANSFER),
)

_SSL_STARTS = ("phase3_linear", "phase4_finetune", "phase4_linear")
DECISIONS = (
    Decision("shared_encoder", "the SSL encoder is one object: Phase 3's fine-tuning mutates it, Phase 3's probe "
             "freezes it, and both SSL columns of Phase 4 reuse it frozen (BatchNorm in train mode), so 'SSL "
             "fine-tuned' is a probe of an encoder already supervised on 5,000 labelled images; corrected: each run "
             "starts from a fresh copy of the pretrained encoder",
             ("start_from", "protocol.train_backbone", "protocol.backbone_bn_train"),
             ("phase3_finetune", False, True), (None, AS_DECLARED, AS_DECLARED), stage="evaluate",
             methods=("simclr",), protocols=_SSL_STARTS),
    Decision("eval_set", "scored on the first 5 (Phase 4) or 10 (Phase 3) validation batches, 320 / 640 images, "
             "as the best epoch's AUC on those same images; corrected: selected on the whole validation subset, "
             "scored once on the held-out test set", ("protocol.fit.val_limit", "protocol.fit.score_on"),
             (AS_DECLARED, "val"), (None, "test"), stage="evaluate"),
    Decision("probe_bn", "the frozen encoder of a linear probe in train() mode: its BatchNorm statistics follow "
             "the probe's batches; corrected: eval mode, a probe of fixed features", "protocol.backbone_bn_train",
             True, False, stage="evaluate", protocols=("phase3_linear", "phase4_linear", "transfer_linear")),
    Decision("transfer_shared_layers", "the transfer notebook builds its SSL probe on nn.Sequential(*[layer for "
             "layer in ssl_encoder]), the fine-tuning model's own modules, and freezes them before either trains: "
             "'SSL fine-tuned' trains only its head (lr 1e-5), BatchNorm in train mode; corrected: the whole network",
             ("protocol.train_backbone", "protocol.backbone_bn_train"), (False, True), (AS_DECLARED, AS_DECLARED),
             stage="evaluate", methods=("simclr",), protocols=("transfer_finetune",)),
    Decision("nih_first_images", "NIH: the first 5,000 images of train_val_list trained on and the first 1,000 of "
             "test_list, its one evaluation set, in list order (here a held-out test takes the next ones); "
             "corrected: a seeded sample, validation patients drawn from train_val_list, test images from test_list",
             ("split.base", "split.val_fraction", "split.sample_seed", "split.roles", "split.distinct_roles"),
             ("official", None, None, {"val": "test"}, True), (AS_DECLARED,) * 5, stage="data", datasets=("nih",)),
    Decision("onecycle_lr", "OneCycleLR(max_lr=1e-4) overrides the Phase 3 probe's AdamW lr 0.1: it peaked at 1e-4; "
             "corrected: the intended 0.1 as the cycle's peak", "protocol.fit.optimizer.lr", 1e-4, 0.1,
             stage="evaluate", protocols=("phase3_linear",)),
    Decision("patient_sampling", "70 % of the patients and the 85/15 patient split drawn unseeded (a new split each "
             "run: 156,649 / 156,573 / 156,159 images in three cells); corrected: one seeded split",
             "split.seed_policy", "per_run", "fixed", stage="data", datasets=("chexpert",)),
    Decision("lateral_views", "lateral images kept (the code never filters Frontal/Lateral); corrected: frontal only",
             "split.views", (), ("frontal",), stage="data", datasets=("chexpert",)),
    Decision("label_subset", "a label fraction is train_subset.sample(n, random_state=42): unstratified, the same "
             "images for every seed; corrected: stratified by each image's rarest finding, drawn per seed",
             "split.label_fraction", "sample", "stratified", stage="evaluate", protocols=("phase4_finetune",
                                                                                            "phase4_linear")),
)

PRETRAIN = {
    "backbone": {"arch": "resnet50", "small_stem": False},
    "channel_mode": "rgb",
    # Resize(224) then RandomResizedCrop(224, scale 0.8-1): the crop is cut from the image held at source_size
    "augment": {"crop_scale": [0.8, 1.0], "hflip": 0.5, "jitter": [0.4, 0.4, 0.4, 0.1], "jitter_p": 0.8,
                "grayscale": 0.2, "mean": IMAGENET_MEAN, "std": IMAGENET_STD},
    "train": {"epochs": 20, "batch_size": 32, "optimizer": {"name": "adam", "lr": 1e-3, "weight_decay": 1e-4},
              "schedule": {"name": "none"}, "grad_clip": 1.0, "monitor_every": 0},
    "amp": "auto",
}

P4, P3 = "CheXpertResNet_(1).ipynb Phase 4 output", "CheXpertResNet_(1).ipynb Phase 3 output"
_LEAK = ("SSL columns start from the encoder fine-tuned in Phase 3 (label leak, decision shared_encoder); "
         "best epoch on 320 val images")
_COLUMNS = (("random_init", "phase4_finetune"), ("imagenet", "phase4_finetune"), ("simclr", "phase4_finetune"),
            ("simclr", "phase4_linear"))
_PHASE4 = {0.01: (0.5009, 0.4667, 0.6844, 0.6937), 0.05: (0.6266, 0.6359, 0.6854, 0.6931),
           0.1: (0.6344, 0.6685, 0.6798, 0.6954), 0.3: (0.6833, 0.7053, 0.6844, 0.6863),
           0.5: (0.6978, 0.7261, 0.6857, 0.6439)}
_BLANK = "INVALID: trained and scored on grey dummy images (wrong NIH folder mapping); CheXpert -> NIH"
REPORTED = (
    *(Reported("chexpert", method, protocol, "auc", value, P4, fraction,
               _LEAK if method == "simclr" else "best epoch on 320 val images")
      for fraction, values in _PHASE4.items() for (method, protocol), value in zip(_COLUMNS, values, strict=True)),
    *(Reported("chexpert", method, protocol, "auc", value, P3, 1.0, note)
      for method, protocol, value, note in (
          ("random_init", "phase3_finetune", 0.7162, "best epoch on 640 val images"),
          ("imagenet", "phase3_finetune", 0.6972, "best epoch on 640 val images"),
          ("simclr", "phase3_finetune", 0.7031, "best epoch on 640 val images"),
          ("simclr", "phase3_linear", 0.6972, "3 epochs, peak lr 1e-4; starts from the Phase 3 fine-tuned "
           "encoder"))),
    # Transfer_Learning.ipynb: the best AUC over 5 epochs on its one evaluation set (the first 1,000 of test_list)
    *(Reported("nih", method, protocol, "auc", value, "Transfer_Learning.ipynb", 1.0, _BLANK + more)
      for method, protocol, value, more in (
          ("random_init", "transfer_finetune", 0.5004, ""), ("imagenet", "transfer_finetune", 0.4993, ""),
          ("simclr", "transfer_finetune", 0.5031, "; its encoder frozen by the probe's (transfer_shared_layers)"),
          ("simclr", "transfer_linear", 0.5022, ""))),
)

LOW_LABEL_CLAIM = "SSL pretraining beats ImageNet weights at 1 % of the labels (+46.6 %, Phase 4)"
# relative differences the notebook prints, ratios of the cells above rather than cells of their own: claims
CLAIMS = (LOW_LABEL_CLAIM,
          "SSL fine-tuned stays ahead of ImageNet at 5 and 10 % of the labels (Phase 4: +7.8 %, +1.7 %)",
          "ImageNet overtakes SSL from 30 % of the labels on (Phase 4: -3.0 % at 30 %, -5.6 % at 50 %)",
          "Phase 3: random init leads; relative to it ImageNet -2.7 %, SSL fine-tuned -1.8 %, SSL linear -2.7 %",
          "a first SSL probe (200 CheXpert rows: 160 train, 40 val, 5 epochs) reaches an exact-match accuracy of "
          "0.525 (every one of the five findings right); its recipe is not declared here",
          "UMAP silhouette: Random -0.147, ImageNet -0.178, SSL -0.147, SSL Linear -0.178 (3Models.ipynb)",
          "Grad-CAM focused attention (share of CAM > 0.7, one Edema image): Random 10.6 %, ImageNet 2.7 %, "
          "SSL 7.9 %, SSL Linear 2.9 %")

_SMALL = {"backbone": {"arch": "resnet18"}, "train": {"epochs": 1, "batch_size": 32}}
STUDY = Study(
    name="chestx_transfer",
    title="SimCLR on CheXpert and NIH ChestX-ray14: label efficiency and transfer (Gravity-2010)",
    citation=CITATION,
    datasets=DATASETS,
    methods=METHODS,
    protocols=PROTOCOLS,
    decisions=DECISIONS,
    profiles=(
        Profile("paper", "the study's settings: ResNet-50, 20 SimCLR epochs at 224 px on 5,000 images, Phase 3 and "
                "Phase 4 at 1-100 % of the labels, transfer both ways; CheXpert-v1.0-small and NIH ChestX-ray14 "
                "(ChestMNIST at 224 px stands in for NIH), 3 seeds, every decision one at a time; GPU-hours",
                seeds=(0, 1, 2), variants=("as_published", "each", "corrected"),
                image_size={"chexpert_small": 224, "nih_chestxray14": 224, "chestmnist": 224},
                source_size={"chexpert_small": 256, "nih_chestxray14": 256, "chestmnist": 256},
                fractions=PHASE4_FRACTIONS, datasets=("chexpert", "nih"), needs_gpu=True),
        Profile("quick", "smoke data only (PneumoniaMNIST at 28 px, 1,000 training images, not the study's data): "
                "ResNet-18 with a 3x3 stem (Grad-CAM maps of 4x4), 3 SimCLR epochs, every protocol for 2 epochs at "
                "10 and 100 % of the labels; minutes on a CPU", seeds=(0,), variants=("as_published", "corrected"),
                image_size={"pneumoniamnist": 28},
                fractions=(0.1, 1.0), datasets=("smoke_pneumonia",),
                overrides={"pretrain": {**_SMALL, "backbone": {"arch": "resnet18", "small_stem": True},
                                        "train": {"epochs": 3, "batch_size": 64}},
                           "protocols": {p.name: {"protocol": {"fit": {"epochs": 2}}} for p in PROTOCOLS}}),
        Profile("tiny", "the study's own datasets (CheXpert and NIH, both needed) at 32 px with a few hundred "
                "images: every path of the study, transfer both ways, in minutes (ResNet-18 with a 3x3 stem, so "
                "that Grad-CAM has a 4x4 map to show); its numbers mean nothing",
                seeds=(0,), variants=("as_published", "corrected"),
                image_size={"chexpert_small": 32, "nih_chestxray14": 32}, source_size={"chexpert_small": 36,
                                                                                     "nih_chestxray14": 36},
                fractions=(0.5,), datasets=("chexpert", "nih"),
                overrides={"pretrain": {**_SMALL, "backbone": {"arch": "resnet18", "small_stem": True},
                                        "split": {"sizes": {"train": 96, "val": 48, "test": 24}}},
                           "protocols": {p.name: {"protocol": {"fit": {"epochs": 1, "val_limit": 32}}}
                                         for p in PROTOCOLS}}),
    ),
    pretrain_defaults=PRETRAIN,
    evaluate_defaults={"checkpoint": "last"},  # the min-train-loss checkpoint of the code; see the docstring
    reported=REPORTED,
    claims=CLAIMS,
    comparisons=(Comparison(LOW_LABEL_CLAIM, ("simclr",), "imagenet", "phase4_finetune"),),
    main_metric="auc",
    shared_labels={"chexpert": tuple(SHARED_LABELS), "nih": tuple(SHARED_LABELS.values())},
)
