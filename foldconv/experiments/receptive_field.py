"""The receptive-field experiment: one model's fields per node, checked against gradients, its ERF, the
fold table (a conv vs its fold, in folded-map and in input pixels), and the torchvision zoo.

The Hydra app ``scripts/receptive_field.py`` registers :class:`RFExperiment` as its structured config and
calls :func:`run_receptive_field`; everything it writes comes from here. Every result is computed first and
the files are written only at the end, so a malformed request (a FoldError) leaves no output behind; a
failed check writes everything and then raises :class:`~foldconv.experiments.app.ClaimFailed`.

Example:
    >>> import tempfile
    >>> conv = {"_target_": "torch.nn.Conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": 3}
    >>> e = RFExperiment(model=conv, input_size=(16, 16), check_size=12, erf_samples=1, fold=FoldTable(r=0))
    >>> print(run_receptive_field(e, tempfile.mkdtemp()).splitlines()[0])
    Conv2d: output rf (3, 3), jump (1, 1), padding (0, 0); 2 nodes
"""
from __future__ import annotations

import textwrap
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
from torch import nn

from .._validate import SPATIAL_NAMES, check_bool, check_int, per_axis_ints
from ..analysis.counting.zoo import classification_models, meta_model
from ..analysis.receptive_field import (
    FoldedRF,
    NodeRF,
    RFCheck,
    RFReport,
    UnsupportedOpError,
    check_receptive_field,
    effective_receptive_field,
    folded_receptive_field,
    receptive_field,
)
from ..errors import FoldError, fold_error
from .app import ClaimFailed, model_label, model_node, parse_r
from .app import build_model as app_build_model
from .io import (
    RowLog,
    duration,
    figure,
    label_step,
    markdown_table,
    progress_bar,
    save_figure,
    write_index,
    write_markdown,
    write_table,
)

__all__ = ["FoldTable", "RFExperiment", "ZOO_COLUMNS", "build_model", "run_receptive_field", "rf_jump_figure", "erf_figure", "zoo_rows",
           "global_axes", "rf_text", "ERF_AUTO"]


def _default_conv() -> Dict[str, Any]:
    return {"_target_": "torch.nn.Conv2d", "in_channels": 256, "out_channels": 8, "kernel_size": 3, "padding": 1}


def _check_model_node(node: Any, param: str) -> Any:
    model_node(node, param=param)  # the apps' one model spelling (app.model_node): a bad name is a FoldError
    return node if isinstance(node, str) else dict(node)


