"""medssl core: data, augmentation, models, losses, training, evaluation, results store."""

from medssl_core.common.torchvision_compat import ensure_torchvision_importable

ensure_torchvision_importable()

__version__ = "0.1.0"
