"""Check :func:`~foldconv.analysis.counting.count` against independent figures:
``torch.utils.flop_counter.FlopCounterMode`` (MACs = its FLOPs / 2, exactly, per op), ``sum(p.numel())`` and
the parameter and GFLOPS figures torchvision publishes with its weights
(:func:`foldconv.models.published_figures`; rounded to 3 decimals there, so the check compares
``round(macs / 1e9, 3)``). The zoo runner (``foldconv zoo``) runs it on every model of a zoo.

Example:
    >>> from foldconv.models import meta_model, published_figures
    >>> f = published_figures("resnet50")
    >>> validate_count(meta_model("resnet50"), f.input_shape, published=f).ok
    True
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn
from torch.utils._pytree import tree_map

from ...errors import FoldError, fold_error
from ...models import PublishedFigures
from ...tracing import module_device
from .counter import ShapeLike, count
from .inputs import model_inputs
from .report import CountReport

__all__ = ["CountValidation", "validate_count"]


@dataclass(frozen=True)
class CountValidation:
    """:func:`count` against independent figures for one model.

    ``macs_ok``: MACs of every op equal FlopCounterMode's FLOPs / 2 for that op (and in total);
    ``params_ok``: the parameter total equals ``sum(p.numel())``; with ``published`` figures,
    ``published_params_ok`` and ``published_gmacs_ok`` (GMACs rounded to torchvision's 3 decimals).
    ``passes``: 1 when FlopCounterMode watched count()'s own pass, 2 when it watched a separate forward
    (``one_pass_failure`` says why); ``differing_ops``: the ops whose MACs differ from FlopCounterMode's.
    ``unwitnessed_ops``/``unwitnessed_macs``: ops with MACs that FlopCounterMode has no formula for (the CPU
    fused attention kernel a real run takes, for one): it cannot confirm them, so ``macs_ok`` compares the
    rest (``witnessed_macs``).
    """

    model: str
    input_shape: Tuple[int, ...]
    params: int
    numel: int
    macs: int
    flop_counter_macs: int
    per_op_ok: bool
    report: CountReport = field(repr=False, compare=False)
    published: Optional[PublishedFigures] = None
    passes: int = 1
    differing_ops: Tuple[str, ...] = ()
    one_pass_failure: str = ""
    unwitnessed_ops: Tuple[str, ...] = ()
    unwitnessed_macs: int = 0

    @property
    def witnessed_macs(self) -> int:
        """The MACs of the ops FlopCounterMode has a formula for (what it can confirm)."""
        return self.macs - self.unwitnessed_macs

    @property
    def params_ok(self) -> bool:
        return self.params == self.numel

    @property
    def macs_ok(self) -> bool:
        return self.witnessed_macs == self.flop_counter_macs and self.per_op_ok

    @property
    def gmacs(self) -> float:
        return round(self.macs / 1e9, 3)

    @property
    def published_params_ok(self) -> Optional[bool]:
        return None if self.published is None else self.params == self.published.num_params

    @property
    def published_gmacs_ok(self) -> Optional[bool]:
        return None if self.published is None else self.gmacs == self.published.gmacs

    @property
    def ok(self) -> bool:
        """Every check made holds (the published ones only when figures were given)."""
        return self.params_ok and self.macs_ok and self.published_params_ok is not False and self.published_gmacs_ok is not False

    def __bool__(self) -> bool:
        return self.ok

    def row(self) -> Dict[str, Any]:
        """The table row."""
        row = {
            "model": self.model, "input_shape": self.input_shape, "params": self.params, "numel": self.numel,
            "params_ok": self.params_ok, "macs": self.macs, "flop_counter_macs": self.flop_counter_macs,
            "macs_ok": self.macs_ok, "unsupported_ops": " ".join(op.op for op in self.report.unsupported_ops),
        }
        if self.published is not None:
            row.update(
                published_params=self.published.num_params, published_params_ok=self.published_params_ok,
                gmacs=self.gmacs, published_gmacs=self.published.gmacs, published_gmacs_ok=self.published_gmacs_ok,
            )
        return row


def validate_count(
    model: nn.Module, input_shape: ShapeLike, *, name: Optional[str] = None, published: Optional[PublishedFigures] = None
) -> CountValidation:
    """Count ``model`` under ``FlopCounterMode`` in the same pass and compare (and with ``published`` figures).

    Some models cannot be counted inside FlopCounterMode: its module tracker asserts that a module whose
    input requires grad (a parameter passed as an input, as in CaiT, PiT and SigLIP) produced an output with a
    gradient function, and ``count`` runs under ``no_grad``. Those are counted in two passes (``passes=2``):
    ``count`` alone, and FlopCounterMode around a plain forward with grad enabled, compared op by op the same way.

    Example:
        >>> v = validate_count(torch.nn.Conv2d(16, 4, 3, groups=2), (2, 16, 9, 9))
        >>> v.macs, v.flop_counter_macs, v.macs_ok, v.params_ok, v.passes, v.differing_ops
        (28224, 28224, True, True, 1, ())
    """
    from torch.utils.flop_counter import FlopCounterMode, flop_registry

    if published is not None and not isinstance(published, PublishedFigures):
        raise fold_error("published", published, "must be PublishedFigures (from foldconv.models.published_figures(name)) or None")
    passes, why = 1, ""
    try:
        with FlopCounterMode(display=False) as counter:
            report = count(model, input_shape, name=name)
    except FoldError as exc:
        if "Expected gradient function" not in str(exc):
            raise
        passes, why = 2, str(exc)
        report = count(model, input_shape, name=name)  # a failure here is count()'s own
        on_meta = any(t.is_meta for t in itertools.chain(model.parameters(), model.buffers()))
        device = module_device(model)
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)  # as count() does
        args, kwargs = model_inputs(input_shape, dtype=dtype, real=not on_meta)
        args, kwargs = tree_map(lambda t: t.to(device) if isinstance(t, torch.Tensor) else t, (args, kwargs))
        with torch.enable_grad(), FlopCounterMode(display=False) as counter:
            model(*args, **kwargs)
    theirs = {str(op).split(".")[-1]: int(v) for op, v in counter.get_flop_counts().get("Global", {}).items()}
    ours = report.macs_by_op
    known = {str(op).split(".")[-1] for op in flop_registry}
    unwitnessed = {op: macs for op, macs in ours.items() if op not in known}
    differing = tuple(sorted(op for op in (set(theirs) | set(ours)) - set(unwitnessed) if 2 * ours.get(op, 0) != theirs.get(op, 0)))
    return CountValidation(
        model=report.model,
        input_shape=report.input_shapes[0],
        params=report.params,
        numel=sum(p.numel() for p in model.parameters()),
        macs=report.macs,
        flop_counter_macs=counter.get_total_flops() // 2,
        per_op_ok=not differing,
        report=report,
        published=published,
        passes=passes,
        differing_ops=differing,
        one_pass_failure=why,
        unwitnessed_ops=tuple(sorted(unwitnessed)),
        unwitnessed_macs=sum(unwitnessed.values()),
    )
