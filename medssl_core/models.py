"""Backbones (ResNet-18/50, MobileNetV2, ViT-Small) for any number of input channels, and the studies' heads."""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tvm

from medssl_core.cpu_conv import use_fast_cpu_convolutions
from medssl_core.errors import ConfigError

FEATURE_DIMS = {"resnet18": 512, "resnet50": 2048, "mobilenet_v2": 1280, "vit_small": 384}

# torchvision's ImageNet checkpoints, looked for in the torch hub cache only: never downloaded by medssl.
IMAGENET_FILES = {
    "resnet18": "resnet18-f37072fd.pth",
    "resnet50": "resnet50-0676ba61.pth",
    "mobilenet_v2": "mobilenet_v2-b0353104.pth",
}


def imagenet_weights_path(arch: str) -> Path | None:
    if arch not in IMAGENET_FILES:
        return None
    path = Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILES[arch]
    return path if path.is_file() else None


def imagenet_missing_message(arch: str) -> str:
    if arch not in IMAGENET_FILES:
        return f"No ImageNet weights are registered for {arch}."
    return (f"ImageNet weights for {arch} are not present locally: expected "
            f"{Path(torch.hub.get_dir()) / 'checkpoints' / IMAGENET_FILES[arch]}. medssl never downloads them "
            f"itself; on a machine with internet run `python -c \"import torchvision; torchvision.models."
            f"{arch}(weights='IMAGENET1K_V1')\"` once (or copy the file there).")


def _adapt_first_conv(conv: nn.Conv2d, in_channels: int, **overrides) -> nn.Conv2d:
    """A copy of ``conv`` for ``in_channels``. For 1 channel, RGB weights are summed: exactly equivalent to
    feeding the grey image replicated to RGB, as the studies do with `.convert('RGB')`."""
    new = nn.Conv2d(in_channels, conv.out_channels, overrides.get("kernel_size", conv.kernel_size),
                    overrides.get("stride", conv.stride), overrides.get("padding", conv.padding),
                    bias=conv.bias is not None)
    if new.weight.shape[2:] == conv.weight.shape[2:]:
        with torch.no_grad():
            w = conv.weight
            if in_channels == 1:
                new.weight.copy_(w.sum(dim=1, keepdim=True))
            elif in_channels == w.shape[1]:
                new.weight.copy_(w)
            else:  # e.g. image + mask: mean RGB filter per extra channel (as MedSGSSL option 6)
                new.weight.copy_(w.mean(dim=1, keepdim=True).repeat(1, in_channels, 1, 1))
    return new


class ViTSmall(nn.Module):
    """ViT-Small/16 (width 384, depth 12, heads 6) from torchvision's VisionTransformer; CLS token output."""

    def __init__(self, image_size: int = 224, in_channels: int = 3):
        super().__init__()
        self.vit = tvm.VisionTransformer(image_size=image_size, patch_size=16, num_layers=12, num_heads=6,
                                         hidden_dim=384, mlp_dim=1536)
        if in_channels != 3:
            self.vit.conv_proj = _adapt_first_conv(self.vit.conv_proj, in_channels)
        self.vit.heads = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit(x)


def build_backbone(arch: str, in_channels: int = 3, *, small_stem: bool = False, init: str = "random",
                   zero_init_residual: bool = True, image_size: int = 224) -> nn.Module:
    """A feature extractor returning (N, FEATURE_DIMS[arch]).

    ``small_stem``: ResNet 3x3 stride-1 first conv and no max-pool, for 28-64 px inputs.
    ``init``: 'random' or 'imagenet' (local weights only; a clear error when missing).
    """
    if arch not in FEATURE_DIMS:
        raise ConfigError(f"Unknown backbone {arch!r}; choose one of {sorted(FEATURE_DIMS)}.")
    if init not in ("random", "imagenet"):
        raise ConfigError(f"init must be 'random' or 'imagenet', not {init!r}")
    if arch == "vit_small":
        if init == "imagenet":
            raise ConfigError("ImageNet weights for ViT-Small are not shipped by torchvision; use init='random'.")
        return ViTSmall(image_size, in_channels)
    if arch.startswith("resnet"):
        model = getattr(tvm, arch)(zero_init_residual=zero_init_residual and init == "random")
    else:
        model = tvm.mobilenet_v2()
    if init == "imagenet":
        path = imagenet_weights_path(arch)
        if path is None:
            raise ConfigError(imagenet_missing_message(arch))
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    if arch.startswith("resnet"):
        if small_stem:
            model.conv1 = _adapt_first_conv(model.conv1, in_channels, kernel_size=3, stride=1, padding=1)
            model.maxpool = nn.Identity()
        elif in_channels != 3:
            model.conv1 = _adapt_first_conv(model.conv1, in_channels)
        model.fc = nn.Identity()
    else:
        if in_channels != 3:
            model.features[0][0] = _adapt_first_conv(model.features[0][0], in_channels)
        model.classifier = nn.Identity()
    return use_fast_cpu_convolutions(model)


def mlp(dims: list[int], *, hidden_bn: bool = True, last_bn: bool = False, last_bn_affine: bool = True,
        activation: type[nn.Module] = nn.ReLU, bias: bool = True) -> nn.Sequential:
    """Linear layers through ``dims``; BN + activation after every hidden layer, optional BN at the end."""
    if len(dims) < 2:
        raise ConfigError(f"an MLP needs at least input and output dims, got {dims}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        last = i == len(dims) - 2
        layers.append(nn.Linear(a, b, bias=bias))
        if not last:
            if hidden_bn:
                layers.append(nn.BatchNorm1d(b))
            layers.append(activation())
    if last_bn:
        layers.append(nn.BatchNorm1d(dims[-1], affine=last_bn_affine))
    return nn.Sequential(*layers)


def build_head(spec: dict, in_dim: int, n_out: int) -> nn.Module:
    """Downstream heads: {'type': 'linear'} or {'type': 'mlp', 'hidden': [512], 'activation': 'leaky_relu'}."""
    kind = spec.get("type", "linear")
    if kind == "linear":
        return nn.Linear(in_dim, n_out)
    if kind == "mlp":
        act = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU}[spec.get("activation", "relu")]
        return mlp([in_dim, *spec.get("hidden", [512]), n_out], activation=act)
    raise ConfigError(f"Unknown head type {kind!r}; use 'linear' or 'mlp'.")
