"""The rule-based lung mask on a real chest radiograph (pydicom-data's RG1_UNCR.dcm, a PA computed radiograph) and
on phantoms, and the Grad-CAM scores built on it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from medssl_core.common.errors import DataError
from medssl_core.data import lung_mask as lung_mask_module
from medssl_core.data.lung_mask import lung_mask, lung_masks, patch_mask
from medssl_core.evaluate.gradcam import grad_cams, lung_scores
from medssl_core.models.backbones import build_backbone
from medssl_core.models.heads import build_head


def _radiograph() -> Path | None:
    spec = importlib.util.find_spec("pydicom")
    if spec is None:
        return None
    path = Path(spec.submodule_search_locations[0]).parent / "data_store" / "data" / "RG1_UNCR.dcm"
    return path if path.is_file() else None


def _phantom(side: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """A bright body with two dark 'lungs' (and their true mask), a little noise."""
    img = np.full((side, side), 190, np.uint8)
    truth = np.zeros((side, side), np.uint8)
    for cx in (side // 3, 2 * side // 3):
        cv2.ellipse(truth, (cx, side // 2), (side // 8, side // 3), 0, 0, 360, 1, -1)
    img[truth == 1] = 50
    noisy = img + np.random.default_rng(0).normal(0, 8, img.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8), truth.astype(bool)


@pytest.mark.skipif(_radiograph() is None, reason="pydicom-data (dev extra) ships the real chest radiograph")
def test_lung_mask_finds_two_lungs_on_a_real_radiograph():
    import pydicom

    ds = pydicom.dcmread(_radiograph())
    assert ds.PhotometricInterpretation == "MONOCHROME1"  # bright lungs as stored: invert first
    a = ds.pixel_array.astype(np.float64)
    a = a.max() - a
    img = cv2.resize((255 * (a - a.min()) / (a.max() - a.min())).astype(np.uint8), (256, 256),
                     interpolation=cv2.INTER_AREA)
    mask = lung_mask(img)
    assert 0.15 < mask.mean() < 0.40  # MedSGSSL printed 21.9 % for its sample
    _, _, stats, centres = cv2.connectedComponentsWithStats(mask.astype(np.uint8))
    big = np.argsort(stats[1:, cv2.CC_STAT_AREA])[::-1][:2] + 1
    assert stats[big, cv2.CC_STAT_AREA].sum() > 0.9 * mask.sum()  # two lungs hold nearly all of it
    assert sorted(centres[big, 0] < 128) == [False, True]  # one on each side of the midline
    assert not mask[:12].any() and not mask[:, :15].any() and not mask[:, -15:].any()  # not the background
    assert not mask[:, 120:136].any()  # nor the mediastinum between the lungs


def test_lung_mask_on_a_phantom_and_its_fallback():
    img, truth = _phantom()
    mask = lung_mask(img)
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.8
    assert lung_mask(np.full((64, 64), 128, np.uint8)).all()  # no component at all: the whole image
    with pytest.raises(DataError, match="uint8 grey"):
        lung_mask(img.astype(np.float32))


@pytest.mark.skipif(importlib.util.find_spec("torchxrayvision") is None,
                    reason="torchxrayvision (dev extra) ships the real lung shapes of semantic_masks_v7labs_lungs.zip")
def test_dice_on_phantoms_rendered_from_real_lung_shapes():
    """benchmarks/lung_mask_dice.py on the first 40 non-empty shapes (all 435: median 0.974, 13 below 0.5)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from lung_mask_dice import dice, lung_shapes, phantom

    scores = np.asarray([dice(lung_mask(phantom(s, i)), s) for i, (_, s) in enumerate(lung_shapes(224, 40))])
    assert len(scores) == 40 and np.median(scores) > 0.95 and (scores > 0.8).mean() >= 0.85


def test_patch_masks_and_the_verified_cache(tmp_path, monkeypatch):
    img, truth = _phantom(224)
    patches = patch_mask(truth)
    assert patches.shape == (14, 14) and patches.sum() == (truth.reshape(14, 16, 14, 16).mean(axis=(1, 3)) > 0.3).sum()
    with pytest.raises(DataError, match="16x16 patches"):
        patch_mask(truth[:100])
    stack = np.stack([img, np.flipud(img), np.full_like(img, 128)])
    first = lung_masks(stack, cache=tmp_path)
    assert np.array_equal(first, np.stack([lung_mask(x) for x in stack]))
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    class Never:
        def __init__(self, *_):
            raise AssertionError("computed although cached")

    with monkeypatch.context() as m:
        m.setattr("medssl_core.data.mask_cache.ThreadPoolExecutor", Never)
        assert np.array_equal(lung_masks(stack, cache=tmp_path), first)  # read back, not computed
    files[0].write_bytes(files[0].read_bytes()[:-40])  # truncated on disk: refused, computed again
    assert np.array_equal(lung_masks(stack, cache=tmp_path), first)
    with np.load(files[0]) as again:  # and rewritten whole
        assert np.array_equal(np.unpackbits(again["packed"], count=first.size).reshape(first.shape), first)
    assert np.array_equal(lung_masks(stack[..., None], cache=tmp_path), first)  # (N, H, W, 1) as stored
    assert len(list(tmp_path.glob("*.npz"))) == 1 and not np.array_equal(lung_masks(stack[:2], cache=tmp_path),
                                                                           first)


