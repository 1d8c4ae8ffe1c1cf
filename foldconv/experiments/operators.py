"""The operators experiment: dense operators of a conv and its fold side by side, with the family's checks.

The Hydra app ``scripts/operators.py`` registers :class:`OperatorsExperiment` as its structured config and
calls :func:`run_operators`; everything it writes comes from here, so the experiment also runs from plain
Python.

Example:
    >>> result = run_operators(OperatorsExample(r="2x1", input_size=(3, 3)))
    >>> result.ok, [c.claim for c in result.checks][:3]
    (True, ['FC-1', 'FC-1', 'FC-2'])
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from .._validate import per_axis_ints, require_int
from ..analysis.counting.dense import LadderRow, parameter_ladder
from ..check.equivalence import check_equivalence, derived
from ..equivalences.axw import axw_factors
from ..equivalences.dense import (
    DenseOperator,
    dense_operator,
    layout_permutation,
    offset_tensor,
    shift_violations,
)
from ..equivalences.space_to_depth import conv_to_focus, strided_to_spd
from ..equivalences.subpixel import SubPixelConv, subpixel_to_transposed
from ..errors import fold_error
from ..fold import fold_conv
from ..layout import depth_to_space, normalize_order
from ..specs import ConvSpec
from .app import AppResult, Check, parse_r
from .io import figure, markdown_table, save_figure, write_table

__all__ = [
    "OperatorsExample",
    "ParameterLadder",
    "OperatorsExperiment",
    "Shift",
    "LadderRow",
    "parameter_rows",
    "shift_rows",
    "OperatorsResult",
    "run_operators",
    "operators_app",
    "operator_figure",
    "largest_in_blocks",
]

#: Entries of the input (and of the output) of one sample; the dense matrix and the permutation image are
#: n x m, so this keeps them to a few megabytes and a readable figure.
MAX_OPERATOR_SIDE = 4096


@dataclass(frozen=True)
class OperatorsExample:
    """A 2-D conv (``in_channels``, ``out_channels``, ``groups``) on ``input_size`` and its fold by ``r`` (per
    axis: ``2``, ``"2x1"``); the folded conv has ``in_channels / prod(r)`` channels (:attr:`folded_channels`).

    ``in_channels`` defaults to ``prod(r)`` (one folded channel); ``kernel_size``, ``stride``, ``padding`` take an
    int or one value per axis; ``seed`` seeds the integer weights (each in ``[-weight_range, weight_range]``);
    ``mutate_folded`` corrupts one folded weight, after which every check that compares the two forms must fail.
    ``family_checks`` adds the family's checks on convs of their own (Focus, sub-pixel), which say nothing about
    this conv.

    Example:
        >>> e = OperatorsExample(r="2x1", kernel_size=[3, 1])
        >>> e.r, e.channels, e.folded_channels, OperatorsExample(in_channels=8, out_channels=2, groups=2).folded_channels
        ((2, 1), 2, 1, 2)
    """

    in_channels: Optional[int] = None
    r: Any = 2
    out_channels: int = 1
    groups: int = 1
    kernel_size: Any = 3
    stride: Any = 1
    padding: Any = 1
    input_size: Any = (4, 4)
    order: str = "crd"
    seed: int = 0
    weight_range: int = 3
    mutate_folded: bool = False
    family_checks: bool = False

    def __post_init__(self) -> None:
        normal = {
            "r": per_axis_ints(parse_r(self.r), 2, "r", 1),
            "kernel_size": per_axis_ints(self.kernel_size, 2, "kernel_size", 1),
            "stride": per_axis_ints(self.stride, 2, "stride", 1),
            "padding": per_axis_ints(self.padding, 2, "padding", 0),
            "input_size": per_axis_ints(self.input_size, 2, "input_size", 1),
        }
        for name, value in normal.items():
            object.__setattr__(self, name, value)
        block = math.prod(self.r)
        if self.in_channels is not None:  # None stays None: the config's default follows r
            require_int(self.in_channels, "in_channels", 1)
        for name in ("out_channels", "groups", "weight_range"):
            require_int(getattr(self, name), name, 1)
        if self.channels % block:
            raise fold_error("in_channels", self.channels, f"must be a multiple of prod(r)={block} (r={self.r}): a fold block takes that many channels")
        for name, count in (("in_channels", self.channels), ("out_channels", self.out_channels)):
            if count % self.groups:
                raise fold_error("groups", self.groups, f"must divide {name}={count}")
        require_int(self.seed, "seed", 0)
        for name in ("mutate_folded", "family_checks"):
            if not isinstance(getattr(self, name), bool):
                raise fold_error(name, getattr(self, name), "must be true or false")
        if not isinstance(self.order, str):
            raise fold_error("order", self.order, "must be an order name ('crd', 'dcr', 'focus') or axes like 'c rh rw'")
        normalize_order(self.order, 2)
        out = self.spec.output_size(self.input_size)  # an input too small for the kernel is a FoldError here
        for side, n in (("input", self.channels * math.prod(self.input_size)), ("output", self.out_channels * math.prod(out))):
            if n > MAX_OPERATOR_SIDE:
                raise fold_error(
                    "input_size", self.input_size, f"gives {n} {side} entries per sample; the dense operator needs <= {MAX_OPERATOR_SIDE}"
                )

    @property
    def channels(self) -> int:
        """Channels of the original conv: ``in_channels``, or ``prod(r)`` when it is None."""
        return math.prod(self.r) if self.in_channels is None else int(self.in_channels)

    @property
    def folded_channels(self) -> int:
        """Channels of the folded conv's input, ``in_channels / prod(r)``."""
        return self.channels // math.prod(self.r)

    @property
    def spec(self) -> ConvSpec:
        """The original conv."""
        return ConvSpec.make(
            2, self.channels, self.out_channels, self.kernel_size, stride=self.stride, padding=self.padding, groups=self.groups
        )


