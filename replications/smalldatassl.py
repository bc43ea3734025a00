"""SmallDataSSL (Chattopadhyay et al., ICIP 2023, arXiv 2303.02245; code soumitri2001/SmallDataSSL @0eca900).

SimCLR, DCLW, SimSiam, VICReg (and the Barlow Twins the code also ships) pretrained from scratch on three small
medical datasets, judged by kNN, the code's "linear" MLP head, a true linear probe and end-to-end fine-tuning,
against an ImageNet-supervised baseline. Declared from the source notes, docs/studies/smalldatassl.md: every value
below is the code's unless a Decision says otherwise. To add the paper's numbers, append Reported rows to REPORTED.
"""

from medssl_core.plan.study import (
    AS_DECLARED,
    Decision,
    Method,
    Profile,
    Protocol,
    Reported,
    Study,
    StudyDataset,
    Tunable,
)

CITATION = ("Chattopadhyay et al., Exploring Self-Supervised Representation Learning for Low-Resource Medical "
            "Image Analysis, ICIP 2023 (arXiv 2303.02245)")
SOURCE_CODE = "soumitri2001/SmallDataSSL @0eca900"

IMAGENET_NORM = {"augment": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}  # dataset.py, colour
GREY_NORM = {"augment": {"mean": [0.5], "std": [0.5]}}  # dataset.py, grayscale

DATASETS = (
    StudyDataset("breakhis400x", "BreaKHis 400X", ("breakhis400x",),
                 {"scheme": "holdout_val", "val_fraction": 0.1}, IMAGENET_NORM),
    StudyDataset("kather2016", "Kather 2016 colorectal", ("kather2016",),
                 {"scheme": "stratified", "test_fraction": 0.2, "val_fraction": 0.1}, IMAGENET_NORM),
    # PneumoniaMNIST is the same Kermany data with the code's own scheme (train+val merged, 10 % val).
    StudyDataset("kermany_cxr", "Pneumonia CXR (Kermany)", ("kermany_cxr", "pneumoniamnist"),
                 {"scheme": "merge_val", "merge": ["train", "val"], "val_fraction": 0.1}, GREY_NORM),
)

_CONTRASTIVE_PROJECTOR = [512, 128]  # model.py: 2048 -> 512 (BN, ReLU) -> 128
METHODS = (
    Method("simclr", "SimCLR", {"name": "simclr", "loss_kwargs": {"temperature": 0.5},
                                "projector": _CONTRASTIVE_PROJECTOR}),
    Method("dclw", "DCLW", {"name": "dclw", "loss_kwargs": {"temperature": 0.1, "sigma": 0.5, "symmetric": False},
                            "projector": _CONTRASTIVE_PROJECTOR}),
    Method("simsiam", "SimSiam", {"name": "simsiam", "loss_kwargs": {}, "projector": [2048, 512],
                                  "predictor": None}),
    # lossfuns.py sums the two variance branches (the official VICReg code halves them).
    Method("vicreg", "VICReg", {"name": "vicreg", "loss_kwargs": {"halve_variance": False},
                                "projector": [4096, 4096]}),
    Method("barlow", "Barlow Twins (code only)", {"name": "barlow_twins", "loss_kwargs": {"lambda_offdiag": 0.0051},
                                                  "projector": [4096, 4096], "projector_last_bn": True,
                                                  "projector_last_bn_affine": False}),
    Method("random_init", "Random init (reference)", None),
    Method("imagenet", "ImageNet supervised", None, init="imagenet"),
)
SSL = ("simclr", "dclw", "simsiam", "vicreg", "barlow")

