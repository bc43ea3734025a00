"""Every loss against a float64 reference written from its paper's formula (value and gradient), plus
hypothesis properties of its invariants."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medssl_core import losses as L

torch.set_default_dtype(torch.float32)
SETTINGS = settings(max_examples=40, deadline=None)


def _pair(n=8, d=16, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=dtype), torch.randn(n, d, generator=g, dtype=dtype)


batches = st.tuples(st.integers(2, 12), st.integers(2, 24), st.integers(0, 10_000))


# -- float64 references, loops straight from the formulas ---------------------------------------------------
def ref_nt_xent(z0, z1, tau):
    z = torch.cat([z0, z1])
    z = z / z.norm(dim=1, keepdim=True)
    n2 = z.shape[0]
    n = n2 // 2
    total = 0
    for i in range(n2):
        j = (i + n) % n2
        num = torch.exp(z[i] @ z[j] / tau)
        den = sum(torch.exp(z[i] @ z[k] / tau) for k in range(n2) if k != i)
        total = total - torch.log(num / den)
    return total / n2


def ref_dcl_one_way(z0, z1, tau, weights=None):
    z0 = z0 / z0.norm(dim=1, keepdim=True)
    z1 = z1 / z1.norm(dim=1, keepdim=True)
    n = z0.shape[0]
    total = 0
    for i in range(n):
        w = 1.0 if weights is None else weights[i]
        neg = sum(torch.exp(z0[i] @ z0[k] / tau) + torch.exp(z0[i] @ z1[k] / tau) for k in range(n) if k != i)
        total = total - w * (z0[i] @ z1[i]) / tau + torch.log(neg)
    return total / n


def ref_vmf_weights(z0, z1, sigma):
    z0 = z0 / z0.norm(dim=1, keepdim=True)
    z1 = z1 / z1.norm(dim=1, keepdim=True)
    e = torch.stack([torch.exp(z0[i] @ z1[i] / sigma) for i in range(z0.shape[0])])
    return 2 - e / e.mean()


def ref_vicreg(z0, z1, lam=25.0, mu=25.0, nu=1.0, eps=1e-4, halve=True):
    n, d = z0.shape
    inv = ((z0 - z1) ** 2).mean()

    def var_term(z):
        zc = z - z.mean(0)
        return sum(torch.relu(1 - torch.sqrt((zc[:, j] ** 2).sum() / (n - 1) + eps)) for j in range(d)) / d

    def cov_term(z):
        zc = z - z.mean(0)
        c = zc.T @ zc / (n - 1)
        return sum(c[i, j] ** 2 for i in range(d) for j in range(d) if i != j) / d

    v = var_term(z0) + var_term(z1)
    return lam * inv + mu * (v / 2 if halve else v) + nu * (cov_term(z0) + cov_term(z1))


def ref_barlow(z0, z1, lam, eps=1e-5):
    n, d = z0.shape

    def std(z):
        return (z - z.mean(0)) / torch.sqrt(((z - z.mean(0)) ** 2).mean(0) + eps)

    a, b = std(z0), std(z1)
    c = torch.stack([torch.stack([(a[:, i] * b[:, j]).sum() / n for j in range(d)]) for i in range(d)])
    off = sum(c[i, j] ** 2 for i in range(d) for j in range(d) if i != j)
    return sum((1 - c[i, i]) ** 2 for i in range(d)) + lam * off


def ref_simsiam(p0, p1, z0, z1):
    def cos(a, b):
        return sum(a[i] @ b[i] / (a[i].norm() * b[i].norm()) for i in range(a.shape[0])) / a.shape[0]

    return -0.5 * (cos(p0, z1.detach()) + cos(p1, z0.detach()))


def ref_byol(p0, p1, t0, t1):
    def mse_normalised(p, t):  # ||p/|p| - t/|t|||^2 per sample, averaged (BYOL Eq. 2)
        t = t.detach()
        return sum(((p[i] / p[i].norm() - t[i] / t[i].norm()) ** 2).sum() for i in range(p.shape[0])) / p.shape[0]

    return mse_normalised(p0, t1) + mse_normalised(p1, t0)


CASES = {
    "nt_xent": (lambda a, b: L.nt_xent(a, b, temperature=0.3), lambda a, b: ref_nt_xent(a, b, 0.3)),
    "dcl_sym": (lambda a, b: L.dcl(a, b, temperature=0.2),
                lambda a, b: 0.5 * (ref_dcl_one_way(a, b, 0.2) + ref_dcl_one_way(b, a, 0.2))),
    "dcl_one_way": (lambda a, b: L.dcl(a, b, temperature=0.2, symmetric=False),
                    lambda a, b: ref_dcl_one_way(a, b, 0.2)),
    "dclw_one_way": (lambda a, b: L.dclw(a, b, temperature=0.1, sigma=0.5, symmetric=False),
                     lambda a, b: ref_dcl_one_way(a, b, 0.1, ref_vmf_weights(a, b, 0.5))),
    "dclw_sym": (lambda a, b: L.dclw(a, b, temperature=0.1, sigma=0.5),
                 lambda a, b: 0.5 * (ref_dcl_one_way(a, b, 0.1, ref_vmf_weights(a, b, 0.5))
                                     + ref_dcl_one_way(b, a, 0.1, ref_vmf_weights(b, a, 0.5)))),
    "vicreg": (lambda a, b: L.vicreg(a, b), lambda a, b: ref_vicreg(a, b)),
    "vicreg_summed_variance": (lambda a, b: L.vicreg(a, b, halve_variance=False),
                               lambda a, b: ref_vicreg(a, b, halve=False)),
    "barlow_twins": (lambda a, b: L.barlow_twins(a, b, lambda_offdiag=0.0051), lambda a, b: ref_barlow(a, b, 0.0051)),
    "simsiam": (lambda a, b: L.simsiam(a, b, b * 0.5 + a, a - b), lambda a, b: ref_simsiam(a, b, b * 0.5 + a, a - b)),
    "byol": (lambda a, b: L.byol(a, b, b * 0.5 + a, a - b), lambda a, b: ref_byol(a, b, b * 0.5 + a, a - b)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_value_and_gradient_match_float64_reference(name):
    impl, ref = CASES[name]
    a, b = _pair(6, 5, seed=3)
    a1, b1 = a.clone().requires_grad_(), b.clone().requires_grad_()
    a2, b2 = a.clone().requires_grad_(), b.clone().requires_grad_()
    got, want = impl(a1, b1), ref(a2, b2)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)
    got.backward()
    want.backward()
    torch.testing.assert_close(a1.grad, a2.grad, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(b1.grad, b2.grad, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("name", sorted(CASES))
def test_float32_close_to_reference(name):
    impl, ref = CASES[name]
    a, b = _pair(16, 8, seed=5)
    torch.testing.assert_close(impl(a.float(), b.float()).double(), ref(a, b), rtol=1e-4, atol=1e-4)


# -- NT-Xent ------------------------------------------------------------------------------------------------
@SETTINGS
@given(batches)
def test_nt_xent_symmetric_in_views(shape):
    a, b = _pair(*shape)
    torch.testing.assert_close(L.nt_xent(a, b), L.nt_xent(b, a))


@SETTINGS
@given(batches)
def test_nt_xent_invariant_to_joint_permutation(shape):
    a, b = _pair(*shape)
    perm = torch.randperm(a.shape[0], generator=torch.Generator().manual_seed(shape[2]))
    torch.testing.assert_close(L.nt_xent(a[perm], b[perm]), L.nt_xent(a, b))


@SETTINGS
@given(batches, st.floats(0.01, 100.0), st.floats(0.01, 100.0))
def test_nt_xent_invariant_to_positive_rescaling(shape, s0, s1):
    a, b = _pair(*shape)
    torch.testing.assert_close(L.nt_xent(a * s0, b * s1), L.nt_xent(a, b))


@SETTINGS
@given(st.integers(2, 32), st.integers(1, 16), st.floats(0.05, 2.0))
def test_nt_xent_collinear_equals_log_2n_minus_1(n, d, tau):
    v = torch.randn(1, d, dtype=torch.float64).repeat(n, 1) + 0.1
    scales = torch.rand(n, 1, dtype=torch.float64) + 0.5
    assert math.isclose(L.nt_xent(v * scales, v, temperature=tau).item(), math.log(2 * n - 1), rel_tol=1e-9)


# -- DCL / DCLW ---------------------------------------------------------------------------------------------
@SETTINGS
@given(batches, st.floats(0.05, 1.0))
def test_dcl_below_nt_xent(shape, tau):
    a, b = _pair(*shape)
    assert L.dcl(a, b, temperature=tau) < L.nt_xent(a, b, temperature=tau)


@SETTINGS
@given(batches)
def test_dclw_tends_to_dcl_as_sigma_grows(shape):
    a, b = _pair(*shape)
    dcl = L.dcl(a, b, temperature=0.1)
    gaps = [abs(L.dclw(a, b, temperature=0.1, sigma=s) - dcl).item() for s in (1.0, 10.0, 1e3, 1e6)]
    assert gaps[-1] < 1e-4 * max(1.0, abs(dcl.item()))
    assert gaps[-1] <= gaps[0] + 1e-12


def test_dclw_weights_average_to_one():
    a, b = _pair(10, 4)
    assert math.isclose(L.von_mises_fisher_weights(a, b, 0.5).mean().item(), 1.0, rel_tol=1e-12)


def test_dcl_one_way_differs_from_symmetric():
    a, b = _pair(8, 6)
    assert not torch.isclose(L.dcl(a, b, symmetric=False), L.dcl(a, b, symmetric=True))


# -- Barlow Twins -------------------------------------------------------------------------------------------
@SETTINGS
@given(batches)
def test_barlow_symmetric(shape):
    a, b = _pair(*shape)
    if shape[0] < 3:
        return
    torch.testing.assert_close(L.barlow_twins(a, b), L.barlow_twins(b, a))


@SETTINGS
@given(st.tuples(st.integers(4, 12), st.integers(2, 12), st.integers(0, 10_000)))
def test_barlow_invariant_to_per_feature_affine_maps_on_both_views(shape):
    a, b = _pair(*shape)
    g = torch.Generator().manual_seed(shape[2] + 1)
    scale = (torch.rand(shape[1], generator=g, dtype=torch.float64) * 4 + 0.5) * torch.where(
        torch.rand(shape[1], generator=g) < 0.5, -1.0, 1.0).double()
    shift = torch.randn(shape[1], generator=g, dtype=torch.float64) * 10
    torch.testing.assert_close(L.barlow_twins(a * scale + shift, b * scale + shift, eps=1e-12),
                               L.barlow_twins(a, b, eps=1e-12), rtol=1e-7, atol=1e-7)


def test_barlow_lambda_is_a_parameter_with_official_default():
    a, b = _pair(8, 4)
    assert not torch.isclose(L.barlow_twins(a, b), L.barlow_twins(a, b, lambda_offdiag=5e-3))
    torch.testing.assert_close(L.barlow_twins(a, b), L.barlow_twins(a, b, lambda_offdiag=0.0051))


# -- VICReg -------------------------------------------------------------------------------------------------
@SETTINGS
@given(batches)
def test_vicreg_invariance_zero_exactly_when_views_equal(shape):
    a, b = _pair(*shape)
    assert L.vicreg_terms(a, a.clone())["invariance"].item() == 0.0
    assert L.vicreg_terms(a, b)["invariance"].item() > 0.0


@SETTINGS
@given(batches, st.floats(1.0, 50.0))
def test_vicreg_variance_zero_when_every_std_at_least_one(shape, extra):
    a, b = _pair(*shape)
    a = (a - a.mean(0)) / a.std(0).clamp_min(1e-6) * extra
    b = (b - b.mean(0)) / b.std(0).clamp_min(1e-6) * extra
    if (a.std(0) < 1).any() or (b.std(0) < 1).any():
        return
    assert L.vicreg_terms(a, b)["variance"].item() == 0.0
    assert L.vicreg_terms(a * (0.5 / extra), b * (0.5 / extra))["variance"].item() > 0.0


def test_vicreg_variance_halved_by_default():
    a, b = _pair(8, 4)
    a, b = a * 0.1, b * 0.1
    t_half, t_sum = L.vicreg_terms(a, b), L.vicreg_terms(a, b, halve_variance=False)
    torch.testing.assert_close(t_half["variance"] * 2, t_sum["variance"])


# -- SimSiam ------------------------------------------------------------------------------------------------
@SETTINGS
@given(batches)
def test_simsiam_minus_one_when_p_equals_z(shape):
    a, b = _pair(*shape)
    assert math.isclose(L.simsiam(b, a, a, b).item(), -1.0, rel_tol=1e-12)


def test_simsiam_no_gradient_reaches_stop_gradient_branch():
    p0, p1 = (t.requires_grad_() for t in _pair(8, 4, seed=1))
    z0, z1 = (t.requires_grad_() for t in _pair(8, 4, seed=2))
    L.simsiam(p0, p1, z0, z1).backward()
    assert p0.grad is not None and p0.grad.abs().sum() > 0
    assert z0.grad is None and z1.grad is None


# -- all losses ---------------------------------------------------------------------------------------------
ALL = {
    "nt_xent": L.nt_xent, "dcl": L.dcl, "dclw": L.dclw, "vicreg": L.vicreg, "barlow_twins": L.barlow_twins,
    "simsiam": lambda a, b: L.simsiam(a, a.clone(), b, b.clone()),
}


@pytest.mark.parametrize("name", sorted(ALL))
def test_finite_under_bf16_autocast(name):
    torch.manual_seed(0)
    layer = torch.nn.Linear(32, 64)
    x0, x1 = torch.randn(64, 32), torch.randn(64, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z0, z1 = layer(x0), layer(x1)
        assert z0.dtype == torch.bfloat16
        loss = ALL[name](z0, z1)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(layer.weight.grad).all()


@pytest.mark.parametrize("name", sorted(ALL))
def test_batch_of_one_refused(name):
    a = torch.randn(1, 8)
    with pytest.raises(ValueError, match="at least 2"):
        ALL[name](a, a.clone())


@pytest.mark.parametrize("name", sorted(ALL))
def test_mismatched_shapes_refused(name):
    with pytest.raises(ValueError, match="same shape"):
        ALL[name](torch.randn(4, 8), torch.randn(4, 7))


def test_non_2d_refused():
    with pytest.raises(ValueError, match="2-D"):
        L.nt_xent(torch.randn(4, 8, 2), torch.randn(4, 8, 2))


# -- fine-tuning losses (losses/classification.py): CE, BCE, focal; label smoothing; MISSING labels masked --
from medssl_core.data.labels import MISSING  # noqa: E402
from medssl_core.losses import classification as E  # noqa: E402


def _logits_labels(n, width, seed, *, multi_label, missing=0.3, dtype=torch.float64):
    """Logits (n, width) and labels: (n, width) 0/1 or (n,) classes, a ``missing`` share set to MISSING."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, width, generator=g, dtype=dtype) * 3
    y = torch.randint(0, 2, (n, width), generator=g) if multi_label else torch.randint(0, width, (n,), generator=g)
    y[torch.rand(y.shape, generator=g) < missing] = MISSING
    return z, y


