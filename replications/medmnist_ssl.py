"""MedMNIST SSL (Barlow Twins and SimCLR on MedMNIST vs random initialisation; collaborators Daniel34990 and
crocojude). Source notes: docs/studies/medmnist_ssl.md. The repository was never found and its README states no
hyper-parameters and no numbers, so every value below is chosen and cited here, and the harness is anchored on
numbers someone else published for the same data: the MedMNIST v2 official baselines (Yang et al., Sci Data
10:41, 2023, Table 3; protocol of MedMNIST/experiments `train_and_eval_pytorch.py`), reproduced by the
random-init network fine-tuned with that protocol.

Every 2D MedMNIST subset is declared (keys = MedMNIST flags), so `--datasets bloodmnist,octmnist` works; the
paper profile plans the README's examples (PathMNIST, ChestMNIST, DermaMNIST), the quick profile the two subsets
shipped with the project data (BreastMNIST, PneumoniaMNIST), which stand in for them on a CPU.
"""

from medssl_core.data.medmnist_info import MEDMNIST
from medssl_core.plan.study import (
    Comparison,
    Decision,
    Method,
    Profile,
    Protocol,
    Reported,
    Study,
    StudyDataset,
    Tunable,
)

CITATION = ("Barlow Twins and SimCLR on MedMNIST (README of the project by Daniel34990 and crocojude; code not "
            "found); reference: Yang et al., MedMNIST v2, Sci Data 10:41 (2023), Table 3")

TABLE3 = "Yang et al., MedMNIST v2, Sci Data 10:41 (2023), Table 3"
# test (AUC, ACC) per subset: ResNet-18 (28), ResNet-18 (224), ResNet-50 (28), ResNet-50 (224)
BASELINES = {
    "pathmnist": ((0.983, 0.907), (0.989, 0.909), (0.990, 0.911), (0.989, 0.892)),
    "chestmnist": ((0.768, 0.947), (0.773, 0.947), (0.769, 0.947), (0.773, 0.948)),
    "dermamnist": ((0.917, 0.735), (0.920, 0.754), (0.913, 0.735), (0.912, 0.731)),
    "octmnist": ((0.943, 0.743), (0.958, 0.763), (0.952, 0.762), (0.958, 0.776)),
    "pneumoniamnist": ((0.944, 0.854), (0.956, 0.864), (0.948, 0.854), (0.962, 0.884)),
    "retinamnist": ((0.717, 0.524), (0.710, 0.493), (0.726, 0.528), (0.716, 0.511)),
    "breastmnist": ((0.901, 0.863), (0.891, 0.833), (0.857, 0.812), (0.866, 0.842)),
    "bloodmnist": ((0.998, 0.958), (0.998, 0.963), (0.997, 0.956), (0.997, 0.950)),
    "tissuemnist": ((0.930, 0.676), (0.933, 0.681), (0.931, 0.680), (0.932, 0.680)),
    "organamnist": ((0.997, 0.935), (0.998, 0.951), (0.997, 0.935), (0.998, 0.947)),
    "organcmnist": ((0.992, 0.900), (0.994, 0.920), (0.992, 0.905), (0.993, 0.911)),
    "organsmnist": ((0.972, 0.782), (0.974, 0.778), (0.972, 0.770), (0.975, 0.785)),
}
SUBSETS = tuple(BASELINES)

TITLES = {"pathmnist": "PathMNIST", "chestmnist": "ChestMNIST", "dermamnist": "DermaMNIST", "octmnist": "OCTMNIST",
          "pneumoniamnist": "PneumoniaMNIST", "retinamnist": "RetinaMNIST", "breastmnist": "BreastMNIST",
          "bloodmnist": "BloodMNIST", "tissuemnist": "TissueMNIST", "organamnist": "OrganAMNIST",
          "organcmnist": "OrganCMNIST", "organsmnist": "OrganSMNIST"}
