"""A small registered study that exercises the whole path (grid, execution, store, paper) in seconds.

SimCLR vs random init on the real BreastMNIST (546 training images, 28 px), kNN and linear probe.
Not a replication: it is the harness's own smoke test and a template for new studies.
"""

from medssl_core.plan.study import Decision, Method, Profile, Protocol, Reported, Study, StudyDataset, Tunable

_LINEAR = {"kind": "fit", "head": {"type": "linear"}, "train_backbone": False,
           "fit": {"epochs": 5, "batch_size": 64, "optimizer": {"name": "adam", "lr": 1e-3}}}

STUDY = Study(
    name="demo",
    title="medssl demo: SimCLR vs random init on BreastMNIST",
    citation="medssl harness smoke test (no source paper)",
    datasets=(StudyDataset("breast_us", "BreastMNIST (breast ultrasound)", ("breastmnist",), {"scheme": "official"}),),
    methods=(
        Method("simclr", "SimCLR", {"name": "simclr", "loss_kwargs": {"temperature": 0.5}, "projector": [128, 64]}),
        Method("random_init", "Random init", None),
    ),
    protocols=(
        Protocol("knn", "kNN (k=20)", {"kind": "knn", "k": 20, "metric": "cosine"}),
        Protocol("linear", "Linear probe", _LINEAR),
    ),
    decisions=(
        Decision("crop_scale", "RandomResizedCrop scale", "augment.crop_scale", [0.08, 0.1], [0.08, 1.0],
                 stage="pretrain"),
    ),
    profiles=(
        Profile("quick", "seconds on a CPU", seeds=(0, 1), variants=("as_published",),
                image_size={"breastmnist": 28}),
    ),
    pretrain_defaults={
        "backbone": {"arch": "resnet18", "small_stem": False},
        "augment": {"crop_scale": [0.08, 1.0], "hflip": 0.5, "jitter": [0.4, 0.4, 0.0, 0.0], "jitter_p": 0.8,
                    "mean": [0.5], "std": [0.5]},
        "train": {"epochs": 2, "batch_size": 128, "optimizer": {"name": "adam", "lr": 1e-3}, "knn_k": 20},
        "amp": "off",
    },
    evaluate_defaults={"checkpoint": "best"},
    reported=(Reported("breast_us", "simclr", "linear", "accuracy", None, "none: demo study",
                       note="placeholder row showing how reported numbers are declared"),),
    # what `medssl tune demo --method simclr --protocol linear` searches: a template for the studies' own
    search_space=(Tunable("pretrain.train.optimizer.lr", 1e-4, 1e-2, log=True, methods=("simclr",),
                          why="demo: a pretraining setting"),
                  Tunable("evaluate.protocol.fit.optimizer.lr", 1e-4, 1e-1, log=True,
                          why="demo: the probe's learning rate")),
)
