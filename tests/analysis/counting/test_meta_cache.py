"""The counter's meta-result cache (``meta_cache``): every result it builds without running the kernel must be
the kernel's own (shape, strides, dtype; the input itself for an in-place op), and arguments the kernel refuses
must still reach it and raise."""
from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from foldconv.analysis.counting import count, meta_cache
from foldconv.models import meta_model
from helpers import examples

aten = torch.ops.aten
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _meta(shape, channels_last=False, dtype=torch.float32):
    t = torch.empty(shape, device="meta", dtype=dtype)
    if channels_last:
        t = t.contiguous(memory_format=torch.channels_last if t.dim() == 4 else torch.channels_last_3d)
    return t


def _same(got, expected, args):
    """Cached and kernel results agree: per output, shape, strides, dtype and identity with an argument."""
    many = isinstance(expected, (tuple, list))
    got, expected = (tuple(got), tuple(expected)) if many else ((got,), (expected,))
    return len(got) == len(expected) and all(
        (g.shape, g.stride(), g.dtype, [g is a for a in args]) == (e.shape, e.stride(), e.dtype, [e is a for a in args])
        for g, e in zip(got, expected)
    )


def _fresh(t):
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")


def _check(func, make_args):
    """``func`` through a cleared cache against the kernel, on separate but identical arguments."""
    meta_cache.clear()
    args = make_args()
    got = meta_cache.call(func, args, {})
    kernel_args = tuple(_fresh(a) if isinstance(a, torch.Tensor) else a for a in args)
    expected = func(*kernel_args)
    # identity is compared by position: map the kernel's arguments back to the cached call's
    if isinstance(expected, torch.Tensor):
        expected = next((a for a, k in zip(args, kernel_args) if expected is k), expected)
    return _same(got, expected, args)


# Elementwise ops under the known rule, with the plain arguments their schemas take.
_UNARY_CALLS = {
    "relu": (), "relu6": (), "hardtanh": (-1.0, 1.0), "gelu": (), "silu": (), "sigmoid": (), "tanh": (),
    "hardswish": (), "hardsigmoid": (), "leaky_relu": (0.1,), "elu": (), "mish": (), "softplus": (),
    "clamp": (0.0, 1.0), "clamp_min": (0.0,), "clamp_max": (1.0,), "neg": (), "abs": (), "exp": (), "log": (),
    "sqrt": (), "rsqrt": (), "reciprocal": (), "erf": (),
}


def _overload(name):
    packet = getattr(aten, name)
    return packet.default if "default" in packet.overloads() else getattr(packet, packet.overloads()[0])


def _shapes(rank):
    return itertools.product(*[(1, 3)] * rank)


def _unary_cases():
    for name, extra in _UNARY_CALLS.items():
        for inplace in (False, True):
            if inplace and not hasattr(aten, name + "_"):  # softplus, mish on older torch: no in-place op
                continue
            for rank in range(1, 6):
                for shape, cl, dtype in itertools.product(_shapes(rank), (False, True), DTYPES):
                    if not cl or rank >= 4:
                        yield name, extra, inplace, shape, cl, dtype


def _check_unary(name, extra, inplace, shape, cl, dtype):
    func = _overload(name + "_" if inplace else name)
    return _check(func, lambda: (_meta(shape, cl, dtype), *extra))


@pytest.mark.slow
@pytest.mark.claim("COUNT-12")
def test_the_known_elementwise_rule_is_the_kernels_result_on_every_size_one_pattern_layout_and_dtype():
    """All of it: ranks 1 to 5, every pattern of size-1 axes, contiguous and channels-last, four dtypes, in and
    out of place: the result built without the kernel equals the kernel's."""
    cases = list(_unary_cases())
    assert len(cases) > 10_000
    wrong = [case[:4] + case[5:] for case in cases if not _check_unary(*case)]
    assert not wrong


@pytest.mark.claim("COUNT-12")
@settings(max_examples=examples(300), deadline=None)
@given(st.sampled_from(list(_unary_cases())))
def test_the_known_elementwise_rule_on_drawn_cases(case):
    """The fast tier's share of the exhaustive test above."""
    assert _check_unary(*case)


_BINARY = ("mul", "add", "sub", "div")