DATASETS = tuple(StudyDataset(flag, TITLES[flag], (flag,), {"scheme": "official"}) for flag in SUBSETS)

# The reference's networks as train_and_eval_pytorch.py builds them. "(28)": MedMNIST's own ResNet (models.py,
# after kuangliu/pytorch-cifar): 3x3 stem, no max-pool, the subset's own channels, and no init of its own, so
# every layer keeps PyTorch's default (no Kaiming fan-out, no zero-init residual). "(224)": torchvision's
# resnet18/50(pretrained=False) (its Kaiming init, zero_init_residual False) on the 28 px files enlarged to 224
# with PIL NEAREST (the script since its 2021-08-23 commit).
# (the stem comes from the profile, as for the SSL methods: the CIFAR stem, or the standard one in the quick profile)
_R18_28 = {"backbone": {"random_init": "layer_default", "zero_init_residual": False}}
_R50_28 = {"backbone": {**_R18_28["backbone"], "arch": "resnet50"}}
_AT_224 = {"image_size": 224, "source_size": 28, "augment": {"resize_mode": "nearest"}}
_R18_224 = {**_AT_224, "backbone": {"arch": "resnet18", "small_stem": False, "zero_init_residual": False}}
_R50_224 = {**_AT_224, "backbone": {"arch": "resnet50", "small_stem": False, "zero_init_residual": False}}
METHODS = (
    # SimCLR (Chen et al., ICML 2020): tau 0.5 and a 2-layer projector to 128-d, their CIFAR-10 setting (the
    # small-image regime of 28-64 px); hidden width = the backbone's 512 features
    Method("simclr", "SimCLR", {"name": "simclr", "loss_kwargs": {"temperature": 0.5}, "projector": [512, 128]}),
    # Barlow Twins (Zbontar et al., ICML 2021): lambda 5.1e-3 (the official code's 0.0051); 3-layer projector
    # with a final affine-free BN as the official code; 2048 wide, solo-learn's CIFAR setting for ResNet-18
    Method("barlow", "Barlow Twins", {"name": "barlow_twins", "loss_kwargs": {"lambda_offdiag": 0.0051},
                                      "projector": [2048, 2048, 2048], "projector_last_bn": True,
                                      "projector_last_bn_affine": False}),
    # random init: with the fine-tuning protocol below this *is* the MedMNIST v2 ResNet-18 (28) baseline, the
    # network initialised as theirs (the SSL methods start from torchvision's init, as solo-learn and lightly)
    Method("random_init", "Random init (= supervised ResNet-18 (28) when fine-tuned)", None, hparams=_R18_28),
    Method("resnet18_224", "Supervised ResNet-18 (224)", None, hparams=_R18_224),
    Method("resnet50_28", "Supervised ResNet-50 (28)", None, hparams=_R50_28),
    Method("resnet50_224", "Supervised ResNet-50 (224)", None, hparams=_R50_224),
)
SSL = ("simclr", "barlow")
SUPERVISED = ("random_init", "resnet18_224", "resnet50_28", "resnet50_224")

PROTOCOLS = (
    # the README's protocol (fine-tune the whole network), with the MedMNIST v2 official recipe: Adam 1e-3,
    # batch 128 (the last partial batch kept), 100 epochs, lr x0.1 at epochs 50 and 75, no augmentation, the
    # epoch with the best val AUC
    Protocol("finetune", "Fine-tuning (MedMNIST v2 recipe)", {
        "kind": "fit", "head": {"type": "linear"}, "train_backbone": True,
        "fit": {"epochs": 100, "batch_size": 128, "optimizer": {"name": "adam", "lr": 1e-3},
                "schedule": {"name": "multistep", "milestones": [50, 75], "gamma": 0.1},
                "select_metric": "auc", "select_ties": "earlier",  # `if cur_auc > best_auc`
                "last_batch": "keep"}}),  # a plain DataLoader(shuffle=True)
    # linear probe on frozen features (Bundele et al., arXiv 2412.19124: SGD, 100 epochs, lr decays at 60/80;
    # one point of their lr grid, lr 0.1, wd 0)
    Protocol("linear", "Linear probe (frozen)", {
        "kind": "fit", "head": {"type": "linear"}, "train_backbone": False,
        "fit": {"epochs": 100, "batch_size": 256,
                "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
                "schedule": {"name": "multistep", "milestones": [60, 80], "gamma": 0.1},
                "select_metric": "auc"}}, methods=(*SSL, "random_init")),
    # solo-learn's kNN defaults: k = 20, cosine
    Protocol("knn", "kNN (k=20, cosine)", {"kind": "knn", "k": 20, "metric": "cosine"}, methods=(*SSL, "random_init")),
)

