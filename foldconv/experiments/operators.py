"""The operators experiment: dense operators of a conv and its fold side by side, with the family's checks.

The Hydra app ``scripts/operators.py`` is a thin wrapper over :func:`run_operators`; everything it writes
comes from here, so the experiment also runs from plain Python.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple, Union

import torch

from ..check.equivalence import check_equivalence, derived
from ..errors import fold_error
from ..fold import fold_conv
from ..layout import depth_to_space
from .io import figure, markdown_table, save_figure, write_table
from ..specs import ConvSpec
from ..equivalences.axw import axw_factors
from ..equivalences.dense import dense_operator, layout_permutation, offset_tensor, parameter_ladder, shift_violations
from ..equivalences.space_to_depth import conv_to_focus, strided_to_spd
from ..equivalences.subpixel import SubPixelConv, subpixel_to_transposed

__all__ = ["OperatorsExample", "OperatorsResult", "run_operators"]


@dataclass(frozen=True)
class OperatorsExample:
    """A 2-D conv over ``G*r*r`` channels (kernel, stride, padding, spatial size) and its fold by ``r``."""

    groups_after_fold: int = 1
    r: int = 2
    out_channels: int = 1
    kernel_size: int = 3
    stride: int = 1
    padding: int = 1
    size: Tuple[int, int] = (4, 4)
    order: str = "crd"
    seed: int = 0
    weight_range: int = 3
    mutate_folded: bool = False


@dataclass
class OperatorsResult:
    """Rows of every table written, the names of failed checks, and the Markdown summary."""

    checks: List[Dict[str, Any]]
    shifts: List[Dict[str, Any]]
    parameters: List[Dict[str, Any]]
    files: Dict[str, Path] = field(default_factory=dict)

    @property
    def failed(self) -> List[str]:
        return [row["check"] for row in self.checks if not row["holds"]]

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def markdown(self) -> str:
        return "\n\n".join(
            [
                "## Checks\n\n" + markdown_table(self.checks),
                "## Shifts of the folded operator (axis 0)\n\n" + markdown_table(self.shifts),
                "## Parameters\n\n" + markdown_table(self.parameters),
            ]
        )


def _integer(module: torch.nn.Module, gen: torch.Generator, bound: int) -> torch.nn.Module:
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randint(-bound, bound + 1, p.shape, generator=gen))
    return module


def run_operators(
    example: OperatorsExample,
    out_dir: Union[str, Path, None] = None,
    ladder: Sequence[int] = (1000, 1000, 1000, 10),
    dpi: int = 120,
) -> OperatorsResult:
    """Build the example, compare the dense operators exactly, run the family's checks, write tables and the figure.

    With ``out_dir=None`` nothing is written (the checks still run).

    Example:
        >>> result = run_operators(OperatorsExample(size=(3, 3)))
        >>> result.ok, len(result.checks)
        (True, 9)
    """
    e = example
    if e.r < 1 or e.stride < 1 or e.kernel_size < 1 or e.padding < 0 or e.weight_range < 1:
        raise fold_error("example", e, "needs r, stride, kernel_size, weight_range >= 1 and padding >= 0")
    gen = torch.Generator().manual_seed(e.seed)
    channels = e.groups_after_fold * e.r * e.r
    spec = ConvSpec.make(2, channels, e.out_channels, e.kernel_size, e.stride, e.padding)
    spec.output_size(tuple(e.size))  # a clear FoldError for an input too small for the kernel
    conv = _integer(spec.to_module(), gen, e.weight_range)
    folded = fold_conv(conv, e.r, e.order)
    if e.mutate_folded:
        with torch.no_grad():
            folded.weight[0, 0, 0, 0] += 1
    shape = (channels,) + tuple(e.size)
    folded_shape = (e.groups_after_fold, e.r * e.size[0], e.r * e.size[1])
    original = dense_operator(conv, shape)
    folded_op = dense_operator(folded, folded_shape)
    perm = layout_permutation(lambda x: depth_to_space(x, e.r, e.order), shape)
    step = e.r * e.stride
    checks: List[Dict[str, Any]] = []

    def record(claim: str, check: str, holds: bool, detail: str) -> None:
        checks.append({"claim": claim, "check": check, "holds": bool(holds), "detail": detail})

    x = torch.randint(-9, 10, (2,) + shape, generator=gen).double()
    record("FC-1", "dense operator reproduces the conv", torch.equal(original.apply(x), conv(x)), f"matrix {tuple(original.matrix.shape)}")
    v = offset_tensor(original, e.stride)
    delta = max(e.padding, e.kernel_size - 1 - e.padding)
    n_t, n_l = v.translation_violations().shape[0], v.locality_violations(delta).shape[0]
    record("FC-1", f"V translation invariant and local (Delta={delta})", n_t == 0 and n_l == 0, f"{n_t} translation, {n_l} locality violations")
    same = torch.equal(folded_op.matrix, original.matrix[:, perm]) and torch.equal(folded_op.bias, original.bias)
    record("FC-2", "folded matrix = original matrix with permuted columns", same, f"order {e.order!r}")
    shifts = []
    n_out = folded_op.out_shape[1]
    for d in range(0, 2 * step + 1):
        counts = [shift_violations(folded_op, (d, 0), (o, 0)) for o in range(n_out) if d < folded_shape[1]]
        best = min(range(len(counts)), key=counts.__getitem__) if counts else None
        shifts.append({"input shift": d, "best output shift": best, "violations": counts[best] if counts else None, "multiple of r*S": d % step == 0})
    invariant = all((row["violations"] == 0) == row["multiple of r*S"] for row in shifts if row["violations"] is not None)
    record("FC-3", f"folded operator shift invariant exactly for multiples of r*S={step}", invariant, "see shifts table")
    spd = check_equivalence(folded, derived(lambda m: strided_to_spd(m, e.order)), (1,) + folded_shape, dtypes=())
    record("SPD-1", f"folded conv (stride {step}) = space_to_depth({step}) + stride-1 conv", spd.equivalent, spd.summary())
    focus = torch.nn.Conv2d(3, 4, 6, 2, 2)
    rep = check_equivalence(focus, derived(conv_to_focus), (1, 3, 8, 8), dtypes=())
    record("SPD-3", "6x6 stride-2 pad-2 conv = Focus (3x3, pad 1)", rep.equivalent, rep.summary())
    sub = SubPixelConv(torch.nn.Conv2d(2, 2 * e.r * e.r, 3, padding=1, bias=False), e.r, e.order)
    rep = check_equivalence(sub, derived(subpixel_to_transposed), (1, 2) + tuple(e.size), dtypes=())
    record("SUB-1", f"sub-pixel conv (r={e.r}) = transposed conv", rep.equivalent, rep.summary())
    rep = check_equivalence(conv, derived(lambda m: axw_factors(m, tuple(e.size)).apply), (2,) + shape, dtypes=())
    record("AXW-1", "conv = sum A_ab X W_ab", rep.equivalent, rep.summary())
    height, width, hidden, lad_delta = ladder
    params = parameter_ladder(height, width, lad_delta, hidden=hidden)
    params.append({"layer": f"this example: conv {spec.describe()}", "params": spec.params})
    params.append({"layer": "this example: its dense operator (matrix + bias)", "params": original.params})
    n_in, n_out_all = original.matrix.shape[1], original.matrix.shape[0]
    counts_ok = original.matrix.numel() == n_in * n_out_all and spec.params < original.params
    record("FC-4", "dense operator has prod(in)*prod(out) weights, the conv far fewer", counts_ok, f"{original.params} vs {spec.params}")
    result = OperatorsResult(checks, shifts, params)
    if out_dir is not None:
        out = Path(out_dir)
        fig, _ = operator_figure(original, folded_op, perm, titles=(spec.describe(), f"folded r={e.r} ({e.order})"))
        result.files["figure"] = save_figure(fig, out / "operators.png", dpi=dpi)
        for name, rows in (("checks", checks), ("shifts", shifts), ("parameters", params)):
            paths = write_table(rows, out / name, title=name)
            result.files[name] = paths["csv"]
    return result


def operator_figure(
    original: DenseOperator, folded: DenseOperator, perm: torch.Tensor, titles: Sequence[str] = ("conv", "folded conv")
) -> Tuple[Any, Any]:
    """Side-by-side images of two dense operators and of the column permutation between them.

    Returns ``(fig, axes)`` from :func:`foldconv.experiments.io.figure`; save it with ``save_figure``.

    Example:
        >>> import torch
        >>> from foldconv import depth_to_space, fold_conv
        >>> from foldconv.equivalences import dense_operator, layout_permutation
        >>> conv = torch.nn.Conv2d(4, 1, 3, padding=1)
        >>> a, b = dense_operator(conv, (4, 3, 3)), dense_operator(fold_conv(conv, 2), (1, 6, 6))
        >>> fig, axes = operator_figure(a, b, layout_permutation(lambda x: depth_to_space(x, 2), (4, 3, 3)))
        >>> len(axes)
        3
    """
    n = perm.numel()
    if original.matrix.shape[1] != n or folded.matrix.shape[1] != n:
        raise fold_error("perm", tuple(perm.shape), f"must have one entry per input entry ({original.matrix.shape[1]})")
    fig, axes = figure(1, 3, figsize=(15, 4.5))
    scale = float(max(original.matrix.abs().max(), folded.matrix.abs().max(), 1e-12))
    panels = [
        (original.matrix, f"{titles[0]}: {tuple(original.out_shape)} <- {tuple(original.in_shape)}"),
        (folded.matrix, f"{titles[1]}: {tuple(folded.out_shape)} <- {tuple(folded.in_shape)}"),
    ]
    for ax, (m, title) in zip(axes[:2], panels):
        ax.imshow(m.detach().cpu().numpy(), cmap="RdBu_r", vmin=-scale, vmax=scale, interpolation="nearest", aspect="auto")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("input index")
        ax.set_ylabel("output index")
    p = torch.zeros(n, n)
    p[perm, torch.arange(n)] = 1.0  # column q of the folded operator is column perm[q] of the original
    axes[2].imshow(p.numpy(), cmap="Greys", interpolation="nearest")
    axes[2].set_title("column permutation: folded = original @ P", fontsize=9)
    axes[2].set_xlabel("folded input index")
    axes[2].set_ylabel("original input index")
    return fig, axes
