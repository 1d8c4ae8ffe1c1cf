"""Export a model (any equivalent form) to ONNX in memory, run it in onnxruntime, compare with torch, list its ops.

The exported model has dynamic batch and spatial axes: it runs at other input sizes, and :func:`export_onnx` checks
it at one (every spatial size doubled, unless told) besides the example's. foldconv's forms read no input size while
traced (a sub-pixel conv crops rows counted from each end, a periodic bias splits each axis with ``unflatten``, a
space-to-depth form computes its cut from the traced sizes), so nothing of the example's size is baked in. The
shape arithmetic dynamic axes bring (``Shape``, ``Gather`` on shapes, ...) is left out of the op list:
:func:`onnx_op_types` lists the ops that touch data.

Which ONNX ops a form lowers to is what decides whether a deployment target runs it: ``nn.PixelShuffle``
becomes ``DepthToSpace`` in mode ``CRD``, foldconv's einops layouts and ``nn.PixelUnshuffle`` become
``Reshape``/``Transpose`` chains (ONNX's ``SpaceToDepth`` has one channel order, DCR, and no mode attribute),
a transposed conv ``ConvTranspose`` (claim ONNX-2). foldconv's ``"dcr"`` / ``"crd"`` orders are bit-identical to
onnxruntime's ``DepthToSpace`` DCR / CRD and ``"dcr"`` to its ``SpaceToDepth`` (claim ONNX-1, checked on graphs built
with ``onnx.helper``). onnx and onnxruntime are dev-extra dependencies, imported when called.
"""
from __future__ import annotations

import contextlib
import copy
import importlib
import io
import logging
import math
import numbers
import os
import re
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

import torch
from torch import nn

from .. import tracing
from .._validate import require_int
from ..errors import FoldError, first_line, fold_error

__all__ = ["OnnxReport", "batch_norm_inputs", "export_onnx", "onnx_op_types", "onnx_ops", "require_package"]


def require_package(name: str, purpose: str = "ONNX export") -> Any:
    """Import ``name`` (a dev-extra dependency); a FoldError naming the package when it is missing.

    Example:
        >>> require_package("onnx").__name__
        'onnx'
    """
    try:
        return importlib.import_module(name)
    except ImportError:
        raise fold_error("package", name, f"is needed for {purpose} and is not installed: pip install -e '.[dev]'") from None


def _shape_nodes(graph: Any) -> set:
    """Positions of the nodes that compute on shapes only: every input a ``Shape`` output, a ``Constant``, an integer
    initializer or the output of such a node (what dynamic axes add to a graph to compute reshape targets)."""
    onnx = require_package("onnx")
    derived = {init.name for init in graph.initializer if init.data_type == onnx.TensorProto.INT64}
    nodes = set()
    for k, node in enumerate(graph.node):
        inputs = [i for i in node.input if i]
        if node.op_type in ("Shape", "Constant") or (inputs and all(i in derived for i in inputs)):
            derived.update(node.output)
            nodes.add(k)
    return nodes


def batch_norm_inputs(model_proto: Any) -> Tuple[str, ...]:
    """For each ``BatchNormalization`` node of an ONNX graph, in graph order, the op type of the node that feeds
    its data input (``"input"`` for a graph input): the exporter folds an eval-mode BatchNorm into the ``Conv``
    right before it, so the nodes that remain say what stood between.

    Example:
        >>> from onnx import helper
        >>> nodes = [helper.make_node("Slice", ["x", "s", "e"], ["y"]), helper.make_node("BatchNormalization", ["y", "g", "b", "m", "v"], ["z"])]
        >>> batch_norm_inputs(helper.make_model(helper.make_graph(nodes, "g", [], [])))
        ('Slice',)
    """
    producer = {out: node.op_type for node in model_proto.graph.node for out in node.output}
    return tuple(producer.get(node.input[0], "input") for node in model_proto.graph.node if node.op_type == "BatchNormalization")


