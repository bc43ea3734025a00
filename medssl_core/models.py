"""Backbones (ResNet-18/50, MobileNetV2, ViT-Small) for any number of input channels, and the studies' heads."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tvm

from medssl_core import sg_encoders
from medssl_core.cpu_conv import use_fast_cpu_convolutions
from medssl_core.errors import ConfigError

FEATURE_DIMS = {"resnet18": 512, "resnet50": 2048, "mobilenet_v2": 1280, "vit_small": 384, "sg_cnn": 256,
                "sg_guided_cnn": 256}

# torchvision's ImageNet checkpoints, looked for in the torch hub cache only: never downloaded by medssl.
IMAGENET_FILES = {
    "resnet18": "resnet18-f37072fd.pth",
    "resnet50": "resnet50-0676ba61.pth",
    "mobilenet_v2": "mobilenet_v2-b0353104.pth",
}
# init 'imagenet_v2': torchvision's newer recipe (weights='IMAGENET1K_V2'), where it has one
IMAGENET_V2_FILES = {"resnet50": "resnet50-11ad3fa6.pth", "mobilenet_v2": "mobilenet_v2-7ebf99e0.pth"}
INITS = ("random", "imagenet", "imagenet_v2")


def _imagenet_file(arch: str, init: str) -> str | None:
    return (IMAGENET_V2_FILES if init == "imagenet_v2" else IMAGENET_FILES).get(arch)


def _hf_hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    return Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"


def imagenet_weights_path(arch: str, init: str = "imagenet") -> Path | None:
    """The local ImageNet weights of ``arch``: torchvision's file in the torch hub cache, or for ViT-S timm's
    in the Hugging Face hub cache (where `timm.create_model(..., pretrained=True)` leaves them)."""
    if arch == "vit_small" and init == "imagenet":
        snapshots = _hf_hub_cache() / f"models--{VIT_SMALL_IMAGENET.replace('/', '--')}" / "snapshots"
        found = sorted(snapshots.glob("*/model.safetensors")) if snapshots.is_dir() else []
        return found[-1] if found else None
    name = _imagenet_file(arch, init)
    if name is None:
        return None
    path = Path(torch.hub.get_dir()) / "checkpoints" / name
    return path if path.is_file() else None


def imagenet_missing_message(arch: str, init: str = "imagenet") -> str:
    if arch == "vit_small" and init == "imagenet":
        return (f"ImageNet weights for vit_small are not present locally: expected "
                f"{_hf_hub_cache()}/models--{VIT_SMALL_IMAGENET.replace('/', '--')}/snapshots/<rev>/model.safetensors."
                " medssl never downloads them itself; on a machine with internet run `python -c \"import timm; "
                f"timm.create_model('{VIT_SMALL_IMAGENET.split('/')[1]}', pretrained=True)\"` once (or copy the "
                "hub cache folder there).")
    name = _imagenet_file(arch, init)
    weights = "IMAGENET1K_V2" if init == "imagenet_v2" else "IMAGENET1K_V1"
    if name is None:
        return f"No {weights} ImageNet weights are registered for {arch}."
    return (f"ImageNet weights for {arch} are not present locally: expected "
            f"{Path(torch.hub.get_dir()) / 'checkpoints' / name}. medssl never downloads them "
            f"itself; on a machine with internet run `python -c \"import torchvision; torchvision.models."
            f"{arch}(weights='{weights}')\"` once (or copy the file there).")


def _adapt_first_conv(conv: nn.Conv2d, in_channels: int, grey_weights: str = "sum", **overrides) -> nn.Conv2d:
    """A copy of ``conv`` for ``in_channels``. For 1 channel, RGB weights are summed: exactly equivalent to
    feeding the grey image replicated to RGB, as the studies do with `.convert('RGB')`; or averaged
    (``grey_weights`` 'mean', MedSGSSL's direct baselines)."""
    new = nn.Conv2d(in_channels, conv.out_channels, overrides.get("kernel_size", conv.kernel_size),
                    overrides.get("stride", conv.stride), overrides.get("padding", conv.padding),
                    bias=conv.bias is not None)
    if new.weight.shape[2:] == conv.weight.shape[2:]:
        with torch.no_grad():
            w = conv.weight
            if in_channels == 1:
                new.weight.copy_(w.sum(dim=1, keepdim=True) if grey_weights == "sum" else w.mean(dim=1, keepdim=True))
            elif in_channels == w.shape[1]:
                new.weight.copy_(w)
            else:  # e.g. image + mask: mean RGB filter per extra channel (as MedSGSSL option 6)
                new.weight.copy_(w.mean(dim=1, keepdim=True).repeat(1, in_channels, 1, 1))
    return new


VIT_SMALL = "vit_small_patch16_224"
VIT_SMALL_IMAGENET = "timm/vit_small_patch16_224.augreg_in21k_ft_in1k"  # timm's default ImageNet weights


class ViTSmall(nn.Module):
    """ViT-Small/16 (width 384, depth 12, heads 6) as timm builds it, as MedSGSSL does (timm, not torchvision:
    torchvision has no ViT-S and no ImageNet weights for it). ``forward`` gives the CLS token after the final
    norm; ``tokens`` the CLS and patch tokens; ``attention_maps`` every block's attention probabilities."""

    def __init__(self, image_size: int = 224, in_channels: int = 3, weights: Path | None = None,
                 shared_attention: bool = False):
        super().__init__()
        import timm  # imported after medssl's torchvision shim (torchvision_compat), which timm needs

        overlay = {"pretrained_cfg_overlay": {"file": str(weights)}} if weights is not None else {}
        # timm adapts the ImageNet patch embedding to in_channels (RGB summed for 1 channel, as _adapt_first_conv)
        # and resamples the position embedding to image_size
        self.vit = timm.create_model(VIT_SMALL, pretrained=weights is not None, num_classes=0, img_size=image_size,
                                     in_chans=in_channels, **overlay)
        # MedSGSSL options 7/8's closure bug: every block attends with the last block's qkv and proj weights
        self.shared_attention = shared_attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shared_attention:
            return self.run(x)[0][:, 0]  # the CLS token after the final norm, as timm's pooling 'token'
        return self.vit(x)

    def run(self, x: torch.Tensor, *, input_mask: torch.Tensor | None = None, bias: torch.Tensor | None = None,
            keep_attention: bool = False, attention_from: ViTSmall | None = None
            ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Tokens (N, 1 + P, D) after the final norm, block by block, and (``keep_attention``) each block's CLS
        attention over the patches (N, heads, P).

        ``input_mask`` (N, P) bool: those patch embeddings are zeroed before the position embedding (masked input).
        ``bias`` (L, N, 1 + P, 1 + P): added to block l's attention logits (MedSGSSL's log-prior).
        ``attention_from``: the model whose attention modules (qkv, norms, proj) the blocks use (a teacher calling
        its student's, as MedSGSSL's deep-copied closures do); its ``shared_attention`` applies.
        """
        vit, source = self.vit, attention_from or self
        attns = [source.vit.blocks[-1].attn if source.shared_attention else b.attn for b in source.vit.blocks]
        x = vit.patch_embed(x)
        if input_mask is not None:
            x = x * (~input_mask).unsqueeze(-1).to(x.dtype)
        x = vit.norm_pre(vit.patch_drop(vit._pos_embed(x)))
        maps = []
        for i, (block, attn) in enumerate(zip(vit.blocks, attns, strict=True)):
            out, probs = _attention(attn, block.norm1(x), None if bias is None else bias[i], keep_attention)
            if keep_attention:
                maps.append(probs[:, :, 0, 1:])
            x = x + block.drop_path1(block.ls1(out))
            x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
        return vit.norm(x), maps

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1 + patches, 384): the CLS token then the patch tokens, after the final norm."""
        return self.vit.forward_features(x)

    def attention_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The tokens and, per block, its attention probabilities (N, heads, 1 + patches, 1 + patches): row 0 is
        the CLS token's attention. Computed on the unfused path, whose probabilities the hooks see."""
        maps: list[torch.Tensor] = []
        attns = [block.attn for block in self.vit.blocks]
        fused = [a.fused_attn for a in attns]
        hooks = [a.attn_drop.register_forward_hook(lambda m, i, o: maps.append(i[0])) for a in attns]
        try:
            for a in attns:
                a.fused_attn = False
            tokens = self.tokens(x)
        finally:
            for a, f in zip(attns, fused, strict=True):
                a.fused_attn = f
            for h in hooks:
                h.remove()
        return tokens, maps


def _attention(attn: nn.Module, x: torch.Tensor, bias: torch.Tensor | None, keep: bool
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """timm's Attention.forward, with an additive logit bias and the probabilities returned when ``keep``."""
    n, t, _ = x.shape
    qkv = attn.qkv(x).reshape(n, t, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    probs = None
    if keep:
        logits = (q * attn.scale) @ k.transpose(-2, -1)
        if bias is not None:
            logits = logits + bias.unsqueeze(1).to(logits.dtype)
        probs = attn.attn_drop(logits.softmax(dim=-1))
        out = probs @ v
    else:
        mask = None if bias is None else bias.unsqueeze(1).to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             dropout_p=attn.attn_drop.p if attn.training else 0.0)
    out = attn.norm(out.transpose(1, 2).reshape(n, t, -1))
    return attn.proj_drop(attn.proj(out)), probs


def feature_dim(arch: str, out_dim: int | None = None) -> int:
    """Size of the features a backbone returns: ``out_dim`` where it ends in a Linear to it, else the arch's."""
    return out_dim or FEATURE_DIMS[arch]


def build_backbone(arch: str, in_channels: int = 3, *, small_stem: bool = False, init: str = "random",
                   random_init: str = "torchvision", zero_init_residual: bool = True,
                   image_size: int = 224, shared_attention: bool = False, out_dim: int | None = None,
                   grey_weights: str = "sum") -> nn.Module:
    """A feature extractor returning (N, feature_dim(arch, out_dim)).

    ``small_stem``: ResNet 3x3 stride-1 first conv and no max-pool, for 28-64 px inputs.
    ``init``: 'random', 'imagenet' or 'imagenet_v2' (torchvision's IMAGENET1K_V2; local weights only, a clear
    error when missing).
    ``random_init``: 'torchvision' (its ResNet init: Kaiming normal, fan-out) or 'layer_default' (every layer's
    own ``reset_parameters()``, as a ResNet written from plain nn layers, e.g. MedMNIST v2's "(28)" models).
    ``zero_init_residual``: each residual branch's last BatchNorm starts at zero (random init only).
    ``shared_attention``: ViT-S blocks all attend with the last block's weights (MedSGSSL's closure bug).
    ``out_dim``: a Linear from the pooled features to ``out_dim`` (PyTorch's default init; MedSGSSL option 4).
    ``grey_weights``: a 1-channel first conv from pretrained RGB weights: their 'sum' or 'mean'.
    """
    if out_dim is not None:
        if arch == "vit_small" or arch in sg_encoders.ENCODERS:
            raise ConfigError(f"out_dim adds a Linear after a torchvision backbone's pooling; {arch} ends in its own "
                              "layers: drop out_dim.")
        model = build_backbone(arch, in_channels, small_stem=small_stem, init=init, random_init=random_init,
                               zero_init_residual=zero_init_residual, image_size=image_size, grey_weights=grey_weights)
        return nn.Sequential(model, nn.Linear(FEATURE_DIMS[arch], out_dim))
    if arch not in FEATURE_DIMS:
        raise ConfigError(f"Unknown backbone {arch!r}; choose one of {sorted(FEATURE_DIMS)}.")
    if init not in INITS:
        raise ConfigError(f"init must be one of {INITS}, not {init!r}")
    if random_init not in ("torchvision", "layer_default"):
        raise ConfigError(f"random_init must be 'torchvision' or 'layer_default', not {random_init!r}")
    if shared_attention and arch != "vit_small":
        raise ConfigError(f"shared_attention is a ViT-S setting (MedSGSSL's closure bug); {arch} has no attention.")
    if arch == "vit_small":
        weights = None
        if init == "imagenet":
            weights = imagenet_weights_path(arch)
            if weights is None:
                raise ConfigError(imagenet_missing_message(arch))
        return ViTSmall(image_size, in_channels, weights, shared_attention)
    if arch in sg_encoders.ENCODERS:
        if init != "random":
            raise ConfigError(f"{arch} is MedSGSSL's own encoder: it has no ImageNet weights (init 'random').")
        return use_fast_cpu_convolutions(sg_encoders.ENCODERS[arch](in_channels))
    if arch.startswith("resnet"):
        model = getattr(tvm, arch)(zero_init_residual=zero_init_residual and init == "random")
    else:
        model = tvm.mobilenet_v2()
    if init != "random":
        path = imagenet_weights_path(arch, init)
        if path is None:
            raise ConfigError(imagenet_missing_message(arch, init))
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    if arch.startswith("resnet"):
        if small_stem:
            model.conv1 = _adapt_first_conv(model.conv1, in_channels, grey_weights, kernel_size=3, stride=1,
                                             padding=1)
            model.maxpool = nn.Identity()
        elif in_channels != 3:
            model.conv1 = _adapt_first_conv(model.conv1, in_channels, grey_weights)
        model.fc = nn.Identity()
    else:
        if in_channels != 3:
            model.features[0][0] = _adapt_first_conv(model.features[0][0], in_channels, grey_weights)
        model.classifier = nn.Identity()
    if init == "random" and random_init == "layer_default":
        _reset_every_layer(model, zero_init_residual)
    return use_fast_cpu_convolutions(model)


def _reset_every_layer(model: nn.Module, zero_init_residual: bool) -> None:
    for module in model.modules():
        if module is not model and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    if zero_init_residual:
        for module in model.modules():  # as torchvision's ResNet(zero_init_residual=True)
            if isinstance(module, tvm.resnet.Bottleneck):
                nn.init.zeros_(module.bn3.weight)
            elif isinstance(module, tvm.resnet.BasicBlock):
                nn.init.zeros_(module.bn2.weight)


def mlp(dims: list[int], *, hidden_bn: bool = True, last_bn: bool = False, last_bn_affine: bool = True,
        activation: type[nn.Module] = nn.ReLU, bias: bool = True) -> nn.Sequential:
    """Linear layers through ``dims``; BN + activation after every hidden layer, optional BN at the end."""
    if len(dims) < 2:
        raise ConfigError(f"an MLP needs at least input and output dims, got {dims}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        last = i == len(dims) - 2
        layers.append(nn.Linear(a, b, bias=bias))
        if not last:
            if hidden_bn:
                layers.append(nn.BatchNorm1d(b))
            layers.append(activation())
    if last_bn:
        layers.append(nn.BatchNorm1d(dims[-1], affine=last_bn_affine))
    return nn.Sequential(*layers)


def build_head(spec: dict, in_dim: int, n_out: int) -> nn.Module:
    """Downstream heads: {'type': 'linear'} or {'type': 'mlp', 'hidden': [512], 'activation': 'leaky_relu',
    'hidden_bn': True}; 'dropout': p > 0 puts a Dropout before the last linear layer; 'input_norm' normalises the
    features first: 'layernorm' (MedSGSSL: LayerNorm, Linear(384, 192), GELU, Dropout 0.3, Linear(192, 14)) or
    'batchnorm' (without affine parameters: MAE's linear probe, He et al. 2022, appendix A.2)."""
    kind, dropout = spec.get("type", "linear"), spec.get("dropout", 0.0)
    if kind == "linear":
        head = nn.Sequential(nn.Linear(in_dim, n_out))
    elif kind == "mlp":
        act = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU}[spec.get("activation", "relu")]
        head = mlp([in_dim, *spec.get("hidden", [512]), n_out], activation=act, hidden_bn=spec.get("hidden_bn", True))
    else:
        raise ConfigError(f"Unknown head type {kind!r}; use 'linear' or 'mlp'.")
    if dropout:
        head.insert(len(head) - 1, nn.Dropout(dropout))
    norm = spec.get("input_norm", "none")
    if norm == "layernorm":
        head.insert(0, nn.LayerNorm(in_dim))
    elif norm == "batchnorm":
        head.insert(0, nn.BatchNorm1d(in_dim, affine=False))
    return head if len(head) > 1 else head[0]