@st.composite
def _binary_cases(draw):
    rank = draw(st.integers(1, 5))
    shape = tuple(draw(st.sampled_from([1, 2, 3])) for _ in range(rank))
    cl = rank >= 4 and draw(st.booleans())
    other_rank = draw(st.integers(0, rank))
    other = tuple(draw(st.sampled_from([1, s])) for s in shape[rank - other_rank:])
    other_cl = other_rank == rank >= 4 and draw(st.booleans())
    swap = draw(st.booleans())  # ``scale * x``: the smaller operand first
    return draw(st.sampled_from(_BINARY)), draw(st.booleans()), shape, cl, other, other_cl, draw(st.sampled_from(DTYPES)), swap


@pytest.mark.claim("COUNT-12")
@settings(max_examples=examples(300), deadline=None)
@given(_binary_cases())
def test_binary_elementwise_results_from_the_cache_match_the_kernel(case):
    """Broadcasting operands of every layout, either order: the known rule where it applies, the checked class
    recipe elsewhere; a second size of the same class comes from the cache and still equals the kernel."""
    name, inplace, shape, cl, other, other_cl, dtype, swap = case
    inplace = inplace and not swap
    func = getattr(aten, name + "_" if inplace else name).Tensor

    def make(sizes=shape, other_sizes=other):
        x, y = _meta(sizes, cl, dtype), _meta(other_sizes, other_cl, dtype)
        return (y, x) if swap else (x, y)

    assert _check(func, make)
    bigger = tuple(s if s == 1 else s + 2 for s in shape)  # same size-1 pattern, other sizes
    bigger_other = tuple(1 if o == 1 else b for o, b in zip(other, bigger[len(bigger) - len(other):]))
    args = make()
    meta_cache.call(func, args, {})  # stores the class
    args = make(bigger, bigger_other)
    got = meta_cache.call(func, args, {})
    expected = func(*(_fresh(a) for a in args))
    assert (got.shape, got.stride(), got.dtype) == (expected.shape, expected.stride(), expected.dtype)


def test_a_wrong_known_rule_would_be_caught(monkeypatch):
    """Mutation check: a rule that got the layout wrong (contiguous strides for a channels-last input) fails."""
    monkeypatch.setattr(meta_cache, "_class_rebuild",
                        lambda recipe, x: torch.empty(x.shape, dtype=x.dtype, device="meta"))
    assert not _check(aten.relu.default, lambda: (_meta((2, 3, 4, 5), True),))
    assert _check(aten.relu.default, lambda: (_meta((2, 3, 4, 5), False),))  # contiguous: right by chance


# ------------------------------------------------------------------ per layout class: output-size formulas


@st.composite
def _convs(draw):
    """Two convs of one layout class (same rank, direction, layout, bias or not), all else drawn apart."""
    dims = draw(st.integers(1, 3))
    transposed = draw(st.booleans())
    bias = draw(st.booleans())
    channels_last = dims == 2 and draw(st.booleans())
    convs = []
    for _ in range(2):
        groups = draw(st.sampled_from([1, 2, 3]))
        cin, cout = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
        k, s, d = (tuple(draw(st.integers(1, 3)) for _ in range(dims)) for _ in range(3))
        p = tuple(draw(st.integers(0, 2)) for _ in range(dims))
        kind = ([nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d] if transposed else [nn.Conv1d, nn.Conv2d, nn.Conv3d])[dims - 1]
        conv = kind(cin, cout, k, stride=s, padding=p, dilation=d, groups=groups, bias=bias, device="meta")
        convs.append((conv, tuple(draw(st.integers(1, 9)) for _ in range(dims))))
    return convs, channels_last


@pytest.mark.claim("COUNT-12")
@settings(max_examples=examples(60), deadline=None)
@given(_convs())
def test_convolutions_from_the_layout_class_cache_match_the_kernel(case):
    """Two convs of one class (different channels, kernels, groups, strides, sizes): the second comes from the
    output-size formula and the layout stored for the first; it must equal the kernel's result, and a size
    the conv cannot take must still raise."""
    convs, channels_last = case
    meta_cache.clear()
    for conv, size in convs:
        x = torch.empty(2, conv.in_channels, *size, device="meta")
        weight = conv.weight
        if channels_last:  # a channels-last weight and input
            x, weight = x.to(memory_format=torch.channels_last), weight.to(memory_format=torch.channels_last)
        args = (x, weight, conv.bias, list(conv.stride), list(conv.padding), list(conv.dilation), conv.transposed,
                list(conv.output_padding), conv.groups)
        try:
            expected = aten.convolution.default(*args)
        except RuntimeError:
            with pytest.raises(RuntimeError):
                meta_cache.call(aten.convolution.default, args, {})
            continue
        got = meta_cache.call(aten.convolution.default, args, {})
        assert (got.shape, got.stride(), got.dtype) == (expected.shape, expected.stride(), expected.dtype)