def ref_focal_sigmoid(z, y, gamma, alpha=None):
    """Lin et al. 2017 per (sample, label): FL = -alpha_t (1 - p_t)^gamma log p_t, mean over observed ones."""
    terms = []
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            if y[i, j] == MISSING:
                continue
            p = 1 / (1 + torch.exp(-z[i, j]))
            p_t = p if y[i, j] == 1 else 1 - p
            a_t = 1.0 if alpha is None else (alpha if y[i, j] == 1 else 1 - alpha)
            terms.append(-a_t * (1 - p_t) ** gamma * torch.log(p_t))
    return sum(terms) / len(terms)


def ref_focal_softmax(z, y, gamma, alpha=None):
    terms = []
    for i in range(z.shape[0]):
        if y[i] == MISSING:
            continue
        p_t = torch.exp(z[i, y[i]]) / torch.exp(z[i]).sum()
        a_t = 1.0 if alpha is None else (alpha if y[i] == 1 else 1 - alpha)
        terms.append(-a_t * (1 - p_t) ** gamma * torch.log(p_t))
    return sum(terms) / len(terms)


def ref_ce_smoothed(z, y, eps):
    """torch's CrossEntropyLoss(label_smoothing=eps): target (1 - eps) onehot + eps / C."""
    terms = []
    for i in range(z.shape[0]):
        if y[i] == MISSING:
            continue
        log_p = z[i] - torch.log(torch.exp(z[i]).sum())
        c = z.shape[1]
        terms.append(-sum(((1 - eps) * float(k == y[i]) + eps / c) * log_p[k] for k in range(c)))
    return sum(terms) / len(terms)