@dataclass(frozen=True)
class ParameterLadder:
    """D2L's argument as parameter counts (dense -> translation invariant -> local) for a ``height x width`` image.

    Example:
        >>> [row.params for row in ParameterLadder(height=10, width=10, hidden=5, delta=1).rows()]
        [500, 10000, 784, 361, 9]
    """

    height: int = 1000
    width: int = 1000
    hidden: int = 1000
    delta: int = 10

    def __post_init__(self) -> None:
        self.rows()  # parameter_ladder validates every field and names it

    def rows(self) -> Tuple[LadderRow, ...]:
        return parameter_ladder(self.height, self.width, self.delta, hidden=self.hidden)


@dataclass(frozen=True)
class OperatorsExperiment:
    """The operators app's whole config: the example, the parameter ladder, and the figure's resolution."""

    example: OperatorsExample = field(default_factory=OperatorsExample)
    ladder: ParameterLadder = field(default_factory=ParameterLadder)
    dpi: int = 120

    def __post_init__(self) -> None:
        require_int(self.dpi, "dpi", 10)


@dataclass(frozen=True)
class Shift:
    """Input shift along axis 0 of the folded grid, the output shift that fits it best, and its violations."""

    input_shift: int
    best_output_shift: Union[int, None]
    violations: Union[int, None]
    multiple_of_step: bool


@dataclass(frozen=True)
class OperatorsResult:
    """Every row written, the files (empty when nothing was written) and the verdict."""

    checks: Tuple[Check, ...]
    shifts: Tuple[Shift, ...]
    parameters: Tuple[LadderRow, ...]
    files: Tuple[Path, ...] = ()
    step: int = 1  # r*S: the folded operator's shift period, px of the folded input

    @property
    def failed(self) -> Tuple[str, ...]:
        """The checks that did not hold."""
        return tuple(c.name for c in self.checks if not c.ok)

    @property
    def ok(self) -> bool:
        """Every check held."""
        return not self.failed

    def __bool__(self) -> bool:
        return self.ok

    @property
    def markdown(self) -> str:
        return "\n\n".join(
            [
                "## Checks\n\n" + markdown_table([{k: v for k, v in c.row().items() if k not in ("subject", "expected", "observed")}
                                                    for c in self.checks]),
                "## Shifts of the folded operator (axis 0)\n\n" + markdown_table(shift_rows(self.shifts, self.step)),
                "## Parameters\n\n" + markdown_table(parameter_rows(self.parameters)),
            ]
        )


