"""Analytic receptive fields of any ``torch.fx``-traceable model, in the coordinates of the network's input.

``receptive_field(model, input_shape)`` traces the model, runs it once on meta tensors (no memory, no
arithmetic) to learn every node's shape, and gives every node, per spatial axis, the receptive-field size
``r``, the effective stride (jump) ``j`` and the effective padding ``P`` of Araujo, Norris & Sim
(Distill 2019): output index ``i`` of the node reads the input pixels ``[i*j - P, i*j - P + r - 1]``.

Layout ops move features off the input grid: depth-to-space / pixel shuffle by ``r`` divides the jump by
``r`` (``fractions.Fraction``), space-to-depth multiplies it. A node whose boxes are not of the affine form
above is reported ``aligned=False``; its ``rf`` is then the largest exact box and ``jump`` the geometric
(fractional) stride. Exact boxes for any node and index come from :meth:`RFReport.box`, which pulls the
index back through the graph. Derivations: ``paper_notes/receptive_fields.md``.
"""
from __future__ import annotations

import sys
import warnings
from dataclasses import replace
from fractions import Fraction
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type, Union

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from ... import tracing
from ..._validate import SPATIAL_NAMES
from ...errors import fold_error
from ...registry import Registry
from ..fallback import validate_fallback
from . import rules_aten, rules_attention, rules_tensor, rules_timm, rules_window  # noqa: F401  (registers the built-in rules)
from .aten import record_aten, select_output
from .context import RuleContext
from .geometry import IDENTITY, Broadcast, Geometry, Record
from .measure import measure_node
from .pullback import AnalysedGraph, unclipped_hull, unclipped_support
from .registry import RF_RULES, Rule, leaf_types, rule_for
from .report import AxisRF, NodeRF, RFReport
from .rules_aten import aten_rule, fuse_matmuls
from .trace import UnsupportedOpError, has_tensor, is_shape, meta_values, op_name, real_values, trace_model

#: Input ranks the receptive-field analyses take: (N, C, *spatial) with 1 to 3 spatial axes.
RF_RANKS = range(3, 6)

#: How :func:`receptive_field` turns a model into a graph.
TRACES = ("auto", "fx", "aten")

__all__ = ["RF_RANKS", "TRACES", "RFAlignmentWarning", "receptive_field", "validate_leaves", "Leaves"]

#: Modules kept whole when tracing: module classes and/or qualified module names.
Leaves = Sequence[Union[Type[nn.Module], str]]


class RFAlignmentWarning(UserWarning):
    """Merged paths see regions with different centres or different strides (Araujo et al.'s alignment)."""