_MLP_HEAD = {"type": "mlp", "hidden": [512], "activation": "leaky_relu"}  # linear.py: 2048->512, BN, LeakyReLU
_STEP = {"name": "step", "step_size": 25, "gamma": 0.5, "start_epoch": 25}  # StepLR stepped only if epoch > 25
PROTOCOLS = (
    # main.py scores kNN on its own split, in the same script as the pretraining
    Protocol("knn", "kNN (k=200)", {"kind": "knn", "k": 200, "metric": "euclidean"}, methods=(*SSL, "random_init"),
             script="main.py"),
    Protocol("mlp_head", "'Linear' eval as coded (MLP head)", {
        "kind": "fit", "head": _MLP_HEAD, "train_backbone": False, "backbone_bn_train": True,
        "fit": {"epochs": 200, "batch_size": 64, "optimizer": {"name": "adam", "lr": 1.0}, "schedule": _STEP,
                "reload_best_each_epoch": True}}, methods=(*SSL, "random_init"), script="linear.py"),
    # not in the code (its "linear" is the MLP head): a true linear probe on standardised features (MAE's
    # BatchNorm without affine parameters; still linear at test time), which fits features of any scale alike
    Protocol("linear", "Linear probe (frozen, eval-mode BN, standardised features)", {
        "kind": "fit", "head": {"type": "linear", "input_norm": "batchnorm"}, "train_backbone": False,
        "fit": {"epochs": 100, "batch_size": 256, "optimizer": {"name": "adam", "lr": 1e-3},
                "schedule": {"name": "cosine"}}}, methods=(*SSL, "random_init", "imagenet"), script="linear.py"),
    Protocol("finetune", "End-to-end fine-tuning", {  # end2end_sup.py
        "kind": "fit", "head": _MLP_HEAD, "train_backbone": True,
        "fit": {"epochs": 100, "batch_size": 64, "schedule": _STEP, "reload_best_each_epoch": True,
                "optimizer": {"name": "adam", "lr": 1e-3, "backbone_lr": 1e-3, "head_lr": 0.1,
                              "weight_decay": 5e-4}}}, methods=(*SSL, "random_init"), script="end2end_sup.py"),
    Protocol("imagenet_frozen", "ImageNet, frozen backbone", {  # supervised.py --bkb freeze
        "kind": "fit", "head": _MLP_HEAD, "train_backbone": False, "backbone_bn_train": True,
        "fit": {"epochs": 100, "batch_size": 32, "optimizer": {"name": "adam", "lr": 1e-3}, "schedule": _STEP,
                "reload_best_each_epoch": True}}, methods=("imagenet",), script="supervised.py"),
    Protocol("imagenet_trained", "ImageNet, trained backbone", {  # supervised.py --bkb train
        "kind": "fit", "head": _MLP_HEAD, "train_backbone": True,
        "fit": {"epochs": 100, "batch_size": 32, "optimizer": {"name": "adam", "lr": 1e-3}, "schedule": _STEP,
                "reload_best_each_epoch": True}}, methods=("imagenet",), script="supervised.py"),
)