def ref_bce_smoothed(z, y, eps, gamma=0.0):
    """BCE against targets smoothed to 0.5 (K = 2); gamma > 0: MedSGSSL's FocalLossWithSmoothing (alpha 1)."""
    terms = []
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            if y[i, j] == MISSING:
                continue
            t = float(y[i, j]) * (1 - eps) + eps / 2
            p = 1 / (1 + torch.exp(-z[i, j]))
            bce = -(t * torch.log(p) + (1 - t) * torch.log(1 - p))
            terms.append((1 - torch.exp(-bce)) ** gamma * bce)
    return sum(terms) / len(terms)


FIT_CASES = {  # name: (multi_label, width, implementation, reference)
    "ce": (False, 4, lambda z, y: E.cross_entropy_loss(z, y), lambda z, y: ref_ce_smoothed(z, y, 0.0)),
    "ce_smoothed": (False, 4, lambda z, y: E.cross_entropy_loss(z, y, label_smoothing=0.1),
                    lambda z, y: ref_ce_smoothed(z, y, 0.1)),
    "bce": (True, 3, lambda z, y: E.binary_cross_entropy_loss(z, y), lambda z, y: ref_bce_smoothed(z, y, 0.0)),
    "bce_smoothed": (True, 3, lambda z, y: E.binary_cross_entropy_loss(z, y, label_smoothing=0.05),
                     lambda z, y: ref_bce_smoothed(z, y, 0.05)),
    "focal_multilabel": (True, 3, lambda z, y: E.focal_loss(z, y, gamma=2.0),
                         lambda z, y: ref_focal_sigmoid(z, y, 2.0)),
    "focal_multilabel_alpha": (True, 3, lambda z, y: E.focal_loss(z, y, gamma=1.5, alpha=0.25),
                               lambda z, y: ref_focal_sigmoid(z, y, 1.5, 0.25)),
    "focal_multilabel_smoothed": (True, 3, lambda z, y: E.focal_loss(z, y, gamma=2.0, label_smoothing=0.05),
                                  lambda z, y: ref_bce_smoothed(z, y, 0.05, gamma=2.0)),
    "focal_multiclass": (False, 4, lambda z, y: E.focal_loss(z, y, gamma=2.0),
                         lambda z, y: ref_focal_softmax(z, y, 2.0)),
    "focal_binary_alpha": (False, 2, lambda z, y: E.focal_loss(z, y, gamma=2.0, alpha=0.25),
                           lambda z, y: ref_focal_softmax(z, y, 2.0, 0.25)),
}


