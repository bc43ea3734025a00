"""MedSGSSL's segmentation-guided SSL methods, each option as the code trains it (docs/studies/medsgssl.md,
'Custom CNNs (baseline, options 1-5)' and 'Options 7, 8 and 10 (ViT-S)'); its bugs are options, so that a study's
decisions can switch them.

- ``sg_contrastive`` (options 1-4 and the baseline): NT-Xent with weights from a lung or pathology mask plus a
  pixel decoder's reconstruction of each view from its feature.
- ``sg_attention`` (option 5): the same, with an encoder whose 'segmentation' maps of the two views must agree.
- ``anatomy_vit`` (options 7, 8, 10): ViT-S with an EMA teacher; lung-aware token masking and reconstruction of
  the teacher's tokens, NT-Xent on the CLS tokens, CLS attention aligned with the lung prior, and for option 10 a
  learnable per-layer log-prior attention bias, a mask-ratio curriculum and a cross-domain term.
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from medssl_core import losses
from medssl_core.data.batch import Batch, View
from medssl_core.data.lung_mask import PATCH, PATCH_LEVEL
from medssl_core.methods.base import Method, StepOutput, register
from medssl_core.methods.momentum import ema_update
from medssl_core.models.sg_encoders import PixelDecoder


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def mask_coverage(masks: Tensor | None, where: str) -> Tensor:
    """Each image's share of mask pixels (N,), from its 0/1 masks (N, 1, H, W)."""
    if masks is None:
        raise ValueError(f"{where} weighs images by their masks, but the batch has none: set masks: lung_rule (or "
                         "pathology_rule) for its runs.")
    return masks.float().mean(dim=(1, 2, 3))


def patch_masks(masks: Tensor, patch: int = PATCH, level: float = PATCH_LEVEL) -> Tensor:
    """0/1 pixel masks (N, 1, S, S) -> (N, (S / patch)^2) float: a patch is lung if its mean exceeds ``level``
    (data.lung_mask.patch_mask, on the device)."""
    return (F.avg_pool2d(masks.float(), patch) > level).flatten(1).float()


class SegContrastiveOptions(_Strict):
    temperature: float = Field(0.1, gt=0)
    mask_weight: float = Field(0.0, ge=0)  # w = scale (1 + mask_weight mean(mask)); option 1: 0.3, option 3: 0.5
    # 'image': each image's anchors weighted by its own w (option 1); 'batch': NT-Xent times the batch's mean w
    # (option 3's pathology weight)
    weight_per: Literal["image", "batch"] = "image"
    scale: float = Field(1.0, gt=0)  # option 2: 0.852, its weight from fixed rectangles, the same for every image
    recon_weight: float = Field(0.5, ge=0)


class _PixelReconstruction(Method):
    """A pixel decoder from the backbone's feature back to each view (target: the view as the model sees it)."""

    def __init__(self, cfg, backbone, feature_dim: int, image_size: int = 224, image_channels: int = 1):
        super().__init__(cfg, backbone, feature_dim, image_size, image_channels)
        self.decoder = (PixelDecoder(image_size, image_channels, dim=feature_dim) if self.options.recon_weight
                        else None)

    def reconstruction(self, features: list[Tensor], views: list[View]) -> Tensor:
        """1/2 [MSE(dec(h1), v1) + MSE(dec(h2), v2)], averaged over pixels and batch."""
        if self.decoder is None:
            return features[0].new_zeros(())
        return sum(F.mse_loss(self.decoder(h).float(), v.image.float()) for h, v in zip(features, views,
                                                                                        strict=True)) / len(views)


@register("sg_contrastive")
class SegContrastive(_PixelReconstruction):
    """Options 1-4 and the baseline: scale (1 + mask_weight mean(mask)) weighted NT-Xent (tau 0.1) on the
    projections + recon_weight x the pixel reconstruction. The weight is one number per image, from its
    un-augmented mask (option 1: lung; option 3: pathology), the same for both views; option 3 multiplies the
    unweighted NT-Xent by the batch's mean weight."""

    Options = SegContrastiveOptions

    def training_step(self, views: list[View], batch: Batch) -> StepOutput:
        o = self.options
        (h0, z0, _), (h1, z1, _) = (self.embed(v.image) for v in views)
        coverage = (mask_coverage(batch.masks, "sg_contrastive (mask_weight > 0)") if o.mask_weight
                    else z0.new_zeros(z0.shape[0]))
        weights = o.scale * (1 + o.mask_weight * coverage)
        if o.weight_per == "batch":
            ctr = losses.nt_xent(z0, z1, temperature=o.temperature) * weights.mean()
        else:
            ctr = losses.weighted_nt_xent(z0, z1, weights, o.temperature)
        rec = self.reconstruction([h0, h1], views)
        return StepOutput(ctr + o.recon_weight * rec, {"contrastive": ctr, "reconstruction": rec})


