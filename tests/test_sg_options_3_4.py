"""MedSGSSL options 3 and 4 and the direct baselines' pieces: the 'pathology' mask against a literal transcription
of its steps at the notebook's 224 px, the lung bounding-box crop, option 4's encoder and decoder with the
notebook's printed parameter counts, option 3's batch-mean weight, and the averaged grey first conv."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from medssl_core.augment.views import AugmentConfig, BatchAugment
from medssl_core.common.errors import ConfigError, DataError
from medssl_core.config import SSLMethod
from medssl_core.data.batch import Batch
from medssl_core.data.lung_mask import crop_to_lungs
from medssl_core.data.pathology_mask import pathology_mask, pathology_masks
from medssl_core.methods import build_method
from medssl_core.models.backbones import build_backbone, feature_dim
from medssl_core.models.sg_encoders import PixelDecoder, n_parameters


def _literal_pathology_mask(image: np.ndarray) -> np.ndarray:
    """adaptive_pathology_segmentation(image / 255, 51, 10, 0.1) step by step, its component loop as written."""
    adaptive = cv2.adaptiveThreshold(image, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY, 51, 10)
    gx, gy = cv2.Sobel(image, cv2.CV_64F, 1, 0, ksize=3), cv2.Sobel(image, cv2.CV_64F, 0, 1, ksize=3)
    magnitude = np.sqrt(gx ** 2 + gy ** 2)
    edges = ((magnitude / (magnitude.max() + 1e-8)) > 0.1).astype(np.uint8) * 255
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    combined = cv2.morphologyEx(cv2.bitwise_and(adaptive, edges), cv2.MORPH_CLOSE, kernel)
    combined = cv2.morphologyEx(combined, cv2.MORPH_OPEN, kernel)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(combined, connectivity=8)
    out = np.zeros_like(combined)
    for i in range(1, n):
        if stats[i, cv2.CC_STAT_AREA] >= 100:
            out[labels == i] = 255
    return out.astype(np.float32) / 255.0 > 0.5


def test_pathology_mask_is_the_notebooks_on_real_radiographs(medmnist_dir, tmp_path):
    with np.load(medmnist_dir / "pneumoniamnist.npz") as d:
        images = np.stack([cv2.resize(x, (224, 224), interpolation=cv2.INTER_CUBIC) for x in d["test_images"][:6]])
    # small specks too: the component filter must drop them
    images[0, 10:14, 10:14] = 255
    for image in images:
        got = pathology_mask(image)
        assert got.dtype == bool and np.array_equal(got, _literal_pathology_mask(image))
    assert 0.05 < np.mean([pathology_mask(x).mean() for x in images]) < 0.95
    assert not pathology_mask(np.full((224, 224), 128, np.uint8)).any()  # no edge, no pathology
    spots = np.full((224, 224), 60, np.float32)
    spots[50, 50], spots[150:154, 150:154] = 200, 200  # blurred: regions of ~65 and 116 pixels
    spots = np.clip(cv2.GaussianBlur(spots, (0, 0), 1.8), 0, 255).astype(np.uint8)
    kept = pathology_mask(spots)
    assert np.array_equal(kept, _literal_pathology_mask(spots))
    assert not kept[40:60, 40:60].any() and 100 <= kept[140:164, 140:164].sum() == kept.sum() < 150
    assert np.array_equal(pathology_masks(images, cache=tmp_path), np.stack([pathology_mask(x) for x in images]))
    small = pathology_mask(cv2.resize(images[1], (64, 64)))  # kernels scaled: still a mask, not wiped out
    assert small.shape == (64, 64) and 0.02 < small.mean() < 0.98
    with pytest.raises(DataError, match="uint8"):
        pathology_mask(images[0].astype(np.float32))


def test_crop_to_lungs_cuts_the_masks_box_or_keeps_the_image():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 40, 40, 1), dtype=np.uint8)
    masks = np.zeros((3, 40, 40), bool)
    masks[0, 5:35, 8:30] = True  # a 30 x 22 box: cut (rows 5..33, columns 8..28: the last ones excluded)
    masks[1, 10:20, 10:20] = True  # under half the side: kept whole
    out = crop_to_lungs(images, masks)  # image 2: empty mask, kept whole
    expected = cv2.resize(images[0, 5:34, 8:29, 0], (40, 40), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(out[0, ..., 0], expected)
    assert np.array_equal(out[1:], images[1:]) and out.shape == images.shape
    with pytest.raises(DataError, match="masks"):
        crop_to_lungs(images, masks[:, :20])


def test_option4_encoder_and_decoder_have_the_notebooks_parameter_counts():
    # option 4's printed counts: encoder 2,551,808, projector 99,200, decoder 3,921,619
    encoder = build_backbone("mobilenet_v2", 3, out_dim=256)
    assert n_parameters(encoder) == 2_551_808 and feature_dim("mobilenet_v2", 256) == 256
    assert encoder.eval()(torch.zeros(2, 3, 64, 64)).shape == (2, 256)
    assert n_parameters(PixelDecoder(224, 3)) == 3_921_619
    spec = SSLMethod(name="sg_contrastive", projector=[256, 128])
    m = build_method(spec, lambda: build_backbone("mobilenet_v2", 3, out_dim=256), 256, 64, image_channels=3)
    assert n_parameters(m.projector) == 99_200 and m.decoder(torch.zeros(2, 256)).shape == (2, 3, 64, 64)
    with pytest.raises(ConfigError, match="out_dim"):
        build_backbone("vit_small", 3, out_dim=256, image_size=32)


def test_option3_scales_the_plain_nt_xent_by_the_batchs_mean_weight():
    torch.manual_seed(0)
    spec = SSLMethod(name="sg_contrastive", projector=[256, 128],
                     options={"mask_weight": 0.5, "weight_per": "batch", "recon_weight": 0.0})
    m = build_method(spec, lambda: build_backbone("sg_cnn", 1), 256, 32).eval()
    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(6, 1, 32, 32, generator=g) < torch.linspace(0.1, 0.9, 6).view(6, 1, 1, 1)).to(torch.uint8)
    batch = Batch(torch.randint(0, 256, (6, 1, 32, 32), generator=g, dtype=torch.uint8), masks=masks)
    aug = BatchAugment(AugmentConfig(size=32, hflip=0.5, mean=(0.0,), std=(1.0,)))
    views = aug.views(batch, torch.Generator().manual_seed(0))
    out = m.training_step(views, batch)
    z0, z1 = (m.embed(v.image)[1].double() for v in views)
    # float64 reference: -log softmax of each positive among the 2N-1 others, averaged, times mean(1 + 0.5 P)
    z = torch.nn.functional.normalize(torch.cat([z0, z1]), dim=1)
    sim = (z @ z.T / 0.1).fill_diagonal_(float("-inf"))
    n = len(z0)
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    reference = -torch.log_softmax(sim, dim=1)[torch.arange(2 * n), positives].mean()
    weight = (1 + 0.5 * masks.double().mean(dim=(1, 2, 3))).mean()
    torch.testing.assert_close(out.loss.double(), reference * weight, rtol=1e-5, atol=1e-6)
    assert weight > 1.2  # far from 1: an unweighted loss would fail the comparison above


def test_grey_first_conv_from_rgb_weights_summed_or_averaged():
    torch.manual_seed(0)
    summed = build_backbone("mobilenet_v2", 1).features[0][0].weight
    torch.manual_seed(0)
    averaged = build_backbone("mobilenet_v2", 1, grey_weights="mean").features[0][0].weight
    torch.testing.assert_close(summed, 3 * averaged)