def _sizes(value: Any, param: str) -> Tuple[int, ...]:
    """1 to 3 spatial sizes >= 1; an int means 2-D (as for a bare tensor)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or len(value) not in SPATIAL_NAMES:
        raise fold_error(param, value, "must be 1 to 3 spatial sizes (or one int for a square 2-D input)")
    return per_axis_ints(tuple(value), len(value), param, 1)


@dataclass(frozen=True)
class FoldTable:
    """The fold table: ``conv`` (a ``_target_`` node) folded by ``r`` (``0``: no table; ``16``, ``"2x4"``,
    ``[2, 4]``) in channel ``order``, on an input of spatial size ``input_size``.

    Example:
        >>> FoldTable(r="2x1", input_size=[4, 4]).r
        (2, 1)
    """

    r: Any = 16
    order: str = "crd"
    conv: Any = field(default_factory=_default_conv)
    input_size: Any = (4, 4)

    def __post_init__(self) -> None:
        r = parse_r(self.r)
        if isinstance(r, tuple):
            per_axis_ints(r, len(r), "r", 1)
        elif r != 0:
            check_int(r, "r", 1)
        object.__setattr__(self, "r", r)
        object.__setattr__(self, "conv", _check_model_node(self.conv, "conv"))
        object.__setattr__(self, "input_size", _sizes(self.input_size, "input_size"))
        if not isinstance(self.order, str):
            raise fold_error("order", self.order, "must be an order name ('crd', 'dcr', 'focus') or axes like 'c rh rw'")


@dataclass(frozen=True)
class RFExperiment:
    """Receptive fields of ``model`` (a torchvision name like ``"vgg16"``, or a ``_target_`` node) at
    ``input_size`` with ``channels`` input channels; with ``check``, analytic boxes against gradient supports
    at ``check_size`` px (``check_nodes`` nodes) and Luo et al.'s ERF (``erf_samples``) of the centre unit of
    ``erf_node`` (a node name of layers.csv; default: :data:`ERF_AUTO`); the ``fold`` table; ``fallback``
    ("error" or "real") is what the analysis does at an op without a rule (see
    :func:`foldconv.analysis.receptive_field.receptive_field`);
    with ``zoo``, every torchvision classification model instead of ``model`` (checked up to
    ``zoo_check_max_params`` parameters; a progress bar when ``progress``). ``seed`` seeds the random weights.

    Example:
        >>> RFExperiment(model="vgg16", input_size=96).input_size
        (96, 96)
    """

    model: Any = field(default_factory=lambda: {"_target_": "torchvision.models.resnet18"})
    input_size: Any = (224, 224)
    channels: int = 3
    check: bool = True
    check_size: Optional[int] = 64
    check_nodes: int = 6
    erf_samples: int = 8
    erf_node: Optional[str] = None
    fallback: str = "error"
    fold: FoldTable = field(default_factory=FoldTable)
    zoo: bool = False
    zoo_check_max_params: int = 100_000_000
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", _check_model_node(self.model, "model"))
        object.__setattr__(self, "input_size", _sizes(self.input_size, "input_size"))
        for name, minimum in (("channels", 1), ("check_nodes", 1), ("erf_samples", 1), ("zoo_check_max_params", 0), ("seed", 0)):
            check_int(getattr(self, name), name, minimum)
        check_bool(self.check, "check")
        check_bool(self.zoo, "zoo")
        check_bool(self.progress, "progress")
        if self.check_size is not None:
            check_int(self.check_size, "check_size", 1)
        if self.erf_node is not None and (not isinstance(self.erf_node, str) or not self.erf_node):
            raise fold_error("erf_node", self.erf_node, "must be a node name of layers.csv (or null for the automatic pick)")
        if self.fallback not in ("error", "real"):
            raise fold_error("fallback", self.fallback, "must be 'error' (an op without a rule stops the run) or 'real' (measured from gradients)")
        if not isinstance(self.fold, FoldTable):
            raise fold_error("fold", self.fold, "must be a FoldTable")

    @property
    def input_shape(self) -> Tuple[int, ...]:
        return (1, self.channels) + self.input_size

    @property
    def check_shape(self) -> Tuple[int, ...]:
        n = self.check_size
        return self.input_shape if n is None else (1, self.channels) + (n,) * len(self.input_size)


def build_model(node: Any, *, param: str = "model") -> nn.Module:
    """A torchvision model by name (random weights), ``timm:<name>``, or any module from a ``_target_`` node
    (:func:`foldconv.experiments.app.build_model`); FoldError naming ``param`` when it cannot be built.

    Example:
        >>> build_model({"_target_": "torch.nn.Conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 3})
        Conv2d(1, 2, kernel_size=(3, 3), stride=(1, 1))
    """
    return app_build_model(_check_model_node(node, param), param=param)


def _label(node: Any) -> str:
    return model_label(node)


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


def global_axes(node: NodeRF, input_size: Sequence[int]) -> Tuple[bool, ...]:
    """Per spatial axis: does every output position of ``node`` read the whole input along it (after global
    pooling, a squeeze-excite gate, a linear head)? Its rf then counts padding it never sees.

    Example:
        >>> import torch
        >>> from foldconv.analysis.receptive_field import receptive_field
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3), torch.nn.AdaptiveAvgPool2d(1))
        >>> rep = receptive_field(net, (1, 1, 8, 8))
        >>> global_axes(rep.output, (8, 8)), global_axes(rep.nodes["_0"], (8, 8))
        ((True, True), (False, False))
    """
    out = []
    for a, n, m in zip(node.axes, input_size, node.positions):
        # aligned: position i reads [i*box_jump - padding, ... + rf - 1]; the first and the last must span 0..n-1
        last_lo = (m - 1) * (0 if a.constant else a.box_jump) - a.padding
        out.append(bool(a.aligned and last_lo <= 0 and a.rf - a.padding - 1 >= n - 1))
    return tuple(out)


def rf_text(node: NodeRF, input_size: Sequence[int]) -> Tuple[str, ...]:
    """Per axis, the rf as tables print it: ``"229 (global)"`` where every output reads the whole input.

    Example:
        >>> import torch
        >>> from foldconv.analysis.receptive_field import receptive_field
        >>> rep = receptive_field(torch.nn.Sequential(torch.nn.Conv1d(1, 1, 3), torch.nn.Flatten(), torch.nn.Linear(6, 2)), (1, 1, 8))
        >>> rf_text(rep.output, (8,))
        ('8 (global)',)
    """
    return tuple(f"{a.rf} (global)" if g else str(a.rf) for a, g in zip(node.axes, global_axes(node, input_size)))


def rf_jump_figure(report: RFReport, name: Optional[str] = None, *, max_labels: int = 120):
    """Receptive-field size and jump of every node along the first spatial axis (log scales), nodes named on
    the x axis (every k-th beyond ``max_labels``); nodes whose field is global are marked. ``name``: the
    model's name for the title (default: the report's class name)."""
    nodes = list(report.nodes.values())
    axis = SPATIAL_NAMES[len(report.input_size)][0]
    step = label_step(len(nodes), max_labels)
    xs = list(range(len(nodes)))
    fig, (ax1, ax2) = figure(2, 1, figsize=(min(max(8.0, 2.0 + 0.14 * len(nodes) / step), 30.0), 7.5), sharex=True)
    ax1.plot(xs, [n.axes[0].rf for n in nodes], marker=".")
    glob = [k for k, n in enumerate(nodes) if global_axes(n, report.input_size)[0]]
    if glob:
        ax1.plot(glob, [nodes[k].axes[0].rf for k in glob], "x", color="tab:red", label="global: reads the whole input")
        ax1.legend(loc="upper left", fontsize=8)
    ax1.set_ylabel(f"RF size along {axis} (input px)")
    ax1.set_yscale("log")
    ax1.set_title(f"{name or report.model_name} at {report.input_size}: receptive field and jump per node", fontsize=10)
    ax2.plot(xs, [float(n.axes[0].jump) for n in nodes], marker=".")
    ax2.set_ylabel(f"jump along {axis} (input px)")
    ax2.set_yscale("log")
    ax2.set_xlabel("node (topological order)" + (f"; every {step}th of {len(nodes)} named" if step > 1 else ""))
    ax2.set_xticks(xs[::step], [nodes[k].name for k in xs[::step]], rotation=90, fontsize=8)
    return fig


#: How the ERF's unit is chosen when ``erf_node`` is not set.
ERF_AUTO = "deepest exact, aligned, spatial node whose field fits in half the check input"


def erf_figure(erf: np.ndarray, box: Optional[Tuple[Tuple[int, int], ...]], target: str, *, picked: str = ""):
    """Luo et al.'s ERF (normalised to its maximum) with the analytic box drawn over it; ``picked`` says how
    ``target`` was chosen (shown in the title)."""
    from matplotlib.patches import Rectangle

    fig, ax = figure(figsize=(5.6, 5.2))
    im = ax.imshow(erf / max(float(erf.max()), 1e-300), cmap="viridis", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, shrink=0.85, label="|gradient| / its maximum")
    if box is not None:
        (h0, h1), (w0, w1) = box
        ax.add_patch(Rectangle((w0 - 0.5, h0 - 0.5), w1 - w0 + 1, h1 - h0 + 1, fill=False, color="red", lw=1.5, label="analytic RF"))
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xlabel("input w (px)")
    ax.set_ylabel("input h (px)")
    ax.set_title(f"ERF (Luo et al.) of the centre unit of {target}" + ("\n" + textwrap.fill(f"({picked})", 60) if picked else ""), fontsize=9)
    return fig


#: The columns of zoo.csv (written one model at a time; a rerun in the same directory resumes it).
ZOO_COLUMNS = ["model", "traced", "seconds", "nodes", "rf", "exact", "warnings", "params", "check_size", "checked", "agree", "reason"]


def _zoo_row(name: str, meta: nn.Module, e: RFExperiment) -> Dict[str, Any]:
    """One model of the zoo: its analytic field (on meta) and, when affordable, the gradient check."""
    size = 299 if name == "inception_v3" else e.input_size[0]
    params = sum(p.numel() for p in meta.parameters())
    row: Dict[str, Any] = {"model": name, "params": params}
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = receptive_field(meta, (1, e.channels, size, size))
    except UnsupportedOpError as exc:
        return {**row, "traced": False, "reason": str(exc)[:160]}
    row.update(traced=True, seconds=round(time.perf_counter() - t0, 3), nodes=len(report.nodes),
               rf=rf_text(report.output, report.input_size)[0], exact=report.output.exact, warnings=len(report.warnings))
    if not e.check:
        row.update(agree=None, reason="check=false")
    elif name.startswith("vit") or params > e.zoo_check_max_params:
        row.update(agree=None, reason="ViT needs 224 px (float64 too slow)" if name.startswith("vit") else f"{params / 1e6:.0f}M params")
    else:
        shape = e.check_shape
        try:
            chk = check_receptive_field(build_model(name), shape, max_nodes=e.check_nodes, seed=e.seed)
            row.update(check_size=shape[2], checked=len(chk.rows), agree=chk.ok)
        except FoldError as exc:  # e.g. an input too small for the model: reported, not hidden
            row.update(check_size=shape[2], agree=None, reason=f"check skipped: {str(exc)[:120]}")
    row["seconds"] = round(time.perf_counter() - t0, 3)
    return row


def _zoo_config(e: RFExperiment) -> Dict[str, Any]:
    """What decides the zoo's rows: a rerun resumes zoo.csv only with the same values."""
    return {"input_size": list(e.input_size), "channels": e.channels, "check": e.check, "check_size": e.check_size,
            "check_nodes": e.check_nodes, "zoo_check_max_params": e.zoo_check_max_params, "seed": e.seed}


