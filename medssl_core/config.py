"""Typed, strict run configurations: every key a study, profile or decision sets must name a real field.

pydantic (v2) rather than hand-validated dataclasses: it gives nested models that refuse unknown keys
(`extra="forbid"`), type checks with the exact path of the bad key, discriminated unions for the protocol
kinds, and a `model_dump` that writes every default explicitly, so a run's spec states each value it used
and a changed default changes the spec (and the config id) instead of the numbers silently.

One exception keeps recorded runs comparable as the engine grows: an option added after runs were recorded
is declared with ``added(...)``, whose value must be the behaviour from before the option existed. A spec
states it only when a run sets it to something else (``spec_form``), so adding an option for a new study
leaves every recorded run's settings id as it was (tests/test_trust.py pins each such value).
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medssl_core import methods
from medssl_core.errors import ConfigError
from medssl_core.labels import MULTI_LABEL, default_fit_loss, headline_metric


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def added(absent, **kwargs):
    """A field added after runs were recorded; ``absent`` (also its default) is what runs did before it."""
    return Field(default=absent, json_schema_extra={"absent": absent}, **kwargs)


def spec_form(model: BaseModel) -> dict:
    """``model`` written out in full, less each ``added`` field that holds its ``absent`` value."""
    out = model.model_dump(mode="json")
    _drop_absent(model, out)
    return out


def _drop_absent(model: BaseModel, out: dict) -> None:
    for name, info in type(model).model_fields.items():
        value, extra = getattr(model, name), info.json_schema_extra
        if isinstance(extra, dict) and "absent" in extra and value == extra["absent"]:
            out.pop(name, None)  # a method's options are written out only where a study's plan writes them
        elif isinstance(value, BaseModel):
            _drop_absent(value, out[name])
    if isinstance(model, SSLMethod):  # a method's options, a plain dict here, may hold options added later too
        cls = methods.METHODS.get(model.name)
        if cls is not None:
            _drop_absent(cls.Options.model_validate(model.options), out["options"])


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


class AugmentOps(Strict):
    """The operations of augment.AugmentConfig (no output size: the run's image_size; no normalisation)."""

    crop_scale: tuple[float, float] | None = None
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    crop_p: float = 1.0
    hflip: float = 0.0
    vflip: float = 0.0
    rotate_degrees: float = 0.0
    rotate_p: float = 0.0
    jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    jitter_p: float = 0.0
    grayscale: float = 0.0
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel_frac: float = 0.1
    solarize_p: float = 0.0
    solarize_threshold: float = 0.5
    noise_p: float = 0.0
    noise_std: float = 0.0
    resize_mode: Literal["bilinear", "nearest"] = "bilinear"  # a resize without a crop (augment.AugmentConfig)


class Augment(AugmentOps):
    """A pretraining's augmentation: its operations and the normalisation after them."""

    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)


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
        # imported here: the data layer (numpy, OpenCV) is not needed to import the configuration models
        from medssl_core.data.split_schemes import split_problems

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


class KnnProtocol(Strict):
    kind: Literal["knn"]
    k: int = 200
    metric: Literal["euclidean", "cosine"] = "euclidean"


class Head(Strict):
    type: Literal["linear", "mlp"] = "linear"
    hidden: tuple[int, ...] = (512,)
    activation: Literal["relu", "leaky_relu", "gelu"] = "relu"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)  # before the last linear layer (ChestX: Dropout 0.5)
    hidden_bn: bool = added(True)  # mlp: BatchNorm after each hidden layer (MedSGSSL's classifier: none)
    # the features normalised first: a LayerNorm (MedSGSSL), or a BatchNorm without affine parameters, which leaves
    # a linear probe linear at test time (running statistics) and conditions its fit (MAE's linear probe)
    input_norm: Literal["none", "layernorm", "batchnorm"] = added("none")


class FitLoss(Strict):
    """The fine-tuning loss (evaluate.fit_loss). ``name`` unset: the task's default (bce for multi-label, ce
    otherwise), which EvaluateHP writes into the spec. MISSING labels never enter it."""

    name: Literal["ce", "bce", "focal"] | None = None
    # targets (1-e) onehot + e/K: torch's CrossEntropyLoss(label_smoothing); BCE and focal per label with K = 2,
    # i.e. towards 0.5 (MedSGSSL's FocalLossWithSmoothing)
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)
    focal_gamma: float = Field(default=2.0, ge=0.0)  # focal only (Lin et al. 2017's default)
    # focal only: Lin et al.'s alpha_t, alpha for positives and 1 - alpha for negatives; None weighs all alike
    focal_alpha: float | None = None
    # ce only: the head ends in a softmax and the cross-entropy softmaxes its output again (MIMeta's readout)
    double_softmax: bool = added(False)

    @field_validator("focal_alpha")
    @classmethod
    def _alpha_is_a_class_weight(cls, v: float | None) -> float | None:
        if v is not None and not 0 < v < 1:
            raise ValueError(f"focal_alpha {v} must lie in (0, 1): it weighs positives by alpha and negatives by "
                             "1 - alpha (Lin et al. 2017). Code whose 'alpha=1' scales the whole loss (MedSGSSL's "
                             "FocalLossWithSmoothing) means focal_alpha: null here.")
        return v