@pytest.mark.parametrize("name", sorted(FIT_CASES))
def test_fit_loss_value_and_gradient_match_float64_reference(name):
    multi_label, width, impl, ref = FIT_CASES[name]
    z, y = _logits_labels(7, width, seed=11, multi_label=multi_label)
    z1, z2 = z.clone().requires_grad_(), z.clone().requires_grad_()
    got, want = impl(z1, y), ref(z2, y)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    got.backward()
    want.backward()
    torch.testing.assert_close(z1.grad, z2.grad, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_cross_entropy_equals_torch_with_label_smoothing_and_ignore_index(eps):
    z, y = _logits_labels(16, 5, seed=2, multi_label=False)
    torch_loss = torch.nn.CrossEntropyLoss(label_smoothing=eps, ignore_index=MISSING)(z, y)
    torch.testing.assert_close(E.cross_entropy_loss(z, y, label_smoothing=eps), torch_loss)


fit_shapes = st.tuples(st.integers(1, 10), st.integers(2, 6), st.integers(0, 10_000), st.booleans())


@SETTINGS
@given(fit_shapes, st.floats(0.0, 0.3))
def test_focal_with_gamma_zero_is_cross_entropy(shape, eps):
    n, width, seed, multi_label = shape
    z, y = _logits_labels(n, width, seed, multi_label=multi_label)
    plain = (E.binary_cross_entropy_loss if multi_label else E.cross_entropy_loss)(z, y, label_smoothing=eps)
    torch.testing.assert_close(E.focal_loss(z, y, gamma=0.0, label_smoothing=eps), plain)


@SETTINGS
@given(st.tuples(st.integers(1, 10), st.integers(1, 6), st.integers(0, 10_000)), st.floats(0.01, 0.99))
def test_focal_with_gamma_zero_is_alpha_weighted_bce(shape, alpha):
    z, y = _logits_labels(*shape, multi_label=True)
    known = y != MISSING
    t = y.clamp_min(0).double()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(z, t, reduction="none")
    weighted = torch.where(y == 1, alpha, 1 - alpha).double() * bce
    want = weighted[known].sum() / known.sum().clamp_min(1)
    torch.testing.assert_close(E.focal_loss(z, y, gamma=0.0, alpha=alpha), want)


@SETTINGS
@given(fit_shapes, st.floats(0.1, 5.0))
def test_focal_never_exceeds_cross_entropy(shape, gamma):
    n, width, seed, multi_label = shape
    z, y = _logits_labels(n, width, seed, multi_label=multi_label)
    plain = (E.binary_cross_entropy_loss if multi_label else E.cross_entropy_loss)(z, y)
    assert E.focal_loss(z, y, gamma=gamma) <= plain + 1e-12


LOSS_FNS = {"ce": E.cross_entropy_loss, "bce": E.binary_cross_entropy_loss, "focal": E.focal_loss,
            "focal_smoothed": lambda z, y: E.focal_loss(z, y, gamma=2.0, alpha=0.25, label_smoothing=0.1)}


@SETTINGS
@given(fit_shapes, st.sampled_from(sorted(LOSS_FNS)))
def test_masked_labels_change_neither_loss_nor_gradient(shape, name):
    n, width, seed, multi_label = shape
    multi_label = name != "ce" and (name == "bce" or multi_label)
    width = 2 if name == "focal_smoothed" and not multi_label else width  # alpha: binary or multi-label
    z, y = _logits_labels(n, width, seed, multi_label=multi_label)
    masked = (y == MISSING) if multi_label else (y == MISSING)[:, None].expand_as(z)
    other = z.clone()
    other[masked] = torch.randn(int(masked.sum()), dtype=z.dtype) * 50  # whatever the model says there
    a, b = z.clone().requires_grad_(), other.clone().requires_grad_()
    loss_a, loss_b = LOSS_FNS[name](a, y), LOSS_FNS[name](b, y)
    torch.testing.assert_close(loss_a, loss_b)
    loss_a.backward()
    loss_b.backward()
    torch.testing.assert_close(a.grad, b.grad)
    assert (a.grad[masked] == 0).all()


@pytest.mark.parametrize("name", sorted(LOSS_FNS))
def test_all_labels_missing_gives_zero_loss_and_gradient(name):
    multi_label = name in ("bce", "focal", "focal_smoothed")
    z, y = _logits_labels(4, 2, seed=0, multi_label=multi_label, missing=1.0)
    z.requires_grad_()
    loss = LOSS_FNS[name](z, y)
    loss.backward()
    assert loss.item() == 0.0 and (z.grad == 0).all()


@pytest.mark.parametrize("name", sorted(LOSS_FNS))
def test_fit_losses_finite_in_float32_under_bf16_autocast(name):
    multi_label = name in ("bce", "focal", "focal_smoothed")
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 2)
    _, y = _logits_labels(32, 2, seed=1, multi_label=multi_label)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = layer(torch.randn(32, 8))
        assert logits.dtype == torch.bfloat16
        loss = LOSS_FNS[name](logits, y)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(layer.weight.grad).all()