@pytest.mark.parametrize("bad", ["channels", "bias", "stride", "groups"])
def test_a_conv_the_kernel_refuses_still_reaches_the_kernel_after_its_class_is_stored(bad):
    w, b = torch.empty(8, 4, 3, 3, device="meta"), torch.empty(8, device="meta")
    good = (torch.empty(1, 4, 9, 9, device="meta"), w, b, [1, 1], [1, 1], [1, 1], False, [0, 0], 1)
    meta_cache.clear()
    meta_cache.call(aten.convolution.default, good, {})
    args = list(good)
    if bad == "channels":
        args[0] = torch.empty(1, 5, 9, 9, device="meta")
    elif bad == "bias":
        args[2] = torch.empty(7, device="meta")
    elif bad == "stride":
        args[3] = [0, 1]
    else:
        args[8] = 3
    try:  # the cache does what the kernel does: raise, or (meta's bias length check is lax) the same result
        expected = aten.convolution.default(*args)
    except Exception as exc:
        with pytest.raises(type(exc)):
            meta_cache.call(aten.convolution.default, tuple(args), {})
        return
    got = meta_cache.call(aten.convolution.default, tuple(args), {})
    assert (got.shape, got.stride(), got.dtype) == (expected.shape, expected.stride(), expected.dtype)


@st.composite
def _reductions(draw):
    rank = draw(st.integers(1, 5))
    shapes = [tuple(draw(st.integers(2, 4)) for _ in range(rank)) for _ in range(2)]
    ones = [draw(st.booleans()) for _ in range(rank)]  # one size-1 pattern for both sizes
    shapes = [tuple(1 if o else s for s, o in zip(shape, ones)) for shape in shapes]
    dims = draw(st.lists(st.integers(-rank, rank - 1), min_size=1, max_size=rank))
    return (draw(st.sampled_from([aten.mean.dim, aten.sum.dim_IntList])), shapes, rank >= 4 and draw(st.booleans()),
            dims, draw(st.booleans()), draw(st.sampled_from(DTYPES)))


@pytest.mark.claim("COUNT-12")
@settings(max_examples=examples(150), deadline=None)
@given(_reductions())
def test_reductions_from_the_layout_class_cache_match_the_kernel(case):
    func, shapes, cl, dims, keepdim, dtype = case
    meta_cache.clear()
    for shape in shapes:
        args = (_meta(shape, cl, dtype), dims, keepdim)
        try:
            expected = func(*(_fresh(a) if isinstance(a, torch.Tensor) else a for a in args))
        except (RuntimeError, IndexError):  # repeated dims
            with pytest.raises((RuntimeError, IndexError)):
                meta_cache.call(func, args, {})
            continue
        got = meta_cache.call(func, args, {})
        assert (got.shape, got.stride(), got.dtype) == (expected.shape, expected.stride(), expected.dtype)


@st.composite
def _matmuls(draw):
    cases = []
    a_t, b_t, bias_rank = draw(st.booleans()), draw(st.booleans()), draw(st.sampled_from([None, 1, 2]))
    for _ in range(2):
        n, k, m = (draw(st.integers(1, 5)) for _ in range(3))
        bad = draw(st.integers(0, 9)) == 0  # now and then an inner size that does not fit
        cases.append((n, k, m, k + 1 if bad else k))
    return a_t, b_t, bias_rank, cases, draw(st.sampled_from(DTYPES))


