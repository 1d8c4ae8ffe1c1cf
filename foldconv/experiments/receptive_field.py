"""The receptive-field experiment: one model's fields per node, checked against gradients, and its ERF; on
request (``fold.r``), the fold table of ``fold.conv`` (a conv vs its fold, in folded-map and in input pixels),
which is about that conv, not the model, so it is off by default. The whole torchvision or timm zoo is the
zoo app's (``foldconv zoo zoo=torchvision check_size=64``).

``foldconv rf`` registers :class:`RFExperiment` as its structured config; :func:`run_receptive_field` is its
body. Every result is computed first and the files are written only at the end, so a malformed request (a
FoldError) leaves no output behind; the checks go to the app skeleton
(:func:`~foldconv.experiments.app.conclude`), which writes them and fails the run after everything is written.

The headline is the model's last spatial layer (the deepest node that is still a map: after global pooling
every unit reads the whole input, and its field counts padding it never sees). The gradient check runs, by
default (``check_size="auto"``), at a size chosen from that layer's field, so that its boxes are not the
whole image; the ERF is drawn for that layer.

Example:
    >>> import tempfile
    >>> conv = {"_target_": "torch.nn.Conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": 3}
    >>> e = RFExperiment(model=conv, input_shape=(1, 3, 16, 16), check_size=12, erf_samples=1, fold=FoldTable(r=0))
    >>> result = run_receptive_field(e, tempfile.mkdtemp())
    >>> result.answer, result.ok
    ('Conv2d: output rf (3, 3), jump (1, 1), padding (0, 0); 2 nodes', True)
"""
from __future__ import annotations

import dataclasses
import json
import math
import textwrap
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .._validate import SPATIAL_NAMES, per_axis_ints, require_bool, require_int
from ..analysis.counting import normalize_input_shapes
from ..analysis.receptive_field import (
    FoldedRF,
    NodeRF,
    RFAlignmentWarning,
    RFCheck,
    RFReport,
    check_receptive_field,
    effective_receptive_field,
    folded_receptive_field,
    receptive_field,
)
from ..analysis.receptive_field.empirical import default_check_nodes
from ..errors import FoldError, fold_error
from ..layout import normalize_order
from ..models import ModelSpec, build_model, resolve_model
from ..tracing import require_batch_axis
from .app import R_RULE, AppResult, Check, parse_r
from .io import duration, figure, label_step, save_figure, status, write_atomic, write_markdown, write_table
from .spd_models import SpdSpec, build_spd_model, resolve_spd, spd_site
from .zoo.measure import gradient_check_shape

__all__ = [
    "FoldTable", "RFExperiment", "run_receptive_field", "rf_jump_figure", "erf_figure", "erf_unit", "rf_text", "ERF_AUTO", "CHECK_AUTO",
    "last_spatial", "auto_check_size", "FORMATS",
]

#: What the rf app prints: ``"table"`` (the answer and the checks) or ``"json"`` (one JSON document, ``rf.json``'s).
FORMATS = ("table", "json")

#: ``check_size`` that picks the gradient check's input from the receptive field of the last spatial layer.
CHECK_AUTO = "auto"
#: The automatic check input grows to at most this many spatial elements (1024 x 1024).
MAX_CHECK_ELEMENTS = 1 << 20
MIN_CHECK_SIZE = 32
#: The default ``check_budget_s``: an automatic check input is made smaller when the check would take longer (seconds).
CHECK_BUDGET_S = 120.0
#: A check estimated to take longer than this prints the estimate before it starts (seconds).
ESTIMATE_AFTER_S = 5.0
#: A check estimated to take longer than this reports its progress, node by node (seconds).
PROGRESS_AFTER_S = 20.0
#: The rule ``check_size`` breaks, whatever was wrong with it.
CHECK_SIZE_RULE = f"must be {CHECK_AUTO!r} (from the receptive field), a spatial size >= 1, or null (input_shape itself)"


def _default_conv() -> Dict[str, Any]:
    return {"_target_": "torch.nn.Conv2d", "in_channels": 256, "out_channels": 8, "kernel_size": 3, "padding": 1}


def _input_shape(value: Any, param: str) -> Tuple[int, ...]:
    """One full input shape with 1 to 3 spatial axes (the spelling ``foldconv count`` takes)."""
    try:
        shapes = normalize_input_shapes(value)
    except FoldError as err:
        raise fold_error(param, value, err.rule or str(err)) from None
    if len(shapes) != 1 or len(shapes[0]) - 2 not in SPATIAL_NAMES:
        raise fold_error(param, value, "must be one full input shape with 1 to 3 spatial axes, e.g. [1, 3, 224, 224]")
    return tuple(shapes[0])