def test_focal_alpha_refused_for_more_than_two_classes():
    z, y = _logits_labels(4, 3, seed=0, multi_label=False, missing=0.0)
    with pytest.raises(ValueError, match="alpha=None"):
        E.focal_loss(z, y, alpha=0.25)


@SETTINGS
@given(batches, st.floats(0.01, 100.0))
def test_byol_between_0_and_8_zero_when_predictions_point_at_targets(shape, scale):
    p0, p1 = _pair(*shape)
    t0, t1 = _pair(shape[0], shape[1], seed=shape[2] + 1)
    value = L.byol(p0, p1, t0, t1).item()
    assert -1e-9 <= value <= 8 + 1e-9
    assert L.byol(t1 * scale, t0 * scale, t0, t1).item() == pytest.approx(0.0, abs=1e-9)


def test_byol_targets_get_no_gradient():
    p0, p1, t0, t1 = (x.requires_grad_() for x in (*_pair(6, 5), *_pair(6, 5, seed=1)))
    L.byol(p0, p1, t0, t1).backward()
    assert t0.grad is None and t1.grad is None and p0.grad.abs().sum() > 0


# -- segmentation-guided losses (MedSGSSL): float64 loop references and properties ------------------------------
def ref_weighted_nt_xent(z0, z1, w, tau):
    z = torch.cat([z0, z1])
    z = z / z.norm(dim=1, keepdim=True)
    n2, n = z.shape[0], z0.shape[0]
    total = 0
    for i in range(n2):
        j = (i + n) % n2
        den = sum(torch.exp(z[i] @ z[k] / tau) for k in range(n2) if k != i)
        total = total - w[i % n] * torch.log(torch.exp(z[i] @ z[j] / tau) / den)
    return total / n2


