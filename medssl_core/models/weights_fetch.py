"""Fetching the ImageNet weights a plan needs, with torchvision's and timm's own loaders, into the caches
`imagenet_weights_path` reads (`medssl weights fetch`; runs themselves never download weights)."""

from __future__ import annotations

from pathlib import Path

from medssl_core.common.errors import MedsslError
from medssl_core.models.imagenet import imagenet_missing_message, imagenet_weights_path
from medssl_core.models.vit import VIT_SMALL_IMAGENET

# torchvision's weights enum entry of each (arch, init): its URL and the hash its file name carries
TORCHVISION_WEIGHTS = {
    ("resnet18", "imagenet"): "ResNet18_Weights.IMAGENET1K_V1",
    ("resnet50", "imagenet"): "ResNet50_Weights.IMAGENET1K_V1",
    ("resnet50", "imagenet_v2"): "ResNet50_Weights.IMAGENET1K_V2",
    ("mobilenet_v2", "imagenet"): "MobileNet_V2_Weights.IMAGENET1K_V1",
    ("mobilenet_v2", "imagenet_v2"): "MobileNet_V2_Weights.IMAGENET1K_V2",
}


class WeightsFetchError(MedsslError):
    """A download of ImageNet weights failed or did not match its published hash."""


def fetch_imagenet(arch: str, init: str = "imagenet") -> Path:
    """The local file of (arch, init)'s ImageNet weights, downloaded first if missing: torchvision's files with
    their hash checked (`get_state_dict(check_hash=True)`), ViT-S's by `timm.create_model(..., pretrained=True)`."""
    found = imagenet_weights_path(arch, init)
    if found is not None:
        return found
    try:
        if arch == "vit_small" and init == "imagenet":
            import timm

            timm.create_model(VIT_SMALL_IMAGENET.split("/")[1], pretrained=True)
        elif (arch, init) in TORCHVISION_WEIGHTS:
            from torchvision.models import get_weight

            get_weight(TORCHVISION_WEIGHTS[arch, init]).get_state_dict(progress=True, check_hash=True)
        else:
            raise WeightsFetchError(f"No {init} ImageNet weights are registered for {arch}: nothing to fetch.")
    except RuntimeError as exc:
        if "hash" not in str(exc):
            raise
        raise WeightsFetchError(f"The downloaded {init} weights of {arch} do not match torchvision's published hash "
                                f"({exc}): a broken or altered download, not kept. Try again, or copy the file "
                                "from a machine that has it.") from exc
    except OSError as exc:  # no network, a refused connection, a full disk
        raise WeightsFetchError(f"Could not download the {init} weights of {arch} ({type(exc).__name__}: {exc}). "
                                + imagenet_missing_message(arch, init)) from exc
    found = imagenet_weights_path(arch, init)
    if found is None:
        raise WeightsFetchError(f"The {init} weights of {arch} were downloaded but are not where medssl looks. "
                                + imagenet_missing_message(arch, init))
    return found