@pytest.mark.claim("COUNT-12")
@settings(max_examples=examples(150), deadline=None)
@given(_matmuls())
def test_matmuls_from_the_layout_class_cache_match_the_kernel(case):
    a_t, b_t, bias_rank, sizes, dtype = case
    meta_cache.clear()
    for n, k, m, k2 in sizes:
        a = _meta((k, n), dtype=dtype).t() if a_t else _meta((n, k), dtype=dtype)
        b = _meta((m, k2), dtype=dtype).t() if b_t else _meta((k2, m), dtype=dtype)
        if bias_rank is None:
            func, args = aten.mm.default, (a, b)
        else:
            func, args = aten.addmm.default, (_meta((m,) if bias_rank == 1 else (1, m), dtype=dtype), a, b)
        try:
            expected = func(*args)
        except RuntimeError:
            with pytest.raises(RuntimeError):
                meta_cache.call(func, args, {})
            continue
        got = meta_cache.call(func, args, {})
        assert (got.shape, got.stride(), got.dtype) == (expected.shape, expected.stride(), expected.dtype)


# ------------------------------------------------------------------------------------- whole models


class _Outer(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


@pytest.mark.claim("COUNT-12")
@pytest.mark.parametrize("name", ["mobilenet_v3_small", "efficientnet_b0", "swin_t", "shufflenet_v2_x0_5"])
def test_cached_meta_results_change_nothing(name):
    model = meta_model(name)
    meta_cache.clear()
    cold, warm = count(model, (1, 3, 96, 96)), count(model, (1, 3, 96, 96))
    with _Outer():  # another mode active: every kernel runs
        kernels = count(model, (1, 3, 96, 96))
    for rep in (warm, kernels):
        assert rep.layers == cold.layers
        assert rep.peak_activation_bytes == cold.peak_activation_bytes


# ------------------------------------------------- known rules that keep Python meta kernels off the path


def _sliced(shape, dtype, pad):
    """A meta tensor of ``shape`` that is a slice of a wider one (row-major strides, a storage offset)."""
    wide = torch.empty((*shape[:-1], shape[-1] + pad), device="meta", dtype=dtype)
    return wide[..., pad:] if pad else wide


@pytest.mark.claim("COUNT-12")
@settings(max_examples=examples(100), deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4), st.sampled_from([0, 2]), st.sampled_from([0, 3]),
       st.sampled_from([None, "m", "1m", "nm", "n1"]), st.sampled_from(DTYPES))
def test_matmuls_of_slices_and_every_bias_are_the_kernels_result(n, k, m, pad_a, pad_b, bias, dtype):
    """mm/addmm give a fresh standard-contiguous matrix without a kernel run, whatever the operands' strides."""
    a, b = _sliced((n, k), dtype, pad_a), _sliced((k, m), dtype, pad_b)
    shapes = {"m": (m,), "1m": (1, m), "nm": (n, m), "n1": (n, 1)}
    func, args = (aten.mm.default, (a, b)) if bias is None else (aten.addmm.default, (_meta(shapes[bias], dtype=dtype), a, b))
    meta_cache.clear()
    got = meta_cache.call(func, args, {})
    expected = func(*args)
    assert (got.shape, got.stride(), got.dtype) == (expected.shape, expected.stride(), expected.dtype)


@pytest.mark.claim("COUNT-12")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("affine", [True, False])
def test_inference_batch_norm_from_the_known_rule_is_the_kernels_result(dtype, affine):
    for rank in range(2, 6):
        for shape, cl in itertools.product(_shapes(rank), (False, True)):
            if cl and rank < 4:
                continue
            shape = (shape[0], 4, *shape[2:])
            v = lambda: _meta((4,), dtype=dtype)  # noqa: E731
            for func, tail in ((aten.native_batch_norm.default, (False, 0.1, 1e-5)),
                               (aten._native_batch_norm_legit_no_training.default, (0.1, 1e-5))):
                w, b = (v(), v()) if affine else (None, None)
                assert _check(func, lambda: (_meta(shape, cl, dtype), w, b, v(), v(), *tail)), (func, shape, cl)


@pytest.mark.claim("COUNT-12")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_layer_norm_from_the_known_rule_is_the_kernels_result(dtype):
    for rank in range(1, 5):
        for shape in _shapes(rank):
            for k in range(1, rank + 1):
                normalized = list(shape[rank - k:])
                for affine in (True, False):
                    w = _meta(tuple(normalized), dtype=dtype) if affine else None
                    assert _check(aten.native_layer_norm.default,
                                  lambda: (_meta(shape, dtype=dtype), normalized, w, w, 1e-5)), (shape, k, affine)