def ref_masked_token_mse(pred, target, mask):
    num, count = 0, 0
    for b in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            if mask[b, j]:
                num = num + sum((pred[b, j, d] - target[b, j, d]) ** 2 for d in range(pred.shape[2]))
                count += 1
    return num / max(count, 1)


def ref_attention_alignment(att, m, weights):
    n_layers, n, heads, _ = att.shape
    total = 0
    for layer in range(n_layers):
        per = 0
        for b in range(n):
            p = 0.9 * m[b] + 0.1
            p = p / p.sum()
            for h in range(heads):
                per = per - (p * torch.log(torch.clamp(att[layer, b, h], min=1e-8))).sum()
        total = total + weights[layer] * per / (n * heads)
    return total


def ref_cross_domain(f, d):
    a, b = f[d == 0], f[d == 1]
    if len(a) < 2 or len(b) < 2:
        return torch.zeros((), dtype=f.dtype)
    ma, mb = a.mean(0), b.mean(0)
    return 1 - (ma @ mb) / (ma.norm() * mb.norm())


def _sg_inputs(seed=0, n=5, p=6, d=4, layers=3, heads=2):
    g = torch.Generator().manual_seed(seed)
    att = torch.softmax(torch.randn(layers, n, heads, p + 1, generator=g, dtype=torch.float64), -1)[..., 1:]
    return {"pred": torch.randn(n, p, d, generator=g, dtype=torch.float64),
            "target": torch.randn(n, p, d, generator=g, dtype=torch.float64),
            "mask": torch.rand(n, p, generator=g) > 0.5, "att": att,
            "m": (torch.rand(n, p, generator=g) > 0.4).double(),
            "lw": torch.softmax(torch.arange(layers, dtype=torch.float64) / 2, 0),
            "w": 1 + 0.3 * torch.rand(n, generator=g, dtype=torch.float64),
            "f": torch.randn(n + 3, d, generator=g, dtype=torch.float64),
            "domains": torch.tensor([0, 1, 0, 1, 1, 0, 0, 1])}


