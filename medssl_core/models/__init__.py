"""Networks: backbones for any channel count (``backbones``, ``vit``, MedSGSSL's ``sg_encoders``), ImageNet
weights from local caches (``imagenet``), heads (``heads``)."""

from medssl_core.models.backbones import FEATURE_DIMS, build_backbone, feature_dim
from medssl_core.models.cpu_conv import SMALL_MAP, FastCPUConv2d, use_fast_cpu_convolutions
from medssl_core.models.heads import build_head, mlp
from medssl_core.models.imagenet import (
    IMAGENET_FILES,
    IMAGENET_V2_FILES,
    INITS,
    imagenet_missing_message,
    imagenet_weights_path,
)
from medssl_core.models.sg_encoders import ENCODERS, FEATURE_DIM, CustomCNN, PixelDecoder, SegGuidedCNN, n_parameters
from medssl_core.models.vit import VIT_SMALL, VIT_SMALL_IMAGENET, ViTSmall

__all__ = [
    "ENCODERS", "FEATURE_DIM", "FEATURE_DIMS", "IMAGENET_FILES", "IMAGENET_V2_FILES", "INITS", "SMALL_MAP",
    "VIT_SMALL", "VIT_SMALL_IMAGENET", "CustomCNN", "FastCPUConv2d", "PixelDecoder", "SegGuidedCNN", "ViTSmall",
    "build_backbone", "build_head", "feature_dim", "imagenet_missing_message", "imagenet_weights_path", "mlp",
    "n_parameters", "use_fast_cpu_convolutions",
]