@pytest.mark.claim("COUNT-12")
@settings(max_examples=examples(120), deadline=None)
@given(st.sampled_from(sorted(set(_UNARY_CALLS) | set(_BINARY))), st.booleans(), st.lists(st.integers(1, 3), min_size=1, max_size=4),
       st.sampled_from([0, 1, 3]), st.sampled_from([None, "same", "last", "slice"]), st.sampled_from(DTYPES))
def test_elementwise_ops_on_slices_are_the_kernels_result(name, inplace, shape, pad, other, dtype):
    """A slice of a wider tensor (an LSTM's gates): in place the input itself, out of place a fresh tensor of the
    kernel's strides, with or without a second operand."""
    shape = tuple(shape)
    if name in _BINARY:
        extra = {None: (), "same": (_meta(shape, dtype=dtype),), "last": (_meta(shape[-1:], dtype=dtype),),
                 "slice": (_sliced(shape, dtype, 2),)}[other] or (_meta(shape, dtype=dtype),)
        func = getattr(aten, name + "_" if inplace else name).Tensor
    else:
        extra = _UNARY_CALLS[name]
        if inplace and not hasattr(aten, name + "_"):
            return
        func = _overload(name + "_" if inplace else name)
    assert _check(func, lambda: (_sliced(shape, dtype, pad), *extra))


