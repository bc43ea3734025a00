"""MedSGSSL's methods and encoders: the networks the notebooks build, and each option's bugs as switches that
change exactly what the code's bug changes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medssl_core import losses
from medssl_core.augment.views import AugmentConfig, BatchAugment
from medssl_core.common.errors import ConfigError
from medssl_core.config import SSLMethod, spec_form
from medssl_core.data.batch import Batch
from medssl_core.methods import build_method
from medssl_core.models.backbones import build_backbone
from medssl_core.models.heads import mlp
from medssl_core.models.sg_encoders import CustomCNN, PixelDecoder, SegGuidedCNN
from medssl_core.train.pretrain import PretrainConfig, pretrain

CPU = torch.device("cpu")


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_encoders_have_the_notebooks_parameter_counts():
    # option 1's printed counts: encoder 21,203,712; encoder + projector + decoder 25,224,017
    assert n_params(CustomCNN()) == 21_203_712
    assert n_params(CustomCNN()) + n_params(mlp([256, 256, 128])) + n_params(PixelDecoder(224)) == 25_224_017
    assert PixelDecoder(224)(torch.zeros(2, 256)).shape == (2, 1, 224, 224)
    features, seg = SegGuidedCNN().eval().forward_with_map(torch.zeros(2, 1, 64, 64))
    assert features.shape == (2, 256) and seg.shape == (2, 1, 8, 8)
    with pytest.raises(ConfigError, match="no ImageNet"):
        build_backbone("sg_cnn", 1, init="imagenet")


def lung_batch(n=8, side=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, side, side), generator=g, dtype=torch.uint8)
    masks = torch.zeros(n, 1, side, side, dtype=torch.uint8)
    masks[:, :, 4:side - 4, 2:side // 2 - 1] = 1  # one "lung" per image side
    masks[:, :, 4:side - 4, side // 2 + 1:side - 2] = 1
    return Batch(images, masks=masks)


def vit_method(seed=0, **options):
    torch.manual_seed(seed)
    spec = SSLMethod(name="anatomy_vit", projector=[384, 128], options={"freeze_epochs": 0, **options})
    return build_method(spec, lambda: build_backbone("vit_small", 1, image_size=32), 384, 32)


AUG = BatchAugment(AugmentConfig(size=32, hflip=0.5, mean=(0.5,), std=(0.5,)))


def step(m, batch=None, epoch=6, epochs=10):
    batch = batch or lung_batch()
    m.on_fit_start(1, epochs)
    m.on_epoch_start(epoch)
    return m.training_step(AUG.views(batch, torch.Generator().manual_seed(0)), batch)


def grads_of(m, loss, params):
    m.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    return [p.grad for p in params]


def test_masked_output_tokens_give_the_encoder_no_reconstruction_gradient_and_masked_input_does():
    for mask_input, expect_gradient in ((False, False), (True, True)):
        m = vit_method(mask_input=mask_input, attention_weight=0.0)
        out = step(m)
        g = grads_of(m, out.terms["reconstruction"], list(m.backbone.parameters()))
        has = any(x is not None and x.abs().sum() > 0 for x in g)
        assert has == expect_gradient, mask_input


def _view_2_input_masks(m) -> list:
    """The input masks of the student's view-2 passes (the ones that keep attention maps) in one training step."""
    seen, run = [], m.backbone.run

    def spy(x, **kwargs):
        if kwargs.get("keep_attention"):
            seen.append(kwargs.get("input_mask"))
        return run(x, **kwargs)

    m.backbone.run = spy
    step(m)
    return seen


def test_view_2_is_masked_only_where_both_views_are():
    """The code encodes view 2 whole; the paper masks both views independently (view 2's lung patches zeroed in the
    student's input, its own draw)."""
    for both in (False, True):
        m = vit_method(mask_ratio=(0.5, 0.5), mask_both_views=both)
        (mask,) = _view_2_input_masks(m)
        if not both:
            assert mask is None
        else:  # half of each image's 4 patches (16 px patches at 32 px, all of them lung here)
            assert mask.dtype == torch.bool and mask.shape == (8, 4) and (mask.sum(1) == 2).all()
    assert "mask_both_views" not in spec_form(SSLMethod(name="anatomy_vit", projector=[384, 128]))["options"]
    assert spec_form(SSLMethod(name="anatomy_vit", projector=[384, 128], options={"mask_both_views": True}))[
        "options"]["mask_both_views"] is True


