"""shift_equivariance: the analytic lattice checked exactly (integer-valued float64) against real shifted
inputs at every node of small models, and against the dense operator's shift_violations."""
from __future__ import annotations

from fractions import Fraction

import pytest
import torch
import torch.fx as fx
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from foldconv import fold_conv
from foldconv.analysis import shift_equivariance
from foldconv.equivalences.dense import dense_operator, shift_violations
from foldconv.errors import FoldError
from foldconv.layout import DepthToSpace
from helpers import examples, integer_conv, integer_weights


class _Recorder(fx.Interpreter):
    def run_node(self, n):
        out = super().run_node(n)
        self.seen[n.name] = out
        return out


def node_outputs(report, x):
    rec = _Recorder(report.rf.graph_module)
    rec.seen = {}
    with torch.no_grad():
        rec.run(x)
    return rec.seen


def _interior(report, name, axis, n_in):
    """Positions along ``axis`` of node ``name`` whose unclipped box lies inside ``[0, n_in - 1]``."""
    centre = list(report.rf.center(name))
    good = []
    for i in range(report.rf[name].positions[axis]):
        centre[axis] = i
        lo, hi = report.rf.box(name, centre, clip=False)[axis]
        good.append(lo >= 0 and hi <= n_in - 1)
    return good


def equivariant(report, outs0, outs1, name, axis, s, t, n_in):
    """y1[i] == y0[i + t] at every position where both read only the inside of their crops (None: no such i)."""
    y0, y1 = outs0[name], outs1[name]
    dim = report.rf[name].dims[axis]
    good = _interior(report, name, axis, n_in)
    pairs = [i for i in range(len(good)) if good[i] and 0 <= i + t < len(good) and good[i + t]]
    if not pairs:
        return None
    idx = torch.tensor(pairs)
    return torch.equal(y1.index_select(dim, idx), y0.index_select(dim, idx + t))


class FPN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 3, 3, stride=2, padding=1)
        self.c2 = nn.Conv2d(3, 3, 3, stride=2, padding=1)

    def forward(self, x):
        a = self.c1(x)
        return a + F.interpolate(self.c2(a), scale_factor=2, mode="nearest")


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1))
        self.down = nn.Conv2d(2, 3, 1, stride=2)

    def forward(self, x):
        return torch.relu(self.body(x) + self.down(x))


MODELS = {
    "strided": (lambda: nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(3, 2, 3, padding=1)), {"_3": (4, 1)}),
    "shuffle": (lambda: nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.PixelShuffle(2),
                                      nn.Conv2d(1, 2, 4, stride=4)), {"_1": (2, 2), "_2": (4, 1)}),
    "fpn": (FPN, {"add": (4, 2)}),
    "residual": (Residual, {"relu": (2, 1)}),
    "transposed": (lambda: nn.Sequential(nn.Conv2d(2, 3, 4, stride=4), nn.ConvTranspose2d(3, 2, 4, stride=2, padding=1)),
                   {"_1": (4, 2)}),
    "adaptive": (lambda: nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.AdaptiveMaxPool2d(12)), {"_1": (3, 2)}),
}


