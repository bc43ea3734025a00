"""The custom encoders and pixel decoder of MedSGSSL's options 1-5 and its baseline (docs/studies/medsgssl.md,
'Custom CNNs (baseline, options 1-5)'; the notebooks' README calls them MobileNetV2, the code builds these):
1-channel CNNs giving a 256-d feature."""

from __future__ import annotations

from torch import Tensor, nn

FEATURE_DIM = 256


def _conv(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def _stage(c_in: int, c_out: int, repeats: int, pool: bool = True) -> nn.Sequential:
    """A conv into c_out, then ``repeats`` more convs ("residual blocks" of two convs without a skip connection)."""
    layers = _conv(c_in, c_out)
    for _ in range(repeats):
        layers += _conv(c_out, c_out)
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def _fc() -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.ReLU(inplace=True), nn.Dropout(0.3), nn.Linear(512, FEATURE_DIM))


class CustomCNN(nn.Module):
    """Options 1/2/3 and the baseline: five stages of 3x3 conv-BN-ReLU (3, 3, 5, 5, 3 convs; 64, 128, 256, 512, 512
    channels; max-pool after the first four), global average pool, Linear 512-512, ReLU, Dropout 0.3, Linear 512-256."""

    def __init__(self, in_channels: int = 1):
        super().__init__()
        self.features = nn.Sequential(_stage(in_channels, 64, 2), _stage(64, 128, 2), _stage(128, 256, 4),
                                      _stage(256, 512, 4), _stage(512, 512, 2, pool=False),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = _fc()

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))


def _spatial_attention(c: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, 1, 1), nn.Sigmoid())


class SegGuidedCNN(nn.Module):
    """Option 5's SegmentationGuidedEncoder: the custom CNN's first three stages (256 x S/8), a spatial attention
    (1x1 convs 256-32-1, sigmoid) scaling them, a 'segmentation head' (3x3 256-128-64 with BN, 1x1 to 1, sigmoid)
    whose map s re-weights them as features x (1 + s), stage 4 with its own attention (512-64-1), stage 5, pool, FC.
    No lung mask enters: s is learnt only through the loss that asks two views' maps to agree."""

    def __init__(self, in_channels: int = 1):
        super().__init__()
        self.early = nn.Sequential(_stage(in_channels, 64, 2), _stage(64, 128, 2), _stage(128, 256, 4))
        self.attention3 = _spatial_attention(256, 32)
        self.seg_head = nn.Sequential(*_conv(256, 128)[:2], nn.ReLU(inplace=True), nn.Conv2d(128, 64, 3, padding=1),
                                      nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.Conv2d(64, 1, 1), nn.Sigmoid())
        self.stage4 = _stage(256, 512, 4)
        self.attention4 = _spatial_attention(512, 64)
        self.late = nn.Sequential(_stage(512, 512, 2, pool=False), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = _fc()

    def forward_with_map(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(256-d features, the segmentation head's map (N, 1, S/8, S/8))."""
        f = self.early(x)
        f = f * self.attention3(f)
        s = self.seg_head(f)
        f = self.stage4(f * (1 + s))
        f = f * self.attention4(f)
        return self.fc(self.late(f)), s

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_map(x)[0]


class PixelDecoder(nn.Module):
    """256-d feature -> image: Linear to 256 x (S/32)^2 + ReLU, four stride-2 transposed convs (k4, p1; 256-128-64-
    32-16, each BN + ReLU), a last one to ``channels`` and a sigmoid (S = 224: 7 -> 224)."""

    def __init__(self, image_size: int, channels: int = 1, dim: int = FEATURE_DIM):
        super().__init__()
        if image_size % 32:
            raise ValueError(f"the pixel decoder upsamples 32x from (S/32)^2: image_size {image_size} must be a "
                             "multiple of 32 (224 in the study)")
        self.side = image_size // 32
        self.fc = nn.Sequential(nn.Linear(dim, 256 * self.side ** 2), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        for c_in, c_out in ((256, 128), (128, 64), (64, 32), (32, 16)):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        self.up = nn.Sequential(*layers, nn.ConvTranspose2d(16, channels, 4, 2, 1), nn.Sigmoid())

    def forward(self, z: Tensor) -> Tensor:
        return self.up(self.fc(z).view(-1, 256, self.side, self.side))


ENCODERS = {"sg_cnn": CustomCNN, "sg_guided_cnn": SegGuidedCNN}


def n_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

