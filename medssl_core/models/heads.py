"""Heads: the MLPs of projectors and predictors, and the studies' classification heads."""

from __future__ import annotations

import itertools

from torch import nn

from medssl_core.common.errors import ConfigError


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
