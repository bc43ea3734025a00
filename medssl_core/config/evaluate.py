"""The settings an evaluation run states: the protocol (kNN, or a fitted head with its loss, fitting and selection)
and the data it scores."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from medssl_core.config.base import Strict, added
from medssl_core.config.pretrain import AugmentOps, Backbone, Data, Normalize, Optimizer, Schedule
from medssl_core.data.labels import MULTI_LABEL, default_fit_loss, headline_metric


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
