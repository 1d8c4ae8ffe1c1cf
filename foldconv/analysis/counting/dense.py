"""Dense-equivalent costs of a convolution: D2L's weight-sharing argument in numbers.

A convolution is a linear map from ``C_in·∏n`` input numbers to ``C_out·∏o`` output numbers, so a
fully-connected layer with the same input and output tensors needs ``(C_in·∏n)·(C_out·∏o)`` weights
(+ ``C_out·∏o`` biases). D2L's two principles shrink that in two steps:

- **locality** keeps only the operator entries whose input lies in the output's window: a *locally
  connected* layer with one weight per (output, input) pair it touches, ``operator_nonzeros`` of them;
- **translation invariance** ties those entries to the ``C_out·(C_in/groups)·∏k`` distinct weights of
  the conv kernel (each reused ``reuse`` times on average).

``operator_nonzeros`` counts the (output element, input element) pairs the conv actually touches,
padding included: taps that fall on zero padding touch nothing; circular/reflect/replicate padding fold
them back onto real inputs (and count a pair once even when two taps land on it). It is computed
analytically, per axis, because the window structure factorises over axes.

D2L's figures (§6.1): a 1000×1000 single-channel image into 1000 hidden units needs
``fc_params((1, 1000, 1000), (1000,), bias=False) == 10**9`` weights; a 1000×1000 hidden map with the
same-size image needs 10^12, while a 21×21 convolution (Δ = 10) producing it has 441; :func:`parameter_ladder`
lists every rung between them (each principle alone, then both).

Example:
    >>> from foldconv.specs import ConvSpec
    >>> d = dense_equivalent(ConvSpec.make(2, 1, 1, 21, padding=10, bias=False), (1000, 1000))
    >>> d.dense_params, d.conv_params, d.distinct_weights
    (1000000000000, 441, 441)
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..._validate import conv_output_size, per_axis_ints, require_int
from ...errors import FoldError, fold_error
from ...padding import PADDING_MODES, padded_source
from ...specs import ConvSpec
from .report import CountReport

__all__ = [
    "DenseEquivalent", "LadderRow", "fc_params", "axis_pairs", "operator_nonzeros", "dense_equivalent", "dense_equivalents", "parameter_ladder",
    "validate_input_size",
]


def _shape(value: Any, param: str) -> Tuple[int, ...]:
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Sequence)
        or len(value) == 0
        or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in value)
    ):
        raise fold_error(param, value, "must be a non-empty shape of integers >= 1")
    return tuple(int(s) for s in value)


def _bool(value: Any, param: str) -> bool:
    if not isinstance(value, bool):
        raise fold_error(param, value, "must be True or False")
    return value


def fc_params(input_shape: Sequence[int], output_shape: Sequence[int], *, bias: bool = True) -> int:
    """Parameters of a fully-connected layer from ``flatten(input_shape)`` to ``flatten(output_shape)``.

    Example:
        >>> fc_params((1, 1000, 1000), (1000,), bias=False)
        1000000000
    """
    n_in, n_out = math.prod(_shape(input_shape, "input_shape")), math.prod(_shape(output_shape, "output_shape"))
    return n_in * n_out + (n_out if _bool(bias, "bias") else 0)


def axis_pairs(n: int, kernel: int, *, stride: int = 1, padding: int = 0, dilation: int = 1, mode: str = "zeros") -> int:
    """(output position, input position) pairs one axis of a conv touches.

    Example:
        >>> axis_pairs(5, 3, padding=1)  # 5 outputs x 3 taps, minus the 2 taps on padding
        13
        >>> axis_pairs(5, 3, padding=1, mode="circular")
        15
    """
    n, kernel = require_int(n, "n", 1), require_int(kernel, "kernel", 1)
    stride, dilation, padding = require_int(stride, "stride", 1), require_int(dilation, "dilation", 1), require_int(padding, "padding", 0)
    if mode not in PADDING_MODES:
        raise fold_error("mode", mode, f"must be one of {list(PADDING_MODES)}")
    (outputs,) = conv_output_size((n,), (kernel,), (stride,), (padding,), (dilation,))
    if outputs < 1:
        raise fold_error("n", n, f"gives no output for kernel={kernel}, dilation={dilation}, padding={padding}")
    if mode == "zeros":
        total = 0
        for tap in range(kernel):
            offset = tap * dilation - padding
            # Outputs j whose tap lands inside the input: 0 <= j*stride + offset < n.
            lo = max(0, -(offset // stride))
            hi = min(outputs - 1, (n - 1 - offset) // stride)
            total += max(0, hi - lo + 1)
        return total
    return sum(
        len({padded_source(j * stride - padding + t * dilation, n, mode) for t in range(kernel)}) for j in range(outputs)
    )


def validate_input_size(spec: Any, input_size: Any) -> Tuple[int, ...]:
    """``input_size`` as one integer >= 1 per spatial axis of ``spec`` (a ConvSpec) that gives a non-empty output;
    a FoldError naming ``spec`` or ``input_size`` otherwise.

    Example:
        >>> validate_input_size(ConvSpec.make(2, 4, 4, 3), [8, 8])
        (8, 8)
    """
    if not isinstance(spec, ConvSpec):
        raise fold_error("spec", type(spec).__name__, "must be a ConvSpec (ConvSpec.from_module(conv))")
    if isinstance(input_size, numbers.Integral) or isinstance(input_size, (str, bytes)) or not isinstance(input_size, Sequence):
        raise fold_error("input_size", input_size, f"must be the {spec.dims} spatial sizes (no batch or channel axis)")
    size = per_axis_ints(tuple(input_size), spec.dims, "input_size", 1)
    spec.output_size(size)  # an empty output is a FoldError naming input_size
    return size


def operator_nonzeros(spec: ConvSpec, input_size: Sequence[int]) -> int:
    """Structural nonzeros of the conv's operator matrix for one sample of spatial size ``input_size``.

    Each output channel reads the ``in_channels/groups`` channels of its group at every touched position.

    Example:
        >>> operator_nonzeros(ConvSpec.make(1, 2, 3, 3, padding=1), (5,))
        78
    """
    input_size = validate_input_size(spec, input_size)
    pairs = math.prod(
        axis_pairs(n, k, stride=s, padding=p, dilation=d, mode=spec.padding_mode)
        for n, k, s, p, d in zip(input_size, spec.kernel_size, spec.stride, spec.padding, spec.dilation)
    )
    return spec.out_channels * (spec.in_channels // spec.groups) * pairs


@dataclass(frozen=True)
class DenseEquivalent:
    """One conv at one input size, seen as a matrix.

    ``dense_params``: a fully-connected layer between the same tensors (with a bias per output element
    when the conv has a bias); ``local_params``: locality without weight sharing (one weight per touched
    pair, same bias); ``conv_params``: the conv; ``density = operator_nonzeros / operator_entries``;
    ``reuse = operator_nonzeros / distinct_weights``.
    """

    spec: ConvSpec
    input_size: Tuple[int, ...]
    output_size: Tuple[int, ...]
    operator_entries: int
    operator_nonzeros: int
    distinct_weights: int
    dense_params: int
    local_params: int
    conv_params: int

    @property
    def density(self) -> float:
        return self.operator_nonzeros / self.operator_entries

    @property
    def reuse(self) -> float:
        return self.operator_nonzeros / self.distinct_weights

    @property
    def saving(self) -> float:
        """``dense_params / conv_params``: how many times fewer parameters the conv needs."""
        return self.dense_params / self.conv_params

    def row(self) -> Dict[str, Any]:
        return {
            "conv": self.spec.describe(),
            "input": (self.spec.in_channels,) + self.input_size,
            "output": (self.spec.out_channels,) + self.output_size,
            "dense_params": self.dense_params,
            "local_params": self.local_params,
            "conv_params": self.conv_params,
            "distinct_weights": self.distinct_weights,
            "operator_entries": self.operator_entries,
            "operator_nonzeros": self.operator_nonzeros,
            "density": self.density,
            "reuse": self.reuse,
            "saving": self.saving,
        }


def dense_equivalent(spec: ConvSpec, input_size: Sequence[int]) -> DenseEquivalent:
    """Dense-equivalent costs of ``spec`` on one sample of spatial size ``input_size``.

    Example:
        >>> d = dense_equivalent(ConvSpec.make(2, 256, 64, 3, padding=1), (32, 32))
        >>> d.conv_params, d.dense_params, round(d.density, 5)
        (147520, 17179934720, 0.00843)
    """
    size = validate_input_size(spec, input_size)
    out = spec.output_size(size)
    n_in = spec.in_channels * math.prod(size)
    n_out = spec.out_channels * math.prod(out)
    nonzeros = operator_nonzeros(spec, size)
    bias = n_out if spec.bias else 0
    return DenseEquivalent(
        spec=spec,
        input_size=size,
        output_size=out,
        operator_entries=n_in * n_out,
        operator_nonzeros=nonzeros,
        distinct_weights=math.prod(spec.weight_shape),
        dense_params=n_in * n_out + bias,
        local_params=nonzeros + bias,
        conv_params=spec.params,
    )


def dense_equivalents(report: CountReport) -> List[Dict[str, Any]]:
    """One row per ``nn.Conv1d/2d/3d`` of a counted model, at the input size it saw (first call).

    Transposed and functional convs are not listed (they have no ``ConvSpec``).

    Example:
        >>> import torch
        >>> from foldconv.analysis.counting import count
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
        >>> [(r["layer"], r["dense_params"], r["conv_params"]) for r in dense_equivalents(count(net, (1, 3, 8, 8)))]
        [('0', 55584, 224)]
    """
    rows = []
    for layer, module in report.conv_layers():
        try:
            spec = ConvSpec.from_module(module)
        except FoldError:
            continue
        d = dense_equivalent(spec, layer.input_shape[2:])
        rows.append({"layer": layer.name, **d.row()})
    return rows


@dataclass(frozen=True)
class LadderRow:
    """One rung of D2L's ladder: a layer, its free parameters (weights; biases not counted), and which of D2L's
    two principles it applies (``local``: locality, ``shared``: translation invariance, i.e. shared weights)."""

    layer: str
    params: int
    local: bool = False
    shared: bool = False


def parameter_ladder(
    height: int, width: int, delta: int, *, hidden: Optional[int] = None, in_channels: int = 1, out_channels: int = 1
) -> Tuple[LadderRow, ...]:
    """D2L's argument as parameter counts for a ``height x width`` image: a fully-connected layer, then each
    principle alone, then both (the convolution, a ``(2*delta+1)**2`` window).

    Rungs: a fully-connected layer to ``hidden`` units (when given); one to a same-size hidden map
    (``W[i,j,k,l]``); locality alone (a locally connected layer: one weight per (output, input) pair inside the
    window, windows clipped at the image border, as a zero-padded conv's); translation invariance alone
    (``V[a,b]``, one weight per offset: ``(2H-1)(2W-1)``); both (the conv). Channels multiply every row that
    maps the image to a map by ``in_channels*out_channels``.

    Example:
        >>> [(row.params, row.local, row.shared) for row in parameter_ladder(1000, 1000, 10, hidden=1000)]  # doctest: +NORMALIZE_WHITESPACE
        [(1000000000, False, False), (1000000000000, False, False), (436392100, True, False),
         (3996001, False, True), (441, True, True)]
    """
    for name, value in (("height", height), ("width", width), ("in_channels", in_channels), ("out_channels", out_channels)):
        require_int(value, name, 1)
    require_int(delta, "delta", 0)
    ch = in_channels * out_channels
    k = 2 * delta + 1
    local = dense_equivalent(ConvSpec.make(2, in_channels, out_channels, k, padding=delta, bias=False), (height, width))
    rows = []
    if hidden is not None:
        require_int(hidden, "hidden", 1)
        rows.append(LadderRow("fully connected, image -> hidden vector", fc_params((in_channels, height, width), (hidden,), bias=False)))
    rows += [
        LadderRow("fully connected, image -> image, W[i,j,k,l]", (height * width) ** 2 * ch),
        LadderRow(f"locally connected {k}x{k}, |a|,|b| <= {delta} (locality only)", local.local_params, local=True),
        LadderRow("translation invariant, V[a,b] (translation invariance only)", (2 * height - 1) * (2 * width - 1) * ch, shared=True),
        LadderRow(f"conv {k}x{k}, |a|,|b| <= {delta} (translation invariance + locality)", local.conv_params, local=True, shared=True),
    ]
    return tuple(rows)
