"""One fold, fully reported: the motivating question asked of a single configuration.

:class:`OneFoldExperiment` says what to fold and how to check it (its defaults are the motivating question:
a 256-channel 3x3 conv on 14x14, folded by r=16 into a 48x48 conv with stride 16 on a 1x224x224 map);
:func:`run_one_fold` builds the conv, folds it, checks the fold exactly, counts parameters and MACs of both
forms, times both here (speedups with their intervals, in interleaved rounds) and draws the big kernel
(:mod:`foldconv.experiments.fold_kernel`). The ``fold_conv`` app registers the experiment as its structured config.

Example:
    >>> OneFoldExperiment().conv.describe(), OneFoldExperiment().fold.r
    ('Conv2d(256->256, k=(3, 3), s=(1, 1), p=(1, 1))', (16, 16))
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

from .._validate import per_axis_ints, require_bool, require_device, require_int
from ..check.equivalence import EquivalenceReport, check_fold
from ..errors import FoldError, fold_error
from ..fold import FoldPlan, fold_conv, plan_fold, require_foldable
from ..layout import depth_to_space
from ..specs import ConvSpec, FoldSpec
from ..surgery.speed import FormTiming
from ..surgery.timing import MAX_SPREAD, ROUNDS, interleaved, machine_description, measure, require_seconds, runner
from .app import AppResult, Check, checks_verdict
from .fold_kernel import channel_map, kernel_figure, picture_shape
from .io import as_rows, markdown_table, save_figure, write_markdown, write_table

__all__ = ["OneFoldExperiment", "FormCost", "OneFoldResult", "run_one_fold", "fold_app", "parse_dtype"]

#: Elements of the input tensor one experiment may build (the exact check keeps several float64 copies).
MAX_INPUT_ELEMENTS = 2**26

_DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def parse_dtype(name: str) -> torch.dtype:
    """``"float32"`` -> ``torch.float32``, with a FoldError naming the choices otherwise.

    Example:
        >>> parse_dtype("bfloat16")
        torch.bfloat16
    """
    if not isinstance(name, str) or name not in _DTYPES:
        raise fold_error("dtype", name, f"must be one of {sorted(_DTYPES)}")
    return _DTYPES[name]


@dataclass(frozen=True)
class OneFoldExperiment:
    """What to fold (``conv`` by ``fold``), on which input, and how to check and time it.

    ``input_size`` is the spatial size of the original conv's input; ``seed`` is the RNG seed of the
    weights and of the check's inputs; ``dtypes`` are the float dtypes whose errors the report shows
    besides the exact verdict; ``timing`` times the original and the folded forms in ``rounds`` interleaved
    rounds (original, form, original, form, ...), ``min_run_time`` seconds per form in all, on ``threads`` threads
    (default 1, as benchmarks/ time: steady on a shared machine; null: torch's default), and reports each as a speedup over the
    original with its interval; ``picture`` draws the folded weight of output channel ``picture_channel`` and
    folded input channel ``picture_folded_channel`` (kernel.png, 2-D convs).

    Example:
        >>> e = OneFoldExperiment(conv=ConvSpec.make(2, 16, 4, 3, padding=1), fold=FoldSpec.make(4), input_size=[6, 6])
        >>> e.input_size, e.input_shape
        ((6, 6), (1, 16, 6, 6))
    """

    conv: ConvSpec = field(default_factory=lambda: ConvSpec.make(2, 256, 256, 3, padding=1))
    fold: FoldSpec = field(default_factory=lambda: FoldSpec.make(16))
    input_size: Any = (14, 14)
    batch: int = 1
    dtypes: Any = ("float32", "bfloat16")
    trials: int = 3
    seed: int = 0
    timing: bool = True
    min_run_time: float = 0.3
    rounds: int = ROUNDS
    threads: Optional[int] = 1
    device: str = "cpu"
    picture: bool = True
    picture_channel: int = 0
    picture_folded_channel: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.conv, ConvSpec):
            raise fold_error("conv", type(self.conv).__name__, "must be a ConvSpec")
        if not isinstance(self.fold, FoldSpec):
            raise fold_error("fold", type(self.fold).__name__, "must be a FoldSpec")
        try:  # an int r folds every axis of the conv; per-axis factors must match its dims
            object.__setattr__(self, "fold", self.fold.bind(self.conv.dims))
        except FoldError as err:
            raise fold_error(f"fold.{err.param}", err.value, err.rule or str(err)) from None
        require_foldable(self.conv.in_channels, self.fold, param="conv.in_channels")  # worded as predict_fold and the sweep
        object.__setattr__(self, "input_size", per_axis_ints(self.input_size, self.conv.dims, "input_size", 1))
        self.conv.output_size(self.input_size)  # an input smaller than the kernel is a malformed request
        require_int(self.batch, "batch", 1)
        if math.prod(self.input_shape) > MAX_INPUT_ELEMENTS:
            raise fold_error(
                "input_size", self.input_size, f"with batch={self.batch} gives an input of {math.prod(self.input_shape):,} "
                f"elements, above MAX_INPUT_ELEMENTS = 2**26 (the check holds several float64 copies)",
            )
        require_int(self.trials, "trials", 1)
        require_int(self.seed, "seed", 0)
        require_bool(self.timing, "timing")
        dtypes = tuple(self.dtypes) if isinstance(self.dtypes, (list, tuple)) else (self.dtypes,)
        for name in dtypes:
            if not isinstance(name, str) or name not in _DTYPES:
                raise fold_error("dtypes", self.dtypes, f"every entry must be one of {sorted(_DTYPES)}")
        object.__setattr__(self, "dtypes", dtypes)
        require_seconds(self.min_run_time)
        require_int(self.rounds, "rounds", 1)
        if self.threads is not None:
            require_int(self.threads, "threads", 1)
        require_device(self.device)
        require_bool(self.picture, "picture")
        if require_int(self.picture_channel, "picture_channel", 0) >= self.conv.out_channels:
            raise fold_error("picture_channel", self.picture_channel, f"must be < conv.out_channels={self.conv.out_channels}")
        require_int(self.picture_folded_channel, "picture_folded_channel", 0)

    @property
    def input_shape(self) -> Tuple[int, ...]:
        """The full input tensor shape ``(batch, in_channels, *input_size)``."""
        return (self.batch, self.conv.in_channels) + self.input_size


@dataclass(frozen=True)
class FormCost:
    """Parameters and multiply-adds of one form (original or folded) on its input."""

    form: str
    input_shape: Tuple[int, ...]
    kernel_size: Tuple[int, ...]
    stride: Tuple[int, ...]
    output_shape: Tuple[int, ...]
    params: int
    macs: int

    @classmethod
    def of(cls, form: str, spec: ConvSpec, input_shape: Tuple[int, ...]) -> FormCost:
        out = (input_shape[0], spec.out_channels) + spec.output_size(input_shape[2:])
        macs = spec.macs(input_shape[2:]) * input_shape[0]
        return cls(form, input_shape, spec.kernel_size, spec.stride, out, spec.params, macs)


@dataclass(frozen=True)
class OneFoldResult:
    """Everything the one-fold report shows; ``plan``/``report`` are None when the fold is impossible."""

    experiment: OneFoldExperiment
    plan: Optional[FoldPlan]
    report: Optional[EquivalenceReport]
    reason: str = ""
    timings: Tuple[FormTiming, ...] = ()
    files: Tuple[Path, ...] = ()
    machine: str = ""

    @property
    def ok(self) -> bool:
        """The fold exists and was verified equivalent."""
        return self.report is not None and self.report.ok

    def __bool__(self) -> bool:
        return self.ok

    @property
    def costs(self) -> Tuple[FormCost, ...]:
        """Parameter and MAC counts of both forms (only the original's when the fold is impossible)."""
        e = self.experiment
        rows = (FormCost.of("original", e.conv, e.input_shape),)
        if self.plan is not None:
            folded = (e.batch, self.plan.result.in_channels) + tuple(s * r for s, r in zip(e.input_size, e.fold.r))
            rows += (FormCost.of("folded", self.plan.result, folded),)
        return rows

    def answer(self) -> str:
        """The run's answer in one line: the verdict (and the speedups, when timed), or why the fold cannot exist."""
        if self.plan is None or self.report is None:
            return f"cannot fold: {self.reason} (nothing to check: there is no folded conv)"
        text = f"r={self.experiment.fold.r}: {self.report.summary()}"
        original, folded = self.costs
        if (original.params, original.macs) != (folded.params, folded.macs):  # equal function, not equal cost (FOLD-7's conditions)
            why = " and ".join(w for w, on in (("groups merged", self.plan.groups_expanded), ("dilation made dense", self.plan.dilation_expanded)) if on)
            text += (f", but it costs more: params {original.params:,} -> {folded.params:,}, MACs {original.macs:,} -> {folded.macs:,}"
                     + (f" ({why}: the fold holds with conditions)" if why else ""))
        return f"{text}; {self.speed_answer()}" if self.timings else text

    @property
    def checks(self) -> Tuple[Check, ...]:
        """The fold app's checked claim: a fold that exists computes the original's function (none when it cannot exist)."""
        if self.plan is None or self.report is None:
            return ()
        return (Check("the folded conv computes the original's function", self.ok, subject=f"fold r={self.experiment.fold.r}",
                      claim="FOLD-1", detail="" if self.ok else self.report.summary()),)

    def headline(self) -> str:
        """summary.md's first line: the answer, then whether the checks held, worded as index.md's first line.

        Example:
            >>> e = OneFoldExperiment(conv=ConvSpec.make(2, 16, 4, 3, padding=1), fold=FoldSpec.make(4), input_size=(6, 6), timing=False)
            >>> run_one_fold(e).headline()
            'r=(4, 4): equivalent (exact), P(false equivalent) <= 9.3e-10; the 1 check holds.'
        """
        return f"{self.answer()}; {checks_verdict(self.checks)}" if self.checks else self.answer()

    def to_markdown(self) -> str:
        """summary.md of the fold app: the answer and the checks' verdict first, then both convs' specs, costs, the
        verdict, the speed."""
        e = self.experiment
        lines = [
            "# One fold",
            "",
            self.headline(),
            "",
            f"- original: `{e.conv.describe()}` on input `{e.input_shape}`",
            f"- fold: r={e.fold.r}, order `{e.fold.order_string}`",
        ]
        if self.plan is None:
            return "\n".join(lines + ["", f"**Verdict:** cannot fold: {self.reason}"])
        lines.append(f"- folded: `{self.plan.result.describe()}`")
        lines += [f"- note: {note}" for note in self.plan.notes]
        lines += ["", "## Costs", "", markdown_table(as_rows(self.costs))]
        if self.report is not None:
            lines += ["", "## Verdict", "", self.report.to_markdown()]
        if self.timings:
            lines += ["", f"## Speed here (float32; {self.machine})", "",
                      "Speedup = original time / form time: higher is faster, 1.00x is the original's speed. The original "
                      f"and each form were timed in {e.rounds} interleaved round(s); the interval is [original q25 / form "
                      "q75, original q75 / form q25], and a speedup whose interval holds 1.00x, or spans more than "
                      f"{MAX_SPREAD:g}x, is inconclusive: these timings cannot tell which is faster. Each row's speedup is "
                      "its original median / its median, both from the rounds that compared them.", "",
                      markdown_table(self.speed_rows())]
        return "\n".join(lines)

    def speed_rows(self) -> List[Dict[str, Any]]:
        """One row per timed form: median and IQR, the speedup over the original with its interval, inconclusive."""
        rows = []
        for k, t in enumerate(self.timings):
            row = {"form": t.form, "original median ms": round(t.original_median_s * 1e3, 4), "median ms": round(t.median_s * 1e3, 4), "IQR ms": round(t.iqr_s * 1e3, 4), "speedup": round(t.speedup, 3),
                   "speedup low": round(t.speedup_low, 3), "speedup high": round(t.speedup_high, 3), "inconclusive": t.inconclusive,
                   "reads": t.describe()}
            if k == 0:  # the reference itself: its speedup is 1 by definition, not a measurement
                row.update({"speedup low": "", "speedup high": "", "inconclusive": "", "reads": "the reference (1.00x)"})
            rows.append(row)
        return rows

    def speed_answer(self) -> str:
        """The folded forms' speedups in one line, or '' when nothing was timed.

        Example:
            >>> OneFoldResult(OneFoldExperiment(timing=False), None, None).speed_answer()
            ''
        """
        forms = [f"{t.form} {t.describe()}" for t in self.timings[1:]]
        threads = self.experiment.threads or torch.get_num_threads()
        return f"speedup over the original (higher is faster; {threads} thread(s)): " + "; ".join(forms) if forms else ""


def _time_forms(e: OneFoldExperiment, conv: torch.nn.Module) -> Tuple[FormTiming, ...]:
    big = fold_conv(conv, e.fold.r, e.fold.order).eval()
    x = torch.randn(e.input_shape, device=e.device)
    xf = depth_to_space(x, e.fold.r, e.fold.order, dims=e.conv.dims)

    def with_layout() -> object:
        with torch.no_grad():
            return big(depth_to_space(x, e.fold.r, e.fold.order, dims=e.conv.dims))

    forms = [("folded (conv only)", runner(big, xf)), ("folded (depth_to_space + conv)", with_layout)]
    anchor, paired = interleaved(
        runner(conv.eval(), x), forms, lambda fn, label: measure(fn, label, min_run_time=e.min_run_time / e.rounds, threads=e.threads),
        rounds=e.rounds,
    )
    rows = [FormTiming.from_samples("original", anchor, anchor, verified=True)]
    for (label, _), (own, sample) in zip(forms, paired):
        if isinstance(sample, Exception):
            raise sample
        rows.append(FormTiming.from_samples(label, own, sample, verified=True, check="exact"))
    return tuple(rows)


def _picture(e: OneFoldExperiment, conv: torch.nn.Module, out: Path) -> Optional[Path]:
    if not e.picture or picture_shape(e.conv) is not None:
        return None
    big = fold_conv(conv, e.fold.r, e.fold.order)
    title = (f"{e.conv.describe()} folded by r={'x'.join(map(str, e.fold.r))} ({e.fold.order_string}): "
             f"{ConvSpec.from_module(big).describe()}\nweights: random init (seed {e.seed})")
    fig, _ = kernel_figure(big.weight, channel_map(e.conv, e.fold), e.fold.r, title=title, out_channel=e.picture_channel,
                           folded_channel=e.picture_folded_channel, order=e.fold.order_string, dilation=e.conv.dilation)
    return save_figure(fig, out / "kernel.png")


def run_one_fold(experiment: OneFoldExperiment, out_dir: Union[str, Path, None] = None) -> OneFoldResult:
    """Fold, check exactly, count and (optionally) time both forms; write the report when ``out_dir`` is given.

    An impossible fold (e.g. reflect padding) is a result, not an error: the report says why. Files
    (``summary.md``, ``costs.{csv,md}``) are written only once everything is computed.

    Example:
        >>> e = OneFoldExperiment(conv=ConvSpec.make(2, 16, 4, 3, padding=1), fold=FoldSpec.make(4), input_size=(6, 6), timing=False)
        >>> res = run_one_fold(e)
        >>> res.ok, res.plan.result.kernel_size, res.costs[0].params == res.costs[1].params
        (True, (12, 12), True)
    """
    e = experiment
    try:
        plan = plan_fold(e.conv, e.fold)
    except FoldError as err:
        result = OneFoldResult(e, None, None, reason=str(err))
    else:
        folded_in = plan.result.in_channels // plan.result.groups
        if e.picture and e.picture_folded_channel >= folded_in:  # refused before anything is computed or written
            raise fold_error("picture_folded_channel", e.picture_folded_channel,
                             f"must be < {folded_in} (input channels per group of the folded conv)")
        torch.manual_seed(e.seed)
        conv = e.conv.to_module(device=e.device)
        dtypes = tuple(parse_dtype(d) for d in e.dtypes)
        report = check_fold(
            conv, e.fold.r, e.fold.order, input_size=e.input_size, batch=e.batch, dtypes=dtypes, trials=e.trials, seed=e.seed, device=e.device
        )
        timings = _time_forms(e, conv) if e.timing else ()
        result = OneFoldResult(e, plan, report, timings=timings, machine=machine_description(e.device, e.threads) if timings else "")
    if out_dir is None:
        return result
    out = Path(out_dir)
    files = (write_markdown(result.to_markdown(), out / "summary.md"),)
    files += tuple(write_table(as_rows(result.costs), out / "costs", title="Parameters and MACs").values())
    if result.timings:
        files += tuple(write_table(result.speed_rows(), out / "speed", title=f"Speedups over the original ({result.machine})").values())
    if result.plan is not None:
        picture = _picture(e, conv, out)
        files += (picture,) if picture is not None else ()
    return dataclasses.replace(result, files=files)


#: What each file of the fold app's run directory holds (index.md).
FOLD_FILES = {
    "summary.md": "the answer first, then both convs' specs, parameters and MACs, the exact verdict, float errors, timings here",
    "costs.md": "parameters and MACs of the original and the folded conv",
    "costs.csv": "the same, as CSV",
    "speed.md": "each folded form's speedup over the original (higher is faster), its interval, and whether it is inconclusive",
    "speed.csv": "the same, as CSV",
    "kernel.png": "the big kernel: the folded weight of one output channel, its block grid (one block per tap of the "
                  "original), and the input channel of the original conv at each sub-position of a block",
    "*.log": "the app's log (Hydra)",
}


def fold_app(experiment: OneFoldExperiment, out_dir: Union[str, Path]) -> AppResult:
    """The fold app's body: :func:`run_one_fold` into ``out_dir``; its check: a fold that exists is equivalent (an
    impossible fold is an answer, not a failure: the report says why).

    Example:
        >>> import tempfile
        >>> e = OneFoldExperiment(conv=ConvSpec.make(2, 16, 4, 3, padding=1), fold=FoldSpec.make(4), input_size=(6, 6), timing=False)
        >>> fold_app(e, tempfile.mkdtemp()).checks[0].ok
        True
    """
    result = run_one_fold(experiment, out_dir)
    return AppResult("One fold", result.answer(), result.checks, FOLD_FILES, result.to_markdown(), result)