def onnx_op_types(model_proto: Any) -> Tuple[str, ...]:
    """The op type of every node of an ONNX graph that computes on data, in graph order, ``DepthToSpace`` with its
    mode (``"DepthToSpace(CRD)"``, ``"DepthToSpace(DCR)"``, ONNX's default) and ``SpaceToDepth`` as
    ``"SpaceToDepth(DCR)"`` (its only order). ``Constant`` nodes and shape arithmetic (``Shape`` and what computes on
    shapes only, which a graph with dynamic axes needs for its reshape targets) are left out.

    Example:
        >>> from onnx import helper
        >>> node = helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=2, mode="CRD")
        >>> graph = helper.make_graph([node], "g", [], [])
        >>> onnx_op_types(helper.make_model(graph))
        ('DepthToSpace(CRD)',)
    """
    helper = require_package("onnx").helper
    shapes = _shape_nodes(model_proto.graph)
    ops = []
    for k, node in enumerate(model_proto.graph.node):
        if node.op_type == "Constant" or k in shapes:
            continue
        if node.op_type == "DepthToSpace":
            modes = [helper.get_attribute_value(a) for a in node.attribute if a.name == "mode"]
            mode = modes[0].decode() if modes and isinstance(modes[0], bytes) else (modes[0] if modes else "DCR")
            ops.append(f"DepthToSpace({mode})")
        elif node.op_type == "SpaceToDepth":
            ops.append("SpaceToDepth(DCR)")
        else:
            ops.append(node.op_type)
    return tuple(ops)


@dataclass(frozen=True)
class OnnxReport:
    """What :func:`export_onnx` found: the exporter used, the ONNX ops, and onnxruntime's output against torch's.

    ``opset``: the opset the file declares (the dynamo exporter writes 18 when it cannot convert down to the one
    asked for). ``max_abs_error``: largest ``|onnxruntime - torch|`` on one unit-normal float32 input; ``max_rel_error`` the
    same over the largest ``|torch|`` output. ``dynamic``: the batch and spatial axes were exported dynamic;
    ``other_sizes``: ``(input shape, max_rel_error)`` of the same file run at other input shapes (``inf`` when
    onnxruntime failed there or gave another output shape); ``data``: the ONNX file's bytes. ``ok`` (and ``bool``):
    every relative error ``<= rtol``. ``norm_inputs``: for each ``BatchNormalization`` node of the file, the op type
    that feeds it: the exporter folds an eval-mode BatchNorm into the ``Conv`` right before it, so a node left is
    one that follows something else.
    """

    model: str
    input_shape: Tuple[int, ...]
    opset: int
    exporter: str
    ops: Tuple[str, ...]
    max_abs_error: float
    max_rel_error: float
    rtol: float
    note: str = ""
    dynamic: bool = False
    other_sizes: Tuple[Tuple[Tuple[int, ...], float], ...] = ()
    data: bytes = field(default=b"", repr=False, compare=False)
    norm_inputs: Tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.ok

    @property
    def ok(self) -> bool:
        """onnxruntime's output agrees with torch's within ``rtol`` (relative to the largest output), at the
        example's shape and at every other shape it was run at."""
        return self.max_rel_error <= self.rtol and all(err <= self.rtol for _, err in self.other_sizes)

    @property
    def op_counts(self) -> Dict[str, int]:
        """How many nodes of each op type, in order of first appearance."""
        counts: Dict[str, int] = {}
        for op in self.ops:
            counts[op] = counts.get(op, 0) + 1
        return counts

    def describe_ops(self) -> str:
        """``"Conv, DepthToSpace(CRD)"``, with ``x3`` after an op that occurs three times."""
        return ", ".join(op if n == 1 else f"{op} x{n}" for op, n in self.op_counts.items())

    def summary(self) -> str:
        verdict = "agrees" if self.ok else "DISAGREES"
        sizes = "".join(f"; at {shape}: max rel {err:.2e}" for shape, err in self.other_sizes)
        axes = "dynamic batch and spatial axes" if self.dynamic else "static shapes"
        return (f"{self.model}: onnxruntime {verdict} with torch (max abs {self.max_abs_error:.2e}, max rel "
                f"{self.max_rel_error:.2e}, rtol {self.rtol:g}{sizes}); {axes}; opset {self.opset}, {self.exporter} exporter; "
                f"ops: {self.describe_ops()}")

    def row(self) -> Dict[str, Any]:
        return {"model": self.model, "ops": self.describe_ops(), "max abs": self.max_abs_error,
                "max rel": self.max_rel_error, "other sizes": "; ".join(f"{s}: {e:.1e}" for s, e in self.other_sizes),
                "dynamic": self.dynamic, "ok": self.ok, "exporter": self.exporter}


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Silence the named loggers (the dynamo exporter logs its steps and its opset conversion)."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def _no_stdout() -> Iterator[None]:
    """Keep what torch writes on the process's stdout, from C++ too, off it: the legacy exporter logs its whole graph
    there when it fails (the failure is reported as one line instead)."""
    fd = 1  # the process's stdout, where C++ writes, whatever sys.stdout is now
    try:
        saved = os.dup(fd)
    except OSError:  # no file descriptor 1: only Python's writes can be caught
        with contextlib.redirect_stdout(io.StringIO()):
            yield
        return
    with contextlib.suppress(AttributeError, ValueError, OSError):
        sys.stdout.flush()
    try:
        with tempfile.TemporaryFile() as sink, contextlib.redirect_stdout(io.StringIO()):
            os.dup2(sink.fileno(), fd)
            try:
                yield
            finally:
                os.dup2(saved, fd)
    finally:
        os.close(saved)