def test_models_of_common_layers_count_without_importing_torch_dynamo():
    """The first count in a fresh process stays off torch._dynamo (whose import costs a second or more): the
    counting mode's handler is not wrapped, and the Python meta kernels of matmuls, batch and layer norm,
    reductions, elementwise ops on slices and transposes, cat/stack (recurrent layers), bmm and softmax
    (attention) and bilinear/bicubic upsampling are replaced by the known rules. Each model is checked right
    after its own count, so a failure names the model that pulled it in."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from torch import nn\n"
        "from foldconv.analysis.counting import count\n"
        "class Attention(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.mha = nn.MultiheadAttention(16, 4, batch_first=True)\n"
        "    def forward(self, x):\n"
        "        return self.mha(x, x, x)[0]\n"
        "class Recurrent(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.lstm = nn.LSTM(8, 16, 2, bidirectional=True, batch_first=True)\n"
        "        self.gru = nn.GRU(32, 16, 2, bidirectional=True, batch_first=True)\n"
        "    def forward(self, x):\n"
        "        return self.gru(self.lstm(x)[0])[0]\n"
        "models = {\n"
        "    'common layers': (nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2), nn.Hardswish(),\n"
        "        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 4)), (2, 3, 16, 16)),\n"
        "    'LSTM + GRU': (Recurrent(), (2, 5, 8)),\n"
        "    'MultiheadAttention': (Attention(), (2, 5, 16)),\n"
        "    'bilinear': (nn.Upsample(scale_factor=2, mode='bilinear'), (1, 3, 8, 8)),\n"
        "    'bicubic, align_corners': (nn.Upsample(size=(13, 7), mode='bicubic', align_corners=True), (1, 3, 8, 8)),\n"
        "    'transformer encoder': (nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 4, 32, batch_first=True), 2), (2, 5, 16)),\n"
        "}\n"
        "assert 'torch._dynamo' not in sys.modules\n"
        "for name, (model, shape) in models.items():\n"
        "    assert count(model, shape).flops > 0\n"
        "    print(name, 'torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 6 and all(line.endswith(" False") for line in lines), lines


@pytest.mark.claim("COUNT-12")
def test_convolutions_of_every_size_one_pattern_from_the_known_rule_are_the_kernels_result():
    """The first conv of a class (no layout stored yet): standard operands that torch cannot read as channels-last
    give a standard result without a kernel run; every size-1 pattern of input and weight, grouped and not."""
    for xs in itertools.product((1, 3), repeat=4):
        for out_c, kh, kw, groups in itertools.product((1, 3), (1, 3), (1, 3), (1, 3)):
            n, c, h, w = xs
            if c % groups or out_c % groups or kh > h or kw > w:
                continue
            args = (_meta((n, c, h, w)), _meta((out_c, c // groups, kh, kw)), None, [1, 1], [0, 0], [1, 1], False, [0, 0], groups)
            assert _check(aten.convolution.default, lambda a=args: tuple(_fresh(t) if isinstance(t, torch.Tensor) else t for t in a)), (xs, out_c, kh, kw, groups)


@pytest.mark.claim("COUNT-12")
@settings(max_examples=examples(120), deadline=None)
@given(st.sampled_from(["max", "avg", "adaptive"]), st.tuples(*[st.integers(1, 9)] * 4), st.tuples(st.integers(1, 4), st.integers(1, 4)),
       st.tuples(st.integers(1, 3), st.integers(1, 3)), st.tuples(st.integers(0, 2), st.integers(0, 2)),
       st.tuples(st.integers(1, 2), st.integers(1, 2)), st.booleans(), st.sampled_from(DTYPES))
def test_pooling_from_the_known_rule_is_the_kernels_result(kind, shape, k, stride, pad, dilation, ceil, dtype):
    """Max, average and adaptive average pooling built from their output-size formulas equal the kernel's result;
    arguments the kernel refuses still reach it and raise."""
    if kind == "max":
        func, args = aten.max_pool2d_with_indices.default, (_meta(shape, dtype=dtype), list(k), list(stride), list(pad), list(dilation), ceil)
    elif kind == "avg":
        func, args = aten.avg_pool2d.default, (_meta(shape, dtype=dtype), list(k), list(stride), list(pad), ceil)
    else:
        func, args = aten._adaptive_avg_pool2d.default, (_meta(shape, dtype=dtype), list(k))
    try:
        expected = func(*tuple(_fresh(a) if isinstance(a, torch.Tensor) else a for a in args))
    except RuntimeError:
        with pytest.raises(RuntimeError):
            meta_cache.call(func, args, {})
        return
    meta_cache.clear()
    got = meta_cache.call(func, args, {})
    assert _same(got, expected, args)


@pytest.mark.claim("COUNT-12")
@pytest.mark.parametrize("func", [aten._softmax.default, aten._log_softmax.default])
def test_softmax_from_the_known_rule_is_the_kernels_result(func):
    for rank in range(1, 5):
        for shape, dtype in itertools.product(_shapes(rank), DTYPES):
            for dim in range(-rank, rank):
                assert _check(func, lambda: (_meta(shape, dtype=dtype), dim, False)), (shape, dim, dtype)


def _permuted(shape, dtype, order, pad):
    """A tensor of ``shape`` whose memory runs in axis ``order`` (outermost first), cut from a wider one when ``pad``."""
    stored = [shape[d] + (pad if i == len(order) - 1 else 0) for i, d in enumerate(order)]
    wide = torch.empty(stored, device="meta", dtype=dtype)
    if pad:
        wide = wide[..., pad:]
    return wide.permute(*[order.index(d) for d in range(len(shape))])


@pytest.mark.claim("COUNT-12")
@settings(max_examples=120, deadline=None)
@given(st.integers(1, 4).flatmap(lambda rank: st.tuples(st.tuples(*[st.integers(1, 4)] * rank), st.permutations(range(rank)))),
       st.sampled_from([0, 2]), st.sampled_from(["mul", "add", "sub", "div"]),
       st.sampled_from([None, "scalar", "same", "contiguous", "last", "permuted"]), st.sampled_from(DTYPES))
def test_elementwise_ops_on_transposed_inputs_are_the_kernels_result(layout, pad, name, other, dtype):
    """Attention's transposed heads (``q * scale``, a residual sum): out of place, the result is contiguous in the
    first operand's axis order, whatever the second operand's strides; every size-1 pattern, slices too."""
    shape, order = layout
    extra = {None: (), "scalar": (0.5,), "same": (_permuted(shape, dtype, list(order), 0),), "contiguous": (_meta(shape, dtype=dtype),),
             "last": (_meta(shape[-1:], dtype=dtype),), "permuted": (_permuted(shape, dtype, list(reversed(order)), 0),)}[other]
    func = getattr(aten, name).Tensor
    if other is None:  # mul.Scalar, as attention's scaling reaches the dispatcher
        func, extra = aten.mul.Scalar, (2.0,)
    assert _check(func, lambda: (_permuted(shape, dtype, list(order), pad), *extra))


def _joined_cases():
    """cat and stack: every size-1 pattern of ranks 1 to 4, every axis, one to three operands (for cat also sizes
    that differ along the axis), four dtypes; channels-last and sliced operands (the kernel decides those)."""
    for func in (aten.cat.default, aten.stack.default):
        stack = func is aten.stack.default
        for rank in range(1, 5):
            for shape, dtype in itertools.product(_shapes(rank), DTYPES):
                for dim in range(-rank - stack, rank + stack):
                    for k in (1, 2, 3):
                        growth = [0] * k if stack else list(range(k))
                        yield func, tuple(tuple(s + g if d == dim % rank else s for d, s in enumerate(shape)) for g in growth), dim, dtype, None
        yield func, ((2, 3, 1, 4),) * 2, 1, torch.float32, "channels-last"
        yield func, ((2, 3, 1, 4),) * 2, 1, torch.float32, "sliced"


def _check_joined(func, shapes, dim, dtype, kind):
    def operand(shape):
        return _sliced(shape, dtype, 2) if kind == "sliced" else _meta(shape, kind == "channels-last", dtype)
    return _check(func, lambda: ([operand(shape) for shape in shapes], dim))


@pytest.mark.slow
@pytest.mark.claim("COUNT-12")
def test_cat_and_stack_from_the_known_rule_are_the_kernels_result():
    wrong = [case for case in _joined_cases() if not _check_joined(*case)]
    assert not wrong


@pytest.mark.claim("COUNT-12")
@settings(max_examples=60, deadline=None)
@given(st.sampled_from(list(_joined_cases())))
def test_cat_and_stack_from_the_known_rule_on_drawn_cases(case):
    """The fast tier's share of the exhaustive test above."""
    assert _check_joined(*case)