_MULTI_LABEL_SELECT = ("auc", "f1", "loss")  # what multi-label metrics offer; accuracy is no headline there


class Fit(Strict):
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=2)
    optimizer: Optimizer
    schedule: Schedule = Schedule()
    reload_best_each_epoch: bool = False  # SmallDataSSL: every epoch starts from the best weights so far
    # unset: the task's headline (auc for multi-label, accuracy otherwise), which EvaluateHP writes into the spec
    # 'loss': the lowest validation loss (MIMeta's ModelCheckpoint on val_loss)
    select_metric: Literal["accuracy", "auc", "balanced_accuracy", "f1", "loss"] | None = None
    loss: FitLoss = FitLoss()
    augment: AugmentOps | None = None  # train-time augmentation of the training images; None: none
    freeze_backbone_epochs: int = Field(default=0, ge=0)  # a trained backbone stays frozen for these first epochs
    early_stopping: int | None = Field(default=None, ge=1)  # stop after this many epochs without a better val
    save_weights: bool = False  # keep the selected model (backbone + head) as the run's artifact 'finetuned.pt'
    # the last partial batch of an epoch: dropped, or kept as torch's DataLoader does by default (drop_last=False)
    last_batch: Literal["drop", "keep"] = added("drop")
    # the weights scored: the epoch selected on validation, or the last epoch's (a selection that never took
    # effect, as MedMNIST v2's script before its 2023 fix); select_ties: which of equal validation values wins
    scored: Literal["selected", "last"] = added("selected")
    select_ties: Literal["later", "earlier"] = added("later")
    # validation on the first this-many val images only (the code's first batches); None: all of them
    val_limit: int | None = added(None, ge=1)
    # the split whose metrics are the run's test numbers: its test set, or val itself, so that the number reported
    # is the very value that selected the epoch (Gravity-2010's best-epoch AUC on its validation batches)
    score_on: Literal["test", "val"] = added("test")
    # the split whose labels choose each label's F1 threshold (the '*_tuned' metrics): val, or the test set itself
    # (MedSGSSL options 7/8/10, an optimistic F1)
    thresholds_on: Literal["val", "test"] = added("val")


class FitProtocol(Strict):
    kind: Literal["fit"]
    head: Head
    train_backbone: bool = False
    backbone_bn_train: bool = False  # frozen backbone's BatchNorm in train mode (SmallDataSSL's linear.py)
    fit: Fit
    # Grad-CAM of the scored model on the first this-many test images: maps kept, their focus and share of
    # energy in the lungs recorded (medssl_core.gradcam); 0: none
    gradcam: int = added(0, ge=0)
    # a 2-D embedding of the scored model's test features (up to 2,000 images) and its silhouette by finding
    embedding: Literal["none", "tsne", "umap"] = added("none")

    @model_validator(mode="after")
    def _freezing_needs_training(self):
        if self.fit.freeze_backbone_epochs and not self.train_backbone:
            raise ValueError("fit.freeze_backbone_epochs unfreezes the backbone after that many epochs, but "
                             "train_backbone is false: set train_backbone: true, or drop freeze_backbone_epochs.")
        if self.fit.freeze_backbone_epochs >= self.fit.epochs:
            raise ValueError(f"fit.freeze_backbone_epochs ({self.fit.freeze_backbone_epochs}) must be below "
                             f"fit.epochs ({self.fit.epochs}), or the backbone never trains.")
        return self


class EvaluateHP(Data):
    backbone: Backbone
    augment: Normalize
    checkpoint: Literal["best", "last"] = "best"  # which encoder of the pretraining
    protocol: Annotated[KnnProtocol | FitProtocol, Field(discriminator="kind")]
    # the backbone starts from the model another protocol of the study fine-tuned (same method, data and seed, all
    # its labels) rather than from the pretrained encoder: Gravity-2010's encoder shared and mutated in place
    start_from: str | None = added(None)

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, data):
        """Write the task's selection metric and loss into a fit protocol, so that the spec states what ran."""
        protocol = data.get("protocol") if isinstance(data, dict) else None
        fit = protocol.get("fit") if isinstance(protocol, dict) and protocol.get("kind") == "fit" else None
        if not isinstance(fit, dict) or not isinstance(fit.get("loss", {}), dict) or "task" not in data:
            return data
        loss = fit.get("loss", {})
        fit = {**fit, "select_metric": fit.get("select_metric") or headline_metric(data["task"]),
               "loss": {**loss, "name": loss.get("name") or default_fit_loss(data["task"])}}
        return {**data, "protocol": {**protocol, "fit": fit}}

    @field_validator("protocol", mode="before")
    @classmethod
    def _kind_given(cls, v):
        if isinstance(v, dict) and "kind" not in v:
            raise ValueError("a protocol needs 'kind': 'knn' or 'fit'")
        return v

    @model_validator(mode="after")
    def _fit_suits_task(self):
        if isinstance(self.protocol, FitProtocol):
            _check_fit_for_task(self.protocol.fit, self.task, self.n_classes)
        return self


