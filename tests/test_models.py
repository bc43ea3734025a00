"""Model-level numerics: the CPU convolution with the unfold weight gradient equals PyTorch's own."""

import copy

import pytest
import torch
from torch import nn

from medssl_core.cpu_conv import FastCPUConv2d, use_fast_cpu_convolutions
from medssl_core.models import build_backbone


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
