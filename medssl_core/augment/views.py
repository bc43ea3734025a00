"""Two-view augmentation of whole batches on the device, with per-sample random parameters; segmentation
masks follow the images through the geometric operations.

A pipeline is declared as data (:class:`AugmentConfig`, built from a run's typed settings). Random
parameters are drawn on the CPU from one seeded ``torch.Generator`` and moved to the images' device, so the
same seed gives the same views on any device. Images enter as uint8 (N, C, H, W) and leave as normalised
float32. Operations follow torchvision's definitions (compared in tests/test_augment.py); ColorJitter's
four operations are applied in one random order per batch rather than per image.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from medssl_core.common.errors import ConfigError
from medssl_core.data.batch import Batch, View

GREY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale


@dataclass(frozen=True)
class AugmentOps:
    """The random operations of a pipeline, defined once: ``config.AugmentOps`` is this, typed and strict."""

    crop_scale: tuple[float, float] | None = None  # RandomResizedCrop scale; None: no crop
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    crop_p: float = 1.0  # probability of cropping (MedSGSSL crops 80 % of the time); otherwise only resized
    hflip: float = 0.0
    vflip: float = 0.0
    rotate_degrees: float = 0.0
    rotate_p: float = 0.0
    jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # brightness, contrast, saturation, hue
    jitter_p: float = 0.0
    grayscale: float = 0.0
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel_frac: float = 0.1  # kernel side as a fraction of the output side (23 px at 224), made odd
    solarize_p: float = 0.0
    solarize_threshold: float = 0.5  # on the [0, 1] scale (128/255 ~ 0.5)
    noise_p: float = 0.0
    noise_std: float = 0.0
    # a resize without a crop: 'bilinear' (antialiased) or 'nearest' (PIL NEAREST, as the MedMNIST baselines
    # enlarge 28 px images to 224); crops are always resampled bilinearly
    resize_mode: Literal["bilinear", "nearest"] = "bilinear"


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and std after the operations (``config.Augment`` adds them to the operations)."""

    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)


@dataclass(frozen=True)
class AugmentConfig(AugmentOps, Normalization):
    """A whole pipeline: the operations, the output size and the normalisation."""

    size: int | None = None  # output side; None keeps the input size
    # the masks (passed with the images, or else the images' last channel, 0/1) end the pipeline as one more input
    # channel, 0/1 and not normalised (MedSGSSL option 6)
    mask_channel: bool = False

    @classmethod
    def from_dict(cls, d: dict) -> AugmentConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"Unknown augmentation options {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def to_dict(self) -> dict:
        return asdict(self)

    def without_randomness(self) -> AugmentConfig:
        """Only resizing and normalisation: what evaluation uses."""
        return AugmentConfig(size=self.size, mean=self.mean, std=self.std, mask_channel=self.mask_channel)


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)


def _bernoulli(n: int, p: float, g: torch.Generator) -> Tensor:
    return torch.rand(n, generator=g) < p


# -- geometry -----------------------------------------------------------------------------------------------
def sample_crop_boxes(n: int, height: int, width: int, scale, ratio, g: torch.Generator) -> Tensor:
    """torchvision RandomResizedCrop.get_params for n samples at once: (n, 4) = top, left, h, w (pixels)."""
    area = height * width
    attempts = 10
    target = area * _uniform(n * attempts, scale[0], scale[1], g).view(n, attempts)
    log_r = _uniform(n * attempts, math.log(ratio[0]), math.log(ratio[1]), g).view(n, attempts)
    ar = torch.exp(log_r)
    w = torch.round(torch.sqrt(target * ar))
    h = torch.round(torch.sqrt(target / ar))
    ok = (w > 0) & (h > 0) & (w <= width) & (h <= height)
    first = torch.where(ok.any(dim=1), ok.float().argmax(dim=1), torch.full((n,), -1))
    # fallback: centre crop at the clamped aspect ratio, as torchvision
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        fh, fw = height, round(height * max(ratio))
    else:
        fw, fh = width, height
    rows = torch.arange(n)
    sel = first.clamp(min=0)
    bh = torch.where(first >= 0, h[rows, sel], torch.full((n,), float(fh), dtype=torch.float64))
    bw = torch.where(first >= 0, w[rows, sel], torch.full((n,), float(fw), dtype=torch.float64))
    u = torch.rand(n, 2, generator=g, dtype=torch.float64)
    top = torch.where(first >= 0, torch.floor(u[:, 0] * (height - bh + 1)), (height - bh) / 2).round()
    left = torch.where(first >= 0, torch.floor(u[:, 1] * (width - bw + 1)), (width - bw) / 2).round()
    return torch.stack([top, left, bh, bw], dim=1)


