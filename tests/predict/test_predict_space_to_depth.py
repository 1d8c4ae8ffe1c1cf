"""predict_space_to_depth: unfoldability, torch's padding limits, and crop/pad fixes against exact observation."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from foldconv import ConvSpec, FoldError, Verdict, space_to_depth, unfold_conv
from foldconv.predict import Outcome, Prediction, SizeFix, predict_space_to_depth
from helpers import examples, integer_conv, integer_tensor


def _observe(n: int, r: int, big: torch.nn.Conv1d, small: torch.nn.Conv1d):
    """(crop exact, pad exact) of the unfolded form ``small`` of a 1-D big conv on length n, exact integer arithmetic."""
    x = integer_tensor((2, 1, n), seed=n, bound=2**20)
    ref = big(x)
    crop_to, pad_to = n // r * r, -(-n // r) * r
    try:
        crop = torch.equal(small(space_to_depth(x[..., :crop_to], r, dims=1)), ref) if crop_to else False
    except (RuntimeError, FoldError):
        crop = False
    padded = small(space_to_depth(F.pad(x, (0, pad_to - n)), r, dims=1))
    pad = padded.shape[-1] >= ref.shape[-1] and torch.equal(padded[..., : ref.shape[-1]], ref)
    return crop, pad


@pytest.mark.claim("RULE-8")
def test_crop_and_pad_fixes_equal_the_exact_observation_exhaustively():
    between_windows = 0
    for r, kk, ss, pp, mode in itertools.product((2, 3), (1, 2), (1, 2, 3), (0, 1, 2), ("zeros", "circular")):
        k, s, p = kk * r, ss * r, pp * r
        big = integer_conv(1, 2, k, stride=s, padding=p, padding_mode=mode, cls=torch.nn.Conv1d, seed=k, bound=2**20)
        spec, small = ConvSpec.make(1, 1, 2, k, stride=s, padding=p, padding_mode=mode), unfold_conv(big, r)
        for n in range(1, 4 * r + 2):
            try:
                big(torch.zeros(1, 1, n, dtype=torch.float64))
            except RuntimeError:
                assert predict_space_to_depth(spec, r, n).outcome is Outcome.INVALID
                continue
            pred = predict_space_to_depth(spec, r, n)
            crop, pad = _observe(n, r, big, small)
            fix = pred.size_fix
            assert (fix.crop_exact, fix.pad_exact) == (crop, pad), (r, k, s, p, mode, n)
            expected = Outcome.HOLDS if n % r == 0 else (Outcome.HOLDS_IF if crop or pad else Outcome.FAILS)
            assert pred.outcome is expected and pred.literal is (Verdict.EQUIVALENT if n % r == 0 else Verdict.INVALID)
            last_read = (fix.outputs[0] - 1) * s - p + k - 1
            between_windows += crop and n % r != 0 and last_read >= fix.crop_to[0]
    assert between_windows > 0  # stride > kernel: the last window is past the cropped pixels, which no window reads


def test_stride_larger_than_kernel_leaves_cropped_pixels_unread():
    pred = predict_space_to_depth(ConvSpec.make(1, 1, 2, 2, stride=4, padding=4), 2, 11)  # windows [8, 9], [12, 13]
    big = integer_conv(1, 2, 2, stride=4, padding=4, cls=torch.nn.Conv1d, bound=2**20)
    assert pred.size_fix.crop_exact and _observe(11, 2, big, unfold_conv(big, 2)) == (True, True)


@pytest.mark.parametrize("kwargs,param", [
    (dict(kernel_size=3, stride=2), "kernel_size"),
    (dict(kernel_size=4, stride=3), "stride"),
    (dict(kernel_size=4, stride=2, padding=1), "padding"),
    (dict(kernel_size=4, stride=2, padding=2, padding_mode="reflect"), "padding_mode"),
    (dict(kernel_size=4, stride=2, padding=2, padding_mode="replicate"), "padding_mode"),
    (dict(kernel_size=4, stride=2, dilation=2), "dilation"),
])
def test_a_big_conv_that_cannot_be_unfolded_fails_with_unfold_convs_reason(kwargs, param):
    spec = ConvSpec.make(2, 1, 2, **kwargs)
    pred = predict_space_to_depth(spec, 2, (8, 8))
    assert pred.outcome is Outcome.FAILS and pred.literal is Verdict.INVALID and f"{param}=" in pred.reason
    with pytest.raises(FoldError, match=f"{param}="):
        unfold_conv(spec.to_module(), 2)


@pytest.mark.parametrize("mode,padding,size", [("circular", 10, 8), ("circular", 4, 3), ("reflect", 2, 2)])
def test_padding_torch_refuses_is_invalid(mode, padding, size):
    spec = ConvSpec.make(2, 1, 2, 4, stride=2, padding=padding, padding_mode=mode)
    assert predict_space_to_depth(spec, 2, size).outcome is Outcome.INVALID
    with pytest.raises(RuntimeError):
        spec.to_module()(torch.zeros(1, 1, size, size))


def test_the_result_is_a_prediction_with_a_size_fix():
    pred = predict_space_to_depth(ConvSpec.make(2, 1, 4, 4, stride=2), 2, (7, 8))
    assert isinstance(pred, Prediction) and isinstance(pred.size_fix, SizeFix)
    assert pred.folded.describe() == "Conv2d(4->4, k=(2, 2), s=(1, 1), p=(0, 0))" and pred.codes == ("RULE-8",)
    assert pred.conditions == ("crop the input to (6, 8)", "zero-pad the input to (8, 8) and keep the first (2, 3) outputs")


def _observe_2d(size, r, big: torch.nn.Conv2d, small: torch.nn.Conv2d):
    """(crop exact, pad exact) of the unfolded form of a 2-D big conv on ``size``, exact integer arithmetic."""
    x = integer_tensor((1, 1) + tuple(size), seed=sum(size), bound=2**20)
    ref = big(x)
    crop_to = tuple(n // f * f for n, f in zip(size, r))
    pad_to = tuple(-(-n // f) * f for n, f in zip(size, r))
    try:
        crop = all(crop_to) and torch.equal(small(space_to_depth(x[..., : crop_to[0], : crop_to[1]], r)), ref)
    except (RuntimeError, FoldError):
        crop = False
    padded = small(space_to_depth(F.pad(x, (0, pad_to[1] - size[1], 0, pad_to[0] - size[0])), r))
    pad = all(a >= b for a, b in zip(padded.shape, ref.shape)) and torch.equal(padded[..., : ref.shape[2], : ref.shape[3]], ref)
    return bool(crop), bool(pad)


@st.composite
def big_convs_2d(draw):
    r = tuple(draw(st.sampled_from([2, 3])) for _ in range(2))
    k = tuple(f * draw(st.integers(1, 2)) for f in r)
    s = tuple(f * draw(st.integers(1, 4)) for f in r)
    p = tuple(f * draw(st.integers(0, 3)) for f in r)
    mode = draw(st.sampled_from(["zeros", "zeros", "circular"]))
    size = tuple(draw(st.integers(1, 3 * f + 1)) for f in r)
    return r, k, s, p, mode, size


@pytest.mark.claim("RULE-8")
@settings(max_examples=examples(150))
@given(big_convs_2d())
def test_crop_and_pad_fixes_equal_the_exact_observation_in_2d(case):
    # on 2-D maps an axis whose every window lies in zero padding makes every output the bias alone: whatever the
    # other axis crops is never read, so the crop is exact there too
    r, k, s, p, mode, size = case
    big = integer_conv(1, 2, k, stride=s, padding=p, padding_mode=mode, seed=sum(k), bound=2**20)
    spec = ConvSpec.make(2, 1, 2, k, stride=s, padding=p, padding_mode=mode)
    try:
        big(torch.zeros((1, 1) + size, dtype=torch.float64))
    except RuntimeError:
        assert predict_space_to_depth(spec, r, size).outcome is Outcome.INVALID
        return
    fix = predict_space_to_depth(spec, r, size).size_fix
    assert (fix.crop_exact, fix.pad_exact) == _observe_2d(size, r, big, unfold_conv(big, r)), case


def test_an_axis_read_only_in_padding_makes_the_other_axis_crop_exact():
    # height 2, windows at rows -2..-1 and 2..3: every output reads zero padding along the height, so it is the
    # bias alone; the width's last window reads column 2, which the crop to width 2 removes, and it does not matter
    spec = ConvSpec.make(2, 1, 2, 2, stride=(4, 2), padding=2)
    big = integer_conv(1, 2, 2, stride=(4, 2), padding=2, bound=2**20)
    pred = predict_space_to_depth(spec, 2, (2, 3))
    assert _observe_2d((2, 3), (2, 2), big, unfold_conv(big, 2)) == (True, True)
    assert pred.size_fix.crop_exact and pred.outcome is Outcome.HOLDS_IF and "bias alone" in pred.reason