def receptive_field(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    fallback: str = "error",
    leaves: Leaves = (),
    rules: Optional[Mapping[Any, Rule]] = None,
    output: Any = None,
    trace: str = "auto",
) -> RFReport:
    """Analytic receptive field, effective stride and effective padding of every node of ``model``.

    ``input_shape`` is ``(N, C, *spatial)``. ``trace`` says how the model becomes a graph: ``"fx"`` traces
    it with ``torch.fx`` (modules, functions and methods, with their rules; shapes from one run on meta
    tensors); ``"aten"`` records the aten operations of one run (:mod:`~.aten`: any model that runs, its
    Python control flow followed as it ran, on meta tensors when its weights are on meta, else on real ones);
    ``"auto"`` (the default) traces with ``torch.fx`` and records aten operations where that fails (the model
    cannot be traced or run traced, or an op has no rule). An op without a rule raises
    :class:`UnsupportedOpError` naming it, unless ``fallback="real"``: then that node's field is measured
    from gradients on real tensors (see :mod:`foldconv.analysis.receptive_field.measure`) and the analysis
    continues from it.

    ``output``: which tensor of the model's output to follow when it returns several (a key of a mapping
    such as a Hugging Face ``ModelOutput``, e.g. ``"last_hidden_state"``, or an index of a tuple); None: the
    output itself, or its first tensor.

    ``leaves``: modules to keep whole when tracing, as module classes and/or qualified module names
    (``"layer1.0"``). ``rules``: ``{target: rule(ctx, node)}`` for this analysis only, consulted before the
    registered rules (:data:`~.registry.RF_RULES`, which stays as it is); a module class given a rule here is
    kept whole, as :func:`~.registry.register_rf_rule` does.

    Args:
        model: the network (real or meta weights; it is traced in eval mode and left as it was).
        input_shape: ``(N, C, *spatial)`` with 1 to 3 spatial dims.
        fallback: ``"error"`` (an op without a rule raises) or ``"real"`` (measure that node from gradients).
        leaves: module classes and/or qualified module names kept as single nodes.
        rules: per-call receptive-field rules ``{module class, function, method name or aten op: rule}``
            (module classes and leaves apply where the model is traced with ``torch.fx``).
        output: the key or index of the output tensor to analyse (None: the output, or its first tensor).
        trace: ``"auto"``, ``"fx"`` or ``"aten"`` (see above).

    Returns:
        An :class:`RFReport`: per node and spatial axis the size, jump and padding; exact boxes via ``box``.

    Raises:
        FoldError: naming ``model``, ``input_shape``, ``fallback``, ``leaves`` or ``rules``; an
            :class:`UnsupportedOpError` (a FoldError) for an op without a rule under ``fallback="error"``.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.MaxPool2d(2),
        ...                           torch.nn.Conv2d(8, 8, 3, padding=1))
        >>> rf = receptive_field(net, (1, 3, 32, 32))
        >>> out = rf.output
        >>> out.rf, out.jump, out.padding
        ((8, 8), (Fraction(2, 1), Fraction(2, 1)), (3, 3))
        >>> rf.box(index=(0, 0), clip=False), rf.box(index=(0, 0))
        (((-3, 4), (-3, 4)), ((0, 4), (0, 4)))
    """
    if not isinstance(model, nn.Module):
        raise fold_error("model", type(model).__name__, "must be a torch.nn.Module")
    validate_fallback(fallback)
    shape = tracing.validate_input_shape(input_shape, ranks=RF_RANKS)
    if "timm" in sys.modules:  # the model may hold timm layers that fx cannot trace: their rules, made leaves
        rules_timm.register_timm_rules()
    if trace not in TRACES:
        raise fold_error("trace", trace, f"must be one of {list(TRACES)}")
    table = RF_RULES.with_overrides(rules)
    kept = validate_leaves(model, leaves) + (leaf_types(table) if rules else ())
    if trace == "aten":
        return _aten_report(model, shape, fallback, table, output)
    try:
        gm = trace_model(model, leaves=kept)
        return _analyse(gm, meta_values(gm, shape), shape, fallback, type(model).__name__, table, output)
    except UnsupportedOpError as exc:
        if trace == "fx" and fallback == "real" and exc.param == "model" and "cannot trace" in str(exc):
            return _untraceable_report(model, shape, table, output)
        # leaves the caller chose are not second-guessed
        if trace == "fx" or exc.param not in ("model", "input_shape") or (leaves and "cannot trace" not in str(exc)):
            raise
        try:
            return _aten_report(model, shape, fallback, table, output)
        except UnsupportedOpError as aten_exc:
            if exc.param == aten_exc.param == "input_shape":  # the shape is wrong whatever the graph: the first word
                raise exc from exc.__cause__
            raise aten_exc from exc


def _aten_report(model: nn.Module, shape: Tuple[int, ...], fallback: str, table: Registry[Rule], output: Any) -> RFReport:
    """The analysis of the model's aten operations (:func:`~.aten.record_aten`), linears regrouped (exact rows)."""
    on_meta = any(t.is_meta for t in list(model.parameters()) + list(model.buffers()))
    gm, values, _ = record_aten(model, shape, output=output, real=True if fallback == "real" and not on_meta else None)
    fuse_matmuls(gm, values)
    return _analyse(gm, values, shape, fallback, type(model).__name__, table)


def validate_leaves(model: nn.Module, leaves: Leaves, param: str = "leaves") -> Tuple[Union[type, str], ...]:
    """``leaves`` (module classes and/or qualified module names of ``model``), checked; a FoldError naming
    ``param`` for anything else.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3), torch.nn.ReLU())
        >>> validate_leaves(net, [torch.nn.ReLU, "0"])
        (<class 'torch.nn.modules.activation.ReLU'>, '0')
    """
    if isinstance(leaves, (str, type)) or not isinstance(leaves, Sequence):
        raise fold_error(param, leaves, "must be a sequence of nn.Module classes and/or qualified module names")
    names = dict(model.named_modules())
    for leaf in leaves:
        if isinstance(leaf, type) and issubclass(leaf, nn.Module):
            continue
        if isinstance(leaf, str) and leaf:
            if leaf not in names:
                known = sorted(n for n in names if n)
                raise fold_error(param, leaf, f"is not a submodule of the model (known: {known[:8]}{'...' if len(known) > 8 else ''})")
            continue
        raise fold_error(param, leaves, "must be a sequence of nn.Module classes and/or qualified module names")
    return tuple(leaves)