def _exporter_error(err: BaseException, limit: int) -> str:
    """An exporter's error in one line: its first line without torch's invitation to file a request (whose link a
    cut would leave half), cut at a word boundary."""
    text = re.sub(r"\s*Please feel free to request support.*$", "", first_line(err, with_type=True))
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " ..."
    return text


def _dynamic_axes(x: torch.Tensor, y: torch.Tensor) -> Dict[str, Dict[int, str]]:
    """Batch and spatial axes of the input, and every axis of the output but its channels, named for the exporter."""
    return {"x": {a: "batch" if a == 0 else f"x_{a}" for a in range(x.dim()) if a != 1},
            "y": {a: "batch" if a == 0 else f"y_{a}" for a in range(y.dim()) if a != 1}}


def _export(model: nn.Module, x: torch.Tensor, y: torch.Tensor, opset: int, name: str) -> Tuple[bytes, str, str, bool]:
    """ONNX bytes (dynamic batch and spatial axes) from the legacy (TorchScript) exporter, or from the dynamo exporter
    when the legacy one fails; the exporter, a note, and whether the axes are dynamic."""
    legacy_failure = ""
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), _no_stdout():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation warning on every call
            torch.onnx.export(model, (x,), buffer, opset_version=opset, dynamo=False, input_names=["x"], output_names=["y"],
                              dynamic_axes=_dynamic_axes(x, y))
        return buffer.getvalue(), "torchscript", "", True
    except Exception as err:  # noqa: BLE001  the legacy exporter fails in many types; the dynamo one is the fallback
        legacy_failure = f"legacy exporter failed: {_exporter_error(err, 200)}"
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet("torch.onnx", "onnxscript"):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, (x,), opset_version=opset, dynamo=True, verbose=False, input_names=["x"], output_names=["y"])
        return program.model_proto.SerializeToString(), "dynamo", f"{legacy_failure}; exported with static shapes", False
    except Exception as err:  # noqa: BLE001
        raise fold_error("model", name, f"torch.onnx.export failed: {legacy_failure}; dynamo exporter: {_exporter_error(err, 200)}") from None


def _relative_error(got: torch.Tensor, expected: torch.Tensor) -> Tuple[float, float]:
    """(max abs, max abs over the largest |expected|) of onnxruntime's output against torch's; inf for another shape."""
    if got.shape != expected.shape:
        return math.inf, math.inf
    max_abs = float((got - expected).abs().max()) if got.numel() else 0.0
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    return max_abs, max_abs / scale if scale else (0.0 if max_abs == 0 else math.inf)


