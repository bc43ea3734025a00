"""Model-level numerics: the CPU convolution with the unfold weight gradient equals PyTorch's own; ViT-Small's
tokens, attention maps and local ImageNet weights."""

import copy

import pytest
import torch
from torch import nn

from medssl_core.common.errors import ConfigError
from medssl_core.models.backbones import build_backbone
from medssl_core.models.cpu_conv import FastCPUConv2d, use_fast_cpu_convolutions
from medssl_core.models.imagenet import imagenet_weights_path


@pytest.mark.parametrize(("size", "kernel", "stride", "padding", "dilation"), [
    (1, 3, 1, 1, 1), (2, 3, 1, 1, 1), (4, 3, 2, 1, 1), (3, 1, 2, 0, 1), (2, (3, 1), 1, (1, 0), 1), (2, 3, 1, 2, 2)])
def test_unfold_weight_gradient_equals_pytorch(size, kernel, stride, padding, dilation):
    torch.manual_seed(0)
    ref = nn.Conv2d(5, 7, kernel, stride, padding, dilation, bias=False).double()
    fast = copy.deepcopy(ref)
    use_fast_cpu_convolutions(fast)
    assert type(fast) is FastCPUConv2d
    x = torch.randn(6, 5, size, size, dtype=torch.float64)
    outs = []
    for conv in (ref, fast):
        xi = x.clone().requires_grad_()
        y = conv(xi)
        (y * torch.linspace(-1, 1, y.numel(), dtype=torch.float64).view_as(y)).sum().backward()
        outs.append((y.detach(), xi.grad, conv.weight.grad, y.grad_fn))
    (y_ref, gx_ref, gw_ref, _), (y_fast, gx_fast, gw_fast, fn) = outs
    assert "UnfoldWeightGrad" in type(fn).__name__  # the fast path ran
    torch.testing.assert_close(y_fast, y_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(gx_fast, gx_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(gw_fast, gw_ref, rtol=0, atol=1e-12)


def test_resnet_with_fast_convolutions_trains_like_pytorch():
    torch.manual_seed(0)
    fast = build_backbone("resnet18", 1, zero_init_residual=False).double()
    ref = copy.deepcopy(fast)
    for m in ref.modules():
        if type(m) is FastCPUConv2d:
            m.__class__ = nn.Conv2d
    assert fast.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(4, 1, 28, 28, dtype=torch.float64)
    for model in (fast, ref):
        model(x).square().sum().backward()
    for (name, p), q in zip(fast.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-9, msg=name)


# -- ViT-Small (timm) ---------------------------------------------------------------------------------------------
def test_vit_small_gives_cls_patch_tokens_and_attention_maps():
    torch.manual_seed(0)
    vit = build_backbone("vit_small", 2, image_size=32).eval()  # e.g. image + mask
    x = torch.randn(3, 2, 32, 32)
    with torch.no_grad():
        cls, tokens = vit(x), vit.tokens(x)
        same_tokens, maps = vit.attention_maps(x)
    assert cls.shape == (3, 384) and tokens.shape == (3, 1 + 4, 384)
    torch.testing.assert_close(tokens[:, 0], cls)  # the CLS token is the feature
    torch.testing.assert_close(same_tokens, tokens, rtol=1e-5, atol=1e-5)  # unfused path: the same network
    assert len(maps) == 12 and maps[0].shape == (3, 6, 5, 5)
    torch.testing.assert_close(maps[5].sum(-1), torch.ones(3, 6, 5))
    # block 0's attention output is exactly its probabilities times its values (a wrong map fails here)
    blk = vit.vit.blocks[0]
    with torch.no_grad():
        h = blk.norm1(vit.vit.norm_pre(vit.vit._pos_embed(vit.vit.patch_embed(x))))
        qkv = blk.attn.qkv(h).reshape(3, 5, 3, 6, 64).permute(2, 0, 3, 1, 4)
        mixed = (maps[0] @ qkv[2]).transpose(1, 2).reshape(3, 5, 384)
        torch.testing.assert_close(blk.attn.proj(mixed), blk.attn(h), rtol=1e-5, atol=1e-5)
    assert all(block.attn.fused_attn == vit.vit.blocks[0].attn.fused_attn for block in vit.vit.blocks)


def test_vit_small_imagenet_weights_load_from_the_local_hub_cache(tmp_path, monkeypatch):
    import timm
    from safetensors.torch import save_file

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ConfigError, match="never downloads"):
        build_backbone("vit_small", 3, init="imagenet")
    torch.manual_seed(1)
    source = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=1000)  # stands for ImageNet's
    snapshot = tmp_path / "models--timm--vit_small_patch16_224.augreg_in21k_ft_in1k" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, snapshot / "model.safetensors")
    assert imagenet_weights_path("vit_small") == snapshot / "model.safetensors"
    grey = build_backbone("vit_small", 1, init="imagenet")
    weights = grey.vit.state_dict()
    torch.testing.assert_close(weights["blocks.7.attn.qkv.weight"], source.state_dict()["blocks.7.attn.qkv.weight"])
    # one grey channel: the RGB filters summed, exactly as feeding the grey image replicated to RGB
    torch.testing.assert_close(weights["patch_embed.proj.weight"],
                               source.state_dict()["patch_embed.proj.weight"].sum(1, keepdim=True))


# -- random initialisation ------------------------------------------------------------------------------------------
def test_layer_default_init_is_each_layers_own_and_differs_from_torchvisions():
    torch.manual_seed(0)
    plain = build_backbone("resnet18", 1, small_stem=True, random_init="layer_default", zero_init_residual=False)
    torch.manual_seed(0)
    kaiming = build_backbone("resnet18", 1, small_stem=True)
    deep_plain, deep_kaiming = plain.layer4[1].conv2.weight.detach(), kaiming.layer4[1].conv2.weight.detach()
    # nn.Conv2d's own init: kaiming_uniform(a=sqrt(5)), i.e. U(+-1/sqrt(fan_in)); fan_in = 512 * 3 * 3
    bound = 1 / (512 * 9) ** 0.5
    assert deep_plain.abs().max() <= bound and deep_plain.std().item() == pytest.approx(bound / 3 ** 0.5, rel=0.02)
    # torchvision: Kaiming normal on fan_out (512 * 3 * 3), std sqrt(2 / fan_out), so about 2.4x wider
    assert deep_kaiming.std().item() == pytest.approx((2 / (512 * 9)) ** 0.5, rel=0.02)
    assert plain.conv1.weight.shape == (64, 1, 3, 3) and plain.conv1.weight.abs().max() <= 1 / 3  # fan_in 1*3*3
    assert all(bool((b.bn2.weight == 1).all()) for layer in (plain.layer1, plain.layer4) for b in layer)
    assert all(bool((b.bn2.weight == 0).all()) for layer in (kaiming.layer1, kaiming.layer4) for b in layer)
    zeroed = build_backbone("resnet50", 3, random_init="layer_default", zero_init_residual=True)
    assert all(bool((b.bn3.weight == 0).all()) and bool((b.bn2.weight == 1).all()) for b in zeroed.layer2)
    with pytest.raises(ConfigError, match="random_init"):
        build_backbone("resnet18", 3, random_init="xavier")