class _Selected(nn.Module):
    """The model with its output narrowed to the analysed tensor (one leaf)."""

    def __init__(self, inner: nn.Module, output: Any):
        super().__init__()
        self.model, self.output = inner, output

    def forward(self, x):
        return select_output(self.model(x), self.output)


class _Whole(nn.Module):
    def __init__(self, inner: nn.Module, output: Any):
        super().__init__()
        self.model = _Selected(inner, output)

    def forward(self, x):
        return self.model(x)


def _untraceable_report(model: nn.Module, shape: Tuple[int, ...], table: Registry[Rule], output: Any) -> RFReport:
    """Report for a model torch.fx cannot trace: the whole model is one node measured from gradients."""
    gm = trace_model(_Whole(model, output), leaves=(_Selected,))
    tracing.require_run_memory(model, shape, copies=2, what="measuring the untraceable model from gradients (float64)")
    return _analyse(gm, real_values(gm, shape), shape, "real", type(model).__name__, table)


def _rule_geometry(ctx: RuleContext, gm: fx.GraphModule, node: fx.Node, fallback: str, model_name: str, table: Registry[Rule]):
    """The node's geometry from its rule in ``table``; None when there is none (or it fails, with fallback)."""
    module = gm.get_submodule(node.target) if node.op == "call_module" else None
    if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
        rule = aten_rule(node.target, table)
    else:
        rule = rule_for(node.op, node.target, module, rules=table)
    if rule is None:
        return None
    try:
        geom = rule(ctx, node)
    except UnsupportedOpError:
        if fallback != "real":
            raise
        return None
    except Exception as exc:  # a rule met arguments it does not understand: name the op, keep the cause
        if fallback != "real":
            raise UnsupportedOpError(
                f"model={model_name!r}: op={op_name(gm, node)!r} (node {node.name!r}): its receptive-field rule "
                f"failed ({type(exc).__name__}: {exc}); pass fallback='real'", param="model", value=op_name(gm, node),
            ) from exc
        return None
    if geom is not None and not isinstance(geom, Geometry):
        raise UnsupportedOpError(
            f"rule={rule!r}: for op={op_name(gm, node)!r} (node {node.name!r}) it returned "
            f"{type(geom).__name__}, not a Geometry or None", param="rule", value=rule,
        )
    return geom


def _analyse(gm: fx.GraphModule, values: Dict[fx.Node, Any], shape: Tuple[int, ...], fallback: str, model_name: str,
             table: Registry[Rule], output_key: Any = None) -> RFReport:
    naxes = len(shape) - 2
    records: Dict[fx.Node, Record] = {}
    ctx = RuleContext(gm, values, records, naxes)
    order: List[fx.Node] = []
    ops: Dict[fx.Node, str] = {}
    warns: List[str] = []
    fallback_nodes: List[str] = []
    output = None
    for node in gm.graph.nodes:
        value = values.get(node)
        if node.op == "output":
            found: List[fx.Node] = []
            fx.node.map_arg(_output_arg(node.args[0], output_key), lambda n: found.append(n) if n in records and records[n].geom else None)
            if not found:
                raise UnsupportedOpError(f"model={model_name!r}: its output does not depend on the input tensor", param="model", value=model_name)
            output = found[0]
            continue
        if node.op == "placeholder" and not order and is_shape(value):
            geom = Geometry((), tuple(range(2, 2 + naxes)), (False,) * naxes, (True,) * naxes)
            records[node] = Record(node, geom, tuple(value), [1] * naxes, [1] * naxes, [0] * naxes, [Fraction(1)] * naxes, [True] * naxes,
                                   [np.ones(1, dtype=bool) for _ in range(naxes)])
            order.append(node)
            ops[node] = "input"
            continue
        ins = ctx.tensor_inputs(node) if node.op not in ("placeholder", "get_attr") and has_tensor(value) else []
        if not ins:  # not a tensor, or a constant made inside forward (zeros, class token...)
            records[node] = Record(node, None, ())
            continue
        records[node] = Record(node, None, _first_shape(value) or records[ins[0]].shape)
        ops[node] = op_name(gm, node)
        if all(not records[s].local(a) and not records[s].geom.merged[a] for s in ins for a in range(naxes)):
            # every input is already spatially global: whatever the op does, it reads the union
            geom = Geometry(tuple((s, (IDENTITY,) * naxes) for s in ins), (None,) * naxes, (False,) * naxes,
                            tuple(all(records[s].geom.exact[a] for s in ins) for a in range(naxes)))
        else:
            geom = _rule_geometry(ctx, gm, node, fallback, model_name, table)
        if geom is None:
            if fallback != "real":
                raise UnsupportedOpError(
                    f"model={model_name!r}: op={ops[node]!r} (node {node.name!r}, {node.op} {node.target!r}) has no receptive-field rule; "
                    "pass fallback='real', give one for this call (rules={target: rule}) or register one with register_rf_rule",
                    param="model", value=ops[node],
                )
            records[node] = measure_node(gm, records, node, shape, naxes)
            fallback_nodes.append(node.name)
        else:
            records[node].geom = geom
            _summarise_node(records, records[node], naxes, warns, ops[node])
        order.append(node)
    for w in warns:
        warnings.warn(w, RFAlignmentWarning, stacklevel=3)
    graph = AnalysedGraph(records, tuple(order), output)
    nodes = {n.name: _node_rf(records[n], ops[n], naxes) for n in order}
    return RFReport(model_name, shape, nodes, output.name, tuple(warns), tuple(fallback_nodes), gm, graph)