PRETRAIN = {
    "backbone": {"arch": "resnet18", "small_stem": True},  # the "(28)" CIFAR-style stem of the reference
    # SimCLR's CIFAR augmentation (no blur at 28 px), as solo-learn's cifar configs
    "augment": {"crop_scale": [0.08, 1.0], "hflip": 0.5, "jitter": [0.4, 0.4, 0.2, 0.1], "jitter_p": 0.8,
                "grayscale": 0.2, "mean": [0.5], "std": [0.5]},
    # Bundele et al.'s MedMNIST SSL protocol: AdamW 3e-4, weight decay 0.05, warmup + cosine, batch 256, 400 ep
    "train": {"epochs": 400, "batch_size": 256,
              "optimizer": {"name": "adamw", "lr": 3e-4, "weight_decay": 0.05},
              "schedule": {"name": "warmup_cosine", "warmup_epochs": 10}, "knn_k": 20, "knn_metric": "cosine",
              "monitor_every": 10},
    "amp": "auto",
}

DECISIONS = (
    # Which weights Table 3 tested (docs/studies/medmnist_ssl.md, 'Decisions'). The paper: those of the epoch with
    # the best val AUC. MedMNIST/experiments' train_and_eval_pytorch.py did so at 853dee5 (2021-07-13), then from
    # 11409d8 (2021-08-22) to 8b0f553 (2023-05-18) `best_model = model` only aliased the network being trained, so
    # the last epoch's were tested and saved. The maintainers say the published numbers used the best val AUC's, from
    # a script other than the committed one (issues #5, #8), and runs agree: on RetinaMNIST only the best val AUC's
    # reach Table 3. So as published = selected; the committed script's last epoch is the sensitivity check.
    Decision("reference_checkpoint", "the weights tested: those of the epoch with the best validation AUC (the "
             "paper's rule, which its authors confirm Table 3 used) vs the last epoch's (train_and_eval_pytorch.py "
             "from 2021-08-22 to 2023-05-18, where `best_model = model` aliased the trained network)",
             "protocol.fit.scored", "selected", "last", stage="evaluate", protocols=("finetune",),
             labels=("the paper's rule: best validation AUC", "the committed script (2021-08 to 2023-05): last epoch")),
)

REPORTED = tuple(
    Reported(flag, method, "finetune", metric, value, TABLE3)
    for flag, rows in BASELINES.items()
    for method, (auc, acc) in zip(SUPERVISED, rows, strict=True)
    # ChestMNIST's ACC is per-label accuracy at 0.5 (about 0.947 for any model): never a headline here
    for metric, value in (("auc", auc), ("label_accuracy" if MEDMNIST[flag].task == "multi-label" else "accuracy", acc))
)

_QUICK_FIT = {"epochs": 3}
QUICK = {
    "pretrain": {"backbone": {"small_stem": False},
                 "train": {"epochs": 4, "batch_size": 128, "monitor_every": 2, "monitor_bank": 1024,
                           "optimizer": {"name": "adam", "lr": 1e-3, "weight_decay": 1e-6},
                           "schedule": {"name": "none"}}},
    "protocols": {"finetune": {"protocol": {"fit": {**_QUICK_FIT, "schedule": {"name": "none"}}}},
                  "linear": {"protocol": {"fit": {"epochs": 30, "optimizer": {"name": "adam", "lr": 1e-3},
                                                  "schedule": {"name": "cosine"}}}}},
}