def _other_shapes(shape: Tuple[int, ...], other_shapes: Optional[Sequence[Sequence[int]]]) -> Tuple[Tuple[int, ...], ...]:
    if other_shapes is None:  # every spatial size doubled: any divisibility the model needs still holds
        return ((shape[0], shape[1]) + tuple(2 * n for n in shape[2:]),) if len(shape) > 2 else ()
    if isinstance(other_shapes, (str, bytes)) or not isinstance(other_shapes, Sequence):
        raise fold_error("other_shapes", other_shapes, "must be a sequence of input shapes (or None: the spatial sizes doubled)")
    return tuple(tracing.validate_input_shape(s, param="other_shapes", ranks=(len(shape),)) for s in other_shapes)


def _float_run(model: nn.Module, x: torch.Tensor, label: str) -> Tuple[nn.Module, torch.Tensor]:
    """A float32 CPU eval copy of ``model`` (what is exported) and its output on ``x``; FoldError naming
    ``input_shape`` when it cannot run on ``x``, ``model`` when it does not return one tensor."""
    model = copy.deepcopy(model).eval().float().cpu()
    try:
        with torch.no_grad():
            y = model(x)
    except (RuntimeError, ValueError, IndexError) as err:
        raise fold_error("input_shape", tuple(x.shape), f"the model cannot run on it: {first_line(err)}") from None
    if not isinstance(y, torch.Tensor):
        raise fold_error("model", label, f"must return one tensor to compare, not {type(y).__name__}")
    return model, y


