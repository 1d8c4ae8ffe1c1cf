"""Every rule's output traces with foldconv.tracing wherever its input did, and so does its inverse's: a rewritten
model can be rewritten again (the round trip), analysed and exported like the original."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from foldconv import depth_to_space, tracing
from foldconv.models import ESPCN
from foldconv.surgery import RULES, rewrite
from helpers import integer_weights


class SubPixelTF(nn.Module):
    """A conv, then TensorFlow's depth-to-space (order DCR): to_pixel_shuffle's site."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 8, 3, padding=1)

    def forward(self, x):
        return depth_to_space(self.conv(x), 2, "dcr")


def _stage_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1)))


#: (rule with options, model, input shape): every rule of the registry on a model where it applies.
CASES = [
    ("strided_to_spd", lambda: nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU()), (1, 3, 8, 8)),
    (("conv_to_focus", {}), lambda: nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU()), (1, 3, 8, 8)),
    ("subpixel_to_transposed", lambda: ESPCN(), (1, 1, 12, 12)),  # untied sub-pixel biases: a periodic bias
    ("transposed_to_subpixel", lambda: nn.Sequential(nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1), nn.Tanh()), (1, 4, 5, 5)),
    (("fold_stage", {"stage": "1", "r": 2}), _stage_net, (1, 3, 6, 6)),
    ("fold_bn", lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), (1, 3, 6, 6)),
    ("to_pixel_shuffle", SubPixelTF, (1, 2, 4, 4)),
]


def _name(rule) -> str:
    return rule if isinstance(rule, str) else rule[0]


def test_every_rule_and_its_inverse_is_covered():
    covered = {_name(rule) for rule, _, _ in CASES}
    covered |= {RULES.get(name).inverse for name in covered if RULES.get(name).inverse}
    assert covered == set(RULES.names())


@pytest.mark.parametrize("rule,build,shape", CASES, ids=[_name(c[0]) for c in CASES])
def test_a_rewritten_model_traces_and_its_round_trip_too(rule, build, shape):
    model = integer_weights(build()).eval()
    tracing.trace(model)  # the input traces
    new, report = rewrite(model, shape, [rule])
    assert report.applied >= 1 and report.ok, report.summary()
    tracing.trace(new)  # a FoldError here: the rewrite made an untraceable model
    inverse = RULES.get(_name(rule)).inverse
    if inverse:
        back, again = rewrite(new, shape, [inverse])
        assert again.traced, again.fallback_reason  # the inverse found its sites in a traced graph
        assert again.applied >= 1 and again.ok, again.summary()
        tracing.trace(back)
        x = torch.randn(shape, dtype=torch.float64)
        assert torch.allclose(back.double()(x), model.double()(x), atol=1e-9)