def test_an_edited_segmenter_misses_the_cache(tmp_path, monkeypatch):
    """The cache is keyed by the segmenter's code: masks cached before an edit are never served after it."""
    img, _ = _phantom(64)
    stack = np.stack([img, np.fliplr(img)])
    assert lung_masks(stack, cache=tmp_path).any()

    def zeros(image):
        return np.zeros(image.shape, dtype=bool)

    monkeypatch.setattr(lung_mask_module, "lung_mask", zeros)
    assert not lung_masks(stack, cache=tmp_path).any()
    assert len(list(tmp_path.glob("*.npz"))) == 2


def test_lung_scores_measure_focus_and_energy_inside_the_mask():
    img, _ = _phantom(64)
    mask = lung_mask(img)
    inside, everywhere = mask.astype(np.float32), np.full((64, 64), 0.5, np.float32)
    scores = lung_scores(np.stack([inside, everywhere]), np.stack([img, img]))
    assert scores["lung_energy"][0] == pytest.approx(1.0) and scores["lung_energy"][1] == pytest.approx(mask.mean())
    assert scores["focus"][0] == pytest.approx(mask.mean()) and scores["focus"][1] == 0.0  # share above 0.7


def test_grad_cams_of_a_frozen_model_are_maps_in_unit_range():
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", 3, small_stem=True).eval().requires_grad_(False)  # as a frozen probe's
    head = build_head({"type": "linear"}, 512, 5)
    x = torch.randn(3, 3, 32, 32)
    cams = grad_cams(backbone, head, "resnet18", x, np.array([0, 4, 2]))
    assert cams.shape == (3, 32, 32) and cams.min() >= 0 and cams.max() <= 1 and cams.max() > 0
    assert not backbone.layer4[0].conv1.weight.requires_grad  # the fitted model is left as it was
    other = grad_cams(backbone, head, "resnet18", x, np.array([1, 1, 1]))
    assert not np.allclose(cams, other)  # the map depends on the class asked for


def test_masks_show_draws_real_radiographs(tmp_path, medmnist_dir):
    from medssl_core.cli import main

    assert main(["masks", "show", "pneumoniamnist", "--size", "28", "--n", "4", "--data-dir", str(medmnist_dir),
                 "--out", str(tmp_path)]) == 0
    png = tmp_path / "masks_pneumoniamnist_28.png"
    assert png.is_file() and cv2.imread(str(png)).shape[1] > 400


def test_lung_masks_travel_with_the_images_to_the_method(tmp_path, medmnist_dir, monkeypatch):
    """Data.masks 'lung_rule': each pretraining batch carries its images' lung masks, and every view the
    masks that went through the view's own geometry."""
    from medssl_core.methods.simclr import SimCLR
    from medssl_core.plan.catalog import get_study
    from medssl_core.plan.grid import expand
    from tests.conftest import cpu_store, execute_cleanly

    seen = []
    original = SimCLR.training_step

    def spy(self, views, batch):
        seen.append((batch, views))
        return original(self, views, batch)

    monkeypatch.setattr(SimCLR, "training_step", spy)
    plan = expand(get_study("demo"), "quick", data_dir=medmnist_dir, seeds=[0], methods=["simclr"], protocols=["knn"],
                  overrides={"pretrain": {"masks": "lung_rule", "pretrain_subset": 128, "train": {"epochs": 1}}})
    assert plan.pretrain[0].hparams["masks"] == "lung_rule" and "masks" not in plan.evaluate[0].hparams
    assert "lung_masks" in plan.pretrain[0].code
    store, ctx = cpu_store(tmp_path, medmnist_dir)
    execute_cleanly(plan, store, ctx)
    batch, views = seen[0]
    assert batch.masks.dtype == torch.uint8 and batch.masks.shape[1] == 1
    expected = lung_masks(batch.images[:, 0].cpu().numpy())
    assert np.array_equal(batch.masks[:, 0].bool().cpu().numpy(), expected)
    for view in views:
        assert view.mask is not None and view.mask.shape[-2:] == view.image.shape[-2:]
    assert not torch.equal(views[0].mask, views[1].mask)  # each view's own crop


def test_lung_masks_of_the_real_pneumoniamnist_test_radiographs(medmnist_dir, tmp_path):
    """All 624 test images (28 px): a mask on both sides of nearly every chest, none empty, no fallback."""
    with np.load(medmnist_dir / "pneumoniamnist.npz") as f:
        images = f["test_images"]
    masks = lung_masks(images, cache=tmp_path)
    coverage = masks.mean(axis=(1, 2))
    assert 0.25 < np.median(coverage) < 0.5 and coverage.min() > 0 and (coverage == 1).sum() == 0
    half = masks.shape[2] // 2
    both = (masks[:, :, :half].mean(axis=(1, 2)) > 0.05) & (masks[:, :, half:].mean(axis=(1, 2)) > 0.05)
    assert both.mean() > 0.95