def _upsample_cases():
    """Bilinear and bicubic: every size-1 pattern of the input, output sizes with and without size-1 axes, both
    align_corners, with and without scales, three dtypes, contiguous and channels-last (the kernel decides that)."""
    for func in (aten.upsample_bilinear2d.default, aten.upsample_bicubic2d.default):
        for shape in _shapes(4):
            yield from itertools.product([func], [shape], ((1, 1), (7, 9), (1, 5)), (False, True), ((), (2.0, 3.0)),
                                         (torch.float32, torch.float64, torch.bfloat16), (False, True))


def _check_upsample(func, shape, size, align, scales, dtype, cl):
    return _check(func, lambda: (_meta(shape, cl, dtype), list(size), align, *scales))


@pytest.mark.slow
@pytest.mark.claim("COUNT-12")
def test_upsampling_from_the_known_rule_is_the_kernels_result():
    wrong = [case for case in _upsample_cases() if not _check_upsample(*case)]
    assert not wrong


@pytest.mark.claim("COUNT-12")
@settings(max_examples=40, deadline=None)
@given(st.sampled_from(list(_upsample_cases())))
def test_upsampling_from_the_known_rule_on_drawn_cases(case):
    """The fast tier's share of the exhaustive test above."""
    assert _check_upsample(*case)


@pytest.mark.claim("COUNT-12")
@settings(max_examples=100, deadline=None)
@given(st.tuples(*[st.integers(1, 3)] * 4), st.booleans(), st.booleans(), st.sampled_from(DTYPES))
def test_bmm_from_the_known_rule_is_the_kernels_result(sizes, a_transposed, b_transposed, dtype):
    """bmm of attention's operands (transposed or not, every size-1 pattern): a fresh standard-contiguous result."""
    batch, n, k, m = sizes

    def operand(rows, cols, transposed):
        return _meta((batch, cols, rows), dtype=dtype).transpose(1, 2) if transposed else _meta((batch, rows, cols), dtype=dtype)

    assert _check(aten.bmm.default, lambda: (operand(n, k, a_transposed), operand(k, m, b_transposed)))


def test_safe_softmax_from_the_known_rule_is_the_kernels_result():
    for rank in range(1, 5):
        for shape, dtype in itertools.product(_shapes(rank), (torch.float32, torch.float16)):
            for dim in range(-rank, rank):
                assert _check(aten._safe_softmax.default, lambda: (_meta(shape, dtype=dtype), dim)), (shape, dim, dtype)