DECISIONS = (
    Decision("crop_scale", "RandomResizedCrop scale (0.1 is probably a typo for 1.0)", "augment.crop_scale",
             [0.08, 0.1], [0.08, 1.0], stage="pretrain"),
    Decision("sgd_momentum", "SGD momentum (torch default 0 in the code)", "train.optimizer.momentum", 0.0, 0.9,
             stage="pretrain"),
    Decision("simsiam_predictor", "SimSiam predictor head (absent in the code)", "method.predictor", None,
             [128, 512], stage="pretrain", methods=("simsiam",)),
    Decision("dclw_symmetric", "DCLW symmetrised over both views", "method.loss_kwargs.symmetric", False, True,
             stage="pretrain", methods=("dclw",)),
    # every script (main.py, linear.py, end2end_sup.py, supervised.py) shuffles unseeded before its own split, so
    # evaluations score images their encoder was pretrained on (about 72 % of Kather's test set)
    Decision("split_seed", "val/test split seeding (each script draws its own unseeded split)", "split.seed_policy",
             "per_script", "fixed", stage="data", only_derived_splits=True),
    Decision("grey_input", "grey images fed as 3 identical channels (`.convert('RGB')`) vs 1 channel",
             "channel_mode", "rgb", "native", stage="data"),
    # corrected leaves the declared epochs alone, so that a value `medssl tune` samples (SEARCH_SPACE) reaches the run
    Decision("pretrain_epochs", "pretraining epochs: main.py's default 250 vs the README's 200 (declared, or tuned)",
             "train.epochs", 250, AS_DECLARED, stage="pretrain"),
    Decision("knn_checkpoint", "encoder used for the kNN test (last epoch in the code)", "checkpoint", "last",
             "best", stage="evaluate", protocols=("knn",), methods=SSL),
    Decision("mlp_head_lr", "Adam lr of the MLP 'linear' head", "protocol.fit.optimizer.lr", 1.0, 1e-3,
             stage="evaluate", protocols=("mlp_head",)),
    Decision("probe_bn_mode", "backbone BatchNorm while probing (train mode in the code)", "protocol.backbone_bn_train",
             True, False, stage="evaluate", protocols=("mlp_head", "imagenet_frozen")),
    Decision("split_stratify", "held-out val (and Kather's test) drawn by train_test_split without stratify= vs "
             "per class", "split.stratify", False, True, stage="data", only_derived_splits=True),
    # the code's scripts only: the harness's own `linear` probe keeps full batches
    Decision("partial_batch", "the last partial training batch of an epoch: kept (DataLoader without drop_last) vs "
             "dropped", "protocol.fit.last_batch", "keep", "drop", stage="evaluate",
             protocols=("mlp_head", "finetune", "imagenet_frozen", "imagenet_trained")),
)

# main.py takes --epochs and --lrate per run and the paper's values per dataset are not in the repository: what
# `medssl tune smalldatassl --dataset ...` searches (pretrain_epochs' corrected side leaves a tuned value alone)
SEARCH_SPACE = (
    Tunable("pretrain.train.epochs", choices=(100, 150, 200, 250, 300), methods=SSL,
            why="the paper's per-dataset pretraining epochs are unknown; the code's default is 250, the README's 200"),
    Tunable("pretrain.train.optimizer.lr", 1e-3, 1e-1, log=True, methods=SSL,
            why="the paper's per-dataset pretraining learning rate is unknown; the code's default is 0.01"),
)

# The repository holds no result files and the paper's tables (arXiv 2303.02245 v2) are not in our references:
# a number is added here as Reported(dataset, method, protocol, "accuracy", value, source="arXiv 2303.02245 Table N").
REPORTED: tuple[Reported, ...] = (
    Reported("*", "ssl", "*", "accuracy", None, "arXiv 2303.02245, abstract",
             note="qualitative: in-domain low-resource SSL pre-training can be competitive with ImageNet transfer"),
)

PRETRAIN = {
    "backbone": {"arch": "resnet50", "small_stem": False},  # resnet50(zero_init_residual=True), from scratch
    "augment": {  # MedDataset.augment_transforms
        "crop_scale": [0.08, 0.1], "hflip": 0.5, "jitter": [0.4, 0.4, 0.2, 0.1], "jitter_p": 1.0,
        "grayscale": 0.2, "blur_p": 0.5, "blur_sigma": [0.1, 2.0], "blur_kernel_frac": 0.1,  # k=23 at 224 px
        "solarize_p": 0.1, "solarize_threshold": 0.5},
    # the README's command (200 epochs, batch 64, SGD 0.01); decision 'pretrain_epochs' sets main.py's 250
    "train": {"epochs": 200, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.0},
              "schedule": {"name": "none"}, "knn_k": 200, "knn_metric": "euclidean", "monitor_every": 1},
    "amp": "auto",  # bf16 where the device has it (recorded per run); the code trains in fp32: --amp off
    "deterministic": False,
    "pretrain_subset": None,
}

