"""What :func:`~foldconv.analysis.counting.count` returns: frozen per-layer counts, totals, and table rows.

No file I/O here: ``foldconv.experiments.counting.write_count_report`` writes the views.

Example:
    >>> import torch
    >>> from foldconv.analysis.counting import count
    >>> rep = count(torch.nn.Sequential(torch.nn.Linear(10, 20), torch.nn.ReLU()), (4, 10))
    >>> rep
    CountReport(model='Sequential', input_shape=(4, 10), layers=2, params=220, macs=800, flops=1760, unsupported_ops=())
    >>> [row["type"] for row in rep.rows("type")]
    ['Linear', 'ReLU']
"""
from __future__ import annotations

import dataclasses
import numbers
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, Iterable, List, Mapping, Optional, Tuple

from torch import nn

from ..._tables import markdown_table
from ..._validate import CONV_TYPES
from ...errors import fold_error

__all__ = ["LayerCount", "UnsupportedOp", "CountReport", "readable"]

Shape = Tuple[int, ...]
_PREFIXES = ("", "K", "M", "G", "T", "P", "E")
_ATTACHED = ("MACs", "FLOPs", "B")  # units written with the prefix attached: GMACs, MB


def readable(value: int, unit: str) -> str:
    """``value`` to three significant digits with a decimal prefix, as the peers print totals.

    The exact integers stay on the report; this is for reading. MACs, FLOPs and bytes take the prefix attached
    (``4.09 GMACs``, ``102 MB``), other units after a space (``25.6 M params``).

    Example:
        >>> readable(4_089_184_256, "MACs"), readable(25_557_032, "params"), readable(999_600, "B"), readable(224, "params")
        ('4.09 GMACs', '25.6 M params', '1.00 MB', '224 params')
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise fold_error("value", value, "must be an integer")
    size, sign, step = abs(int(value)), "-" if value < 0 else "", 0
    if size < 1000:
        return f"{sign}{size} {unit}"
    mantissa = float(size)
    while mantissa >= 1000 and step < len(_PREFIXES) - 1:
        mantissa, step = mantissa / 1000, step + 1
    if float(f"{mantissa:.3g}") >= 1000 and step < len(_PREFIXES) - 1:  # 999.6 K rounds to 1.00 M
        mantissa, step = mantissa / 1000, step + 1
    digits = 2 if mantissa < 10 else 1 if mantissa < 100 else 0
    prefix = _PREFIXES[step]
    joined = f"{prefix}{unit}" if unit in _ATTACHED else f"{prefix} {unit}"
    return f"{sign}{mantissa:.{digits}f} {joined}"


@dataclass(frozen=True)
class LayerCount:
    """Counts of one module: its own parameters and the ops it ran itself (not those of its children).

    A container's row holds only the ops in its own ``forward`` (residual adds, flatten, functional
    calls); its children have their own rows. ``calls`` is how often it ran; MACs, FLOPs and activations
    are summed over calls, ``input_shape``/``output_shape`` are from the first call. ``backward_*`` are the
    backward ops charged to this module (its forward created their autograd nodes; ``backward=True``).
    """

    name: str
    type: str
    leaf: bool
    calls: int = 0
    params: int = 0
    trainable: int = 0
    frozen: int = 0
    shared: int = 0
    weight_bytes: int = 0
    buffer_bytes: int = 0
    macs: int = 0
    elementwise_flops: int = 0
    activation_elements: int = 0
    activation_bytes: int = 0
    output_elements: int = 0
    input_shape: Optional[Shape] = None
    output_shape: Optional[Shape] = None
    activation_bytes_by_dtype: Mapping[str, int] = field(default_factory=dict)
    op_calls: Mapping[str, int] = field(default_factory=dict)
    op_macs: Mapping[str, int] = field(default_factory=dict)
    op_flops: Mapping[str, int] = field(default_factory=dict)
    backward_macs: int = 0
    backward_elementwise_flops: int = 0
    backward_op_calls: Mapping[str, int] = field(default_factory=dict)
    backward_op_macs: Mapping[str, int] = field(default_factory=dict)
    backward_op_flops: Mapping[str, int] = field(default_factory=dict)

    @property
    def flops(self) -> int:
        """``2 * macs + elementwise_flops``."""
        return 2 * self.macs + self.elementwise_flops

    @property
    def backward_flops(self) -> int:
        """FLOPs of the backward ops charged to this layer (``count(..., backward=True)``; else 0)."""
        return 2 * self.backward_macs + self.backward_elementwise_flops

    def row(self) -> Dict[str, Any]:
        """The table row (flat, printable)."""
        return {
            "layer": self.name,
            "type": self.type,
            "calls": self.calls,
            "input_shape": self.input_shape,
            "output_shape": self.output_shape,
            "params": self.params,
            "trainable": self.trainable,
            "frozen": self.frozen,
            "shared": self.shared,
            "macs": self.macs,
            "flops": self.flops,
            "activation_elements": self.activation_elements,
            "activation_bytes": self.activation_bytes,
            "weight_bytes": self.weight_bytes,
            "buffer_bytes": self.buffer_bytes,
        }


@dataclass(frozen=True)
class UnsupportedOp:
    """An op that ran and has no cost rule: its cost is *not* in the totals (add one with ``register_op_cost``,
    or for one count with ``count(..., op_costs={op: handle})``). ``op`` is the aten name (``sort``) or, for other namespaces, the qualified one
    (``mylib::fused``); ``calls`` counts forward and backward calls; ``layers`` are the modules that ran it."""

    op: str
    calls: int
    layers: Tuple[str, ...]


_SUMMED = (
    "calls", "params", "trainable", "frozen", "shared", "macs", "flops", "activation_elements",
    "activation_bytes", "weight_bytes", "buffer_bytes",
)


_BACKWARD_SUMMED = ("backward_macs", "backward_flops")


def _group(rows: Iterable[Dict[str, Any]], key: str, summed: Tuple[str, ...] = _SUMMED) -> List[Dict[str, Any]]:
    groups: Dict[str, Dict[str, Any]] = {}
    for row in rows:
        g = groups.setdefault(row[key], {key: row[key], "layers": 0, **{k: 0 for k in summed}})
        g["layers"] += 1
        for k in summed:
            g[k] += row[k]
    return list(groups.values())


def _sum(layers: Iterable[LayerCount], attribute: str) -> Counter:
    total: Counter = Counter()
    for layer in layers:
        total.update(getattr(layer, attribute))
    return total


def _later_sibling(shown: List[str], index: int) -> bool:
    """Does another child of the same parent follow ``shown[index]`` (in named_modules order)?"""
    name = shown[index]
    parent, level = name.rsplit(".", 1)[0] if "." in name else "", name.count(".")
    for other in shown[index + 1:]:
        if other.count(".") < level or (parent and not other.startswith(parent + ".")):
            return False
        if other.count(".") == level:
            return True
    return False


@dataclass(frozen=True)
class CountReport:
    """What :func:`~foldconv.analysis.counting.count` found: one :class:`LayerCount` per module that owns
    parameters or ran ops, the totals, and the ops it could not price (``unsupported_ops``).

    ``repr`` is one line and ``summary()`` a few; ``rows(view)`` / ``table(view)`` give every view.

    ``device`` is where the model ran: ``"meta"``, or ``"cpu"`` when it needed data and ran on real
    tensors instead (``fallback_reason`` is the meta run's error). ``peak_activation_bytes`` is the most
    bytes the pass's own tensors held at once (:mod:`~foldconv.analysis.counting.memory`); with
    ``backward=True`` that forward records autograd, ``saved_activation_bytes`` is what is alive when it
    ends (saved for backward, and the output) and ``peak_training_bytes`` the peak over forward and backward.

    Example:
        >>> import torch
        >>> from foldconv.analysis.counting import count
        >>> m = torch.nn.Sequential(torch.nn.Linear(10, 20), torch.nn.ReLU(), torch.nn.Linear(20, 2))
        >>> rep = count(m, (4, 10))
        >>> rep.params == sum(p.numel() for p in m.parameters()), rep.macs, rep.complete
        (True, 960, True)
    """

    model: str
    input_shapes: Tuple[Shape, ...]
    layers: Tuple[LayerCount, ...]
    params: int
    trainable: int
    frozen: int
    weight_bytes: int
    buffer_bytes: int
    unsupported_ops: Tuple[UnsupportedOp, ...] = ()
    input_dtypes: Tuple[str, ...] = ()
    device: str = "meta"
    fallback_reason: Optional[str] = None
    backward: bool = False
    peak_activation_bytes: int = 0
    saved_activation_bytes: Optional[int] = None
    peak_training_bytes: Optional[int] = None
    modules: Mapping[str, nn.Module] = field(default_factory=dict, repr=False, compare=False)
    #: every module that ran (containers too) -> the shape of its first output (None: not one tensor's)
    output_shapes: Mapping[str, Optional[Shape]] = field(default_factory=dict, repr=False, compare=False)

    #: The name of the model's own row (ops run outside every submodule, parameters of the model itself).
    ROOT: ClassVar[str] = "(root)"
    #: The table views: per layer, per module subtree, per module type, per aten op, one total row.
    VIEWS: ClassVar[Tuple[str, ...]] = ("layers", "module", "type", "op", "total")

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def flops(self) -> int:
        """``2 * macs + elementwise FLOPs`` (see :mod:`foldconv.analysis.counting.ops` for the conventions)."""
        return sum(layer.flops for layer in self.layers)

    @property
    def activation_elements(self) -> int:
        return sum(layer.activation_elements for layer in self.layers)

    @property
    def activation_bytes(self) -> int:
        return sum(layer.activation_bytes for layer in self.layers)

    @property
    def activation_bytes_by_dtype(self) -> Dict[str, int]:
        return dict(sorted(_sum(self.layers, "activation_bytes_by_dtype").items()))

    @property
    def macs_by_op(self) -> Dict[str, int]:
        """MACs per aten op (``convolution``, ``addmm``, ``bmm``, ...), the view FlopCounterMode gives."""
        return {k: v for k, v in sorted(_sum(self.layers, "op_macs").items()) if v}

    @property
    def backward_macs(self) -> int:
        """MACs of the backward pass (0 unless counted with ``backward=True``)."""
        return sum(layer.backward_macs for layer in self.layers)

    @property
    def backward_flops(self) -> int:
        return sum(layer.backward_flops for layer in self.layers)

    @property
    def backward_macs_by_op(self) -> Dict[str, int]:
        """Backward MACs per op (``convolution_backward``, ``mm``, ...)."""
        return {k: v for k, v in sorted(_sum(self.layers, "backward_op_macs").items()) if v}

    @property
    def training_macs(self) -> int:
        """Forward + backward MACs of one training step's passes (needs ``backward=True``)."""
        if not self.backward:
            raise fold_error("backward", False, "training_macs needs count(..., backward=True)")
        return self.macs + self.backward_macs

    @property
    def complete(self) -> bool:
        """Every op that ran has a cost rule, so the totals leave nothing out."""
        return not self.unsupported_ops

    def _shape_text(self) -> str:
        """Shapes as given; a non-floating input is shown with its dtype: ``((4, 16), int64)``."""
        dtypes = self.input_dtypes if len(self.input_dtypes) == len(self.input_shapes) else ("",) * len(self.input_shapes)
        parts = [
            str(shape) if not dtype or dtype.startswith(("float", "bfloat", "complex")) else f"({shape}, {dtype})"
            for shape, dtype in zip(self.input_shapes, dtypes)
        ]
        return parts[0] if len(parts) == 1 else "(" + ", ".join(parts) + ")"

    def __repr__(self) -> str:
        unsupported = tuple(op.op for op in self.unsupported_ops)
        extra = f", backward_macs={self.backward_macs}" if self.backward else ""
        extra += f", device={self.device!r}" if self.device != "meta" else ""
        return (
            f"CountReport(model={self.model!r}, input_shape={self._shape_text()}, layers={len(self.layers)}, "
            f"params={self.params}, macs={self.macs}, flops={self.flops}{extra}, unsupported_ops={unsupported})"
        )

    def summary(self) -> str:
        """A few lines: the totals and, when some ops had no cost rule, which.

        Example:
            >>> import torch
            >>> from foldconv.analysis.counting import count
            >>> print(count(torch.nn.Conv2d(3, 8, 3), (1, 3, 16, 16)).summary())
            Conv2d on (1, 3, 16, 16): 224 parameters (224 params; 224 trainable), 42,336 MACs (42.3 KMACs), 86,240 FLOPs (86.2 KFLOPs)
            activations written: 1,568 elements (6,272 bytes), peak 6,272 bytes (6.27 KB); weights 896 bytes, buffers 0 bytes
            every op has a cost rule
        """
        lines = [
            f"{self.model} on {self._shape_text()}: {self.params:,} parameters ({readable(self.params, 'params')}; "
            f"{self.trainable:,} trainable), {self.macs:,} MACs ({readable(self.macs, 'MACs')}), "
            f"{self.flops:,} FLOPs ({readable(self.flops, 'FLOPs')})",
            f"activations written: {self.activation_elements:,} elements ({self.activation_bytes:,} bytes), "
            f"peak {self.peak_activation_bytes:,} bytes ({readable(self.peak_activation_bytes, 'B')}); "
            f"weights {self.weight_bytes:,} bytes, buffers {self.buffer_bytes:,} bytes",
        ]
        if self.backward:
            lines.append(
                f"backward: {self.backward_macs:,} MACs, {self.backward_flops:,} FLOPs; saved for backward "
                f"{self.saved_activation_bytes:,} bytes, peak forward+backward {self.peak_training_bytes:,} bytes"
            )
        if self.device != "meta":
            lines.append(
                f"ran on real {self.device} tensors (figures for this one input): the meta run failed: {self.fallback_reason}"
            )
        if self.unsupported_ops:
            ops = ", ".join(f"{op.op} x{op.calls}" for op in self.unsupported_ops)
            lines.append(f"ops without a cost rule (not in the totals): {ops}")
        else:
            lines.append("every op has a cost rule")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def to_dict(self) -> Dict[str, Any]:
        """Everything on the report as plain Python data (``json.dumps`` takes it): the totals (exact, and
        readable beside them), every layer with its op tables, the ops without a cost rule.

        Example:
            >>> import json, torch
            >>> from foldconv.analysis.counting import count
            >>> d = json.loads(json.dumps(count(torch.nn.Linear(3, 2), (1, 3)).to_dict()))
            >>> d["totals"]["macs"], d["readable"]["macs"], d["layers"][0]["op_macs"], d["unsupported_ops"]
            (6, '6 MACs', {'t': 0, 'addmm': 6}, [])
        """
        totals = self._total_row()
        totals["input_shape"] = [list(s) for s in self.input_shapes]
        layers = []
        for layer in self.layers:
            row = dataclasses.asdict(layer)
            row["flops"], row["backward_flops"] = layer.flops, layer.backward_flops
            row["input_shape"] = None if layer.input_shape is None else list(layer.input_shape)
            row["output_shape"] = None if layer.output_shape is None else list(layer.output_shape)
            layers.append(row)
        return {
            "model": self.model,
            "input_shapes": [list(s) for s in self.input_shapes],
            "input_dtypes": list(self.input_dtypes),
            "device": self.device,
            "fallback_reason": self.fallback_reason,
            "backward": self.backward,
            "totals": {k: v for k, v in totals.items() if k not in ("model", "device")},
            "readable": {
                "params": readable(self.params, "params"), "macs": readable(self.macs, "MACs"),
                "flops": readable(self.flops, "FLOPs"), "peak_activation_bytes": readable(self.peak_activation_bytes, "B"),
            },
            "macs_by_op": self.macs_by_op,
            "layers": layers,
            "unsupported_ops": [dataclasses.asdict(op) for op in self.unsupported_ops],
        }

    def tree(self, depth: Optional[int] = None) -> str:
        """The module tree, indented as torchinfo prints it: each module's type, output shape and the
        parameters and MACs of its whole subtree; modules deeper than ``depth`` (None: all) are summed into
        their ancestor at that depth. The model itself is depth 0.

        Example:
            >>> import torch
            >>> from foldconv.analysis.counting import count
            >>> m = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU()), torch.nn.Linear(3, 1))
            >>> print(count(m, (1, 2)).tree(depth=1))
            module      type        output_shape  params  macs
            Sequential  Sequential  (1, 1)        13      9
            ├─ 0        Sequential  (1, 3)        9       6
            └─ 1        Linear      (1, 1)        4       3
            total: 13 params, 9 MACs
        """
        if depth is not None and (isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 0):
            raise fold_error("depth", depth, "must be an integer >= 0 or None (every level)")
        by_name = {layer.name: layer for layer in self.layers}
        names = [n for n in self.modules if n != self.ROOT] if self.modules else []
        for layer in self.layers:  # a report without its modules (or a row they miss): from the rows' names
            if layer.name != self.ROOT and layer.name not in names:
                parts = layer.name.split(".")
                names += [".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) not in names]
        sums: Dict[str, List[int]] = {}
        for layer in self.layers:
            parts = [] if layer.name == self.ROOT else layer.name.split(".")
            for i in range(len(parts) + 1):
                key = ".".join(parts[:i]) if i else self.ROOT
                acc = sums.setdefault(key, [0, 0])
                acc[0] += layer.params
                acc[1] += layer.macs
        shown = [n for n in names if n in sums and (depth is None or n.count(".") < depth)]
        shapes = dict(self.output_shapes)
        root = by_name.get(self.ROOT)
        module_type = type(self.modules[self.ROOT]).__name__ if self.ROOT in self.modules else (root.type if root else self.model)
        rows = [(self.model, module_type, shapes.get(self.ROOT, root.output_shape if root else None), *sums.get(self.ROOT, [0, 0]))]
        continues = {name: _later_sibling(shown, i) for i, name in enumerate(shown)}
        for name in shown:
            parts = name.split(".")
            prefix = "".join("│  " if continues.get(".".join(parts[:k + 1])) else "   " for k in range(len(parts) - 1))
            layer = by_name.get(name)
            kind = type(self.modules[name]).__name__ if name in self.modules else (layer.type if layer else "")
            label = f"{prefix}{'├─' if continues[name] else '└─'} {parts[-1]}"
            rows.append((label, kind, shapes.get(name, layer.output_shape if layer else None), *sums[name]))
        header = ("module", "type", "output_shape", "params", "macs")
        cells = [header] + [(a, b, "" if c is None else str(c), f"{d:,}", f"{e:,}") for a, b, c, d, e in rows]
        widths = [max(len(r[k]) for r in cells) for k in range(4)]
        lines = ["  ".join(r[k].ljust(widths[k]) for k in range(4)) + "  " + r[4] for r in cells]
        lines.append(f"total: {readable(self.params, 'params')}, {readable(self.macs, 'MACs')}")
        return "\n".join(line.rstrip() for line in lines)

    def layer(self, name: str) -> LayerCount:
        """The row of one module by its qualified name (:attr:`ROOT` for the model itself)."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise fold_error("name", name, f"is not a counted layer of {self.model}")

    def conv_layers(self) -> Iterable[Tuple[LayerCount, nn.Module]]:
        """``(row, module)`` for every ``nn.Conv1d/2d/3d`` that ran (so its input shape is known), in order."""
        for layer in self.layers:
            module = self.modules.get(layer.name)
            if isinstance(module, CONV_TYPES) and layer.input_shape is not None:
                yield layer, module

    def _total_row(self) -> Dict[str, Any]:
        return {
            "model": self.model,
            "input_shape": self.input_shapes[0] if len(self.input_shapes) == 1 else self.input_shapes,
            "params": self.params,
            "trainable": self.trainable,
            "frozen": self.frozen,
            "macs": self.macs,
            "flops": self.flops,
            "activation_elements": self.activation_elements,
            "activation_bytes": self.activation_bytes,
            "weight_bytes": self.weight_bytes,
            "buffer_bytes": self.buffer_bytes,
            "peak_activation_bytes": self.peak_activation_bytes,
            **(
                {
                    "backward_macs": self.backward_macs, "backward_flops": self.backward_flops,
                    "saved_activation_bytes": self.saved_activation_bytes, "peak_training_bytes": self.peak_training_bytes,
                }
                if self.backward else {}
            ),
            "device": self.device,
            "unsupported_ops": " ".join(op.op for op in self.unsupported_ops),
        }

    def _op_rows(self) -> List[Dict[str, Any]]:
        unsupported = {op.op for op in self.unsupported_ops}
        rows = []
        for phase in ("forward", "backward") if self.backward else ("forward",):
            prefix = "backward_" if phase == "backward" else ""
            calls, macs, flops = (_sum(self.layers, prefix + a) for a in ("op_calls", "op_macs", "op_flops"))
            for op in sorted(calls, key=lambda op: (-flops[op], op)):
                row = {"op": op, "calls": calls[op], "macs": macs[op], "flops": flops[op], "cost_rule": op not in unsupported}
                rows.append({"phase": phase, **row} if self.backward else row)
        return rows

    def rows(self, view: str = "layers", *, depth: int = 1) -> List[Dict[str, Any]]:
        """The rows of one view (:attr:`VIEWS`): ``layers`` (execution order; modules that own parameters
        but never ran come last), ``module`` (summed over each subtree at ``depth``: ``layer1``, ``layer2``,
        ...), ``type`` (per module class), ``op`` (per aten op) or ``total`` (one row).

        Example:
            >>> import torch
            >>> from foldconv.analysis.counting import count
            >>> m = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU()))
            >>> [(r["module"], r["macs"]) for r in count(m, (1, 2)).rows("module", depth=1)]
            [('0', 6)]
        """
        if view not in self.VIEWS:
            raise fold_error("view", view, f"must be one of {list(self.VIEWS)}")
        if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 1:
            raise fold_error("depth", depth, "must be an integer >= 1")
        layers = [layer.row() for layer in self.layers]
        summed = _SUMMED
        if self.backward:
            summed += _BACKWARD_SUMMED
            for row, layer in zip(layers, self.layers):
                row.update(backward_macs=layer.backward_macs, backward_flops=layer.backward_flops)
        if view == "layers":
            return layers
        if view == "module":
            for row in layers:
                row["module"] = row["layer"] if row["layer"] == self.ROOT else ".".join(row["layer"].split(".")[:depth])
            return _group(layers, "module", summed)
        if view == "type":
            return _group(layers, "type", summed)
        return self._op_rows() if view == "op" else [self._total_row()]

    def table(self, view: str = "layers", *, depth: int = 1) -> str:
        """:meth:`rows` of one view as a Markdown table.

        Example:
            >>> import torch
            >>> from foldconv.analysis.counting import count
            >>> print(count(torch.nn.Linear(3, 2), (1, 3)).table("op"))
            | op | calls | macs | flops | cost_rule |
            |---|---|---|---|---|
            | addmm | 1 | 6 | 14 | True |
            | t | 1 | 0 | 0 | True |
        """
        return markdown_table(self.rows(view, depth=depth))