def _sizes(value: Any, param: str) -> Tuple[int, ...]:
    """1 to 3 spatial sizes >= 1; an int means 2-D (as for a bare tensor)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or len(value) not in SPATIAL_NAMES:
        raise fold_error(param, value, "must be 1 to 3 spatial sizes (or one int for a square 2-D input)")
    return per_axis_ints(tuple(value), len(value), param, 1)


@dataclass(frozen=True)
class FoldTable:
    """The fold table: ``conv`` (a ``_target_`` node) folded by ``r`` (``0``, the default: no table, as the rf
    app is about its model; ``16``, ``"2x4"``, ``[2, 4]``) in channel ``order``, on an input of spatial size
    ``input_size``.

    Example:
        >>> FoldTable(r="2x1", input_size=[4, 4]).r
        (2, 1)
    """

    r: Any = 0
    order: str = "crd"
    conv: Any = field(default_factory=_default_conv)
    input_size: Any = (4, 4)

    def __post_init__(self) -> None:
        try:
            r = parse_r(self.r)
            if isinstance(r, tuple):
                per_axis_ints(r, len(r), "r", 1)
            elif r != 0:
                require_int(r, "r", 1)
        except FoldError:  # the fold-factor rule of every app, plus this table's 0
            raise fold_error("r", self.r, f"{R_RULE}, or 0 (no fold table)") from None
        object.__setattr__(self, "r", r)
        resolve_model(self.conv, param="conv")  # a bad spelling fails here; the field keeps it (fold.conv.x=... overrides it)
        object.__setattr__(self, "input_size", _sizes(self.input_size, "input_size"))
        if not isinstance(self.order, str):
            raise fold_error("order", self.order, "must be an order name ('crd', 'dcr', 'focus') or axes like 'c rh rw'")
        normalize_order(self.order, len(self.input_size))  # refused now, also with r=0 (no table)

    @property
    def spec(self) -> ModelSpec:
        """The conv, resolved (:func:`foldconv.models.resolve_model`)."""
        return resolve_model(self.conv, param="fold.conv")


@dataclass(frozen=True)
class RFExperiment:
    """Receptive fields of ``model`` (any spelling of :func:`foldconv.models.resolve_model`: ``"vgg16"``,
    ``"timm:<name>"``, a ``_target_`` node; ``"<name>+spd"``: its first strided conv rewritten to space-to-depth,
    :mod:`foldconv.experiments.spd_models`) on an input of full shape ``input_shape`` (as ``foldconv count`` takes
    it); with ``check``, analytic boxes against gradient supports at ``check_size`` px (``"auto"``: chosen
    from the field of the last spatial layer, :func:`auto_check_size`, made smaller when the check is estimated
    to take longer than ``check_budget_s`` on this machine; ``null``: ``input_shape`` itself;
    ``check_nodes`` nodes) and Luo et al.'s ERF (``erf_samples``) of the centre unit of ``erf_node`` (a node
    name of layers.csv; default: :data:`ERF_AUTO`); the ``fold`` table; ``fallback`` ("error" or "real") is
    what the analysis does at an op without a rule (see
    :func:`foldconv.analysis.receptive_field.receptive_field`). ``seed`` seeds the random weights; ``format``:
    what the app prints, ``"table"`` or ``"json"`` (the document it writes to ``rf.json`` either way).
    ``erf_node`` is checked against the model's nodes whatever ``check`` says.

    Example:
        >>> e = RFExperiment(model="vgg16", input_shape=[1, 3, 96, 96], check_size=64)
        >>> e.model.label, e.input_size, e.gradient_check_shape
        ('vgg16', (96, 96), (1, 3, 64, 64))
    """

    model: Any = field(default_factory=lambda: {"_target_": "torchvision.models.resnet18"})
    input_shape: Any = (1, 3, 224, 224)
    check: bool = True
    check_size: Any = CHECK_AUTO
    check_nodes: int = 6
    check_budget_s: float = CHECK_BUDGET_S
    erf_samples: int = 8
    erf_node: Optional[str] = None
    fallback: str = "error"
    fold: FoldTable = field(default_factory=FoldTable)
    seed: int = 0
    format: str = "table"

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", resolve_spd(self.model, param="model"))
        object.__setattr__(self, "input_shape", _input_shape(self.input_shape, "input_shape"))
        for name, minimum in (("check_nodes", 1), ("erf_samples", 1), ("seed", 0)):
            require_int(getattr(self, name), name, minimum)
        require_bool(self.check, "check")
        if isinstance(self.check_budget_s, bool) or not isinstance(self.check_budget_s, (int, float)) or not self.check_budget_s > 0:
            raise fold_error("check_budget_s", self.check_budget_s, "must be a number of seconds > 0 (how long the automatic check may take)")
        if self.check_size is not None and self.check_size != CHECK_AUTO:
            if isinstance(self.check_size, str):
                raise fold_error("check_size", self.check_size, CHECK_SIZE_RULE)
            try:
                require_int(self.check_size, "check_size", 1)
            except FoldError:
                raise fold_error("check_size", self.check_size, CHECK_SIZE_RULE) from None
        if self.erf_node is not None and (not isinstance(self.erf_node, str) or not self.erf_node):
            raise fold_error("erf_node", self.erf_node, "must be a node name of layers.csv (or null for the automatic pick)")
        if self.fallback not in ("error", "real"):
            raise fold_error("fallback", self.fallback, "must be 'error' (an op without a rule stops the run) or 'real' (measured from gradients)")
        if not isinstance(self.fold, FoldTable):
            raise fold_error("fold", self.fold, "must be a FoldTable")
        if self.format not in FORMATS:
            raise fold_error("format", self.format, f"must be one of {list(FORMATS)} (what the app prints; rf.json is always written)")

    @property
    def input_size(self) -> Tuple[int, ...]:
        """The spatial sizes of ``input_shape``."""
        return tuple(self.input_shape[2:])

    @property
    def gradient_check_shape(self) -> Optional[Tuple[int, ...]]:
        """The input of the gradient check (``check_size`` on every spatial axis, or ``input_shape``); None for
        ``"auto"``, which needs the model's receptive field (:func:`auto_check_size`)."""
        if self.check_size == CHECK_AUTO:
            return None
        return gradient_check_shape(self.input_shape, self.check_size)