@pytest.mark.claim("SHIFT-1")
@pytest.mark.filterwarnings("ignore::foldconv.analysis.receptive_field.RFAlignmentWarning")  # FPN: paths of different strides
@pytest.mark.parametrize("name", sorted(MODELS))
def test_period_is_exact_and_minimal_at_every_node(name):
    build, expected = MODELS[name]
    torch.manual_seed(0)
    model = build()
    size = 18 if name == "adaptive" else 24
    report = shift_equivariance(model, (1, 2, size, size))
    for node, (period, own) in expected.items():
        assert report[node].period == (period, period) and report[node].own_period == (own, own), report.summary()
    model = integer_weights(model, seed=1, bound=3)
    gen = torch.Generator().manual_seed(2)
    big = torch.randint(-4, 5, (1, 2, size, size + 16), generator=gen).double()
    outs0 = node_outputs(report, big[..., :size, :size])
    checked = 0
    for info in list(report.nodes.values())[1:]:
        ax = info.axes[1]
        if not ax.local or ax.own_period == 0:
            continue
        for s in range(1, 2 * ax.period + 1):
            outs1 = node_outputs(report, big[..., :size, s:s + size])
            if s % ax.period == 0:  # equivariant: the output moves by s * own / period
                verdict = equivariant(report, outs0, outs1, info.name, 1, s, s * ax.own_period // ax.period, size)
                assert verdict is not False, (info.name, s)
                checked += verdict is True
            else:  # minimal: no output shift at all makes it agree (generic integer weights)
                seen = [equivariant(report, outs0, outs1, info.name, 1, s, t, size) for t in range(0, 3 * s + 1)]
                assert True not in seen, (info.name, s, seen)
    assert checked >= 2


@pytest.mark.claim("SHIFT-1")
def test_mutant_rule_is_caught():
    """A rule that took the period from the final jump alone (numerator) would say 2 after conv(s=4) + shuffle(2)."""
    net = nn.Sequential(nn.Conv2d(1, 4, 4, stride=4), nn.PixelShuffle(2))
    report = shift_equivariance(net, (1, 1, 32, 32))
    assert report.output.jump == (Fraction(2), Fraction(2))
    assert report.output.period == (4, 4) and report.output.own_period == (2, 2)
    net = integer_weights(net, seed=3, bound=3)
    big = torch.randint(-4, 5, (1, 1, 32, 48), generator=torch.Generator().manual_seed(0)).double()
    outs0, outs2 = node_outputs(report, big[..., :32, :32]), node_outputs(report, big[..., :32, 2:34])
    assert all(equivariant(report, outs0, outs2, "_1", 1, 2, t, 32) is not True for t in range(5))


@pytest.mark.claim("SHIFT-2")
@settings(max_examples=examples(12))
@given(g=st.integers(1, 2), r=st.integers(1, 3), k=st.integers(1, 3), s=st.integers(1, 2))
def test_folded_conv_period_matches_dense_operator(g, r, k, s):
    conv = integer_conv(g * r * r, 2, k, stride=s, padding=k // 2, seed=r + k)
    n = 4 * s + 2
    folded = fold_conv(conv, r)
    op, op_f = dense_operator(conv, (1, g * r * r, n, n)), dense_operator(folded, (1, g, r * n, r * n))
    rep = shift_equivariance(conv.float(), (1, g * r * r, n, n))
    rep_f = shift_equivariance(folded.float(), (1, g, r * n, r * n))
    assert rep.output.period == (s, s) and rep_f.output.period == (r * s, r * s)
    assert shift_violations(op, (s, s), (1, 1)) == 0
    assert shift_violations(op_f, (r * s, r * s), (1, 1)) == 0
    for d in range(1, r * s):  # every smaller shift of the folded map breaks it for every output shift
        assert all(shift_violations(op_f, (0, d), (0, t)) > 0 for t in range(0, 2))
    # the same folded conv behind depth_to_space: period S in input pixels, r*S on the folded grid
    pipe = shift_equivariance(nn.Sequential(DepthToSpace(r), folded.float()), (1, g * r * r, n, n))
    assert pipe.output.period == (s, s) and pipe.period_in(pipe.output_name, "_0") == (Fraction(r * s),) * 2


@pytest.mark.claim("SHIFT-2")
def test_motivating_question_folded_period_16():
    conv = nn.Conv2d(256, 8, 3, padding=1)
    assert shift_equivariance(conv, (1, 256, 14, 14)).output.period == (1, 1)
    rep = shift_equivariance(fold_conv(conv, 16), (1, 1, 224, 224))
    assert rep.output.period == (16, 16) and rep.output.own_period == (1, 1)


def test_global_pool_is_invariant_and_se_gate_keeps_the_period():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    rep = shift_equivariance(net, (1, 3, 17, 17))
    assert rep.output.period == (2, 2) and rep.output.own_period == (0, 0) and not rep.output.axes[0].local
    assert rep.stage("1").own_period == (0, 0)


def test_bad_node_and_module_names_are_fold_errors():
    rep = shift_equivariance(nn.Conv2d(1, 1, 3), (1, 1, 8, 8))
    with pytest.raises(FoldError, match="node="):
        rep["nope"]
    with pytest.raises(FoldError, match="module="):
        rep.stage("nope")
    with pytest.raises(FoldError, match="input_shape="):
        shift_equivariance(nn.Conv2d(1, 1, 3), (1, 1))
