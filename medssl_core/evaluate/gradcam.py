"""Grad-CAM of a fitted classifier (pytorch-grad-cam) on a few test images, and how much of each map lies in
the lungs: the share of its pixels above 0.7 (Gravity-2010's "focused attention") and the share of its energy
inside a rule-based lung mask (data.lung_mask; beyond the study)."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from medssl_core.common.errors import ConfigError
from medssl_core.data.lung_mask import lung_mask
from medssl_core.evaluate.features import slow_progress

FOCUS_LEVEL = 0.7  # 3Models.ipynb: np.sum(cam > 0.7) / cam.size


def target_layer(backbone: nn.Module, arch: str) -> nn.Module:
    """The last convolutional stage: a ResNet's layer4[-1], MobileNetV2's features[-1]."""
    if arch.startswith("resnet"):
        return backbone.layer4[-1]
    if arch == "mobilenet_v2":
        return backbone.features[-1]
    raise ConfigError(f"Grad-CAM is wired for ResNets and MobileNetV2, not {arch}; set protocol.gradcam to 0.")


def grad_cams(backbone: nn.Module, head: nn.Module, arch: str, inputs: torch.Tensor, targets: np.ndarray
              ) -> np.ndarray:
    """(N, H, W) float32 maps in [0, 1] of the ``targets`` class (or label) logit for model ``inputs`` (N, C, H, W).
    Run on a copy in eval mode with gradients on, whatever the fitted model froze."""
    from pytorch_grad_cam import GradCAM  # imported late: it imports torchvision (medssl_core first)
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = nn.Sequential(copy.deepcopy(backbone), copy.deepcopy(head)).float().eval().requires_grad_(True)
    with GradCAM(model=model, target_layers=[target_layer(model[0], arch)]) as cam:
        maps = cam(input_tensor=inputs.float(), targets=[ClassifierOutputTarget(int(t)) for t in targets])
    return np.asarray(maps, dtype=np.float32)


def lung_scores(cams: np.ndarray, images: np.ndarray) -> dict[str, object]:
    """Per image: the study's focus (share of pixels above 0.7) and the share of CAM energy in the lung mask of
    the uint8 grey ``images`` (N, H, W), with the masks."""
    masks = np.stack([lung_mask(img) for img in slow_progress(images, "lung masks")])
    energy = cams.reshape(len(cams), -1).sum(axis=1)
    inside = (cams * masks).reshape(len(cams), -1).sum(axis=1)
    return {"focus": (cams > FOCUS_LEVEL).mean(axis=(1, 2)),
            "lung_energy": np.where(energy > 0, inside / np.maximum(energy, 1e-12), np.nan), "masks": masks}