def shift_rows(shifts: Sequence[Shift], step: int) -> List[Dict[str, Any]]:
    """The shifts table, every column with its unit: shifts are pixels (rows, axis 0) of the folded input and of
    the folded conv's output; violations count entries of the dense operator.

    Example:
        >>> list(shift_rows([Shift(2, 1, 0, True)], 2)[0])[:2]
        ['input shift (px of the folded input, axis 0)', "best output shift (px of the folded conv's output, axis 0)"]
    """
    return [{"input shift (px of the folded input, axis 0)": s.input_shift,
             "best output shift (px of the folded conv's output, axis 0)": s.best_output_shift,
             "violations (dense-operator entries that break the shift at the best output shift)": s.violations,
             f"multiple of r*S = {step} px": s.multiple_of_step} for s in shifts]


def parameter_rows(rows: Sequence[LadderRow]) -> List[Dict[str, Any]]:
    """The parameters table, the count's unit in its header.

    Example:
        >>> parameter_rows([LadderRow("dense", 10)])
        [{'layer': 'dense', 'params (weights + biases, count)': 10, 'local': False, 'shared': False}]
    """
    return [{"layer": r.layer, "params (weights + biases, count)": r.params, "local": r.local, "shared": r.shared} for r in rows]


def _integer(module: torch.nn.Module, gen: torch.Generator, bound: int) -> torch.nn.Module:
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randint(-bound, bound + 1, p.shape, generator=gen))
    return module


def _shifts(folded_op: DenseOperator, size: int, step: int) -> Tuple[Shift, ...]:
    shifts = []
    n_out = folded_op.output_shape[2]
    for d in range(0, 2 * step + 1):
        counts = [shift_violations(folded_op, (d, 0), (o, 0)) for o in range(n_out)] if d < size else []
        best = min(range(len(counts)), key=counts.__getitem__) if counts else None
        shifts.append(Shift(d, best, counts[best] if counts else None, d % step == 0))
    return tuple(shifts)