@pytest.mark.parametrize("case", ["interleaved columns", "disjoint blocks", "overlapping blocks", "itself"])
def test_in_place_ops_on_slices_of_one_buffer_are_the_kernels_result(case):
    """An LSTM's or GRU's gates: ``r.mul_(h)`` where both are slices of one buffer. Disjoint slices give the input
    itself without a kernel run; where torch may see a partial overlap, the kernel runs and decides (it raises)."""
    buffer = torch.empty(4, 48, device="meta")
    x, y = {
        "interleaved columns": (buffer[:, :16], buffer[:, 16:32]),
        "disjoint blocks": (buffer[:2], buffer[2:]),
        "overlapping blocks": (buffer.view(-1)[:100], buffer.view(-1)[50:150]),
        "itself": (buffer[:2], buffer[:2]),
    }[case]
    meta_cache.clear()
    try:
        expected = aten.mul_.Tensor(x, y)
    except RuntimeError:
        with pytest.raises(RuntimeError):
            meta_cache.call(aten.mul_.Tensor, (x, y), {})
        return
    assert expected is x
    assert meta_cache.call(aten.mul_.Tensor, (x, y), {}) is x


class _Stack(nn.Module):
    """A recurrent layer called twice (the second call from its record within one count), then a linear head."""

    def __init__(self, layer, features):
        super().__init__()
        self.layer = layer
        self.head = nn.Linear(features, 3)

    def forward(self, x):
        self.layer(x)
        return self.head(self.layer(x)[0])


_RECURRENT = {
    "LSTM 2-layer bidirectional": (lambda: nn.LSTM(8, 6, 2, bidirectional=True, batch_first=True), 12, (2, 5, 8)),
    "LSTM projected, time first": (lambda: nn.LSTM(8, 6, 1, proj_size=4), 4, (5, 2, 8)),
    "LSTM without bias": (lambda: nn.LSTM(8, 6, 2, bias=False), 6, (5, 2, 8)),
    "GRU bidirectional": (lambda: nn.GRU(8, 6, 2, bidirectional=True), 12, (5, 2, 8)),
    "RNN tanh": (lambda: nn.RNN(8, 6, 3), 6, (5, 2, 8)),
    "RNN relu, batch first": (lambda: nn.RNN(8, 6, 1, nonlinearity="relu", batch_first=True), 6, (2, 5, 8)),
}


@pytest.mark.parametrize("name", list(_RECURRENT))
@pytest.mark.parametrize("dtype", [None, torch.float16])
def test_recurrent_layers_counted_again_from_their_record_change_nothing(name, dtype):
    """A recurrent layer's whole-sequence call met before (the same layer again, a model counted again) adds its
    record instead of running thousands of ops: every layer row, the peak and the unsupported ops stay exact."""
    make, features, shape = _RECURRENT[name]
    torch.manual_seed(0)
    model = _Stack(make(), features)
    meta_cache.clear()
    cold = count(model, shape, dtype=dtype)
    assert meta_cache.RECORDS  # the run was recorded...
    warm = count(model, shape, dtype=dtype)
    with _Outer():  # another mode active: nothing remembered, every kernel runs
        kernels = count(model, shape, dtype=dtype)
    for rep in (warm, kernels):
        assert rep.layers == cold.layers
        assert rep.peak_activation_bytes == cold.peak_activation_bytes
        assert rep.unsupported_ops == cold.unsupported_ops
    assert cold.layer("layer").calls == 2 and cold.complete


def test_a_recurrent_record_is_not_used_after_the_cost_table_changed():
    """Mutation check: a rule replaced after the record changes the next count (the record is keyed on the table's
    version); with the built-in rule back, the count is the first one again."""
    from foldconv.analysis.counting import OP_COSTS, OpCost, register_op_cost

    model = nn.GRU(8, 6, 2)
    meta_cache.clear()
    before = count(model, (5, 2, 8))
    builtin = OP_COSTS.find(torch.ops.aten.sigmoid_)
    register_op_cost(torch.ops.aten.sigmoid_, lambda inputs, outputs: OpCost(), replace=True)
    try:
        after = count(model, (5, 2, 8))
    finally:
        register_op_cost(torch.ops.aten.sigmoid_, builtin, replace=True)
    assert after.flops < before.flops
    assert count(model, (5, 2, 8)).layers == before.layers


def test_a_per_call_cost_reaches_a_recurrent_layer_counted_before():
    from foldconv.analysis.counting import OpCost

    model = nn.LSTM(8, 6, 1)
    meta_cache.clear()
    plain = count(model, (5, 2, 8))
    assert count(model, (5, 2, 8)).layers == plain.layers
    free = count(model, (5, 2, 8), op_costs={torch.ops.aten.addmm: lambda inputs, outputs: OpCost()})
    assert free.macs == 0 < plain.macs
