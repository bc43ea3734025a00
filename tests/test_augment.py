from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from medssl_core.augment import views as A
from medssl_core.augment.views import AugmentConfig, BatchAugment
from medssl_core.data.batch import Batch

FULL = AugmentConfig(size=24, crop_scale=(0.08, 1.0), hflip=0.5, vflip=0.5, rotate_degrees=20, rotate_p=0.5,
                     jitter=(0.4, 0.4, 0.2, 0.1), jitter_p=0.8, grayscale=0.2, blur_p=0.5, solarize_p=0.2,
                     noise_p=0.5, noise_std=0.05, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))


def images(n=16, c=3, h=32, seed=0):
    return torch.randint(0, 256, (n, c, h, h), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_shapes_dtype_and_range():
    x = images()
    out = BatchAugment(FULL)(x, torch.Generator().manual_seed(0))
    assert out.shape == (16, 3, 24, 24) and out.dtype == torch.float32
    raw = out * torch.tensor(FULL.std).view(1, 3, 1, 1) + torch.tensor(FULL.mean).view(1, 3, 1, 1)
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5


def test_identity_when_every_probability_is_zero():
    x = images(c=1)
    cfg = AugmentConfig(mean=(0.0,), std=(1.0,))
    out = BatchAugment(cfg)(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x.float() / 255)


def test_same_seed_same_views_and_different_seed_different_views():
    x = images()
    a = BatchAugment(FULL).two_views(x, torch.Generator().manual_seed(7))
    b = BatchAugment(FULL).two_views(x, torch.Generator().manual_seed(7))
    c = BatchAugment(FULL).two_views(x, torch.Generator().manual_seed(8))
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])
    assert not torch.allclose(a[0], c[0])
    assert not torch.allclose(a[0], a[1])