def _weight(params: int) -> float:
    return 1.0 + params / 1e6  # tracing costs about the same per model; the float64 check grows with the weights


def zoo_rows(
    e: RFExperiment,
    log: Callable[[str], None] = print,
    *,
    out: Optional[Path] = None,
    progress: Optional[Callable[[Iterable, str, int], Iterable]] = None,
    names: Optional[Sequence[str]] = None,
) -> Tuple[List[Dict[str, Any]], bool]:
    """Analyse every torchvision classification model (inception_v3 at 299 px; ``names`` picks some); check
    those the float64 gradient check can afford. Returns the rows and whether every checked model agreed.

    With ``out``, each model's row is appended to ``out/zoo.csv`` as soon as it is done
    (:class:`~foldconv.experiments.io.RowLog`: a kill loses no finished model, and a rerun with the same
    settings in the same directory skips the models already there). ``log`` gets the up-front estimate
    (the first model is the calibration: the others are scaled by their parameter counts); ``progress(items,
    desc, total)`` wraps the loop.
    """
    names = list(classification_models() if names is None else names)
    fresh: List[Dict[str, Any]] = []
    log_file = RowLog(out / "zoo.csv", ZOO_COLUMNS, key=["model"], config=_zoo_config(e), param="hydra.run.dir") if out is not None else None
    try:
        done = log_file.done if log_file is not None else set()
        todo = [n for n in names if (n,) not in done]
        metas = {n: meta_model(n) for n in todo}
        weights = {n: _weight(sum(p.numel() for p in m.parameters())) for n, m in metas.items()}
        head = f"{len(names)} models" + (f" ({len(names) - len(todo)} already in zoo.csv, resuming; {len(todo)} to run)" if len(todo) < len(names) else "")
        if not todo:
            log(f"{head}: nothing left to compute")
        items = progress(todo, "receptive-field zoo", len(todo)) if progress else todo
        for k, name in enumerate(items):
            t0 = time.perf_counter()
            row = _zoo_row(name, metas.pop(name), e)
            fresh.append(row)
            if log_file is not None:
                log_file.append(row)
            if k == 0:
                rest = sum(weights[n] for n in todo[1:]) / weights[name] * (time.perf_counter() - t0)
                log(f"{head}, about {duration(time.perf_counter() - t0 + rest)} on this machine (the first model calibrates; the bar's ETA refines it)")
            if progress is None:
                log(f"{name}: rf {row.get('rf', '-')}, agree={row.get('agree')}" if row["traced"] else f"{name}: no analytic result ({row['reason'][:80]})")
    finally:
        if log_file is not None:
            log_file.close()
    rows = fresh
    if log_file is not None:
        rows = log_file.rows()
        typed = [{c: _typed(v) for c, v in r.items()} for r in rows if r["model"] in set(names)]
        rows = sorted(typed, key=lambda r: names.index(r["model"]))
    ok = all(r.get("agree") is not False for r in rows)
    return rows, ok


