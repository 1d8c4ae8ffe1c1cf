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

import numbers
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from torch import nn

from ..._tables import markdown_table
from ..._validate import CONV_TYPES
from ...errors import fold_error

__all__ = ["ROOT", "VIEWS", "LayerCount", "UnsupportedOp", "CountReport"]

ROOT = "(root)"
Shape = Tuple[int, ...]
#: The table views of a report: per layer, per module subtree, per module type, per aten op, one total row.
VIEWS = ("layers", "module", "type", "op", "total")


@dataclass(frozen=True)
class LayerCount:
    """Counts of one module: its own parameters and the ops it ran itself (not those of its children).

    A container's row holds only the ops in its own ``forward`` (residual adds, flatten, functional
    calls); its children have their own rows. ``calls`` is how often it ran; MACs, FLOPs and activations
    are summed over calls, ``input_shape``/``output_shape`` are from the first call.
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

    @property
    def flops(self) -> int:
        """``2 * macs + elementwise_flops``."""
        return 2 * self.macs + self.elementwise_flops

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
    """An aten op that ran and has no cost rule: its cost is *not* in the totals (see ``register_op_cost``)."""

    op: str
    calls: int
    layers: Tuple[str, ...]


_SUMMED = (
    "calls", "params", "trainable", "frozen", "shared", "macs", "flops", "activation_elements",
    "activation_bytes", "weight_bytes", "buffer_bytes",
)


def _group(rows: Iterable[Dict[str, Any]], key: str) -> List[Dict[str, Any]]:
    groups: Dict[str, Dict[str, Any]] = {}
    for row in rows:
        g = groups.setdefault(row[key], {key: row[key], "layers": 0, **{k: 0 for k in _SUMMED}})
        g["layers"] += 1
        for k in _SUMMED:
            g[k] += row[k]
    return list(groups.values())


def _sum(layers: Iterable[LayerCount], attribute: str) -> Counter:
    total: Counter = Counter()
    for layer in layers:
        total.update(getattr(layer, attribute))
    return total


@dataclass(frozen=True)
class CountReport:
    """What :func:`~foldconv.analysis.counting.count` found: one :class:`LayerCount` per module that owns
    parameters or ran ops, the totals, and the ops it could not price (``unsupported_ops``).

    ``repr`` is one line and ``summary()`` a few; ``rows(view)`` / ``table(view)`` give every view.

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
    modules: Mapping[str, nn.Module] = field(default_factory=dict, repr=False, compare=False)

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
    def complete(self) -> bool:
        """Every op that ran has a cost rule, so the totals leave nothing out."""
        return not self.unsupported_ops

    def _shape_text(self) -> str:
        return str(self.input_shapes[0] if len(self.input_shapes) == 1 else self.input_shapes)

    def __repr__(self) -> str:
        unsupported = tuple(op.op for op in self.unsupported_ops)
        return (
            f"CountReport(model={self.model!r}, input_shape={self._shape_text()}, layers={len(self.layers)}, "
            f"params={self.params}, macs={self.macs}, flops={self.flops}, unsupported_ops={unsupported})"
        )

    def summary(self) -> str:
        """A few lines: the totals and, when some ops had no cost rule, which.

        Example:
            >>> import torch
            >>> from foldconv.analysis.counting import count
            >>> print(count(torch.nn.Conv2d(3, 8, 3), (1, 3, 16, 16)).summary())
            Conv2d on (1, 3, 16, 16): 224 parameters (224 trainable), 42,336 MACs, 86,240 FLOPs
            activations written: 1,568 elements (6,272 bytes); weights 896 bytes, buffers 0 bytes
            every op has a cost rule
        """
        lines = [
            f"{self.model} on {self._shape_text()}: {self.params:,} parameters ({self.trainable:,} trainable), "
            f"{self.macs:,} MACs, {self.flops:,} FLOPs",
            f"activations written: {self.activation_elements:,} elements ({self.activation_bytes:,} bytes); "
            f"weights {self.weight_bytes:,} bytes, buffers {self.buffer_bytes:,} bytes",
        ]
        if self.unsupported_ops:
            ops = ", ".join(f"{op.op} x{op.calls}" for op in self.unsupported_ops)
            lines.append(f"ops without a cost rule (not in the totals): {ops}")
        else:
            lines.append("every op has a cost rule")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def layer(self, name: str) -> LayerCount:
        """The row of one module by its qualified name (``ROOT`` for the model itself)."""
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
            "unsupported_ops": " ".join(op.op for op in self.unsupported_ops),
        }

    def _op_rows(self) -> List[Dict[str, Any]]:
        calls, macs, flops = (_sum(self.layers, a) for a in ("op_calls", "op_macs", "op_flops"))
        unsupported = {op.op for op in self.unsupported_ops}
        order = sorted(calls, key=lambda op: (-flops[op], op))
        return [
            {"op": op, "calls": calls[op], "macs": macs[op], "flops": flops[op], "cost_rule": op not in unsupported}
            for op in order
        ]

    def rows(self, view: str = "layers", *, depth: int = 1) -> List[Dict[str, Any]]:
        """The rows of one view (:data:`VIEWS`): ``layers`` (execution order; modules that own parameters
        but never ran come last), ``module`` (summed over each subtree at ``depth``: ``layer1``, ``layer2``,
        ...), ``type`` (per module class), ``op`` (per aten op) or ``total`` (one row).

        Example:
            >>> import torch
            >>> from foldconv.analysis.counting import count
            >>> m = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU()))
            >>> [(r["module"], r["macs"]) for r in count(m, (1, 2)).rows("module", depth=1)]
            [('0', 6)]
        """
        if view not in VIEWS:
            raise fold_error("view", view, f"must be one of {list(VIEWS)}")
        if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 1:
            raise fold_error("depth", depth, "must be an integer >= 1")
        layers = [layer.row() for layer in self.layers]
        if view == "layers":
            return layers
        if view == "module":
            for row in layers:
                row["module"] = row["layer"] if row["layer"] == ROOT else ".".join(row["layer"].split(".")[:depth])
            return _group(layers, "module")
        if view == "type":
            return _group(layers, "type")
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
