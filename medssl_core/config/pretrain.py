"""The settings a pretraining run states, and the parts evaluations share with it: backbone, augmentation,
optimiser and schedule, split, training loop, SSL method, the data a run reads."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from medssl_core import methods
from medssl_core.augment import views as augment
from medssl_core.config.base import Strict, added, strict_model
from medssl_core.data.labels import MULTI_LABEL
from medssl_core.data.split_schemes import split_problems


class Backbone(Strict):
    # sg_cnn, sg_guided_cnn: MedSGSSL's custom encoders (medssl_core.sg_encoders; random init only)
    arch: Literal["resnet18", "resnet50", "mobilenet_v2", "vit_small", "sg_cnn", "sg_guided_cnn"]
    small_stem: bool = False  # ResNet 3x3 stride-1 stem without max-pool
    init: Literal["random", "imagenet", "imagenet_v2"] = "random"  # imagenet_v2: torchvision's IMAGENET1K_V2
    # a random init's weights: torchvision's ResNet init (Kaiming normal, fan-out), or each layer's own
    # reset_parameters(), which a ResNet written from plain nn layers gets (MedMNIST v2's "(28)" models)
    random_init: Literal["torchvision", "layer_default"] = added("torchvision")
    zero_init_residual: bool = added(True)  # each residual branch's last BN starts at 0 (random init only)
    # vit_small: every block attends with the last block's qkv/proj weights (MedSGSSL options 7/8's closure bug)
    shared_attention: bool = added(False)
    # a Linear from the pooled features to this many (MedSGSSL option 4: MobileNetV2's 1280 -> 256); not for ViT-S
    # or MedSGSSL's own encoders, which end in their own layers
    out_dim: int | None = added(None, gt=0)
    # a 1-channel first conv from ImageNet's RGB weights: summed (the grey image as RGB) or averaged (MedSGSSL's direct
    # baselines)
    grey_weights: Literal["sum", "mean"] = added("sum")
    # ImageNet init from medssl's labelled stand-in (a fixed random init, `models/stand_in.py`) where the real weights
    # are missing: the cheap profiles' `replicate --stand-in-weights`; its numbers say nothing about ImageNet
    stand_in_weights: bool = added(False)


AugmentOps = strict_model("AugmentOps", augment.AugmentOps,
                          doc="The augmentation's random operations (no output size: the run's image_size).")
Augment = strict_model("Augment", augment.AugmentOps, augment.Normalization,
                       doc="A pretraining's augmentation: its operations and the normalisation after them.")


class Normalize(Strict):
    """An evaluation's input: the resize to image_size (when the source differs) and the normalisation."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize_mode: Literal["bilinear", "nearest"] = "bilinear"


class Optimizer(Strict):
    name: Literal["sgd", "adam", "adamw", "lars"]
    lr: float
    momentum: float = 0.0  # sgd (torch default 0) and lars
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    backbone_lr: float | None = None  # fine-tuning: per-group learning rates
    head_lr: float | None = None


class Schedule(Strict):
    name: Literal["none", "step", "multistep", "cosine", "warmup_cosine", "onecycle", "plateau"] = "none"
    step_size: int = 1
    gamma: float = 0.1  # step, multistep; plateau: the factor (torch's ReduceLROnPlateau 'factor')
    start_epoch: int = -1  # step: the scheduler steps only after 0-based epochs > start_epoch
    warmup_epochs: int = 0
    milestones: tuple[int, ...] = ()  # multistep: lr x gamma from each of these (0-based) epochs on
    # onecycle (torch's OneCycleLR, per step, cosine): the optimiser's lr is the peak
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    # plateau (fine-tuning only): torch's ReduceLROnPlateau on the validation selection value (mode 'max', relative
    # threshold 1e-4): lr x gamma once it has not improved for more than this many epochs
    plateau_patience: int = added(10, ge=0)