def run_operators(
    example: OperatorsExample,
    out_dir: Union[str, Path, None] = None,
    *,
    ladder: ParameterLadder = ParameterLadder(),
    dpi: int = 120,
) -> OperatorsResult:
    """Build the example, compare the dense operators exactly, run the family's checks, write tables and the figure.

    With ``out_dir=None`` nothing is written (the checks still run). Files are written only after every
    check ran, so a malformed request leaves nothing behind; the checks table is the app skeleton's
    (:func:`operators_app`).

    Example:
        >>> result = run_operators(OperatorsExample(input_size=(3, 3)))
        >>> result.ok, len(result.checks), result.files
        (True, 7, ())
    """
    e = example
    gen = torch.Generator().manual_seed(e.seed)
    spec = e.spec
    conv = _integer(spec.to_module(), gen, e.weight_range)
    folded = fold_conv(conv, e.r, e.order)
    if e.mutate_folded:
        with torch.no_grad():
            folded.weight[0, 0, 0, 0] += 1
    shape = (e.channels,) + e.input_size
    folded_shape = (e.folded_channels,) + tuple(r * n for r, n in zip(e.r, e.input_size))
    original = dense_operator(conv, (1,) + shape)
    folded_op = dense_operator(folded, (1,) + folded_shape)
    perm = layout_permutation(lambda x: depth_to_space(x, e.r, e.order), (1,) + shape)
    step = e.r[0] * e.stride[0]
    checks = []

    def record(claim: str, check: str, ok: bool, detail: str) -> None:
        checks.append(Check(check, bool(ok), claim=claim, detail=detail))

    x = torch.randint(-9, 10, (2,) + shape, generator=gen).double()
    record("FC-1", "dense operator reproduces the conv", torch.equal(original.apply(x), conv(x)), f"matrix {tuple(original.matrix.shape)}")
    v = offset_tensor(original, e.stride)
    delta = tuple(max(p, k - 1 - p) for p, k in zip(e.padding, e.kernel_size))
    n_t, n_l = v.translation_violations().shape[0], v.locality_violations(delta).shape[0]
    record("FC-1", f"V translation invariant and local (Delta={delta})", n_t == 0 and n_l == 0, f"{n_t} translation, {n_l} locality violations")
    same = torch.equal(folded_op.matrix, original.matrix[:, perm]) and torch.equal(folded_op.bias, original.bias)
    record("FC-2", "folded matrix = original matrix with permuted columns", same, f"order {e.order!r}")
    shifts = _shifts(folded_op, folded_shape[1], step)
    invariant = all((s.violations == 0) == s.multiple_of_step for s in shifts if s.violations is not None)
    record("FC-3", f"folded operator shift invariant exactly for multiples of r*S={step}", invariant, "see shifts table")
    spd = check_equivalence(folded, derived(lambda m: strided_to_spd(m, e.order)), (1,) + folded_shape, dtypes=())
    steps = "x".join(str(r * s) for r, s in zip(e.r, e.stride))
    record("SPD-1", f"folded conv (stride {steps}) = space_to_depth({steps}) + stride-1 conv", spd.ok, spd.summary())
    if e.family_checks:  # on convs of their own: the family's claims, not this conv's
        focus = torch.nn.Conv2d(3, 4, 6, 2, 2)
        rep = check_equivalence(focus, derived(conv_to_focus), (1, 3, 8, 8), dtypes=())
        record("SPD-3", "6x6 stride-2 pad-2 conv = Focus (3x3, pad 1) (a conv of its own)", rep.ok, rep.summary())
        sub = SubPixelConv(torch.nn.Conv2d(2, 2 * math.prod(e.r), 3, padding=1, bias=False), e.r, e.order)
        rep = check_equivalence(sub, derived(subpixel_to_transposed), (1, 2) + e.input_size, dtypes=())
        record("SUB-1", f"sub-pixel conv (r={'x'.join(map(str, e.r))}) = transposed conv (a conv of its own)", rep.ok, rep.summary())
    rep = check_equivalence(conv, derived(lambda m: axw_factors(m, e.input_size).apply), (2,) + shape, dtypes=())
    record("AXW-1", "conv = sum A_ab X W_ab", rep.ok, rep.summary())
    params = ladder.rows() + (
        LadderRow(f"this example: conv {spec.describe()}", spec.params, local=True, shared=True),
        LadderRow("this example: its dense operator (matrix + bias)", original.params),
    )
    n_weights = math.prod(original.input_shape) * math.prod(original.output_shape)
    counts_ok = original.matrix.numel() == n_weights and spec.params < original.params
    record("FC-4", "dense operator has prod(in)*prod(out) weights, the conv far fewer", counts_ok, f"{original.params} vs {spec.params}")
    files: Tuple[Path, ...] = ()
    if out_dir is not None:
        out = Path(out_dir)
        fig, _ = operator_figure(original, folded_op, perm, titles=(spec.describe(), f"folded r={'x'.join(map(str, e.r))} ({e.order})"), dpi=dpi)
        files += (save_figure(fig, out / "operators.png", dpi=dpi),)
        for name, table, title in (("shifts", shift_rows(shifts, step), f"Input shifts of the folded operator (r*S = {step} px of the folded input)"),
                                   ("parameters", parameter_rows(params), "Parameters: D2L's ladder and this example")):
            files += tuple(write_table(table, out / name, title=title).values())
    return OperatorsResult(tuple(checks), shifts, params, files, step)


#: What each file of the operators app's run directory holds (index.md).
OPERATORS_FILES = {
    "operators.png": "the conv's dense operator, its fold's, and the column permutation between them",
    "shifts.*": "input shifts of the folded operator, the output shift that fits best, and its violations",
    "parameters.*": "D2L's parameter ladder and this example's conv against its dense operator",
    "*.log": "the app's log (Hydra)",
}


def operators_app(experiment: OperatorsExperiment, out_dir: Union[str, Path]) -> AppResult:
    """The operators app's body: :func:`run_operators` into ``out_dir``, its checks for the app skeleton.

    Example:
        >>> import tempfile
        >>> operators_app(OperatorsExperiment(example=OperatorsExample(input_size=(3, 3))), tempfile.mkdtemp()).ok
        True
    """
    result = run_operators(experiment.example, out_dir, ladder=experiment.ladder, dpi=experiment.dpi)
    e = experiment.example
    answer = f"{e.spec.describe()} and its fold by r={'x'.join(map(str, e.r))} ({e.order}): the family of equivalences checked"
    return AppResult("Operators", answer, result.checks, OPERATORS_FILES, result.markdown, result)