def resized_crop(x: Tensor, boxes: Tensor, size: int) -> Tensor:
    """Crop each image to its box and resize to ``size`` in one grid_sample: bilinear without antialias,
    sampling positions clamped to the box as torchvision's crop-then-interpolate does."""
    n, _, height, width = x.shape
    b = boxes.to(x.device, torch.float32)
    t = (torch.arange(size, device=x.device, dtype=torch.float32) + 0.5) / size  # (size,)

    def axis(start, extent, full):
        src = start[:, None] + t[None, :] * extent[:, None] - 0.5  # pixel-centre coordinates
        src = torch.minimum(torch.maximum(src, start[:, None]), (start + extent - 1)[:, None])
        return (2 * src + 1) / full - 1  # normalised, align_corners=False

    gy, gx = axis(b[:, 0], b[:, 2], height), axis(b[:, 1], b[:, 3], width)
    grid = torch.stack([gx[:, None, :].expand(n, size, size), gy[:, :, None].expand(n, size, size)], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def rotate(x: Tensor, degrees: Tensor) -> Tensor:
    """Rotate each image counter-clockwise by its angle about the centre, zeros outside (torchvision)."""
    n = x.shape[0]
    a = torch.deg2rad(degrees.to(x.device, torch.float32))
    cos, sin = torch.cos(a), torch.sin(a)
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin, cos
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def flip(x: Tensor, mask: Tensor, dim: int) -> Tensor:
    return torch.where(mask.to(x.device).view(-1, 1, 1, 1), x.flip(dim), x)


def constant(values: tuple[float, ...], like: Tensor) -> Tensor:
    """``values`` as a tensor on ``like``'s device and dtype, made once per device: a tensor made from Python
    numbers on a GPU is a blocking copy, which would stall the host at every step (a compiled step folds it in)."""
    if torch.compiler.is_compiling():
        return torch.tensor(values, device=like.device, dtype=like.dtype)
    key = (values, like.device, like.dtype)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = torch.tensor(values, device=like.device, dtype=like.dtype)
    return _CONSTANTS[key]


_CONSTANTS: dict[tuple, Tensor] = {}


# -- colour -------------------------------------------------------------------------------------------------
def to_grey(x: Tensor) -> Tensor:
    if x.shape[1] == 1:
        return x
    w = constant(GREY_WEIGHTS, x).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def _per_sample(v: Tensor, x: Tensor) -> Tensor:
    return v.to(x.device, x.dtype).view(-1, 1, 1, 1)


def adjust_brightness(x: Tensor, f: Tensor) -> Tensor:
    return (x * _per_sample(f, x)).clamp(0, 1)


def adjust_contrast(x: Tensor, f: Tensor) -> Tensor:
    mean = to_grey(x).mean(dim=(1, 2, 3), keepdim=True)
    f = _per_sample(f, x)
    return (f * x + (1 - f) * mean).clamp(0, 1)


def adjust_saturation(x: Tensor, f: Tensor) -> Tensor:
    if x.shape[1] == 1:
        return x
    f = _per_sample(f, x)
    return (f * x + (1 - f) * to_grey(x)).clamp(0, 1)


def _rgb_to_hsv(x: Tensor) -> Tensor:
    r, g, b = x.unbind(1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    cr_div = torch.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / cr_div, (maxc - g) / cr_div, (maxc - b) / cr_div
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack([h, s, maxc], dim=1)


def _hsv_to_rgb(x: Tensor) -> Tensor:
    """Closed form: channel n of (R, G, B) = v - v s clamp(min(k, 4 - k), 0, 1) with k = (n + 6h) mod 6 and
    n = 5, 3, 1. Equal to torchvision's piecewise version and ~10x cheaper than its 6-way mask."""
    h, s, v = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    n = constant((5.0, 3.0, 1.0), x).view(1, 3, 1, 1)
    k = torch.remainder(n + 6.0 * h, 6.0)
    return v - v * s * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


def adjust_hue(x: Tensor, f: Tensor) -> Tensor:
    if x.shape[1] == 1:
        return x
    hsv = _rgb_to_hsv(x)
    h = torch.remainder(hsv[:, 0] + f.to(x.device, x.dtype).view(-1, 1, 1), 1.0)
    return _hsv_to_rgb(torch.stack([h, hsv[:, 1], hsv[:, 2]], dim=1))


def gaussian_blur(x: Tensor, kernel_size: int, sigma: Tensor) -> Tensor:
    """Separable Gaussian blur with a per-sample sigma and reflect padding (torchvision's gaussian_blur)."""
    n, c, height, width = x.shape
    half = (kernel_size - 1) * 0.5
    t = torch.linspace(-half, half, kernel_size, device=x.device, dtype=x.dtype)
    s = sigma.to(x.device, x.dtype).view(-1, 1)
    k = torch.exp(-0.5 * (t.view(1, -1) / s) ** 2)
    k = (k / k.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (n*c, k)
    pad = kernel_size // 2
    y = F.pad(x.reshape(1, n * c, height, width), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, k.view(n * c, 1, 1, kernel_size), groups=n * c)
    y = F.conv2d(y, k.view(n * c, 1, kernel_size, 1), groups=n * c)
    return y.view(n, c, height, width)


def solarize(x: Tensor, mask: Tensor, threshold: float) -> Tensor:
    return torch.where(mask.to(x.device).view(-1, 1, 1, 1) & (x >= threshold), 1.0 - x, x)


def normalize(x: Tensor, mean, std) -> Tensor:
    c = x.shape[1]
    m = constant(tuple(mean if len(mean) == c else mean[:1] * c), x).view(1, c, 1, 1)
    s = constant(tuple(std if len(std) == c else std[:1] * c), x).view(1, c, 1, 1)
    return (x - m) / s


# -- pipeline -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Draw:
    """One view's random parameters, drawn on the CPU from the run's generator in a fixed order (so the same seed
    gives the same views on any device), then moved to the images' device in one go (``to``): applying them reads
    nothing back from the device and draws nothing, so a captured training step can hold it."""

    boxes: Tensor | None = None  # (n, 4) crop boxes: top, left, height, width (pixels)
    hflip: Tensor | None = None  # (n,) bool
    vflip: Tensor | None = None
    angle: Tensor | None = None  # (n,) degrees, 0 where not rotated
    jitter: Tensor | None = None  # (n, k) factors of the configured colour operations, neutral where not applied
    jitter_order: tuple[int, ...] = ()  # the order the k operations run in (one per batch)
    jitter_rank: Tensor | None = None  # the same order as a tensor, for the branch-free form
    grey: Tensor | None = None  # (n,) bool
    blur_sigma: Tensor | None = None  # (n,)
    blur: Tensor | None = None  # (n,) bool
    solarize: Tensor | None = None  # (n,) bool
    noise_on: Tensor | None = None  # (n,) bool
    noise: Tensor | None = None  # (n, C, size, size)

    def to(self, device: torch.device) -> Draw:
        """Every tensor on ``device``; on CUDA from pinned memory without blocking (no host sync per step)."""
        if device.type != "cuda":
            return self  # drawn on the CPU: already there
        moved = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "jitter_order"}
        return replace(self, **{k: t.pin_memory().to(device, non_blocking=True) for k, t in moved.items()
                                if t is not None})


def _jitter_ops(cfg: AugmentConfig) -> list[tuple]:
    """The configured colour operations in torchvision's order: (function, factor range, neutral factor)."""
    b, c, s, h = cfg.jitter
    ops = [(adjust_brightness, (max(0, 1 - b), 1 + b), 1.0) if b > 0 else None,
           (adjust_contrast, (max(0, 1 - c), 1 + c), 1.0) if c > 0 else None,
           (adjust_saturation, (max(0, 1 - s), 1 + s), 1.0) if s > 0 else None,
           (adjust_hue, (-h, h), 0.0) if h > 0 else None]
    return [op for op in ops if op is not None]


@dataclass
class BatchAugment:
    cfg: AugmentConfig
    channels_last: bool = False

    def __call__(self, images: Tensor, g: torch.Generator) -> Tensor:
        """uint8 (N, C, H, W) -> augmented, normalised float32 (N, C, size, size)."""
        return self.augment(images, None, g)[0]

    def view(self, batch: Batch, g: torch.Generator) -> View:
        """One view of a batch: its masks (if any) follow the image through every geometric operation."""
        return View(*self.augment(batch.images, batch.masks, g))

    def views(self, batch: Batch, g: torch.Generator, n: int = 2) -> list[View]:
        return [self.view(batch, g) for _ in range(n)]

    def augment(self, images: Tensor, masks: Tensor | None, g: torch.Generator) -> tuple[Tensor, Tensor | None]:
        """Draw one view's parameters, then apply them (``draw``, ``apply``)."""
        return self.apply(images, masks, self.draw(images, masks, g).to(images.device))

    def draw(self, images: Tensor, masks: Tensor | None, g: torch.Generator) -> Draw:
        """The random parameters of one view of ``images`` (with ``masks`` as ``apply`` takes them: only their
        shapes are read), in the order the operations run."""
        cfg = self.cfg
        n, c, height, width = images.shape
        c -= cfg.mask_channel and masks is None  # the mask travels as the images' last channel
        size = cfg.size or height
        d: dict = {}
        if cfg.crop_scale is not None:
            boxes = sample_crop_boxes(n, height, width, cfg.crop_scale, cfg.crop_ratio, g)
            if cfg.crop_p < 1:
                keep = ~_bernoulli(n, cfg.crop_p, g)
                boxes[keep] = torch.tensor([0.0, 0.0, height, width], dtype=boxes.dtype)
            d["boxes"] = boxes
        if cfg.hflip > 0:
            d["hflip"] = _bernoulli(n, cfg.hflip, g)
        if cfg.vflip > 0:
            d["vflip"] = _bernoulli(n, cfg.vflip, g)
        if cfg.rotate_p > 0 and cfg.rotate_degrees > 0:
            on = _bernoulli(n, cfg.rotate_p, g)
            d["angle"] = _uniform(n, -cfg.rotate_degrees, cfg.rotate_degrees, g) * on
        if cfg.jitter_p > 0 and any(cfg.jitter):
            on = _bernoulli(n, cfg.jitter_p, g)
            factors = [torch.where(on, _uniform(n, *bounds, g), torch.full((n,), neutral, dtype=torch.float64))
                       for _, bounds, neutral in _jitter_ops(cfg)]
            order = torch.randperm(len(factors), generator=g)
            d.update(jitter=torch.stack(factors, dim=1), jitter_order=tuple(order.tolist()), jitter_rank=order)
        if cfg.grayscale > 0 and c == 3:
            d["grey"] = _bernoulli(n, cfg.grayscale, g)
        if cfg.blur_p > 0:
            d["blur_sigma"] = _uniform(n, *cfg.blur_sigma, g)
            d["blur"] = _bernoulli(n, cfg.blur_p, g)
        if cfg.solarize_p > 0:
            d["solarize"] = _bernoulli(n, cfg.solarize_p, g)
        if cfg.noise_p > 0 and cfg.noise_std > 0:
            d["noise_on"] = _bernoulli(n, cfg.noise_p, g)
            d["noise"] = torch.randn((n, c, size, size), generator=g) * cfg.noise_std
        return Draw(**d)

    def apply(self, images: Tensor, masks: Tensor | None, draw: Draw, *,
              branch_free: bool = False) -> tuple[Tensor, Tensor | None]:
        """One view from ``draw`` (on the images' device). Geometric operations (crop, flips, rotation) act on images
        and masks alike; the photometric ones that follow act on images only. Masks are resampled as the images
        are, then thresholded at 0.5. ``branch_free``: the colour operations' random order is followed by selecting
        among every operation's result at each position, so that one compiled graph serves every order."""
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"augment expects uint8 (N, C, H, W) images, got {images.dtype} {tuple(images.shape)}")
        cfg = self.cfg
        if cfg.mask_channel and masks is None:  # the mask travels as the images' last channel
            images, masks = images[:, :-1], images[:, -1:]
        x = images.float().div_(255)
        _, c, height, width = x.shape
        if masks is not None:  # one tensor through the geometry: the same sampling grid for both
            x = torch.cat([x, masks.to(x.device, x.dtype)], dim=1)
        size = cfg.size or height
        if draw.boxes is not None:
            x = resized_crop(x, draw.boxes, size)
        elif (size != height or size != width) and cfg.resize_mode == "nearest":
            x = F.interpolate(x, size=(size, size), mode="nearest")
        elif size != height or size != width:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        if draw.hflip is not None:
            x = flip(x, draw.hflip, -1)
        if draw.vflip is not None:
            x = flip(x, draw.vflip, -2)
        if draw.angle is not None:
            x = rotate(x, draw.angle)
        mask_out = None
        if masks is not None:
            x, mask_out = x[:, :c], (x[:, c:] > 0.5).to(torch.uint8)
        if draw.jitter is not None:
            x = self._jitter(x, draw, branch_free)
        if draw.grey is not None:
            x = torch.where(draw.grey.view(-1, 1, 1, 1), to_grey(x).expand_as(x), x)
        if draw.blur is not None:
            k = max(3, int(cfg.blur_kernel_frac * size) // 2 * 2 + 1)
            x = torch.where(draw.blur.view(-1, 1, 1, 1), gaussian_blur(x, k, draw.blur_sigma), x)
        if draw.solarize is not None:
            x = solarize(x, draw.solarize, cfg.solarize_threshold)
        if draw.noise is not None:  # clamped where noise was added only: elsewhere x may exceed 1 by rounding
            x = torch.where(draw.noise_on.view(-1, 1, 1, 1), (x + draw.noise.to(x.dtype)).clamp(0, 1), x)
        x = normalize(x, cfg.mean, cfg.std)
        if cfg.mask_channel:
            x = torch.cat([x, mask_out.to(x.dtype)], dim=1)
        return (x.contiguous(memory_format=torch.channels_last) if self.channels_last else x), mask_out

    def _jitter(self, x: Tensor, draw: Draw, branch_free: bool) -> Tensor:
        fns = [fn for fn, _, _ in _jitter_ops(self.cfg)]
        if not branch_free:
            for i in draw.jitter_order:
                x = fns[i](x, draw.jitter[:, i])
            return x
        for position in range(len(fns)):  # exact: each position keeps the one result its operation gave
            y = x
            for i, fn in enumerate(fns):
                y = torch.where(draw.jitter_rank[position] == i, fn(x, draw.jitter[:, i]), y)
            x = y
        return x

    def two_views(self, images: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        return self(images, g), self(images, g)