SG_CASES = {
    "weighted_nt_xent": (lambda t: L.weighted_nt_xent(t["pred"][:, 0], t["target"][:, 0], t["w"], 0.1),
                         lambda t: ref_weighted_nt_xent(t["pred"][:, 0], t["target"][:, 0], t["w"], 0.1),
                         ("pred", "target")),
    "masked_token_mse": (lambda t: L.masked_token_mse(t["pred"], t["target"], t["mask"]),
                         lambda t: ref_masked_token_mse(t["pred"], t["target"], t["mask"]), ("pred", "target")),
    "attention_alignment": (lambda t: L.attention_alignment(t["att"], t["m"], t["lw"]),
                            lambda t: ref_attention_alignment(t["att"], t["m"], t["lw"]), ("att",)),
    "cross_domain_alignment": (lambda t: L.cross_domain_alignment(t["f"], t["domains"]),
                               lambda t: ref_cross_domain(t["f"], t["domains"]), ("f",)),
}


@pytest.mark.parametrize("name", sorted(SG_CASES))
@pytest.mark.parametrize("seed", [0, 1])
def test_segmentation_guided_losses_match_float64_reference(name, seed):
    ours, ref, grads = SG_CASES[name]
    a = {k: v.clone().requires_grad_(k in grads) for k, v in _sg_inputs(seed).items()}
    b = {k: v.clone().requires_grad_(k in grads) for k, v in _sg_inputs(seed).items()}
    lo, lr = ours(a), ref(b)
    assert torch.allclose(lo, lr, atol=1e-10), (float(lo), float(lr))
    lo.backward()
    lr.backward()
    for k in grads:
        assert torch.allclose(a[k].grad, b[k].grad, atol=1e-10), k


