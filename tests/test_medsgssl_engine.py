"""Engine pieces MedSGSSL's fine-tuning needs: ReduceLROnPlateau, its classifier head, F1 thresholds on test."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from medssl_core.models.heads import build_head
from medssl_core.train.optim import Plateau


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=40),
       patience=st.integers(0, 6), factor=st.sampled_from([0.1, 0.3, 0.5]), mode=st.sampled_from(["max", "min"]))
def test_plateau_follows_torch_reduce_lr_on_plateau(values, patience, factor, mode):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode=mode, factor=factor, patience=patience)
    ours = Plateau(factor, patience, mode)
    for v in values:
        reference.step(v)
        ours.step(v)
        if opt.param_groups[0]["lr"] < 1e-7:  # torch ignores a change under eps = 1e-8 of the absolute lr: never met
            break                            # at real learning rates before the fit ends
        assert abs(ours.scale - opt.param_groups[0]["lr"]) < 1e-12


def test_medsgssl_classifier_head_layers():
    head = build_head({"type": "mlp", "hidden": [192], "activation": "gelu", "dropout": 0.3, "hidden_bn": False,
                       "input_norm": "layernorm"}, 384, 14)
    assert [type(m) for m in head] == [nn.LayerNorm, nn.Linear, nn.GELU, nn.Dropout, nn.Linear]
    assert head[1].in_features == 384 and head[1].out_features == 192 and head[4].out_features == 14
    assert head[3].p == 0.3
    # the defaults keep the BatchNorm heads of the other studies
    assert any(isinstance(m, nn.BatchNorm1d) for m in build_head({"type": "mlp", "hidden": [16]}, 8, 2))


def test_mask_channel_follows_the_geometry_and_skips_photometry_and_normalisation():
    from medssl_core.augment.views import AugmentConfig, BatchAugment

    g = torch.Generator().manual_seed(0)
    grey = torch.randint(0, 256, (6, 1, 32, 32), generator=g, dtype=torch.uint8)
    mask = torch.zeros(6, 1, 32, 32, dtype=torch.uint8)
    mask[:, :, 8:24, 4:12] = 1
    aug = BatchAugment(AugmentConfig(size=32, hflip=1.0, jitter=(0.5, 0.5, 0.0, 0.0), jitter_p=1.0, noise_p=1.0,
                                     noise_std=0.2, mean=(0.449,), std=(0.226,), mask_channel=True))
    out = aug(torch.cat([grey, mask], 1), torch.Generator().manual_seed(1))  # the mask as the last channel
    assert out.shape == (6, 2, 32, 32)
    torch.testing.assert_close(out[:, 1:], mask.flip(-1).float())  # flipped with the image, 0/1, untouched else
    # the same views when the masks come beside the images (a pretraining Batch)
    from medssl_core.data.batch import Batch

    view = aug.view(Batch(grey, masks=mask), torch.Generator().manual_seed(1))
    torch.testing.assert_close(view.image, out)