class SegAttentionOptions(_Strict):
    temperature: float = Field(0.1, gt=0)
    contrastive_weight: float = Field(1.0, ge=0)
    recon_weight: float = Field(0.5, ge=0)
    seg_weight: float = Field(0.2, ge=0)


@register("sg_attention")
class SegAttention(_PixelReconstruction):
    """Option 5: NT-Xent + pixel reconstruction + seg_weight x MSE between the two views' segmentation-head maps
    (no mask target; the maps are not aligned, though the views are flipped and rotated differently)."""

    Options = SegAttentionOptions
    archs = ("sg_guided_cnn",)

    def training_step(self, views: list[View], batch: Batch) -> StepOutput:
        o = self.options
        (h0, s0), (h1, s1) = (self.backbone.forward_with_map(v.image) for v in views)
        ctr = losses.nt_xent(self.projector(h0), self.projector(h1), temperature=o.temperature)
        rec = self.reconstruction([h0, h1], views)
        seg = F.mse_loss(s0.float(), s1.float())
        terms = {"contrastive": ctr, "reconstruction": rec, "segmentation": seg}
        return StepOutput(o.contrastive_weight * ctr + o.recon_weight * rec + o.seg_weight * seg, terms)


class AnatomyOptions(_Strict):
    temperature: float = Field(0.1, gt=0)
    contrastive_weight: float = Field(1.0, ge=0)
    # share of each image's lung patches masked: linear from the first to the second over the epochs (option 10:
    # 0.3 -> 0.75; options 7/8: 0.5 throughout)
    mask_ratio: tuple[float, float] = (0.5, 0.5)
    mask_input: bool = False  # True: zero the masked input patches (the paper); False: zero the output tokens (code)
    mask_follows_view: bool = False  # True: view 1's own patch mask; False: the un-augmented image's (code)
    # view 2 masked too, its own draw zeroed in the student's input, before its CLS token enters the contrast (the
    # paper: "both views are masked independently"); False: view 1 only (code). Left out of specs while False
    mask_both_views: bool = Field(False, json_schema_extra={"absent": False})
    lungs_only: bool = True  # masked patches drawn among the lung patches; False: among all (no anatomy, ablation)
    attention_weight: float = Field(0.05, ge=0)
    attention_after: int = Field(5, ge=0)  # the alignment counts only after this many epochs
    detach_attention: bool = False  # option 10 stores the maps detached: the alignment has no gradient
    layer_tau: float | None = Field(None, gt=0)  # layer weights softmax(l / tau) (option 10: 2); None: uniform
    gamma_bias: bool = False  # option 10: learnable per-layer log-prior bias on the attention logits
    gamma_init: float = Field(0.6, gt=0, lt=1)
    domain_weight: float = Field(0.0, ge=0)  # option 10: 0.1 (a merged NIH + CheXpert pretraining set)
    detach_domain: bool = False  # option 10 computes it on detached CLS tokens: no gradient
    freeze_epochs: int = Field(5, ge=0)  # only the patch embedding (and gamma, heads) trains in these first epochs
    projector_after_unfreeze: bool = True  # options 7/8 rebuild the optimiser without the projector
    teacher_momentum: float = Field(0.996, ge=0, le=1)
    # the teacher's attention runs on the student's attention modules (and bias): deep-copied closures in the code
    teacher_shares_attention: bool = False