def _typed(value: str) -> Any:
    """A zoo.csv cell back to the value it was written from (so resumed and fresh rows read the same)."""
    if value == "":
        return None
    if value in ("True", "False"):
        return value == "True"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


#: What each file of the app's run directory holds (index.md).
RF_FILES = {
    "summary.md": "the answer first: the model's output receptive field, jump and padding (or the zoo's verdict), then the checks",
    "layers.csv": "every node of the model: receptive field, jump and effective padding per axis, alignment, exactness",
    "layers.md": "the same table in Markdown",
    "check.csv": "analytic boxes against the gradient supports at the check size, one row per checked unit",
    "check.md": "the same table in Markdown",
    "zoo.csv": "one row per torchvision classification model (written as each finishes; a rerun here resumes it)",
    "zoo.config.json": "the settings that produced zoo.csv (a rerun in this directory resumes only with the same ones)",
    "zoo.md": "the same table in Markdown",
    "fold.csv": "the fold table: the fold.conv and its fold by fold.r, in folded-map and in input pixels",
    "fold.md": "the same table in Markdown",
    "rf_jump.png": "receptive-field size and jump per node along the first spatial axis",
    "erf.png": "Luo et al.'s effective receptive field of one unit, with the analytic box over it",
    "*.log": "the app's log (Hydra)",
}