_QUICK_FIT = {"epochs": 2, "batch_size": 256}
# Same code path, sized for a 2-core CPU (under 20 minutes): the standard ResNet-18 stem at 28 px in fp32 (the
# code's precision; bf16 autocast is no faster at 28 px on these CPUs: benchmarks/amp_speed.py), a seeded 3,000 of the
# 4,708 training images (pretraining is 85 % of the time) for a few epochs with Adam (SGD at lr 0.01 learns little
# in that many steps, so the momentum decision is moot here), and cheap evaluations (no fine-tuning; short heads).
QUICK = {
    "pretrain": {"backbone": {"arch": "resnet18"}, "pretrain_subset": 3000, "amp": "off",
                 "train": {"epochs": 4, "batch_size": 128, "monitor_every": 2, "monitor_bank": 1024,
                           "optimizer": {"name": "adam", "lr": 1e-3, "weight_decay": 1e-6}}},
    "methods": {
        # the 2048 -> 4096 projectors keep their 2x width over ResNet-18's 512-d features
        **{m: {"pretrain": {"method": {"projector": [1024, 1024]}}} for m in ("vicreg", "barlow")},
        # SimSiam (no negatives) needs more varied images than 3,000 to reach a useful probe in this budget: all
        # 4,708 for 3 epochs (110 steps, vs the others' 94): plain linear-probe test AUC over seeds 0-4 0.833 vs
        # 0.772 for 3,000 x 4 (benchmarks/profile_candidates.py; README)
        "simsiam": {"pretrain": {"pretrain_subset": None, "train": {"epochs": 3}}},
    },
    "protocols": {
        "mlp_head": {"protocol": {"fit": _QUICK_FIT}},
        "linear": {"protocol": {"fit": {"epochs": 30}}},
        "imagenet_frozen": {"protocol": {"fit": _QUICK_FIT}},
    },
}

STUDY = Study(
    name="smalldatassl",
    title="SmallDataSSL (ICIP 2023)",
    citation=f"{CITATION}; code {SOURCE_CODE}",
    datasets=DATASETS,
    methods=METHODS,
    protocols=PROTOCOLS,
    decisions=DECISIONS,
    profiles=(
        Profile("paper", "the study's settings: ResNet-50 from scratch, 200 epochs, 224 px, 3 seeds, every decision "
                "one at a time; GPU-days", seeds=(0, 1, 2), variants=("as_published", "each", "corrected"),
                image_size={"breakhis400x": 224, "kather2016": 224, "kermany_cxr": 224, "pneumoniamnist": 224},
                # crops are cut from the images at (close to) their own resolution, then resized, as
                # RandomResizedCrop on the original files does; Kather's tiles are 150 px
                source_size={"breakhis400x": 512, "kather2016": 150, "kermany_cxr": 512}, needs_gpu=True),
        Profile("quick", "ResNet-18 (standard stem), 4 epochs of Adam on 3,000 images (SimSiam: 3 on all 4,708), "
                "kNN / MLP head / linear probe; corrected 2 seeds, as published 1; under 20 minutes on a 2-core CPU",
                seeds=(0, 1),
                variants=("as_published", "corrected"), variant_seeds={"as_published": (0,)},
                image_size={"breakhis400x": 64, "kather2016": 64, "kermany_cxr": 64, "pneumoniamnist": 28},
                overrides=QUICK, methods=("simclr", "dclw", "simsiam", "vicreg", "random_init", "imagenet"),
                protocols=("knn", "mlp_head", "linear", "imagenet_frozen"),
                moot_decisions=("pretrain_epochs", "sgd_momentum")),
    ),
    pretrain_defaults=PRETRAIN,
    evaluate_defaults={"checkpoint": "best"},  # linear.py and end2end_sup.py load encoder.pth, the best-kNN one
    pretrain_script="main.py",
    search_space=SEARCH_SPACE,
    reported=REPORTED,
    claims=("In-domain low-resource SSL pre-training can yield competitive performance to transfer learning from "
            "large-scale datasets such as ImageNet (arXiv 2303.02245, abstract).",),
)