@register("anatomy_vit")
class AnatomyViT(Method):
    """Options 7, 8 and 10 (ViT-S): loss = recon + attention_weight attn + contrastive_weight NT-Xent
    (+ domain_weight cross-domain). The reconstruction head (384-768-384, GELU) predicts the EMA teacher's view-1
    patch tokens at the masked lung patches; the attention term aligns every block's CLS attention (view 2) with
    the lung prior."""

    Options = AnatomyOptions
    needs_masks = True
    archs = ("vit_small",)
    teachers = ("teacher",)

    def __init__(self, cfg, backbone, feature_dim: int, image_size: int = 224, image_channels: int = 1):
        super().__init__(cfg, backbone, feature_dim, image_size, image_channels)
        o = self.options
        self.recon_head = nn.Sequential(nn.Linear(feature_dim, 2 * feature_dim), nn.GELU(),
                                        nn.Linear(2 * feature_dim, feature_dim))
        depth = len(self.backbone.vit.blocks)
        self.gamma_logit = (nn.Parameter(torch.full((depth,), math.log(o.gamma_init / (1 - o.gamma_init))))
                            if o.gamma_bias else None)
        self.teacher = copy.deepcopy(self.backbone).requires_grad_(False)
        self.register_buffer("layer_weights", torch.softmax(torch.arange(depth) / o.layer_tau, 0)
                             if o.layer_tau else torch.full((depth,), 1 / depth))
        self.epoch = 0

    def mask_ratio(self) -> float:
        start, end = self.options.mask_ratio
        return start + (end - start) * min(1.0, (self.epoch + 1) / self.epochs)

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch
        o = self.options
        frozen = epoch < o.freeze_epochs
        for name, p in self.backbone.named_parameters():
            p.requires_grad_(not frozen or name.startswith("vit.patch_embed"))
        self.projector.requires_grad_(frozen or o.projector_after_unfreeze or not o.freeze_epochs)

    def optimizer_restarts(self) -> tuple[int, ...]:
        return (self.options.freeze_epochs,) if 0 < self.options.freeze_epochs < self.epochs else ()

    def attention_bias(self, lung: Tensor) -> Tensor | None:
        """Per block log(gamma m_i m_j + 1 - gamma) (L, N, 1 + P, 1 + P), m padded with 1 for the CLS token."""
        if self.gamma_logit is None:
            return None
        m = torch.cat([lung.new_ones(lung.shape[0], 1), lung], dim=1)
        pair = m[:, :, None] * m[:, None, :]
        gamma = torch.sigmoid(self.gamma_logit).view(-1, 1, 1, 1)
        return torch.log((gamma * pair + 1 - gamma).clamp_min(1e-6))

    def choose_masked(self, lung: Tensor) -> Tensor:
        """A random ``mask_ratio`` of each image's lung patches (at least one patch), (N, P) bool."""
        n_lung = lung.sum(1).clamp_min(1)
        n_mask = (n_lung * self.mask_ratio()).floor().clamp_min(1)
        score = torch.where(lung > 0.5, torch.rand(lung.shape, device=lung.device), -1.0)
        rank = score.argsort(1, descending=True).argsort(1)
        return rank < n_mask[:, None]

    def training_step(self, views: list[View], batch: Batch) -> StepOutput:
        o = self.options
        v1, v2 = views
        size = v1.image.shape[-1]
        source = v1.mask if o.mask_follows_view else F.interpolate(batch.masks.float(), size=(size, size))
        lung = patch_masks(source)
        masked = self.choose_masked(lung if o.lungs_only else torch.ones_like(lung))
        bias = self.attention_bias(lung)
        tokens1, _ = self.backbone.run(v1.image, bias=bias, input_mask=masked if o.mask_input else None)
        patches1 = tokens1[:, 1:]
        if not o.mask_input:  # the student saw the whole image; its masked output tokens are zeroed
            patches1 = patches1 * (~masked).unsqueeze(-1).to(patches1.dtype)
        with torch.no_grad():
            shared = self.backbone if o.teacher_shares_attention else None
            target = self.teacher.run(v1.image, bias=bias if shared is not None else None,
                                      attention_from=shared)[0][:, 1:]
        rec = losses.masked_token_mse(self.recon_head(patches1), target, masked)
        masked2 = None
        if o.mask_both_views:  # its own draw, zeroed in the input: view 2's patch outputs feed no loss
            lung2 = patch_masks(v2.mask) if o.mask_follows_view else lung
            masked2 = self.choose_masked(lung2 if o.lungs_only else torch.ones_like(lung2))
        tokens2, maps = self.backbone.run(v2.image, bias=bias, keep_attention=True, input_mask=masked2)
        cls1, cls2 = tokens1[:, 0], tokens2[:, 0]
        ctr = losses.nt_xent(self.projector(cls1), self.projector(cls2), temperature=o.temperature)
        cls_attention = torch.stack(maps)
        attn = losses.attention_alignment(cls_attention.detach() if o.detach_attention else cls_attention, lung,
                                          self.layer_weights)
        attn_weight = o.attention_weight if self.epoch + 1 > o.attention_after else 0.0
        terms = {"reconstruction": rec, "contrastive": ctr, "attention": attn}
        loss = rec + attn_weight * attn + o.contrastive_weight * ctr
        if o.domain_weight and batch.domains is not None:
            dom = losses.cross_domain_alignment(cls1.detach() if o.detach_domain else cls1, batch.domains)
            terms["domain"] = dom
            loss = loss + o.domain_weight * dom
        return StepOutput(loss, terms)

    def on_step_end(self, epoch: int, step: int) -> None:
        ema_update([(self.backbone, self.teacher)], self.options.teacher_momentum)

    def scheduled_values(self) -> dict[str, float]:
        values = {"mask_ratio": self.mask_ratio()}
        if self.gamma_logit is not None:
            values.update({f"gamma_{i}": float(g) for i, g in enumerate(torch.sigmoid(self.gamma_logit.detach()))})
        return values