@SETTINGS
@given(shape=batches, tau=st.floats(0.05, 1.0))
def test_weighted_nt_xent_with_unit_weights_is_nt_xent_and_scales_with_a_constant(shape, tau):
    z0, z1 = _pair(*shape)
    n = z0.shape[0]
    plain = L.nt_xent(z0, z1, temperature=tau)
    assert torch.allclose(L.weighted_nt_xent(z0, z1, torch.ones(n, dtype=torch.float64), tau), plain)
    assert torch.allclose(L.weighted_nt_xent(z0, z1, torch.full((n,), 1.3, dtype=torch.float64), tau), 1.3 * plain)


@SETTINGS
@given(seed=st.integers(0, 10_000))
def test_masked_token_mse_ignores_unmasked_tokens(seed):
    t = _sg_inputs(seed)
    changed = torch.where(t["mask"][..., None], t["target"], t["target"] + 100)
    assert torch.allclose(L.masked_token_mse(t["pred"], t["target"], t["mask"]),
                          L.masked_token_mse(t["pred"], changed, t["mask"]))
    assert float(L.masked_token_mse(t["pred"], t["pred"], t["mask"])) == 0.0


@SETTINGS
@given(seed=st.integers(0, 10_000))
def test_attention_alignment_is_smallest_when_attention_equals_the_prior(seed):
    t = _sg_inputs(seed)
    prior = L.lung_attention_prior(t["m"])
    at_prior = prior[None, :, None, :].expand_as(t["att"])
    # cross-entropy >= entropy (Gibbs): attention that equals the prior minimises it
    assert float(L.attention_alignment(at_prior, t["m"])) <= float(L.attention_alignment(t["att"], t["m"])) + 1e-12
    assert torch.allclose(prior.sum(-1), torch.ones(prior.shape[0], dtype=prior.dtype))


@SETTINGS
@given(seed=st.integers(0, 10_000), scale=st.floats(0.1, 10))
def test_cross_domain_alignment_zero_for_one_domain_and_scale_invariant(seed, scale):
    t = _sg_inputs(seed)
    f, d = t["f"], t["domains"]
    assert float(L.cross_domain_alignment(f, torch.zeros_like(d))) == 0.0
    assert 0 <= float(L.cross_domain_alignment(f, d)) <= 2
    assert torch.allclose(L.cross_domain_alignment(f * scale, d), L.cross_domain_alignment(f, d))