CLAIM = ("Self-supervised pretraining (Barlow Twins, SimCLR) improves over random initialisation after fine-tuning "
         "(the README's expected contribution; no numbers given)")

STUDY = Study(
    name="medmnist_ssl",
    title="Barlow Twins and SimCLR on MedMNIST",
    citation=CITATION,
    datasets=DATASETS,
    methods=METHODS,
    protocols=PROTOCOLS,
    decisions=DECISIONS,
    # reference_checkpoint is about reproducing Table 3: the SSL profiles fine-tune as the paper states (the
    # protocol's own best val AUC) whichever variant runs, so it is moot there
    profiles=(
        Profile("paper", "ResNet-18 (28 px, CIFAR stem), 400 pretraining epochs, the MedMNIST v2 fine-tuning recipe, "
                "labels 1/10/100 %, 3 seeds; PathMNIST, ChestMNIST, DermaMNIST (the README's examples); GPU-hours",
                seeds=(0, 1, 2), variants=("corrected",), image_size={f: 28 for f in SUBSETS},
                fractions=(0.01, 0.1, 1.0), datasets=("pathmnist", "chestmnist", "dermamnist"), needs_gpu=True,
                methods=(*SSL, "random_init"), moot_decisions=("reference_checkpoint",)),
        Profile("reference", "the MedMNIST v2 supervised baselines (ResNet-18/50 at 28 and 224 px, 100 epochs, "
                "3 seeds) on every subset asked for, against Table 3, in both variants of reference_checkpoint: the "
                "best validation AUC's weights tested (the paper's rule) and the last epoch's (the committed "
                "script's); the paper's variant_match table says which matches Table 3", seeds=(0, 1, 2),
                variants=("as_published", "corrected"), image_size={f: 28 for f in SUBSETS},
                datasets=("breastmnist",), methods=SUPERVISED,
                protocols=("finetune",), needs_gpu=True),
        Profile("quick", "ResNet-18 (standard stem) at 28 px, 4 pretraining epochs, 3 fine-tuning epochs, labels "
                "1/10/100 %, 2 seeds, on BreastMNIST and PneumoniaMNIST standing in for the README's PathMNIST, "
                "ChestMNIST and DermaMNIST; minutes on a CPU", seeds=(0, 1), variants=("corrected",),
                image_size={f: 28 for f in SUBSETS}, fractions=(0.01, 0.1, 1.0),
                datasets=("breastmnist", "pneumoniamnist"), methods=(*SSL, "random_init"), overrides=QUICK,
                moot_decisions=("reference_checkpoint",)),
    ),
    pretrain_defaults=PRETRAIN,
    # the README states neither temperature, lambda nor any optimiser setting (docs/studies/medmnist_ssl.md, 'Source')
    search_space=(
        Tunable("pretrain.method.loss_kwargs.temperature", 0.05, 1.0, log=True, methods=("simclr",),
                why="SimCLR's tau: not given"),
        Tunable("pretrain.method.loss_kwargs.lambda_offdiag", 1e-3, 1e-1, log=True, methods=("barlow",),
                why="Barlow Twins' lambda: not given"),
        Tunable("pretrain.train.optimizer.lr", 1e-4, 3e-3, log=True, methods=SSL,
                why="no optimiser setting is given"),
    ),
    # a 1 % evaluation may not use an encoder chosen with every training label (the monitor): the last one
    evaluate_defaults={"checkpoint": "last"},
    reported=REPORTED,
    claims=(CLAIM,),
    comparisons=(Comparison(CLAIM, SSL, "random_init", "finetune"),),
    main_metric="auc",
)