def _check_fit_for_task(fit: Fit, task: str, n_classes: int) -> None:
    multi_label = task == MULTI_LABEL
    if multi_label and fit.select_metric not in (None, *_MULTI_LABEL_SELECT):
        raise ValueError(f"protocol.fit.select_metric {fit.select_metric!r} on a multi-label task: per-label "
                         "accuracy rewards predicting every label absent (~0.95 on ChestMNIST) and the other "
                         f"single-label metrics do not exist there. Use one of {list(_MULTI_LABEL_SELECT)}, or leave "
                         "it unset for 'auc' (mean per-label ROC-AUC).")
    name = fit.loss.name
    if (name == "bce" and not multi_label) or (name == "ce" and multi_label):
        raise ValueError(f"protocol.fit.loss.name {name!r} does not suit a {task} task: use 'bce' or 'focal' for "
                         "multi-label (a sigmoid per label), 'ce' or 'focal' otherwise (a softmax over classes).")
    if name == "focal" and fit.loss.focal_alpha is not None and not multi_label and n_classes != 2:
        raise ValueError("protocol.fit.loss.focal_alpha weighs positives against negatives, which a "
                         f"{n_classes}-class task does not have: leave it null, or use a binary or multi-label task.")


def validate(model: type[Strict], hp: dict, where: str, *, for_spec: bool = False) -> dict:
    """Validate ``hp`` and return it with every default written out (``for_spec``: in its spec form); a
    ConfigError names each bad key."""
    try:
        parsed = model.model_validate(hp)
    except ValidationError as exc:
        raise ConfigError(f"{where}: invalid configuration\n" + _explain(model, exc)) from None
    return spec_form(parsed) if for_spec else parsed.model_dump(mode="json")


def parse(model: type[Strict], value, where: str):
    """``value`` (a dict or already a ``model``) as a ``model``; a ConfigError names each bad key."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise ConfigError(f"{where}: invalid configuration\n" + _explain(model, exc)) from None


def _explain(model: type[Strict], exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            valid = _fields_at(model, [p for p in err["loc"][:-1] if isinstance(p, str)])
            msg = f"unknown key (misspelt?); valid keys here: {', '.join(valid) if valid else '?'}"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def _fields_at(model, path: list[str]) -> list[str]:
    models = [model]
    for key in path:
        below = []
        for parent in models:
            if key in parent.model_fields:
                below += _models_in(parent.model_fields[key].annotation)
            elif "kind" in parent.model_fields and key in get_args(parent.model_fields["kind"].annotation):
                below.append(parent)  # pydantic names the member of a discriminated union by its kind
        models = below
    return sorted({k for m in models for k in m.model_fields})


def _models_in(annotation) -> list[type[BaseModel]]:
    """The models an annotation refers to (itself, or the members of a union)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in get_args(annotation) for m in _models_in(a)]


def set_path(d: dict, dotted: str, value, where: str) -> None:
    """Set an existing key of a validated (fully written-out) configuration; a missing key is an error."""
    keys = dotted.split(".")
    node = d
    for i, k in enumerate(keys):
        if not isinstance(node, dict) or k not in node:
            here = ".".join(keys[:i]) or "the configuration"
            valid = sorted(node) if isinstance(node, dict) else []
            raise ConfigError(f"{where}: {dotted!r} is not a field ({here} has no {k!r}; valid keys: "
                              f"{', '.join(valid)}).")
        if i == len(keys) - 1:
            node[k] = copy.deepcopy(value)
        else:
            node = node[k]


def with_method_defaults(method: dict) -> dict:
    """The method's loss arguments and options with their defaults written out (so a decision can name them,
    and a changed default changes the config id)."""
    cls = methods.METHODS.get(method.get("name"))
    if cls is None:
        return method
    return {**method, "loss_kwargs": {**methods.loss_parameters(cls), **method.get("loss_kwargs", {})},
            "options": cls.Options.model_validate(method.get("options", {})).model_dump()}


def check_path(model: type[Strict], dotted: str, where: str) -> None:
    """A decision's ``param`` must name a field of ``model`` (or an argument of a loss, under loss_kwargs)."""
    keys = dotted.split(".")
    models: list[type[BaseModel]] = [model]
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if keys[:i] in (["method", "loss_kwargs"], ["method", "options"]):
            valid = sorted({p for cls in methods.METHODS.values() for p in (
                methods.loss_parameters(cls) if keys[1] == "loss_kwargs" else cls.Options.model_fields)})
            if key in valid and last:
                return
        else:
            valid = sorted({k for m in models for k in m.model_fields})
            if key in valid:
                models = [sub for m in models if key in m.model_fields
                          for sub in _models_in(m.model_fields[key].annotation)]
                if last:
                    return
                if models or keys[:i + 1] in (["method", "loss_kwargs"], ["method", "options"]):
                    continue
                valid = []  # a plain value has no keys below it
        here = ".".join(keys[:i]) or "the run configuration"
        raise ConfigError(f"{where}: param {dotted!r} is not a field ({here} has no {key!r}; valid keys: "
                          f"{', '.join(valid) or 'none'}).")