def _node_rows(report: RFReport) -> List[Dict[str, Any]]:
    names = SPATIAL_NAMES[len(report.input_size)]
    rows = []
    for k, (name, node) in enumerate(report.nodes.items()):
        row: Dict[str, Any] = {"index": k, "node": name, "op": node.op, "shape": node.shape}
        for ax, a, rf in zip(names, node.axes, rf_text(node, report.input_size)):
            row.update({f"rf_{ax}": rf if "global" in rf else a.rf, f"jump_{ax}": a.jump, f"padding_{ax}": a.padding})
        row.update(aligned=node.aligned, constant=node.constant, exact=node.exact)
        rows.append(row)
    return rows


def _check_rows(check: RFCheck) -> List[Dict[str, Any]]:
    return [{"node": r.node, "op": r.op, "position": r.position, "index": r.index, "analytic": r.analytic,
             "empirical": r.empirical, "ok": r.ok} for r in check.rows]


def _fold_rows(table: FoldedRF) -> List[Dict[str, Any]]:
    return [{"form": r.form, "coordinates": r.coordinates, "kernel": r.kernel, "rf": r.rf, "jump": r.jump,
             "padding": r.padding, "aligned": r.aligned} for r in table.rows]


def rf_text(node: NodeRF, input_size: Sequence[int]) -> Tuple[str, ...]:
    """Per axis, the rf as tables print it: ``"229 (global)"`` where every output reads the whole input.

    Example:
        >>> import torch
        >>> from foldconv.analysis.receptive_field import receptive_field
        >>> rep = receptive_field(torch.nn.Sequential(torch.nn.Conv1d(1, 1, 3), torch.nn.Flatten(), torch.nn.Linear(6, 2)), (1, 1, 8))
        >>> rf_text(rep.output, (8,))
        ('8 (global)',)
    """
    return tuple(f"{a.rf} (global)" if g else str(a.rf) for a, g in zip(node.axes, node.global_axes(input_size)))


def last_spatial(report: RFReport) -> Optional[str]:
    """The deepest node that is still a spatial map: every spatial axis a tensor dim, and some axis whose units
    read different boxes (not after global pooling, a squeeze-excite gate or a linear head); None when no
    node but the input is.

    Example:
        >>> import torch
        >>> from foldconv.analysis.receptive_field import receptive_field
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        ...                           torch.nn.Flatten(), torch.nn.Linear(2, 3))
        >>> last_spatial(receptive_field(net, (1, 1, 16, 16)))
        '_1'
    """
    names = [name for name, node in report.nodes.items()
             if node.op != "input" and all(d is not None for d in node.dims) and not all(a.constant for a in node.axes)]
    return names[-1] if names else None


