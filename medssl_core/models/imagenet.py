"""ImageNet weights, looked for in the local torch hub and Hugging Face caches only (medssl never downloads them
during a run), the message that says how to get them, and the normalisation they were trained with."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from medssl_core.models.vit import VIT_SMALL_IMAGENET

# the normalisation ImageNet weights were trained with (studies that start from them use it too)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# torchvision's ImageNet checkpoints, looked for in the torch hub cache only: never downloaded by medssl.
IMAGENET_FILES = {
    "resnet18": "resnet18-f37072fd.pth",
    "resnet50": "resnet50-0676ba61.pth",
    "mobilenet_v2": "mobilenet_v2-b0353104.pth",
}
# init 'imagenet_v2': torchvision's newer recipe (weights='IMAGENET1K_V2'), where it has one
IMAGENET_V2_FILES = {"resnet50": "resnet50-11ad3fa6.pth", "mobilenet_v2": "mobilenet_v2-7ebf99e0.pth"}


INITS = ("random", "imagenet", "imagenet_v2")
# the Hugging Face hub cache's folder of timm's ViT-S weights (snapshots/<rev>/model.safetensors inside)
VIT_SMALL_REPO = f"models--{VIT_SMALL_IMAGENET.replace('/', '--')}"


def _imagenet_file(arch: str, init: str) -> str | None:
    return (IMAGENET_V2_FILES if init == "imagenet_v2" else IMAGENET_FILES).get(arch)


def _hf_hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    return Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"


def imagenet_weights_path(arch: str, init: str = "imagenet") -> Path | None:
    """The local ImageNet weights of ``arch``: torchvision's file in the torch hub cache, or for ViT-S timm's
    in the Hugging Face hub cache (where `timm.create_model(..., pretrained=True)` leaves them)."""
    if arch == "vit_small" and init == "imagenet":
        snapshots = _hf_hub_cache() / VIT_SMALL_REPO / "snapshots"
        found = sorted(snapshots.glob("*/model.safetensors")) if snapshots.is_dir() else []
        return found[-1] if found else None
    name = _imagenet_file(arch, init)
    if name is None:
        return None
    path = Path(torch.hub.get_dir()) / "checkpoints" / name
    return path if path.is_file() else None


def imagenet_missing_message(arch: str, init: str = "imagenet") -> str:
    if arch == "vit_small" and init == "imagenet":
        return (f"ImageNet weights for vit_small are not present locally: expected "
                f"{_hf_hub_cache()}/{VIT_SMALL_REPO}/snapshots/<rev>/model.safetensors."
                " medssl never downloads them itself; on a machine with internet run `python -c \"import timm; "
                f"timm.create_model('{VIT_SMALL_IMAGENET.split('/')[1]}', pretrained=True)\"` once (or copy the "
                "hub cache folder there).")
    name = _imagenet_file(arch, init)
    weights = "IMAGENET1K_V2" if init == "imagenet_v2" else "IMAGENET1K_V1"
    if name is None:
        return f"No {weights} ImageNet weights are registered for {arch}."
    return (f"ImageNet weights for {arch} are not present locally: expected "
            f"{Path(torch.hub.get_dir()) / 'checkpoints' / name}. medssl never downloads them "
            f"itself; on a machine with internet run `python -c \"import torchvision; torchvision.models."
            f"{arch}(weights='{weights}')\"` once (or copy the file there).")