def test_parameters_differ_between_samples_of_a_batch():
    x = images(n=1).repeat(32, 1, 1, 1)  # the same image 32 times
    out = BatchAugment(FULL)(x, torch.Generator().manual_seed(0))
    distinct = {tuple(o.flatten()[:50].round(decimals=4).tolist()) for o in out}
    assert len(distinct) > 16
    boxes = A.sample_crop_boxes(64, 32, 32, (0.08, 1.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(0))
    assert len({tuple(b.tolist()) for b in boxes}) > 32
    assert (boxes[:, 2] <= 32).all() and (boxes[:, 0] + boxes[:, 2] <= 32).all()


def test_no_horizontal_flip_when_disabled():
    x = images()
    cfg = AugmentConfig(vflip=1.0, mean=(0.0,), std=(1.0,))
    out = BatchAugment(cfg)(x, torch.Generator())
    torch.testing.assert_close(out, x.float().div(255).flip(-2))


# -- each operation against torchvision on a single image ----------------------------------------------------
def img(seed=1, c=3, h=32):
    return torch.rand(1, c, h, h, generator=torch.Generator().manual_seed(seed))


def test_resized_crop_matches_torchvision():
    x = img()
    box = torch.tensor([[3.0, 5.0, 20.0, 14.0]])
    ours = A.resized_crop(x, box, 16)
    theirs = TF.resized_crop(x, 3, 5, 20, 14, [16, 16], antialias=False)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_rotate_matches_torchvision():
    x = img()
    ours = A.rotate(x, torch.tensor([17.0]))
    theirs = TF.rotate(x, 17.0, interpolation=TF.InterpolationMode.BILINEAR)
    inner = (slice(None), slice(None), slice(6, 26), slice(6, 26))  # borders differ only in fill handling
    torch.testing.assert_close(ours[inner], theirs[inner], atol=2e-2, rtol=0)


@pytest.mark.parametrize("name,factor", [("brightness", 1.3), ("contrast", 0.6), ("saturation", 1.7),
                                         ("hue", 0.08), ("hue", -0.2)])
def test_colour_ops_match_torchvision(name, factor):
    x = img()
    ours = getattr(A, f"adjust_{name}")(x, torch.tensor([factor]))
    theirs = getattr(TF, f"adjust_{name}")(x, factor)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_grayscale_matches_torchvision():
    x = img()
    torch.testing.assert_close(A.to_grey(x), TF.rgb_to_grayscale(x), atol=1e-6, rtol=0)


def test_gaussian_blur_matches_torchvision():
    x = img()
    ours = A.gaussian_blur(x, 7, torch.tensor([1.3]))
    theirs = TF.gaussian_blur(x, [7, 7], [1.3, 1.3])
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_solarize_matches_torchvision():
    x = img()
    torch.testing.assert_close(A.solarize(x, torch.tensor([True]), 0.5), TF.solarize(x, 0.5))


def test_colour_ops_are_noops_on_grey_images():
    x = img(c=1)
    assert torch.equal(A.adjust_saturation(x, torch.tensor([0.2])), x)
    assert torch.equal(A.adjust_hue(x, torch.tensor([0.3])), x)


def test_bad_input_and_unknown_option_refused():
    with pytest.raises(ValueError, match="uint8"):
        BatchAugment(FULL)(torch.rand(2, 3, 8, 8), torch.Generator())
    with pytest.raises(Exception, match="Unknown augmentation options"):
        AugmentConfig.from_dict({"crop_scael": [0.1, 1.0]})


def test_crop_probability_zero_means_resize_only():
    x = images(c=1)
    cfg = AugmentConfig(crop_scale=(0.08, 0.1), crop_p=0.0, mean=(0.0,), std=(1.0,))
    torch.testing.assert_close(BatchAugment(cfg)(x, torch.Generator()), x.float() / 255)


GEOMETRIC = {"crop": {"crop_scale": (0.2, 1.0)}, "resize": {"size": 20}, "crop_resize": {"crop_scale": (0.1, 0.5),
             "size": 40}, "hflip": {"hflip": 1.0}, "vflip": {"vflip": 1.0},
             "rotate": {"rotate_degrees": 40.0, "rotate_p": 1.0}}


@pytest.mark.parametrize("op", sorted(GEOMETRIC))
def test_masks_follow_images_through_every_geometric_op(op):
    g = torch.Generator().manual_seed(0)
    blobs = (torch.rand(8, 1, 8, 8, generator=g) > 0.5).float()
    binary = F.interpolate(blobs, size=32, mode="nearest").repeat(1, 3, 1, 1)  # blocky 0/255 image
    images = (binary * 255).to(torch.uint8)
    masks = (images[:, :1] > 127).to(torch.uint8)  # the mask is the image's own bright pixels
    aug = BatchAugment(AugmentConfig(**GEOMETRIC[op], mean=(0.0,), std=(1.0,)))
    view = aug.view(Batch(images, masks=masks), torch.Generator().manual_seed(1))
    assert view.mask.dtype == torch.uint8 and view.mask.shape[2:] == view.image.shape[2:]
    assert torch.equal(view.mask[:, 0], (view.image[:, 0] > 0.5).to(torch.uint8))
    unmoved = aug.view(Batch(images, masks=masks), torch.Generator().manual_seed(1))
    assert torch.equal(unmoved.mask, view.mask)  # deterministic for a seed
    if op in ("hflip", "vflip", "rotate", "crop"):
        assert not torch.equal(view.mask, F.interpolate(masks.float(), size=view.mask.shape[2:]).to(torch.uint8))


def test_photometric_ops_leave_masks_alone_and_images_match_the_maskless_path():
    images = torch.randint(0, 256, (6, 3, 24, 24), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    masks = (images[:, :1] > 100).to(torch.uint8)
    geometric = {"crop_scale": (0.3, 1.0), "hflip": 0.5, "rotate_degrees": 20.0, "rotate_p": 0.5}
    photometric = {"jitter": (0.4, 0.4, 0.2, 0.1), "jitter_p": 1.0, "grayscale": 0.5, "blur_p": 1.0,
                   "solarize_p": 0.5, "noise_p": 1.0, "noise_std": 0.1}
    plain = BatchAugment(AugmentConfig(**geometric)).view(Batch(images, masks=masks), torch.Generator().manual_seed(3))
    full_aug = BatchAugment(AugmentConfig(**geometric, **photometric))
    full = full_aug.view(Batch(images, masks=masks), torch.Generator().manual_seed(3))
    assert torch.equal(plain.mask, full.mask)
    torch.testing.assert_close(full.image, full_aug(images, torch.Generator().manual_seed(3)), rtol=0, atol=0)


def test_nearest_resize_enlarges_28_px_as_pil_nearest():
    """The MedMNIST baselines' Resize(224, NEAREST): every pixel becomes an 8 x 8 block, nothing blended."""
    x = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    out = BatchAugment(AugmentConfig(size=224, mean=(0.0,), std=(1.0,), resize_mode="nearest"))(x, torch.Generator())
    blocks = x.float().div(255).repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)
    torch.testing.assert_close(out, blocks)
    smooth = BatchAugment(AugmentConfig(size=224, mean=(0.0,), std=(1.0,)))(x, torch.Generator())
    assert not torch.allclose(smooth, blocks)