def largest_in_blocks(matrix: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """``matrix`` cut into ``rows x cols`` blocks (the last ones padded with zeros), each replaced by its entry of
    largest magnitude, sign kept: a picture with fewer pixels than entries that still shows every band.

    Example:
        >>> largest_in_blocks(torch.tensor([[1., -3., 2.], [0., 1., 0.]]), 1, 2).tolist()
        [[-3.0, 2.0], [1.0, 0.0]]
    """
    n, m = matrix.shape
    pad = torch.zeros(-(-n // rows) * rows, -(-m // cols) * cols, dtype=matrix.dtype)
    pad[:n, :m] = matrix
    blocks = pad.reshape(pad.shape[0] // rows, rows, pad.shape[1] // cols, cols).permute(0, 2, 1, 3).flatten(2)
    return blocks.gather(-1, blocks.abs().argmax(-1, keepdim=True)).squeeze(-1)


#: Screen pixels per drawn matrix cell, at least: fewer and the resampling drops cells (moire).
_PX_PER_CELL = 2


def operator_figure(
    original: DenseOperator, folded: DenseOperator, perm: torch.Tensor, *, titles: Sequence[str] = ("conv", "folded conv"),
    dpi: int = 120,
) -> Tuple[Any, Any]:
    """Side-by-side images of two dense operators and of the column permutation between them.

    A matrix with more rows or columns than its panel has pixels at ``dpi`` (two per cell) is drawn in blocks,
    each the block's entry of largest magnitude (:func:`largest_in_blocks`; the title says so), so no cell is
    dropped by resampling. Returns ``(fig, axes)`` from :func:`foldconv.experiments.io.figure`; save it with
    ``save_figure`` at the same ``dpi``.

    Example:
        >>> from foldconv import depth_to_space, fold_conv
        >>> conv = torch.nn.Conv2d(4, 1, 3, padding=1)
        >>> a, b = dense_operator(conv, (1, 4, 3, 3)), dense_operator(fold_conv(conv, 2), (1, 1, 6, 6))
        >>> fig, axes = operator_figure(a, b, layout_permutation(lambda x: depth_to_space(x, 2), (1, 4, 3, 3)))
        >>> len(axes)
        3
    """
    n = perm.numel()
    if original.matrix.shape[1] != n or folded.matrix.shape[1] != n:
        raise fold_error("perm", tuple(perm.shape), f"must have one entry per input entry ({original.matrix.shape[1]})")
    fig, axes = figure(1, 3, figsize=(15, 5))
    scale = float(max(original.matrix.abs().max(), folded.matrix.abs().max(), 1e-12))
    panels = [
        (original.matrix, f"{titles[0]}\n{tuple(original.output_shape)} <- {tuple(original.input_shape)}"),
        (folded.matrix, f"{titles[1]}\n{tuple(folded.output_shape)} <- {tuple(folded.input_shape)}"),
    ]
    budget = int(3.6 * dpi) // _PX_PER_CELL  # cells a panel of about 3.6 inches shows without dropping any
    for ax, (m, title) in zip(axes[:2], panels):
        m = m.detach().cpu()
        rows, cols = -(-m.shape[0] // budget), -(-m.shape[1] // budget)
        if rows > 1 or cols > 1:
            m = largest_in_blocks(m, rows, cols)
            title += f"\neach cell: the largest-magnitude entry of a {rows}x{cols} block"
        extent = (-0.5, panels[0][0].shape[1] - 0.5, panels[0][0].shape[0] - 0.5, -0.5)  # axes stay in entry indices
        image = ax.imshow(m.numpy(), cmap="RdBu_r", vmin=-scale, vmax=scale, interpolation="nearest", aspect="auto", extent=extent)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("input index")
        ax.set_ylabel("output index")
    fig.colorbar(image, ax=axes[1], fraction=0.046, pad=0.02).set_label("weight")
    # Column q of the folded operator is column perm[q] of the original. One marker per column stays
    # visible at any n, where an n x n image downsampled to the panel would drop most of its pixels.
    axes[2].scatter(torch.arange(n).numpy(), perm.numpy(), s=max(1.0, 1500.0 / n), marker="s", c="black", linewidths=0)
    axes[2].set_xlim(-0.5, n - 0.5)
    axes[2].set_ylim(n - 0.5, -0.5)
    axes[2].set_aspect("equal")
    axes[2].set_title("column permutation\nfolded = original @ P", fontsize=9)
    axes[2].set_xlabel("folded input index")
    axes[2].set_ylabel("original input index")
    return fig, axes
