"""ViT-S/16 (timm) for any channel count, with CLS and patch tokens and every block's attention map, and an optional
additive attention bias (MedSGSSL's lung prior)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

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