def _output_arg(arg: Any, output: Any) -> Any:
    """The part of a traced graph's output that ``output`` names (a key or an index; None: all of it)."""
    if output is None:
        return arg
    if isinstance(arg, Mapping) and output in arg:
        return arg[output]
    if isinstance(arg, (tuple, list)) and isinstance(output, int) and not isinstance(output, bool) and -len(arg) <= output < len(arg):
        return arg[output]
    keys = list(arg.keys()) if isinstance(arg, Mapping) else f"{len(arg)} items" if isinstance(arg, (tuple, list)) else "one tensor"
    raise fold_error("output", output, f"is not a tensor of the model's output (it has {keys})")


def _first_shape(value: Any) -> Tuple[int, ...]:
    """The shape of a tensor value, or of the first tensor of a tuple (one element of a split, say)."""
    if is_shape(value):
        return tuple(value)
    for v in value if isinstance(value, (tuple, list)) else ():
        found = _first_shape(v)
        if found:
            return found
    return ()


def _node_rf(rec: Record, op: str, naxes: int) -> NodeRF:
    axes = []
    for a in range(naxes):
        constant = rec.aligned[a] and (rec.bj[a] == 0 or rec.positions(a) == 1)
        axes.append(AxisRF(rec.r[a], rec.j[a], rec.p[a], rec.aligned[a], constant, rec.geom.exact[a], rec.bj[a] if rec.aligned[a] else 0,
                           tuple(np.flatnonzero(rec.sup[a]).tolist())))
    dims = tuple(rec.geom.dims[a] if rec.plain(a) else None for a in range(naxes))  # digits of merged dims: no dim of their own
    positions = tuple(rec.positions(a) for a in range(naxes))
    return NodeRF(rec.node.name, op, tuple(rec.shape), tuple(axes), dims, positions, (rec.geom.note,) if rec.geom.note else ())