def export_onnx(model: nn.Module, input_shape: Sequence[int], *, opset: int = 17, rtol: float = 1e-4, seed: int = 0,
                other_shapes: Optional[Sequence[Sequence[int]]] = None, name: Optional[str] = None) -> OnnxReport:
    """Export ``model`` (a copy, in eval mode, float32, on the CPU) to ONNX in memory with dynamic batch and spatial
    axes, run it with onnxruntime's CPUExecutionProvider on one seeded unit-normal input and compare with torch;
    then run the same file at ``other_shapes`` (default: every spatial size doubled) and compare again. A shape the
    model itself (in torch) cannot run is left out, and the note says so. ``report.data`` holds the file's bytes.

    Args:
        model: the network (``nn.Module`` returning one tensor); it is copied, never modified.
        input_shape: the full input shape (ints >= 1) of the example input.
        opset: the ONNX opset to ask for, an int >= 7 (default 17).
        rtol: the largest relative error that counts as agreement, a finite number >= 0 (default ``1e-4``).
        seed: the seed of the unit-normal inputs, an int >= 0 (default 0).
        other_shapes: further input shapes of the same rank to run the file at (default: spatial sizes doubled).
        name: what the report and any error call the model (default: its one-line repr or its class name).

    Returns:
        An :class:`~foldconv.surgery.onnx_export.OnnxReport` (truthy when every error is within ``rtol``):
        ``ops``, ``opset``, ``exporter``, ``max_rel_error``, ``dynamic``, ``other_sizes``, ``note`` and ``data``.

    Raises:
        FoldError: naming ``model`` (not a module, not one tensor out, another output shape in onnxruntime),
        ``input_shape`` (malformed, too large, or the model cannot run on it), ``opset``, ``rtol``, ``seed``,
        ``other_shapes``, or ``package`` when onnx or onnxruntime is missing.

    Example:
        >>> report = export_onnx(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.PixelShuffle(2)), (1, 3, 8, 8))
        >>> report.ok, report.ops, report.dynamic, [shape for shape, _ in report.other_sizes]
        (True, ('Conv', 'DepthToSpace(CRD)'), True, [(1, 3, 16, 16)])
    """
    if not isinstance(model, nn.Module):
        raise fold_error("model", type(model).__name__, "must be an nn.Module")
    if name is not None and not isinstance(name, str):
        raise fold_error("name", name, "must be a string (the model's label) or None")
    label = name if name is not None else _name(model)
    shape = tracing.validate_input_shape(input_shape, ranks=range(1, 64))
    opset = require_int(opset, "opset", 7)
    if isinstance(rtol, bool) or not isinstance(rtol, numbers.Real) or not 0 <= rtol < math.inf:
        raise fold_error("rtol", rtol, "must be a finite number >= 0")
    others = _other_shapes(shape, other_shapes)
    # torch's float32 forward, the exporter's trace of it and onnxruntime's run, at the largest shape asked for
    for s in (shape,) + others:
        tracing.require_run_memory(model, s, copies=3, bytes_per_element=4, what="exporting the model and running it in onnxruntime")
    onnx = require_package("onnx")
    ort = require_package("onnxruntime")
    gen = torch.Generator().manual_seed(require_int(seed, "seed", 0))
    x = torch.randn(shape, generator=gen)
    model, expected = _float_run(model, x, label)
    data, exporter, note, dynamic = _export(model, x, expected, opset, label)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    got = torch.from_numpy(session.run(None, {name: x.numpy()})[0])
    if got.shape != expected.shape:
        raise fold_error("model", label, f"onnxruntime returned shape {tuple(got.shape)}, torch {tuple(expected.shape)}")
    max_abs, max_rel = _relative_error(got, expected)
    sizes, skipped = [], []
    for other in others:
        xo = torch.randn(other, generator=gen)
        try:
            with torch.no_grad():
                want = model(xo)
        except (RuntimeError, ValueError, IndexError, FoldError):
            skipped.append(other)
            continue
        try:
            out = torch.from_numpy(session.run(None, {name: xo.numpy()})[0])
        except Exception:  # noqa: BLE001 (onnxruntime's failure at that size: the file holds a size it should not)
            sizes.append((other, math.inf))
            continue
        sizes.append((other, _relative_error(out, want)[1]))
    if skipped:
        note = "; ".join(filter(None, (note, f"the model itself does not run at {', '.join(map(str, skipped))}")))
    proto = onnx.load_from_string(data)
    # The dynamo exporter may write a higher opset than asked for when it cannot convert down: report what it wrote.
    written = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
    return OnnxReport(label, shape, written, exporter, onnx_op_types(proto), max_abs, max_rel, float(rtol), note,
                      dynamic, tuple(sizes), data, batch_norm_inputs(proto))


def onnx_ops(model: nn.Module, input_shape: Sequence[int], *, opset: int = 17, name: Optional[str] = None) -> Tuple[str, ...]:
    """The ONNX ops ``model`` exports to on an input of ``input_shape`` (as :func:`onnx_op_types` lists them), with
    the same exporter settings as :func:`export_onnx` but no onnxruntime run: what one site's own steps become,
    exported alone, to tell them from what the exporter made of the model around them.

    Raises a FoldError naming ``model`` (called ``name``) when the export fails, or ``input_shape``.

    Example:
        >>> onnx_ops(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.PixelShuffle(2)), (1, 3, 8, 8))
        ('Conv', 'DepthToSpace(CRD)')
    """
    if not isinstance(model, nn.Module):
        raise fold_error("model", type(model).__name__, "must be an nn.Module")
    shape = tracing.validate_input_shape(input_shape, ranks=range(1, 64))
    tracing.require_run_memory(model, shape, copies=3, bytes_per_element=4, what="exporting the model")
    onnx = require_package("onnx")
    label = name if isinstance(name, str) else _name(model)
    x = torch.zeros(shape)
    model, y = _float_run(model, x, label)
    data = _export(model, x, y, require_int(opset, "opset", 7), label)[0]
    return onnx_op_types(onnx.load_from_string(data))


def _name(model: nn.Module) -> str:
    text = repr(model)
    return text if "\n" not in text and len(text) < 100 else type(model).__name__