class Split(Strict):
    """Which images and labels a run reads and how they become train/val/test: a scheme of
    ``medssl_core.data.split_schemes`` (its docstring says which fields each scheme reads) and its seed."""

    scheme: str  # official, merge_val, holdout_val, stratified, random_split, patient, sample
    merge: tuple[str, ...] = ()  # source splits pooled (merge_val; the pool of stratified, random_split, patient)
    val_fraction: float | None = None
    test_fraction: float | None = None
    fractions: tuple[float, ...] | None = None  # random_split: train, val, test
    roles: dict[Literal["train", "val", "test"], str | tuple[str, ...]] = {}  # role -> source split(s)
    base: str | None = None  # sample: the scheme it draws from
    sizes: dict[Literal["train", "val", "test"], int] = {}  # sample: images kept per role
    sample_seed: int | None = None  # sample: pandas' random_state; None: the first images
    views: tuple[str, ...] = ()  # chest X-rays kept: PA, AP, LL, RL, frontal, lateral; (): all
    uncertain: Literal["zeros", "ones", "ignore"] | None = None  # CheXpert's -1 (ignore: missing); required there
    blank: Literal["negative", "missing"] | None = None  # CheXpert's blank labels; required there
    # fixed: one seeded split for every run; per_run: each seed its own; per_script: each script of the study's
    # code (pretraining, each evaluation script) draws its own split, as unseeded shuffles do
    seed_policy: Literal["fixed", "per_run", "per_script"] = "fixed"
    fixed_seed: int = 16  # the seed of the fixed policy (SmallDataSSL's train_test_split(random_state=16))
    script: str = "pretrain"  # which script of the study's code a run stands for (per_script)
    per_part: bool = added(False)  # a merged dataset split one dataset at a time (data.split_schemes)
    # merge_val, holdout_val, stratified: each held-out fraction drawn per class, or over all images as sklearn's
    # train_test_split without stratify= draws it (SmallDataSSL)
    stratify: bool = added(True)
    # a run's labelled fraction of train: stratified per class, MIMeta's random_split(train, [f, 1 - f]), or
    # pandas' train.sample(int(f * n), random_state=sample_seed), the same images for every seed (Gravity-2010)
    label_fraction: Literal["stratified", "random_split", "sample"] = added("stratified")
    # patient: only this fraction of the patients is kept, drawn before the split as np.random.choice(unique
    # patients, int(f * n), replace=False) with the split's seed (Gravity-2010's 70 %); None: every patient
    patient_fraction: float | None = added(None, gt=0, le=1)
    # patient: only this share of the training patients stays in train (drawn after the split, as
    # np.random.RandomState(seed).choice: MedSGSSL's fine-tuning on 20 % of the patients); None: all of them
    train_patients: float | None = added(None, gt=0, le=1)
    # an evaluation at a label fraction selects epochs, stops early, steps plateau schedules and sets thresholds on
    # the validation labels: all of them, or the same fraction of them (stratified, drawn from the run's seed;
    # run_evaluate.labelled_positions), so that a label-efficiency claim holds without extra labels. Evaluations
    # only: set it in evaluate overrides, which leave the pretrainings (and their run ids) shared
    val_labels: Literal["all", "follow_fraction"] = added("all")
    # sample: roles drawn from the same source split take distinct images, in the order train, val, test (the first
    # n for val, the next n for test: Gravity-2010 validates on the first 1,000 of NIH's test list, and a held-out
    # test then follows them)
    distinct_roles: bool = added(False)

    @model_validator(mode="after")
    def _scheme_and_its_fields(self):
        problems = split_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self


class Train(Strict):
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=2)
    optimizer: Optimizer
    schedule: Schedule = Schedule()
    grad_clip: float | None = None
    knn_k: int = 200
    knn_metric: Literal["euclidean", "cosine"] = "euclidean"
    monitor_every: int = 1  # epochs between kNN evaluations on val (0: never)
    # training images in the monitor's kNN bank (a fixed random subset; None: all): where extracting the whole
    # training set at every monitored epoch would cost more than the epoch itself (NIH, CheXpert)
    monitor_bank: int | None = Field(default=None, ge=1)
    # the training step: eager, or captured (train/capture.py): compiled by torch.compile, and on CUDA replayed as
    # CUDA graphs ('cudagraphs'); numerically close to eager, not equal, so it is a setting and runs record it
    capture: Literal["off", "compile", "cudagraphs"] = added("off")

    @field_validator("schedule")
    @classmethod
    def _no_plateau(cls, v: Schedule) -> Schedule:
        if v.name == "plateau":
            raise ValueError("schedule 'plateau' follows a validation metric, which pretraining does not have; use "
                             "it in a fit protocol, or choose cosine / warmup_cosine here.")
        return v


class SSLMethod(Strict):
    """A registered method (``medssl_core.methods``), its heads, its loss's arguments and its own options."""

    name: str
    loss_kwargs: dict[str, Any] = {}
    projector: tuple[int, ...]
    projector_last_bn: bool = False
    projector_hidden_bn: bool = added(True)  # BatchNorm after each hidden projector layer (Gravity-2010: none)
    projector_last_bn_affine: bool = True
    predictor: tuple[int, ...] | None = None
    options: dict[str, Any] = {}

    @model_validator(mode="after")
    def _method_loss_and_options(self):
        cls = methods.METHODS.get(self.name)
        if cls is None:
            raise ValueError(f"unknown SSL method {self.name!r}; registered: {sorted(methods.METHODS)}")
        params = methods.loss_parameters(cls)
        unknown = sorted(set(self.loss_kwargs) - set(params))
        if unknown:
            raise ValueError(f"the loss of {self.name!r} has no argument(s) {unknown}; its arguments: "
                             f"{sorted(params)}")
        try:
            cls.Options.model_validate(self.options)
        except ValidationError as exc:
            bad = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"options of {self.name!r}: {bad}; valid options: "
                             f"{', '.join(cls.Options.model_fields) or 'none'}") from None
        return self


