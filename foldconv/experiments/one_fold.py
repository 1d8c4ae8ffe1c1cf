"""One fold, fully reported: the seed question for a single configuration.

``run_one_fold`` builds the conv, folds it, checks the fold exactly, counts parameters and MACs of both
forms and times both here; ``OneFoldResult.to_markdown`` renders the report the ``fold_conv`` app writes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

import torch

from ..check.equivalence import EquivalenceReport, check_fold
from ..errors import FoldError
from ..fold import FoldPlan, fold_conv, plan_fold
from ..layout import depth_to_space
from .io import markdown_table
from ..specs import ConvSpec, FoldSpec

if TYPE_CHECKING:
    from .timing import Timing

__all__ = ["OneFoldResult", "run_one_fold", "parse_dtype"]

_DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def parse_dtype(name: str) -> torch.dtype:
    """``"float32"`` -> ``torch.float32``, with a FoldError naming the choices otherwise.

    Example:
        >>> parse_dtype("bfloat16")
        torch.bfloat16
    """
    if name not in _DTYPES:
        raise FoldError(f"dtype={name!r}: must be one of {sorted(_DTYPES)}", param="dtype", value=name)
    return _DTYPES[name]


@dataclass
class OneFoldResult:
    """Everything the one-fold report shows; ``plan``/``report`` are None when the fold is impossible."""

    spec: ConvSpec
    fold: FoldSpec
    input_shape: Tuple[int, ...]
    plan: Optional[FoldPlan]
    report: Optional[EquivalenceReport]
    reason: str = ""
    timings: Dict[str, "Timing"] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """The fold exists and was verified equivalent."""
        return self.report is not None and self.report.equivalent

    def counts(self) -> List[Dict[str, object]]:
        """Parameter and MAC counts of both forms, one row each."""
        rows = [_count_row("original", self.spec, self.input_shape)]
        if self.plan is not None:
            folded_shape = self.input_shape[:1] + (self.plan.result.in_channels,) + tuple(
                s * r for s, r in zip(self.input_shape[2:], self.fold.r)
            )
            rows.append(_count_row("folded", self.plan.result, folded_shape))
        return rows

    def to_markdown(self) -> str:
        lines = [
            "# One fold",
            "",
            f"- original: `{self.spec.describe()}` on input `{self.input_shape}`",
            f"- fold: r={self.fold.r}, order `{self.fold.order_string}`",
        ]
        if self.plan is None:
            lines += ["", f"**Verdict:** cannot fold: {self.reason}"]
            return "\n".join(lines)
        lines.append(f"- folded: `{self.plan.result.describe()}`")
        for note in self.plan.notes:
            lines.append(f"- note: {note}")
        lines += ["", "## Costs", "", markdown_table(self.counts())]
        if self.report is not None:
            lines += ["", "## Verdict", "", self.report.to_markdown()]
        if self.timings:
            anchor = self.timings.get("original")
            rows = []
            for name, t in self.timings.items():
                rows.append(
                    {
                        "form": name,
                        "median ms": round(t.median_ms, 3),
                        "IQR ms": round(t.iqr * 1e3, 3),
                        "runs": t.runs,
                        "x original": round(t.median / anchor.median, 2) if anchor else None,
                    }
                )
            lines += ["", f"## Speed here ({torch.get_num_threads()} threads, float32)", "", markdown_table(rows)]
        return "\n".join(lines)


def _count_row(form: str, spec: ConvSpec, shape: Tuple[int, ...]) -> Dict[str, object]:
    out = spec.output_size(shape[2:])
    return {
        "form": form,
        "input": shape,
        "kernel": spec.kernel_size,
        "stride": spec.stride,
        "output": (shape[0], spec.out_channels) + out,
        "params": spec.params,
        "MACs": spec.macs(shape[2:]) * shape[0],
    }


def run_one_fold(
    spec: ConvSpec,
    fold: FoldSpec,
    input_size: Sequence[int],
    batch: int = 1,
    dtypes: Sequence[torch.dtype] = (torch.float32,),
    trials: int = 3,
    seed: int = 0,
    time_forms: bool = True,
    min_run_time: float = 0.3,
    device: str = "cpu",
) -> OneFoldResult:
    """Fold ``spec`` with ``fold``, check it exactly, count and time both forms.

    Example:
        >>> res = run_one_fold(ConvSpec.make(2, 16, 4, 3, padding=1), FoldSpec.make(4), (6, 6), time_forms=False)
        >>> res.ok, res.plan.result.kernel_size
        (True, (12, 12))
    """
    shape = (batch, spec.in_channels) + tuple(input_size)
    try:
        plan = plan_fold(spec, fold)
    except FoldError as err:
        return OneFoldResult(spec, fold, shape, None, None, str(err))
    torch.manual_seed(seed)
    conv = spec.to_module(device=device)
    report = check_fold(conv, fold.r, fold.order, input_size, batch, dtypes=dtypes, trials=trials, seed=seed, device=device)
    result = OneFoldResult(spec, fold, shape, plan, report)
    if time_forms:
        from .timing import time_call  # torch.utils.benchmark is slow to import; only timed runs need it

        big = fold_conv(conv, fold.r, fold.order)
        x = torch.randn(shape, device=device)
        xf = depth_to_space(x, fold.r, fold.order, spec.dims)
        with torch.no_grad():
            result.timings["original"] = time_call(lambda: conv(x), "original", min_run_time)
            result.timings["folded (conv only)"] = time_call(lambda: big(xf), "folded", min_run_time)
            result.timings["folded (depth_to_space + conv)"] = time_call(
                lambda: big(depth_to_space(x, fold.r, fold.order, spec.dims)), "folded+d2s", min_run_time
            )
    return result
