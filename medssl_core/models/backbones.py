"""Backbones (ResNet-18/50, MobileNetV2, ViT-Small, MedSGSSL's CNNs) for any number of input channels: the first
convolution adapted, ImageNet weights loaded where asked."""

from __future__ import annotations

import torch
from torch import nn
from torchvision import models as tvm

from medssl_core.common.errors import ConfigError
from medssl_core.models import sg_encoders
from medssl_core.models.cpu_conv import use_fast_cpu_convolutions
from medssl_core.models.imagenet import INITS, imagenet_missing_message, imagenet_weights_path
from medssl_core.models.vit import ViTSmall

FEATURE_DIMS = {"resnet18": 512, "resnet50": 2048, "mobilenet_v2": 1280, "vit_small": 384, "sg_cnn": 256,
                "sg_guided_cnn": 256}


def _adapt_first_conv(conv: nn.Conv2d, in_channels: int, grey_weights: str = "sum", **overrides) -> nn.Conv2d:
    """A copy of ``conv`` for ``in_channels``. For 1 channel, RGB weights are summed: exactly equivalent to
    feeding the grey image replicated to RGB, as the studies do with `.convert('RGB')`; or averaged
    (``grey_weights`` 'mean', MedSGSSL's direct baselines)."""
    new = nn.Conv2d(in_channels, conv.out_channels, overrides.get("kernel_size", conv.kernel_size),
                    overrides.get("stride", conv.stride), overrides.get("padding", conv.padding),
                    bias=conv.bias is not None)
    if new.weight.shape[2:] == conv.weight.shape[2:]:
        with torch.no_grad():
            w = conv.weight
            if in_channels == 1:
                new.weight.copy_(w.sum(dim=1, keepdim=True) if grey_weights == "sum" else w.mean(dim=1, keepdim=True))
            elif in_channels == w.shape[1]:
                new.weight.copy_(w)
            else:  # e.g. image + mask: mean RGB filter per extra channel (as MedSGSSL option 6)
                new.weight.copy_(w.mean(dim=1, keepdim=True).repeat(1, in_channels, 1, 1))
    return new


def feature_dim(arch: str, out_dim: int | None = None) -> int:
    """Size of the features a backbone returns: ``out_dim`` where it ends in a Linear to it, else the arch's."""
    return out_dim or FEATURE_DIMS[arch]


def build_backbone(arch: str, in_channels: int = 3, *, small_stem: bool = False, init: str = "random",
                   random_init: str = "torchvision", zero_init_residual: bool = True,
                   image_size: int = 224, shared_attention: bool = False, out_dim: int | None = None,
                   grey_weights: str = "sum") -> nn.Module:
    """A feature extractor returning (N, feature_dim(arch, out_dim)).

    ``small_stem``: ResNet 3x3 stride-1 first conv and no max-pool, for 28-64 px inputs.
    ``init``: 'random', 'imagenet' or 'imagenet_v2' (torchvision's IMAGENET1K_V2; local weights only, a clear
    error when missing).
    ``random_init``: 'torchvision' (its ResNet init: Kaiming normal, fan-out) or 'layer_default' (every layer's
    own ``reset_parameters()``, as a ResNet written from plain nn layers, e.g. MedMNIST v2's "(28)" models).
    ``zero_init_residual``: each residual branch's last BatchNorm starts at zero (random init only).
    ``shared_attention``: ViT-S blocks all attend with the last block's weights (MedSGSSL's closure bug).
    ``out_dim``: a Linear from the pooled features to ``out_dim`` (PyTorch's default init; MedSGSSL option 4).
    ``grey_weights``: a 1-channel first conv from pretrained RGB weights: their 'sum' or 'mean'.
    """
    if out_dim is not None:
        if arch == "vit_small" or arch in sg_encoders.ENCODERS:
            raise ConfigError(f"out_dim adds a Linear after a torchvision backbone's pooling; {arch} ends in its own "
                              "layers: drop out_dim.")
        model = build_backbone(arch, in_channels, small_stem=small_stem, init=init, random_init=random_init,
                               zero_init_residual=zero_init_residual, image_size=image_size, grey_weights=grey_weights)
        return nn.Sequential(model, nn.Linear(FEATURE_DIMS[arch], out_dim))
    if arch not in FEATURE_DIMS:
        raise ConfigError(f"Unknown backbone {arch!r}; choose one of {sorted(FEATURE_DIMS)}.")
    if init not in INITS:
        raise ConfigError(f"init must be one of {INITS}, not {init!r}")
    if random_init not in ("torchvision", "layer_default"):
        raise ConfigError(f"random_init must be 'torchvision' or 'layer_default', not {random_init!r}")
    if shared_attention and arch != "vit_small":
        raise ConfigError(f"shared_attention is a ViT-S setting (MedSGSSL's closure bug); {arch} has no attention.")
    if arch == "vit_small":
        weights = None
        if init == "imagenet":
            weights = imagenet_weights_path(arch)
            if weights is None:
                raise ConfigError(imagenet_missing_message(arch))
        return ViTSmall(image_size, in_channels, weights, shared_attention)
    if arch in sg_encoders.ENCODERS:
        if init != "random":
            raise ConfigError(f"{arch} is MedSGSSL's own encoder: it has no ImageNet weights (init 'random').")
        return use_fast_cpu_convolutions(sg_encoders.ENCODERS[arch](in_channels))
    if arch.startswith("resnet"):
        model = getattr(tvm, arch)(zero_init_residual=zero_init_residual and init == "random")
    else:
        model = tvm.mobilenet_v2()
    if init != "random":
        path = imagenet_weights_path(arch, init)
        if path is None:
            raise ConfigError(imagenet_missing_message(arch, init))
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    if arch.startswith("resnet"):
        if small_stem:
            model.conv1 = _adapt_first_conv(model.conv1, in_channels, grey_weights, kernel_size=3, stride=1,
                                             padding=1)
            model.maxpool = nn.Identity()
        elif in_channels != 3:
            model.conv1 = _adapt_first_conv(model.conv1, in_channels, grey_weights)
        model.fc = nn.Identity()
    else:
        if in_channels != 3:
            model.features[0][0] = _adapt_first_conv(model.features[0][0], in_channels, grey_weights)
        model.classifier = nn.Identity()
    if init == "random" and random_init == "layer_default":
        _reset_every_layer(model, zero_init_residual)
    return use_fast_cpu_convolutions(model)


def _reset_every_layer(model: nn.Module, zero_init_residual: bool) -> None:
    for module in model.modules():
        if module is not model and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    if zero_init_residual:
        for module in model.modules():  # as torchvision's ResNet(zero_init_residual=True)
            if isinstance(module, tvm.resnet.Bottleneck):
                nn.init.zeros_(module.bn3.weight)
            elif isinstance(module, tvm.resnet.BasicBlock):
                nn.init.zeros_(module.bn2.weight)
