"""Stand-in ImageNet weights: a fixed random init saved as and where the real weights would be, but in medssl's
own cache, for the cheap profiles on a machine without the real ones. A run that uses them says so in its settings
(``backbone.stand_in_weights``), and only inside `stand_in_caches` do the weight caches point at them: a real
download is never shadowed, and a stand-in never read by a run that did not ask for it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from medssl_core.common.atomic import atomic_file
from medssl_core.data.locate import cache_dir
from medssl_core.models.imagenet import VIT_SMALL_REPO, _imagenet_file
from medssl_core.models.vit import VIT_SMALL

SEED = 0  # every machine makes the same stand-in, so stand-in runs reproduce too
SNAPSHOT = "stand-in"  # the Hugging Face snapshot folder of a stand-in ViT-S


def stand_in_root() -> Path:
    """medssl's folder of stand-in weights: a torch hub and a Hugging Face hub cache of their own."""
    return cache_dir() / "stand_in_weights"


def stand_in_path(arch: str, init: str) -> Path:
    """Where the stand-in for (arch, init) lies: the path `imagenet_weights_path` finds inside `stand_in_caches`."""
    root = stand_in_root()
    if arch == "vit_small" and init == "imagenet":
        return root / "huggingface" / "hub" / VIT_SMALL_REPO / "snapshots" / SNAPSHOT / "model.safetensors"
    name = _imagenet_file(arch, init)
    if name is None:
        raise ValueError(f"no ImageNet weights ({init}) are registered for {arch}: nothing to stand in for")
    return root / "torch" / "hub" / "checkpoints" / name


def make_stand_in(arch: str, init: str) -> Path:
    """The stand-in of (arch, init), made once: the network's own random init under a fixed seed, in the file
    format of the real weights (a torchvision state dict; timm's safetensors for ViT-S)."""
    path = stand_in_path(arch, init)
    if path.is_file():
        return path
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        if arch == "vit_small":
            import timm
            from safetensors.torch import save

            state = timm.create_model(VIT_SMALL, pretrained=False).state_dict()
            data = save({k: v.contiguous() for k, v in state.items()})
        else:
            import io

            from torchvision import models as tvm

            buffer = io.BytesIO()
            torch.save(getattr(tvm, arch)().state_dict(), buffer)
            data = buffer.getvalue()
    with atomic_file(path) as f:
        f.write(data)
    return path


@contextmanager
def stand_in_caches(arch: str, init: str) -> Iterator[Path]:
    """Within: torch hub's and the Hugging Face hub's caches are medssl's stand-in folder (holding the stand-in of
    (arch, init)), so building the backbone loads the stand-in exactly as it would load the real weights."""
    path = make_stand_in(arch, init)
    root = stand_in_root()
    hub_dir, hf_cache = getattr(torch.hub, "_hub_dir", None), os.environ.get("HF_HUB_CACHE")
    torch.hub.set_dir(str(root / "torch" / "hub"))
    os.environ["HF_HUB_CACHE"] = str(root / "huggingface" / "hub")
    try:
        yield path
    finally:
        torch.hub._hub_dir = hub_dir
        if hf_cache is None:
            os.environ.pop("HF_HUB_CACHE", None)
        else:
            os.environ["HF_HUB_CACHE"] = hf_cache
