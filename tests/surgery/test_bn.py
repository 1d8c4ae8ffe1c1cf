"""BatchNorm folding: bit-identical to torch's fuse_conv_bn_eval, refused in training mode, and as a rewrite rule."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from foldconv import Verdict
from foldconv.surgery import fold_bn, rewrite
from helpers import raises_fold_error

CASES = [
    (nn.Conv1d(4, 6, 3, bias=True), nn.BatchNorm1d(6)),
    (nn.Conv2d(4, 6, 3, groups=2, bias=False), nn.BatchNorm2d(6)),
    (nn.Conv2d(4, 6, 1, bias=True), nn.BatchNorm2d(6, affine=False)),
    (nn.Conv3d(2, 4, 2, bias=False), nn.BatchNorm3d(4, eps=1e-3)),
]


def _trained(bn: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=gen))
        bn.running_var.copy_(torch.rand(bn.num_features, generator=gen) + 0.5)
        if bn.affine:
            bn.weight.copy_(torch.randn(bn.num_features, generator=gen))
            bn.bias.copy_(torch.randn(bn.num_features, generator=gen))
    return bn.eval()


@pytest.mark.claim("SURGERY-10")
@pytest.mark.parametrize("index", range(len(CASES)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fold_bn_is_bit_identical_to_torch_fusion(index, dtype):
    conv, bn = CASES[index]
    conv, bn = conv.to(dtype).eval(), _trained(bn.to(dtype), index)
    ours, torchs = fold_bn(conv, bn), fuse_conv_bn_eval(conv, bn)
    assert torch.equal(ours.weight, torchs.weight) and torch.equal(ours.bias, torchs.bias)
    assert ours.weight.dtype == dtype and ours is not conv
    x = torch.randn((2, conv.in_channels) + (5,) * (conv.weight.dim() - 2), dtype=dtype)
    assert torch.equal(ours(x), torchs(x))


@pytest.mark.claim("SURGERY-10")
def test_fold_bn_refuses_what_it_cannot_fold():
    conv = nn.Conv2d(3, 4, 3)
    raises_fold_error("bn.training", fold_bn, conv, nn.BatchNorm2d(4).train())
    raises_fold_error("bn.num_features", fold_bn, conv, nn.BatchNorm2d(5).eval())
    raises_fold_error("bn", fold_bn, conv, nn.LayerNorm(4))
    raises_fold_error("bn.track_running_stats", fold_bn, conv, nn.BatchNorm2d(4, track_running_stats=False).eval())
    raises_fold_error("conv", fold_bn, nn.Linear(3, 4), nn.BatchNorm2d(4).eval())


@pytest.mark.claim("SURGERY-10")
def test_fold_bn_rule_merges_every_pair_and_says_why_not_in_training_mode():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), _trained(nn.BatchNorm2d(4), 1), nn.ReLU(), nn.Conv2d(4, 4, 3), _trained(nn.BatchNorm2d(4), 2))
    new, report = rewrite(model.eval(), (1, 3, 8, 8), ["fold_bn"])
    assert [(s.pattern, s.location, s.applied) for s in report.sites] == [("Conv2d+BatchNorm2d", "0", True), ("Conv2d+BatchNorm2d", "3", True)]
    assert all(s.verdict is Verdict.EQUIVALENT and not s.exact for s in report.sites) and report.ok
    assert not any(isinstance(m, nn.BatchNorm2d) for m in new.modules())
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(new(x), model(x), atol=1e-5)
    _, training = rewrite(model.train(), (1, 3, 8, 8), ["fold_bn"])
    assert not any(s.applied for s in training.sites) and "bn.training=True" in training.sites[0].reason


@pytest.mark.claim("SURGERY-10")
def test_a_batchnorm_between_conv_and_pixel_shuffle_is_folded_when_the_rule_needs_it():
    model = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), _trained(nn.BatchNorm2d(8), 3), nn.PixelShuffle(2)).eval()
    new, report = rewrite(model, (1, 2, 4, 4), ["subpixel_to_transposed"])
    site, = report.sites
    assert site.pattern == "Conv2d+BatchNorm2d+PixelShuffle (sub-pixel)" and site.applied and report.ok
    assert not any(isinstance(m, nn.BatchNorm2d) for m in new.modules())
    _, kept = rewrite(model, (1, 2, 4, 4), ["subpixel_to_transposed"], fold_bn=False)
    assert kept.sites == ()  # without BatchNorm folding the conv is not followed by the shuffle