def run_receptive_field(
    e: RFExperiment, out_dir: Union[str, Path], *, progress: Optional[Callable[[Iterable, str, int], Iterable]] = None,
    log: Callable[[str], None] = print,
) -> str:
    """Run the experiment and write its files into ``out_dir``; returns the summary lines, the model's answer first.

    Files: ``summary.md`` and ``index.md``; ``layers.{csv,md}`` (every node: RF, jump, effective padding,
    alignment), ``rf_jump.png``, and with ``check``: ``check.{csv,md}`` (analytic vs gradient-support boxes)
    and ``erf.png``, or with ``zoo``: ``zoo.{csv,md}`` (zoo.csv grows one model at a time and resumes);
    ``fold.{csv,md}`` (the fold table, unless ``fold.r=0``). Raises ClaimFailed after writing when a check
    fails (the fold table inconsistent, a box mismatch, a zoo model disagreeing).
    """
    out = Path(out_dir)
    tables: List[Tuple[List[Dict[str, Any]], str, str]] = []
    figures: List[Tuple[Any, str]] = []
    lines: List[str] = []
    failed: List[str] = []
    fold_line = ""
    if e.fold.r != 0:
        conv = build_model(e.fold.conv, param="fold.conv")
        try:
            table = folded_receptive_field(conv, e.fold.r, order=e.fold.order, input_size=e.fold.input_size)
        except FoldError as err:  # name the field: fold.r, fold.input_size, or the conv's own (fold.conv.in_channels)
            key = "fold." + (err.param if err.param in ("r", "order", "input_size", "conv") else f"conv.{err.param}")
            raise fold_error(key, err.value, err.rule or str(err)) from None
        tables.append((_fold_rows(table), "fold", f"Receptive field of a conv and of its fold (r={e.fold.r})"))
        fold_line = (f"fold table (fold.conv = {_label(e.fold.conv)} {getattr(conv, 'in_channels', '?')}->{getattr(conv, 'out_channels', '?')} "
                     f"channels, r={e.fold.r}; fold.r=0 skips it): the folded conv's field in input pixels equals the original's: {table.ok}")
        if not table.ok:
            failed.append("the folded conv's field in input pixels differs from the conv's")
    if e.zoo:
        bar = progress or (lambda items, desc, total: progress_bar(items, desc, total=total, unit="model"))
        rows, ok = zoo_rows(e, log, out=out, progress=bar if e.progress else None)
        tables.append((rows, "zoo", "Receptive fields of the torchvision classification zoo"))
        checked = [r for r in rows if r.get("agree") is not None]
        traced = sum(bool(r.get("traced")) for r in rows)
        lines.append(f"zoo: {len(rows)} models, {traced} traced, {len(checked)} checked against gradients, "
                     f"{sum(bool(r['agree']) for r in checked)} agree" + ("" if ok else " (DISAGREEMENTS: see zoo.md)"))
        if not ok:
            failed.append("a zoo model's analytic boxes differ from its gradient supports")
    else:
        model = build_model(e.model)
        report = receptive_field(model, e.input_shape, fallback=e.fallback)
        o = report.output
        glob = " (global: every output unit reads the whole input)" if all(global_axes(o, report.input_size)) else ""
        rf = "(" + ", ".join(rf_text(o, report.input_size)) + ")" if any(global_axes(o, report.input_size)) and not glob else str(o.rf)
        lines.append(f"{_label(e.model)}: output rf {rf}{glob}, jump ({', '.join(str(j) for j in o.jump)}), padding {o.padding}; {len(report.nodes)} nodes")
        tables.append((_node_rows(report), "layers", f"Receptive fields of {_label(e.model)} at {e.input_size}"))
        figures.append((rf_jump_figure(report, _label(e.model)), "rf_jump.png"))
        if e.check:
            small = e.check_shape
            chk = check_receptive_field(model, small, max_nodes=e.check_nodes, seed=e.seed)
            tables.append((_check_rows(chk), "check", f"Analytic vs empirical boxes at {small[2:]}"))
            lines.append(f"check at {small[2:]}: {len(chk.rows)} boxes, analytic = empirical: {chk.ok}")
            if not chk.ok:
                failed.append(f"{len(chk.mismatches)} analytic boxes differ from the gradient supports")
            rep_small = receptive_field(model, small, fallback=e.fallback)
            if e.erf_node is not None:
                if e.erf_node not in rep_small.nodes:
                    known = list(rep_small.nodes)
                    raise fold_error("erf_node", e.erf_node, f"is not a node of the model (layers.csv's node column), e.g. {known[-8:]}")
                target, picked = e.erf_node, f"erf_node={e.erf_node}"
            else:
                spatial = [name for name, nd in rep_small.nodes.items()
                           if nd.exact and nd.aligned and not nd.constant and max(nd.rf) <= small[2] // 2]
                target, picked = (spatial[-1] if spatial else None), f"automatic pick: {ERF_AUTO}; erf_node=<name> sets it"
            if target is not None and len(small) == 4:
                erf = effective_receptive_field(model, small, node=target, samples=e.erf_samples, seed=e.seed, report=rep_small)
                figures.append((erf_figure(erf, rep_small.box(target), target, picked=picked), "erf.png"))
    if fold_line:
        lines.append(fold_line)  # after the model's answer: the user asked about the model
    for rows, stem, title in tables:
        if stem == "zoo":  # zoo.csv is complete already (written row by row)
            write_markdown(f"# {title}\n\n" + markdown_table(rows, ZOO_COLUMNS), out / "zoo.md")
        else:
            write_table(rows, out / stem, title)
    for fig, name in figures:
        save_figure(fig, out / name)
    title = "Receptive fields of the torchvision zoo" if e.zoo else f"Receptive field of {_label(e.model)} at {e.input_size}"
    verdict = ("Every check holds." if not failed else "FAILED: " + "; ".join(failed) + ".")
    write_markdown("\n".join([f"# {title}", "", lines[0], "", verdict, ""] + [f"- {line}" for line in lines[1:]]), out / "summary.md")
    write_index(out, RF_FILES, title=title, answer=lines[0])
    if failed:
        raise ClaimFailed("; ".join(failed) + f" (outputs in {out})")
    return "\n".join(lines + [f"outputs in {out}"])