def auto_check_size(report: RFReport) -> Tuple[int, ...]:
    """Per spatial axis, a gradient-check input on which the boxes of the last spatial layer are not the whole
    image: its field plus two jumps (at least 32), rounded up to a multiple of its jump; scaled down to at
    most :data:`MAX_CHECK_ELEMENTS` spatial elements (then deep boxes may still span the image).

    Example:
        >>> from foldconv.analysis.receptive_field import receptive_field
        >>> from foldconv.models import build_model
        >>> auto_check_size(receptive_field(build_model("resnet18", meta=True), (1, 3, 224, 224)))  # layer4: rf 435, jump 32
        (512, 512)
    """
    name = last_spatial(report)
    node = report[name] if name is not None else report.output
    sizes, steps = [], []
    for a in node.axes:
        step = max(1, a.box_jump if a.aligned else math.ceil(a.jump))
        steps.append(step)
        sizes.append(-(-max(MIN_CHECK_SIZE, a.rf + 2 * step) // step) * step)
    if math.prod(sizes) > MAX_CHECK_ELEMENTS:
        scale = (MAX_CHECK_ELEMENTS / math.prod(sizes)) ** (1 / len(sizes))
        sizes = [max(MIN_CHECK_SIZE, int(n * scale) // st * st) for n, st in zip(sizes, steps)]
    return tuple(sizes)


@dataclass(frozen=True)
class _CheckCost:
    """What the gradient check costs on this machine: a float64 forward of the model takes ``fixed_s`` plus
    ``pixel_s`` per input pixel (fitted to two forwards timed at ``input_shape`` and at twice its sizes: the fixed
    part is the per-op overhead that dominates small inputs); the check is one forward and one backward (about
    two forwards) per box, the ERF a forward and a backward per sample."""

    fixed_s: float
    pixel_s: float
    boxes: int
    samples: int

    def seconds(self, sizes: Sequence[int]) -> float:
        return (self.fixed_s + self.pixel_s * math.prod(sizes)) * (1 + 2 * self.boxes + 3 * self.samples)


def _check_cost(model: Any, e: RFExperiment, report: RFReport) -> _CheckCost:
    """Time float64 forwards of ``model`` at ``input_shape`` (the analysis ran there, so it runs) and at twice its
    sizes (each the second of two runs: the first pays one-time costs), and count the boxes and ERF samples the
    check will measure."""
    import copy
    import time

    import torch

    probe = copy.deepcopy(model).to(torch.float64).eval()

    def forward_s(sizes: Sequence[int]) -> float:
        x = torch.randn(tuple(e.input_shape[:2]) + tuple(sizes), dtype=torch.float64)
        with torch.no_grad():
            probe(x)
            start = time.perf_counter()
            probe(x)
            return time.perf_counter() - start

    small, large = e.input_size, tuple(2 * n for n in e.input_size)
    t_small = forward_s(small)
    try:
        t_large = forward_s(large)
    except Exception:  # noqa: BLE001 - a model fixed to its input size: scale the one timing with the pixels
        t_large = 4 * t_small
    pixel_s = max(t_large - t_small, 0.0) / (math.prod(large) - math.prod(small))
    fixed_s = max(t_small - pixel_s * math.prod(small), 0.0)
    nodes = set(default_check_nodes(report, e.check_nodes)) | ({last_spatial(report)} - {None})
    samples = e.erf_samples if len(e.input_shape) == 4 else 0
    return _CheckCost(fixed_s, pixel_s, 3 * len(nodes), samples)


def _whole_image(report: RFReport, name: str) -> bool:
    """Does the centre unit of ``name`` read the whole input along every axis?"""
    box = report.box(name)
    return box is not None and all(lo <= 0 and hi >= n - 1 for (lo, hi), n in zip(box, report.input_size))


def _log2_axis(ax: Any, values: Sequence[float]) -> None:
    """A base-2 log axis with every power of two in range labelled in plain numbers (1/4, 1, 2, ..., 512)."""
    from fractions import Fraction

    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    lo = math.floor(math.log2(max(min(values), 1e-9)))
    hi = math.ceil(math.log2(max(max(values), 1e-9)))
    every = max(1, math.ceil((hi - lo + 1) / 14))  # at most 14 labels
    ax.set_yscale("log", base=2)
    ax.yaxis.set_major_locator(FixedLocator([2.0 ** k for k in range(lo, hi + 1, every)]))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: str(Fraction(v).limit_denominator(1 << 20))))
    ax.set_ylim(2.0 ** lo / 1.3, 2.0 ** hi * 1.3)


def rf_jump_figure(report: RFReport, name: Optional[str] = None, *, max_labels: int = 120):
    """Receptive-field size and jump of every node along the first spatial axis (base-2 log scales, every power
    of two labelled), nodes named on the x axis (every k-th beyond ``max_labels``); nodes whose field is
    global and the last spatial layer (:func:`last_spatial`) are marked. ``name``: the model's name for the
    title (default: the report's class name)."""
    nodes = list(report.nodes.values())
    axis = SPATIAL_NAMES[len(report.input_size)][0]
    step = label_step(len(nodes), max_labels)
    xs = list(range(len(nodes)))
    fig, (ax1, ax2) = figure(2, 1, figsize=(min(max(8.0, 2.0 + 0.14 * len(nodes) / step), 30.0), 7.5), sharex=True)
    rfs, jumps = [n.axes[0].rf for n in nodes], [float(n.axes[0].jump) for n in nodes]
    ax1.plot(xs, rfs, marker=".")
    glob = [k for k, n in enumerate(nodes) if n.global_axes(report.input_size)[0]]
    if glob:
        ax1.plot(glob, [nodes[k].axes[0].rf for k in glob], "x", color="tab:red", label="global: reads the whole input")
    deepest = last_spatial(report)
    if deepest is not None:
        k = list(report.nodes).index(deepest)
        for ax in (ax1, ax2):
            ax.axvline(k, color="0.5", ls=":", lw=1, label=f"last spatial layer: {deepest}" if ax is ax1 else None)
    if glob or deepest is not None:
        ax1.legend(loc="upper left", fontsize=8)
    ax1.set_ylabel(f"RF size along {axis} (input px)")
    _log2_axis(ax1, rfs)
    ax1.set_title(f"{name or report.model_name} at {report.input_size}: receptive field and jump per node", fontsize=10)
    ax2.plot(xs, jumps, marker=".")
    ax2.set_ylabel(f"jump along {axis} (input px)")
    _log2_axis(ax2, jumps)
    ax2.set_xlabel("node (topological order)" + (f"; one in {step} of {len(nodes)} named" if step > 1 else ""))
    ax2.set_xticks(xs[::step], [nodes[k].name for k in xs[::step]], rotation=90, fontsize=8)
    return fig


#: How the ERF's unit is chosen when ``erf_node`` is not set.
ERF_AUTO = "the last spatial layer (the deepest node that is still a map)"


#: How summary lines of alignment warnings begin.
ALIGNMENT = "alignment warning: "


def erf_unit(report: RFReport, node: str) -> Tuple[Tuple[int, ...], Tuple[float, ...]]:
    """The unit of ``node`` whose field is centred nearest the input's centre, per axis, and that centre (input px).

    A map's middle index is not the middle of the input: a ResNet's 4x4 layer4 at 112 px centres its units at
    -0.5, 31.5, 63.5 and 95.5 px, so index (n - 1) // 2 = 1 draws an ERF in the top-left quadrant.

    Example:
        >>> import torch
        >>> from foldconv.analysis.receptive_field import receptive_field
        >>> rep = receptive_field(torch.nn.Conv2d(1, 1, 3, stride=2, padding=1), (1, 1, 8, 8))
        >>> erf_unit(rep, rep.output_name)
        ((2, 2), (4.0, 4.0))
    """
    rec = report[node]
    index = list(report.center(node))
    centres = []
    for axis, n in enumerate(rec.positions):
        middle = (report.input_size[axis] - 1) / 2

        def centre(i: int, axis: int = axis) -> float:
            lo, hi = report.box(node, tuple(index[:axis]) + (i,) + tuple(index[axis + 1:]), clip=False)[axis]
            return (lo + hi) / 2

        index[axis] = min(range(n), key=lambda i: (abs(centre(i) - middle), i))
        centres.append(centre(index[axis]))
    return tuple(index), tuple(centres)


def erf_figure(erf: np.ndarray, box: Optional[Tuple[Tuple[int, int], ...]], target: str, *, picked: str = "", measured_on: str = "",
               unit: Optional[Tuple[int, ...]] = None, positions: Optional[Tuple[int, ...]] = None,
               centre: Optional[Tuple[float, ...]] = None):
    """Luo et al.'s ERF (normalised to its maximum) with the analytic box drawn over it; ``picked`` says how
    ``target`` was chosen and ``measured_on`` the input it was measured on and why (both shown in the title);
    ``unit`` (of a map of ``positions``) the unit drawn, whose field is centred at ``centre`` (input px, marked)."""
    from matplotlib.patches import Rectangle

    fig, ax = figure(figsize=(5.6, 5.2))
    im = ax.imshow(erf / max(float(erf.max()), 1e-300), cmap="viridis", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, shrink=0.85, label="|gradient| / its maximum")
    if box is not None:
        (h0, h1), (w0, w1) = box
        ax.add_patch(Rectangle((w0 - 0.5, h0 - 0.5), w1 - w0 + 1, h1 - h0 + 1, fill=False, color="red", lw=1.5, label="analytic RF"))
        ax.legend(loc="upper right", fontsize=8)
    if centre is not None:
        ax.plot([centre[1]], [centre[0]], marker="+", color="red", markersize=10, linestyle="none", label="the unit's field centre")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xlabel("input w (px)")
    ax.set_ylabel("input h (px)")
    what = "the centre unit"
    if unit is not None and positions is not None:
        at = f", field centred at ({', '.join(f'{c:g}' for c in centre)}) px" if centre is not None else ""
        what = (f"unit {tuple(unit)} of the {'x'.join(map(str, positions))} map (the unit whose field is centred nearest the "
                f"input's centre{at})")
    ax.set_title(textwrap.fill(f"ERF (Luo et al.) of {what} of {target}", 70) + ("\n" + textwrap.fill(f"({picked})", 70) if picked else "")
                 + ("\n" + textwrap.fill(f"measured on {measured_on}", 70) if measured_on else ""), fontsize=9)
    return fig


def _headline(label: str, report: RFReport) -> str:
    """The answer: the last spatial layer's field (the output's when it is that layer), then what the output reads."""
    o, n = report.output, len(report.nodes)
    deep = last_spatial(report)
    if deep is None or deep == report.output_name:
        glob = " (global: every output unit reads the whole input)" if all(o.global_axes(report.input_size)) else ""
        rf = "(" + ", ".join(rf_text(o, report.input_size)) + ")" if any(o.global_axes(report.input_size)) and not glob else str(o.rf)
        return f"{label}: output rf {rf}{glob}, jump ({', '.join(str(j) for j in o.jump)}), padding {o.padding}; {n} nodes"
    d = report[deep]
    after = ("reads the whole input (global)" if all(o.global_axes(report.input_size))
             else f"rf ({', '.join(rf_text(o, report.input_size))})")
    rf = "(" + ", ".join(rf_text(d, report.input_size)) + ")" if any(d.global_axes(report.input_size)) else str(d.rf)
    return (f"{label}: last spatial layer {deep} {d.shape}: rf {rf}, jump ({', '.join(str(j) for j in d.jump)}), "
            f"padding {d.padding}; the output {report.output_name} {after}; {n} nodes")


def _affordable(sizes: Tuple[int, ...], steps: Sequence[int], cost: _CheckCost, budget_s: float) -> Tuple[int, ...]:
    """``sizes`` made smaller (multiples of ``steps``, at least :data:`MIN_CHECK_SIZE`) until the check is estimated
    to take at most ``budget_s``."""
    while cost.seconds(sizes) > budget_s and any(n > max(MIN_CHECK_SIZE, st) for n, st in zip(sizes, steps)):
        scale = (budget_s / cost.seconds(sizes)) ** (1 / len(sizes))
        smaller = tuple(max(MIN_CHECK_SIZE, st, int(n * min(scale, 0.95)) // st * st) for n, st in zip(sizes, steps))
        if smaller == sizes:
            break
        sizes = smaller
    return sizes


def _check_shape(e: RFExperiment, report: RFReport, cost: Optional[_CheckCost] = None) -> Tuple[Tuple[int, ...], str, str]:
    """The gradient check's input shape, how it was chosen (said where the check's results are shown), and that
    in short (for a figure's title). With ``cost``, an automatic size is made smaller when the check would take
    longer than ``check_budget_s`` on this machine, and says so."""
    if e.check_size != CHECK_AUTO:
        shape = e.gradient_check_shape
        what = f"check_size={e.check_size}" if e.check_size is not None else "check_size=null: input_shape itself"
        short = what
    else:
        sizes = auto_check_size(report)
        deep = last_spatial(report)
        node = report[deep] if deep is not None else report.output
        wanted = sizes
        if cost is not None:
            sizes = _affordable(sizes, [max(1, a.box_jump if a.aligned else math.ceil(a.jump)) for a in node.axes], cost, e.check_budget_s)
        what = (f"check_size=auto: the rf of {deep if deep is not None else 'the output'}, {node.rf}, plus two jumps "
                f"({', '.join(str(j) for j in node.jump)}), at least {MIN_CHECK_SIZE} px, rounded up to a multiple of the jump, "
                f"so that its boxes are not the whole image")
        if sizes != wanted:
            what += (f"; reduced from {'x'.join(map(str, wanted))} px (about {duration(cost.seconds(wanted))} on this machine) to keep the "
                     f"check under check_budget_s={e.check_budget_s:g} s (check_size=<n> sets any size)")
        if any(n < a.rf for n, a in zip(sizes, node.axes)):
            what += "; smaller than that rf: its boxes may span the whole image" if sizes != wanted else (
                f"; capped at {MAX_CHECK_ELEMENTS:,} spatial elements (its boxes may span the whole image)")
        shape = tuple(e.input_shape[:2]) + sizes
        short = f"check_size=auto: from the rf of {deep if deep is not None else 'the output'}, {node.rf}" + (
            f", reduced from {'x'.join(map(str, wanted))} px to fit check_budget_s={e.check_budget_s:g} s" if sizes != wanted else "")
    if shape[2:] != e.input_size:
        bigger = all(c >= n for c, n in zip(shape[2:], e.input_size))
        extra = f"; {'larger than' if bigger else 'instead of'} input_shape's {e.input_size}"
        what, short = what + extra, short + extra
    return shape, what, short


#: What each file of the app's run directory holds (index.md).
RF_FILES = {
    "summary.md": "the answer first: the last spatial layer's receptive field, jump and padding, then the checks, the size the "
                  "gradient check ran at and why, and any alignment warning",
    "rf.json": "the whole analysis as JSON: every node's fields and its centre unit's box, the check's boxes, the fold table, the checks",
    "layers.csv": "every node of the model: receptive field, jump and effective padding per axis, alignment, exactness",
    "layers.md": "the same table in Markdown",
    "check.csv": "analytic boxes against the gradient supports at the check size (chosen from the rf), one row per checked unit",
    "check.md": "the same table in Markdown",
    "fold.csv": "the fold table (only with fold.r): the fold.conv and its fold by fold.r, in folded-map and in input pixels",
    "fold.md": "the same table in Markdown",
    "rf_jump.png": "receptive-field size and jump per node along the first spatial axis",
    "erf.png": "Luo et al.'s effective receptive field of the centre unit of the last spatial layer, with the analytic box over it, "
               "at the gradient check's input size",
    "*.log": "the app's log (Hydra)",
}


def _analyse(model: Any, shape: Tuple[int, ...], fallback: str, seen: List[str]) -> RFReport:
    """:func:`receptive_field`, its alignment warnings collected into ``seen`` (once each) for the summary."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RFAlignmentWarning)  # the report keeps them; the summary says them
        report = receptive_field(model, shape, fallback=fallback)
    seen.extend(w for w in report.warnings if w not in seen)
    return report


def run_receptive_field(e: RFExperiment, out_dir: Union[str, Path]) -> AppResult:
    """The rf app's body: run the experiment, write its tables and figures into ``out_dir``, return the answer
    (the model's output field first) and the checks for :func:`~foldconv.experiments.app.conclude`.

    Files: ``summary.md``; ``rf.json`` (:meth:`RFReport.to_dict` with the check and the fold table);
    ``layers.{csv,md}`` (every node: RF, jump, effective padding, alignment), ``rf_jump.png``, and with
    ``check``: ``check.{csv,md}`` (analytic vs gradient-support boxes) and ``erf.png``; ``fold.{csv,md}`` (the
    fold table, unless ``fold.r=0``). Checks: the folded conv's field in input pixels equals the conv's; every
    analytic box equals its gradient support. Alignment warnings go to the summary (and ``rf.json``).
    """
    if not isinstance(e, RFExperiment):
        raise fold_error("experiment", type(e).__name__, "must be an RFExperiment")
    out = Path(out_dir)
    label = e.model.label
    tables: List[Tuple[List[Dict[str, Any]], str, str]] = []
    figures: List[Tuple[Any, str]] = []
    lines: List[str] = []
    checks: List[Check] = []
    alignment: List[str] = []
    document: Dict[str, Any] = {"model": label, "check": None, "fold": None}
    fold_line = ""
    if e.fold.r != 0:
        conv = build_model(e.fold.spec, param="fold.conv", seed=e.seed)
        try:
            table = folded_receptive_field(conv, e.fold.r, order=e.fold.order, input_size=e.fold.input_size)
        except FoldError as err:  # name the field: fold.r, fold.input_size, or the conv's own (fold.conv.in_channels)
            key = "fold." + (err.param if err.param in ("r", "order", "input_size", "conv") else f"conv.{err.param}")
            raise fold_error(key, err.value, err.rule or str(err)) from None
        tables.append((_fold_rows(table), "fold", f"Receptive field of a conv and of its fold (r={e.fold.r})"))
        document["fold"] = {"r": e.fold.r, "order": e.fold.order, "input_size": list(e.fold.input_size), "ok": bool(table.ok),
                            "rows": _fold_rows(table)}
        fold_line = (f"fold table (fold.conv = {e.fold.spec.label} {getattr(conv, 'in_channels', '?')}->{getattr(conv, 'out_channels', '?')} "
                     f"channels, r={e.fold.r}, as fold.r asked): the folded conv's field in input pixels equals the original's: {table.ok}")
        checks.append(Check("the folded conv's field in input pixels equals the conv's", bool(table.ok), subject=f"fold.conv r={e.fold.r}",
                            claim="RF-3", detail="" if table.ok else "see fold.md"))
    model = build_spd_model(e.model, seed=e.seed)
    require_batch_axis(model, e.input_shape, label=label)
    try:
        report = _analyse(model, e.input_shape, e.fallback, alignment)
    except FoldError as err:
        if err.param == "input_shape" and len(e.input_shape) < 5:  # the batch axis forgotten ([3, 224, 224])?
            batched = (1,) + tuple(e.input_shape)
            try:
                _analyse(model, batched, e.fallback, [])
            except Exception:  # noqa: BLE001 - any failure means the batch axis is not the explanation
                raise err from None
            raise fold_error("input_shape", list(e.input_shape), f"must be a full tensor shape with the batch axis first; did you mean "
                                                                 f"{list(batched)}? ({label} runs on that, not on this)") from None
        raise
    if e.erf_node is not None and e.erf_node not in report.nodes:  # whatever `check` says: a typo is refused, never ignored
        raise fold_error("erf_node", e.erf_node, f"is not a node of the model (layers.csv's node column), e.g. {list(report.nodes)[-8:]}")
    lines.append(_headline(label, report))
    if isinstance(e.model, SpdSpec):
        lines.append(f"{label}: the +spd rewrite replaced {spd_site(e.model)}; its kernel is zero-padded to a multiple of the stride, "
                     f"so these fields (of the architecture, for any weights) can be up to stride - 1 px wider per axis than "
                     f"{e.model.base.label}'s, while with the rewrite's own weights (the padded taps are 0) it computes "
                     f"{e.model.base.label}'s function")
    tables.append((_node_rows(report), "layers", f"Receptive fields of {label} at {e.input_size}"))
    figures.append((rf_jump_figure(report, label), "rf_jump.png"))
    if e.check:
        cost = _check_cost(model, e, report)
        small, why, short = _check_shape(e, report, cost)
        estimate = cost.seconds(small[2:])
        if estimate >= ESTIMATE_AFTER_S:  # a long check says so before it starts
            status(f"gradient check at {'x'.join(map(str, small[2:]))} px: {cost.boxes} boxes and {cost.samples} ERF sample(s), "
                   f"about {duration(estimate)} on this machine (from float64 forwards timed at {'x'.join(map(str, e.input_size))} px and twice that)")
        rep_small = _analyse(model, small, e.fallback, alignment) if small != e.input_shape else report
        deep = last_spatial(rep_small)
        order = {name: k for k, name in enumerate(rep_small.nodes)}
        nodes = sorted(set(default_check_nodes(rep_small, e.check_nodes)) | ({deep} - {None}), key=order.__getitem__)  # the headline's layer too
        if estimate < PROGRESS_AFTER_S:
            chk = check_receptive_field(model, small, nodes=nodes, seed=e.seed, report=rep_small)
        else:  # node by node (the same boxes: each call draws the same positive weights and input), saying how far it got
            import time

            rows, started = [], time.monotonic()
            for k, name in enumerate(nodes, 1):
                rows += check_receptive_field(model, small, nodes=[name], seed=e.seed, report=rep_small).rows
                status(f"gradient check: {k} of {len(nodes)} nodes ({name}) after {duration(time.monotonic() - started)}")
            chk = RFCheck(rep_small.model_name, tuple(rows))
        whole = deep is not None and _whole_image(rep_small, deep)
        why += (f"; the centre box of {deep} still spans the whole check input" if whole else
                f"; the centre box of {deep} is inside it" if deep is not None else "")
        tables.append((_check_rows(chk), "check", f"Analytic vs empirical boxes at {small[2:]} ({why})"))
        document["check"] = {"input_shape": list(small), "why": why, "ok": bool(chk.ok), "boxes": _check_rows(chk)}
        lines.append(f"check at {small[2:]} ({why}): {len(chk.rows)} boxes, analytic = empirical: {chk.ok}")
        checks.append(Check(f"analytic boxes = gradient supports at {small[2:]}", bool(chk.ok), subject=label, claim="RF-2",
                            expected=0, observed=len(chk.mismatches),
                            detail=f"{len(chk.mismatches)} of {len(chk.rows)} analytic boxes differ from the gradient supports (check.md)"))
        if e.erf_node is not None:
            target, picked = e.erf_node, f"erf_node={e.erf_node}"
        else:
            target, picked = deep, f"automatic pick: {ERF_AUTO}; erf_node=<name> sets it"
        if target is not None and len(small) == 4:
            if estimate >= PROGRESS_AFTER_S:
                status(f"ERF of {target}: {e.erf_samples} sample(s) at {'x'.join(map(str, small[2:]))} px")
            unit, centre = erf_unit(rep_small, target)
            erf = effective_receptive_field(model, small, node=target, index=unit, samples=e.erf_samples, seed=e.seed, report=rep_small)
            on = f"{'x'.join(str(n) for n in small[2:])} px, the gradient check's input ({short})"
            figures.append((erf_figure(erf, rep_small.box(target, unit), target, picked=picked, measured_on=on,
                                       unit=unit, positions=rep_small[target].positions, centre=centre), "erf.png"))
        else:
            lines.append("no erf.png: " + ("no node but the input is a spatial map" if target is None else
                                           f"the ERF is drawn for 2-D inputs (this one has {len(small) - 2} spatial axes)"))
    elif e.erf_node is not None:
        lines.append(f"no erf.png for erf_node={e.erf_node}: the ERF is drawn with the gradient check (check=true)")
    if report.fallback_nodes:
        lines.append(f"measured from gradients (fallback={e.fallback}, no rule): {', '.join(report.fallback_nodes)}")
    lines += [f"{ALIGNMENT}{w}" for w in alignment]
    if fold_line:
        lines.append(fold_line)  # after the model's answer: the user asked about the model
    document["receptive_field"] = report.to_dict()
    document["warnings"] = list(alignment)
    document["checks"] = [dataclasses.asdict(c) for c in checks]
    for rows, stem, title in tables:
        write_table(rows, out / stem, title)
    for fig, name in figures:
        save_figure(fig, out / name)
    text = json.dumps(document, indent=1, default=str)
    write_atomic(out / "rf.json", text + "\n")
    title = f"Receptive field of {label} at {e.input_size}"
    failed = [c for c in checks if not c.ok]
    if not checks:
        verdict = "Nothing was checked (check=false: the analytic boxes were not compared with gradient supports)."
    else:
        verdict = "Every check holds." if not failed else "FAILED: " + "; ".join(c.describe() for c in failed) + "."
    # the alignment warnings (one per merge and axis, often a dozen) go last, under their own heading, so that the
    # findings come first
    warned = [line for line in lines[1:] if line.startswith(ALIGNMENT)]
    findings = [line for line in lines[1:] if not line.startswith(ALIGNMENT)]
    if warned:
        nodes = list(dict.fromkeys(w.split("'")[1] for w in warned if w.count("'") >= 2))
        findings.append(f"{len(warned)} alignment warning(s) at {', '.join(nodes) or 'the merges'}: paths whose fields have different "
                        f"centres are merged and the union is reported (listed at the end, and in rf.json)")
    body = [f"# {title}", "", lines[0], "", verdict, ""] + [f"- {line}" for line in findings]
    if warned:
        body += ["", "## Alignment warnings", ""] + [f"- {line[len(ALIGNMENT):]}" for line in warned]
    write_markdown("\n".join(body), out / "summary.md")
    return AppResult(title, lines[0], tuple(checks), RF_FILES, text if e.format == "json" else "\n".join(lines), report,
                     document=e.format == "json")