def test_detached_attention_has_no_gradient_attached_has():
    for detach, expect in ((True, False), (False, True)):
        m = vit_method(detach_attention=detach)
        out = step(m)
        if detach:
            assert not out.terms["attention"].requires_grad
        else:
            g = grads_of(m, out.terms["attention"], list(m.backbone.vit.blocks[0].attn.qkv.parameters()))
            assert any(x is not None and x.abs().sum() > 0 for x in g) == expect


def test_closure_bug_makes_every_block_attend_with_the_last_blocks_weights():
    vit = build_backbone("vit_small", 1, image_size=32, shared_attention=True).eval()
    x = torch.randn(2, 1, 32, 32)
    before = vit(x)
    with torch.no_grad():  # the attention weights of blocks 0-10 are never used
        for block in vit.vit.blocks[:-1]:
            block.attn.qkv.weight.normal_()
    torch.testing.assert_close(vit(x), before)
    vit.shared_attention = False
    assert not torch.allclose(vit(x), before)
    # the per-block path equals timm's own forward
    torch.testing.assert_close(vit.run(x)[0][:, 0], vit.vit(x), atol=1e-5, rtol=1e-5)


def test_lung_aware_masking_masks_a_share_of_lung_patches_only():
    m = vit_method(mask_ratio=(0.5, 0.5))
    m.on_fit_start(1, 10)
    lung = torch.zeros(3, 16)
    lung[0, :6] = 1
    lung[1, 3] = 1
    masked = m.choose_masked(lung)
    assert masked[0].sum() == 3 and bool((masked[0] <= lung[0].bool()).all())
    assert masked[1].sum() == 1 and masked[1, 3]
    assert masked[2].sum() == 1  # no lung: one arbitrary patch, as the code's max(., 1)


def test_mask_ratio_curriculum_and_gamma_bias():
    m = vit_method(mask_ratio=(0.3, 0.75), gamma_bias=True)
    m.on_fit_start(1, 100)
    m.on_epoch_start(0)
    assert m.mask_ratio() == pytest.approx(0.3045)
    m.on_epoch_start(99)
    assert m.mask_ratio() == pytest.approx(0.75)
    lung = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    bias = m.attention_bias(lung).detach()
    assert bias.shape == (12, 1, 5, 5)
    assert float(bias[0, 0, 1, 3]) == pytest.approx(0.0, abs=1e-6)  # lung-lung: + log 1
    assert float(bias[0, 0, 1, 2]) == pytest.approx(float(torch.log(torch.tensor(0.4))), abs=1e-6)  # 1 - gamma
    assert m.scheduled_values()["gamma_0"] == pytest.approx(0.6)


def test_freeze_then_rebuilt_optimizer_without_the_projector_as_options_7_8():
    torch.manual_seed(0)
    spec = SSLMethod(name="anatomy_vit", projector=[384, 128],
                     options={"freeze_epochs": 1, "projector_after_unfreeze": False, "attention_after": 0})
    m = build_method(spec, lambda: build_backbone("vit_small", 1, image_size=32), 384, 32)
    snapshot = {k: v.clone() for k, v in m.state_dict().items()}
    cfg = PretrainConfig(epochs=1, batch_size=4, optimizer={"name": "adamw", "lr": 1e-3})
    pretrain(m, lung_batch(), AUG, cfg, seed=0, device=CPU, bf16=False, progress=False)
    changed = {k for k, v in m.state_dict().items() if not torch.equal(v, snapshot[k])}
    assert any(k.startswith("backbone.vit.patch_embed") for k in changed)
    assert not any(k.startswith("backbone.vit.blocks") for k in changed)  # frozen in the first epoch
    assert any(k.startswith("projector") for k in changed)
    m2 = build_method(spec, lambda: build_backbone("vit_small", 1, image_size=32), 384, 32)
    m2.load_state_dict(snapshot)
    snapshot_projector = {k: v.clone() for k, v in m2.projector.state_dict().items()}
    cfg2 = PretrainConfig(epochs=2, batch_size=4, optimizer={"name": "adamw", "lr": 1e-3})
    pretrain(m2, lung_batch(), AUG, cfg2, seed=0, device=CPU, bf16=False, progress=False)
    # epoch 2 trained the blocks; the projector kept its epoch-1 weights (its BN statistics still move)
    after_first = m.projector.state_dict()
    for k, v in m2.projector.state_dict().items():
        if "running" not in k and "num_batches" not in k:
            torch.testing.assert_close(v, after_first[k])
    assert any(not torch.equal(v, snapshot_projector[k]) for k, v in m2.projector.state_dict().items())