def image_channels(hp: dict) -> int:
    """Image channels the backbone sees: 3 under channel_mode 'rgb' (grey replicated, as `.convert('RGB')`) and
    'grey' (colour made grey, then replicated, as `Grayscale(num_output_channels=3)`)."""
    return 3 if hp["channel_mode"] in ("rgb", "grey") else hp["channels"]


def input_channels(hp: dict) -> int:
    """Channels the backbone sees: the image's, and one more for a lung mask given as a channel (mask_channel)."""
    return image_channels(hp) + int(bool(hp.get("mask_channel", False)))


class Data(Strict):
    """What every run on a dataset shares: its geometry, labels and split."""

    image_size: int = Field(ge=8)
    source_size: int | None = None  # side the images are held at; crops are cut here, then resized
    channels: int  # channels of the data as stored
    # rgb: grey replicated to 3 channels (`.convert('RGB')`); grey: colour to PIL's luma, then replicated to 3
    # (`Grayscale(num_output_channels=3)`; MIMeta's CRC as committed)
    channel_mode: Literal["native", "rgb", "grey"] = "native"
    # labels renumbered, new = label_order[old]: a stand-in's classes in the order of the data it stands in for
    label_order: tuple[int, ...] | None = added(None)
    # masks that travel with each training image through the augmentation to the method (Batch.masks):
    # 'lung_rule', the rule-based lung mask of the grey image (data.lung_mask; cached on disk); 'pathology_rule',
    # MedSGSSL option 3's edge-and-local-contrast mask (data.pathology_mask)
    masks: Literal["none", "lung_rule", "pathology_rule"] = added("none")
    # each image cut to its lung mask's bounding box and resized back, before anything else, in pretraining and
    # evaluation alike (MedSGSSL option 4; data.lung_mask.crop_to_lungs)
    crop_to_lungs: bool = added(False)
    # the mask joins the image as one more input channel, 0/1 after the augmentation, not normalised (MedSGSSL
    # option 6: image + lung mask); pretraining and evaluation alike
    mask_channel: bool = added(False)
    n_classes: int
    task: Literal["binary", "multi-class", "multi-label", "ordinal"]
    split: Split
    amp: Literal["off", "bf16"] = "off"
    deterministic: bool = False

    @property
    def input_channels(self) -> int:
        return input_channels(self.model_dump(include={"channel_mode", "channels", "mask_channel"}))

    @property
    def image_channels(self) -> int:
        return image_channels({"channel_mode": self.channel_mode, "channels": self.channels})

    @model_validator(mode="after")
    def _mask_channel_needs_masks(self):
        if self.mask_channel and self.masks == "none":
            raise ValueError("mask_channel gives the model the mask as a channel, but masks is 'none': set "
                             "masks: lung_rule (or pathology_rule), or drop mask_channel.")
        return self

    @model_validator(mode="after")
    def _label_order_is_a_permutation(self):
        if self.label_order is not None and (self.task == MULTI_LABEL
                                             or sorted(self.label_order) != list(range(self.n_classes))):
            raise ValueError(f"label_order {list(self.label_order)} must renumber the {self.n_classes} classes of a "
                             "single-label task: a permutation of 0..n_classes-1")
        return self


class ExtraImages(Strict):
    """Images of another registered dataset added, unlabelled, to a pretraining set as a domain of their own
    (Batch.domains 1; the run's own images 0): MedSGSSL options 8/10 pretrain on NIH's training images and
    CheXpert's frontal ones. They are read at the run's size and channel mode."""

    dataset: str
    splits: tuple[str, ...]  # its source splits, taken whole (e.g. CheXpert's train and valid)
    views: tuple[str, ...] = ()  # chest X-ray views kept (data.chest.VIEW_FILTERS); (): all


class PretrainHP(Data):
    backbone: Backbone
    augment: Augment
    train: Train
    method: SSLMethod
    pretrain_subset: int | None = None  # train on a seeded subset of this many images
    extra_images: ExtraImages | None = added(None)

    @model_validator(mode="after")
    def _method_gets_what_it_reads(self):
        cls = methods.METHODS[self.method.name]
        if cls.needs_masks and self.masks == "none":
            raise ValueError(f"method {self.method.name!r} reads masks, but masks is 'none': set masks: "
                             "lung_rule (or pathology_rule) for its runs.")
        if cls.archs is not None and self.backbone.arch not in cls.archs:
            raise ValueError(f"method {self.method.name!r} works with the backbone(s) {list(cls.archs)}, not "
                             f"{self.backbone.arch!r}.")
        return self