def _summarise_node(records: Dict[fx.Node, Record], rec: Record, naxes: int, warns: List[str], opname: str) -> None:
    """Per axis: the jump, and either Araujo's recurrence (aligned inputs, integral maps, one box jump)
    or the exact boxes of every output position, of which the summary is the affine form if there is one."""
    links = rec.geom.links
    for a in range(naxes):
        srcs = [(records[s], maps[a]) for s, maps in links]
        jumps = [m.jump(s.j[a]) if s.local(a) else s.j[a] for s, m in srcs]
        locals_ = [j for (s, m), j in zip(srcs, jumps) if s.local(a) and not isinstance(m, Broadcast)]
        rec.j.append(min(locals_) if locals_ else max(jumps))
        if all(s.aligned[a] and (m.integral or not s.local(a)) for s, m in srcs):
            triples = [m.rec(s.r[a], s.bj[a], s.p[a]) if s.local(a) else (s.r[a], s.bj[a], s.p[a]) for s, m in srcs]
            bjs = {t[1] for t in triples}
            if len(bjs) == 1:
                lo0 = min(-t[2] for t in triples)
                hi0 = max(-t[2] + t[0] - 1 for t in triples)
                centres = {Fraction(2 * -t[2] + t[0] - 1, 2) for t in triples}
                bj = next(iter(bjs))
                if len(centres) > 1 and bj != 0 and not _phases_stacked(rec, triples, bj):
                    names = [s.node.name for s, _ in srcs]
                    boxes = ", ".join(f"{n}: [{-t[2]}, {-t[2] + t[0] - 1}] (centre {_half(Fraction(2 * -t[2] + t[0] - 1, 2))})"
                                      for n, t in zip(names, triples))
                    warns.append(
                        f"node {rec.node.name!r} ({opname}) merges paths whose receptive fields have different centres "
                        f"on axis {SPATIAL_NAMES[naxes][a]}, with the same box jump {bj}: unit 0 reads {boxes}; the union is reported, "
                        "but its units are not centred on their inputs (Araujo et al.: misaligned paths)"
                    )
                rec.r.append(hi0 - lo0 + 1); rec.bj.append(bjs.pop()); rec.p.append(-lo0); rec.aligned.append(True)  # noqa: E702
                rec.sup.append(_merged_support(srcs, triples, a, lo0, hi0 - lo0 + 1))
                if not rec.geom.exact[a] and len(links) > 1 and any(
                    s.geom.exact[a] and (-t[2], t[0] - t[2] - 1) == (lo0, hi0)
                    for (s, _), t in zip(srcs, triples)
                ):  # an exact path already covers the union: the conservative paths add nothing
                    exact = list(rec.geom.exact)
                    exact[a] = True
                    rec.geom = replace(rec.geom, exact=tuple(exact))
                continue
        # exact evaluation over every output position of this node
        n = rec.positions(a)
        idx = np.arange(n, dtype=np.int64)
        lo, hi = unclipped_hull(records, links, a, idx, idx)
        lo, hi = np.broadcast_to(lo, idx.shape), np.broadcast_to(hi, idx.shape)
        rec.tab[a] = (lo, hi)
        sizes = hi - lo + 1
        step = int(lo[1] - lo[0]) if n > 1 else None
        affine = n == 1 or (np.all(lo == lo[0] + step * idx) and np.all(sizes == sizes[0]))
        on_grid = affine and (n > 1 or rec.j[a].denominator == 1)
        if len(links) > 1 and not on_grid:
            strides = sorted({str(j) for j in jumps})
            axis = SPATIAL_NAMES[naxes][a]
            why = (f"paths with different effective strides on axis {axis} ({', '.join(strides)})" if len(strides) > 1 else
                   f"paths on axis {axis} of the same effective stride ({strides[0]}) whose boxes do not move by one stride per unit "
                   "(a path through a coarser grid and back)")
            warns.append(
                f"node {rec.node.name!r} ({opname}) merges {why}: "
                "its receptive field varies with the output position (reported: the largest)"
            )
        rec.r.append(int(sizes.max())); rec.p.append(int(-lo[0])); rec.aligned.append(bool(on_grid))  # noqa: E702
        rec.bj.append(step if (on_grid and n > 1) else (int(rec.j[a]) if on_grid else 0))
        # the support of one position: the largest box (on the grid every position has the same pattern)
        big = int(np.argmax(sizes))
        taps = unclipped_support(records, links, a, np.asarray([big], dtype=np.int64))
        mask = np.zeros(int(sizes[big]), dtype=bool)
        mask[taps - lo[big]] = True
        rec.sup.append(mask)


def _half(x: Fraction) -> str:
    return str(int(x)) if x.denominator == 1 else f"{float(x):g}"


def _phases_stacked(rec: Record, triples: Sequence[Tuple[int, int, int]], box_jump: int) -> bool:
    """A space-to-depth (YOLOv5's Focus, a fold): a concatenation along a non-spatial dim of paths that read
    same-sized boxes whose starts are consecutive pixels, at most one box jump of them. Every unit then reads
    one block of the lattice, the union, with its channels holding the block's sub-pixel phases: by design,
    not a misalignment."""
    node = rec.node
    if "cat" not in str(getattr(node.target, "__name__", node.target)).split(".")[0]:  # torch.cat, concat, aten.cat
        return False
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
    if not isinstance(dim, int) or not rec.shape:
        return False
    dim %= len(rec.shape)
    if dim in rec.geom.dims:  # concatenated along a spatial axis: the paths are side by side, not stacked
        return False
    starts = sorted({-t[2] for t in triples})
    return len({t[0] for t in triples}) == 1 and starts == list(range(starts[0], starts[0] + len(starts))) and len(starts) <= box_jump


def _merged_support(srcs, triples, a: int, lo0: int, size: int) -> np.ndarray:
    """Araujo's recurrence for supports: each path's taps spread its input's support (``support_rec``),
    and a merge is the union of the paths' supports, each placed at its own box start."""
    mask = np.zeros(size, dtype=bool)
    for (s, m), t in zip(srcs, triples):
        sub = m.support_rec(s.sup[a], s.bj[a]) if s.local(a) else s.sup[a]
        start = -t[2] - lo0
        mask[start: start + len(sub)] |= sub[: size - start]
    return mask