def test_teacher_follows_the_student_by_ema():
    m = vit_method(teacher_momentum=0.9)
    p_student = next(m.backbone.parameters())
    p_teacher = next(m.teacher.parameters())
    with torch.no_grad():
        p_student.add_(1.0)
    before = p_teacher.clone()
    m.on_step_end(0, 0)
    torch.testing.assert_close(p_teacher, before + 0.1 * (p_student - before))


def test_each_sg_method_trains_and_logs_its_terms():
    cfg = PretrainConfig(epochs=1, batch_size=4, optimizer={"name": "adam", "lr": 1e-4})
    aug = BatchAugment(AugmentConfig(size=32, hflip=0.5, mean=(0.0,), std=(1.0,)))
    cases = [("sg_contrastive", "sg_cnn", {"mask_weight": 0.3}, {"contrastive", "reconstruction"}),
             ("sg_attention", "sg_guided_cnn", {}, {"contrastive", "reconstruction", "segmentation"}),
             ("anatomy_vit", "vit_small", {"freeze_epochs": 0, "gamma_bias": True, "layer_tau": 2.0},
              {"contrastive", "reconstruction", "attention", "gamma_11", "mask_ratio"})]
    for name, arch, options, names in cases:
        torch.manual_seed(0)
        dim = 384 if arch == "vit_small" else 256
        spec = SSLMethod(name=name, projector=[dim, 128], options=options)
        m = build_method(spec, lambda a=arch: build_backbone(a, 1, image_size=32), dim, 32)
        r = pretrain(m, lung_batch(), aug, cfg, seed=0, device=CPU, bf16=False, progress=False)
        logged = {c["name"] for c in r.curves}
        assert names <= logged, (name, logged)
        assert all(torch.isfinite(torch.tensor(c["value"])) for c in r.curves)


def test_mask_weighted_contrastive_is_the_weighted_loss_of_its_projections():
    torch.manual_seed(0)
    spec = SSLMethod(name="sg_contrastive", projector=[256, 128], options={"mask_weight": 0.3, "recon_weight": 0.0})
    m = build_method(spec, lambda: build_backbone("sg_cnn", 1), 256, 32).eval()
    batch = lung_batch()
    views = AUG.views(batch, torch.Generator().manual_seed(0))
    out = m.training_step(views, batch)
    z0, z1 = (m.embed(v.image)[1] for v in views)
    w = 1 + 0.3 * batch.masks.float().mean(dim=(1, 2, 3))
    torch.testing.assert_close(out.loss, losses.weighted_nt_xent(z0, z1, w, 0.1))
    with pytest.raises(ValueError, match="masks"):
        m.training_step(views, Batch(batch.images))


def test_a_method_that_reads_masks_is_refused_at_plan_time_without_them():
    from medssl_core.config import PretrainHP, parse

    hp = {"image_size": 32, "channels": 1, "n_classes": 2, "task": "binary", "split": {"scheme": "official"},
          "backbone": {"arch": "vit_small"}, "augment": {}, "method": {"name": "anatomy_vit", "projector": [384, 128]},
          "train": {"epochs": 1, "batch_size": 4, "optimizer": {"name": "adamw", "lr": 1e-3}}}
    with pytest.raises(ConfigError, match="masks: lung_rule"):
        parse(PretrainHP, hp, "test")
    with pytest.raises(ConfigError, match="vit_small"):
        parse(PretrainHP, {**hp, "masks": "lung_rule", "backbone": {"arch": "resnet18"}}, "test")
    parse(PretrainHP, {**hp, "masks": "lung_rule"}, "test")


def test_no_anatomy_ablation_masks_any_patch():
    m = vit_method(mask_ratio=(0.5, 0.5), lungs_only=False, attention_weight=0.0)
    out = step(m)
    assert torch.isfinite(out.loss)
    m.on_fit_start(1, 10)
    lung = torch.zeros(2, 16)
    lung[:, :2] = 1
    masked = m.choose_masked(torch.ones_like(lung))
    assert (masked.sum(1) == 8).all()  # half of all 16 patches, not of the 2 lung patches
