"""The counting experiment: count models, check the figures, write every view, plot.

:class:`CountExperiment` is the whole config of ``foldconv count`` (registered as its structured config) and
validates itself; :func:`run_count` builds the models (any spelling of :func:`foldconv.models.resolve_model`, on
meta), validates everything before the first file is written (a malformed request or a model that cannot be
built leaves no output behind), then counts model after model, writing each one's files as soon as it is done;
a rerun in the same directory skips the models already counted. :func:`run_count_jobs` does the same for
models built in Python. :func:`count_app` is the app's body: the run and its checks, for
:func:`~foldconv.experiments.app.conclude`.

Example:
    >>> import tempfile, torch
    >>> job = CountJob("tiny", torch.nn.Conv2d(16, 4, 3), (1, 16, 8, 8), expect={"params": 580})
    >>> run = run_count_jobs([job], tempfile.mkdtemp(), fold_rs=(2,), plot=False)
    >>> run.ok, [c.name for c in run.checks]  # doctest: +NORMALIZE_WHITESPACE
    (True, ['params == sum(numel)', 'every op has a cost rule', 'macs == FlopCounterMode/2', 'expect params',
            'fold_conv r=2 keeps params and macs'])
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from torch import nn

from .._validate import CONV_TYPES, require_bool, require_conv
from ..analysis.counting.counter import count, normalize_input_shapes
from ..analysis.counting.dense import dense_equivalents, parameter_ladder
from ..analysis.counting.fold import (
    DEFAULT_RS,
    FoldComparison,
    FoldOption,
    compare_fold,
    fold_matrix,
    foldable_layers,
    validate_fold_request,
)
from ..analysis.counting.inputs import InputSpec, input_specs
from ..analysis.counting.report import CountReport, readable
from ..analysis.counting.zoo import validate_count
from ..errors import FoldError, fold_error
from ..layout import IntOrTuple, Order
from ..models import (
    PublishedFigures,
    classification_models,
    published_figures,
)
from ..surgery.stage import ModelFoldComparison, compare_model_fold
from ..tracing import require_batch_axis
from .app import R_RULE, AppResult, Check, ChecksHeld, close_matches, model_given, parse_r
from .count_plots import plot_comparison, plot_layers
from .count_resume import Totals, fingerprint, tuples
from .io import RowLog, as_rows, duration, markdown_table, progress_bar, status, write_table
from .rewrite import with_patterns
from .spd_models import SpdSpec, build_spd_model, resolve_spd, spd_model_labels

__all__ = [
    "CountTarget", "CountExperiment", "CountJob", "CountRun", "run_count", "run_count_jobs", "count_app", "count_result", "write_count_report",
]

#: What the app prints: tables (and each model's summary), or one JSON document of every report.
FORMATS = ("table", "json")

#: Totals an ``expect`` entry may pin (the attributes of a CountReport).
EXPECTABLE = ("params", "trainable", "frozen", "macs", "flops", "activation_elements", "activation_bytes", "weight_bytes", "buffer_bytes")


def _shape(value: Any, param: str) -> Tuple[int, ...]:
    try:
        shapes = normalize_input_shapes(value)
    except FoldError as err:
        raise fold_error(param, value, err.rule or str(err)) from None
    if len(shapes) != 1:
        raise fold_error(param, value, "must be one full input shape such as [1, 3, 224, 224]")
    return shapes[0]


def _specs(value: Any, param: str) -> Tuple[InputSpec, ...]:
    """``inputs``: one or more ``[*shape, dtype]`` (dtype optional: the model's floating one), validated."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        value = [value]  # one plain shape
    try:
        return input_specs(value)
    except FoldError as err:
        raise fold_error(param, value, err.rule or str(err)) from None


def _plain(shape: Any) -> bool:
    """One float input given by its shape alone (what the fold views take)."""
    return isinstance(shape, tuple) and all(isinstance(s, int) for s in shape)


@dataclass(frozen=True)
class CountTarget:
    """A model in any spelling of :func:`foldconv.models.resolve_model` (a ``_target_`` node, a name) and its full
    input shape (None: the experiment's ``input_shape``); ``model`` is resolved when the target is made.

    Example:
        >>> CountTarget({"_target_": "torch.nn.Conv2d", "in_channels": 3, "out_channels": 8, "kernel_size": 3}).model.label
        'Conv2d'
    """

    model: Any = None
    input_shape: Optional[Tuple[int, ...]] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", resolve_spd(self.model, param="model"))
        if self.input_shape is not None:
            object.__setattr__(self, "input_shape", _shape(self.input_shape, "input_shape"))

    def build(self) -> nn.Module:
        """The module, on meta (no memory for the weights)."""
        return build_spd_model(self.model, meta=True)


@dataclass(frozen=True)
class CountExperiment:
    """The count app's whole config, validated when built (every bad field is a FoldError naming it).

    ``models``: models in any spelling of :func:`foldconv.models.resolve_model` (``zoo`` = the whole torchvision
    classification zoo; ``"<name>+spd"``: its first strided conv rewritten to space-to-depth,
    :mod:`foldconv.experiments.spd_models`), each counted at ``input_shape``; ``targets``: label -> ``{model: <any spelling>,
    input_shape: [...]}``; ``model``: one model instead of both; ``input_shape``: full shape, batch included;
    ``published``: torchvision models at their weights' crop size, checked against the published figures;
    ``expect``: label -> {total: value}, checked exactly; ``fold_r`` (ints or ``"2x4"``), ``fold_order``:
    the fold view; ``fold_compare_r``: fold every cost-neutral conv of each model with it and compare
    (None: skip).

    Example:
        >>> CountExperiment(models=["resnet18"], fold_r=["2x1", 4]).fold_r
        ((2, 1), 4)
        >>> CountExperiment(fold_order="bad")
        Traceback (most recent call last):
        ...
        foldconv.errors.FoldError: fold_order='bad': must be one of ('crd', 'dcr', 'focus') or a permutation of the einops axes 'c rh rw' for 2 spatial dim(s)
    """

    models: Tuple[Any, ...] = ("resnet50",)
    targets: Dict[str, Any] = field(default_factory=dict)
    model: Any = field(default_factory=dict)  # one model, any spelling (foldconv.models.resolve_model); replaces models and targets
    input_shape: Tuple[int, ...] = (1, 3, 224, 224)
    published: bool = False
    expect: Dict[str, Dict[str, int]] = field(default_factory=dict)
    fold_r: Tuple[Any, ...] = DEFAULT_RS
    fold_order: str = "crd"
    fold_compare_r: Optional[Any] = 2
    check_flop_counter: bool = True
    plot: bool = True
    d2l_table: bool = True
    inputs: Optional[Tuple[Any, ...]] = None  # several inputs or non-float ones, e.g. [[1,16,long],[1,16,bool]]
    format: str = "table"
    tree_depth: Optional[int] = None

    def __post_init__(self) -> None:
        for name in ("published", "check_flop_counter", "plot", "d2l_table"):
            require_bool(getattr(self, name), name)
        if self.format not in FORMATS:
            raise fold_error("format", self.format, f"must be one of {list(FORMATS)}")
        if self.tree_depth is not None and (isinstance(self.tree_depth, bool) or not isinstance(self.tree_depth, int) or self.tree_depth < 0):
            raise fold_error("tree_depth", self.tree_depth, "must be an integer >= 0 (levels below the model) or null (no tree)")
        if self.inputs is not None:
            object.__setattr__(self, "inputs", _specs(self.inputs, "inputs"))
        if model_given(self.model):  # `model=<any spelling>`: count that model alone
            spec = resolve_spd(self.model)
            object.__setattr__(self, "model", spec)
            object.__setattr__(self, "targets", {spec.label: CountTarget(spec)})
            object.__setattr__(self, "models", ())
        if self.models is None or isinstance(self.models, (str, Mapping)) or not isinstance(self.models, Sequence):
            raise fold_error("models", self.models, "must be a list of models (names, timm:<name>, _target_ nodes) or [zoo]")
        listed = [n for m in self.models for n in (classification_models() if m == "zoo" else [m])]
        specs = spd_model_labels(listed, param="models")
        if self.published:
            known = set(classification_models())
            for spec in specs:
                if isinstance(spec, SpdSpec):
                    raise fold_error("models", spec.label, "is rewritten (+spd): its parameters and MACs are not the published "
                                                           "model's (published=true counts the models themselves)")
                if spec.source != "torchvision" or spec.name not in known:
                    raise fold_error("models", spec.label, "is not a torchvision classification model with published weights "
                                                           "('zoo' means every classification model)")
        object.__setattr__(self, "models", specs)
        object.__setattr__(self, "input_shape", _shape(self.input_shape, "input_shape"))
        for name in ("targets", "expect"):
            if not isinstance(getattr(self, name), Mapping):
                raise fold_error(name, getattr(self, name), "must be a mapping from model labels")
        targets = {}
        for label, target in dict(self.targets).items():
            try:
                if not isinstance(target, (CountTarget, Mapping)):
                    raise TypeError
                targets[label] = target if isinstance(target, CountTarget) else CountTarget(**dict(target))
            except FoldError as err:
                raise fold_error(f"targets.{label}.{err.param}", err.value, err.rule or str(err)) from None
            except TypeError:
                raise fold_error(f"targets.{label}", target, "must be {model: {_target_: ...}, input_shape: [...]}") from None
        object.__setattr__(self, "targets", targets)
        for label, expected in dict(self.expect).items():
            if not isinstance(expected, Mapping):
                raise fold_error(f"expect.{label}", expected, f"must map totals to integers, e.g. {{params: 580}} ({list(EXPECTABLE)})")
            for key, value in dict(expected).items():
                if key not in EXPECTABLE:
                    raise fold_error(f"expect.{label}", key, f"must be one of the totals {list(EXPECTABLE)}")
                if isinstance(value, bool) or not isinstance(value, int):
                    raise fold_error(f"expect.{label}.{key}", value, "must be an integer")
        try:
            rs = tuple(parse_r(r) for r in self.fold_r) if isinstance(self.fold_r, Sequence) and not isinstance(self.fold_r, str) else self.fold_r
        except FoldError:
            raise fold_error("fold_r", self.fold_r, f"every entry {R_RULE}") from None
        try:
            validate_fold_request(rs, self.fold_order, r_param="fold_r", order_param="fold_order")
        except FoldError as err:
            raise (fold_error("fold_r", self.fold_r, f"every entry {R_RULE}") if err.param == "fold_r" else err) from None
        object.__setattr__(self, "fold_r", rs)
        if self.fold_compare_r is not None:
            try:
                object.__setattr__(self, "fold_compare_r", parse_r(self.fold_compare_r))
                validate_fold_request([self.fold_compare_r], self.fold_order, r_param="fold_compare_r", order_param="fold_order")
            except FoldError as err:  # a bad order is the order's error; anything about r is the one fold-factor rule
                raise (fold_error("fold_compare_r", self.fold_compare_r, f"{R_RULE}, or null (no comparison)")
                       if err.param in ("r", "fold_compare_r") else err) from None

    def jobs(self) -> List[CountJob]:
        """One :class:`CountJob` per model and target, each model built on meta."""
        jobs = []
        for spec in self.models:
            figures = published_figures(spec.name) if self.published else None
            model = build_spd_model(spec, meta=True, param="models", **(figures.kwargs if figures else {}))
            shape = figures.input_shape if figures else self.inputs or self.input_shape
            if _plain(shape):
                require_batch_axis(model, shape, label=spec.label)
            jobs.append(CountJob(spec.label, model, shape, published=figures, expect=self.expect.get(spec.label, {})))
        for label, target in self.targets.items():
            try:
                model = target.build()
            except FoldError as err:
                raise fold_error(f"targets.{label}.{err.param}", err.value, err.rule or str(err)) from None
            shape = target.input_shape or self.inputs or self.input_shape
            if _plain(shape):
                require_batch_axis(model, shape, param=f"targets.{label}.input_shape" if target.input_shape else "input_shape", label=label)
            jobs.append(CountJob(label, model, shape, expect=self.expect.get(label, {})))
        return jobs


@dataclass(frozen=True)
class CountJob:
    """One model to count: a label for file names, the module, its full input shape (or :class:`InputSpec`
    specs: several inputs, token ids, masks), optional published figures and exact expectations
    (``{"params": ..., "macs": ...}``)."""

    label: str
    model: nn.Module
    input_shape: Union[Tuple[int, ...], Tuple[InputSpec, ...]]
    published: Optional[PublishedFigures] = None
    expect: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Measured:
    job: CountJob
    report: CountReport
    checks: Tuple[Check, ...]
    dense: List[Dict[str, Any]]
    folds: List[FoldOption]
    conv_folds: Tuple[Tuple[IntOrTuple, FoldComparison], ...]
    model_fold: Optional[ModelFoldComparison]
    compare_r: Optional[IntOrTuple]


@dataclass(frozen=True)
class CountRun(ChecksHeld):
    """What a counting run measured and wrote: one report per model counted now, every check, the files;
    ``totals``: every model's totals row (resumed ones included); ``resumed``: the models an earlier run in
    the same directory had finished (not recounted)."""

    reports: Tuple[CountReport, ...]
    checks: Tuple[Check, ...]
    files: Tuple[Path, ...] = ()
    totals: Tuple[Mapping[str, Any], ...] = ()
    resumed: Tuple[str, ...] = ()
    labels: Tuple[str, ...] = ()



def _missing_batch_axis(job: CountJob) -> Optional[FoldError]:
    """The input_shape's error, not the model's, when the model refused ``job.input_shape`` and runs on it with a
    batch axis in front (``[3, 224, 224]`` for ``[1, 3, 224, 224]``); None when that does not explain it."""
    shape = job.input_shape
    if not _plain(shape):
        return None
    batched = (1,) + tuple(shape)
    try:
        count(job.model, batched, name=job.label)
    except Exception:  # noqa: BLE001 - any failure means the batch axis is not the explanation
        return None
    return fold_error("input_shape", list(shape), f"must be a full tensor shape with the batch axis first; did you mean "
                                                  f"{list(batched)}? ({job.label} runs on that, not on this)")


def _measure(job: CountJob, rs: Sequence[IntOrTuple], order: Order, compare_r: Optional[IntOrTuple], flop_counter: bool) -> _Measured:
    label = job.label
    checks: List[Check] = []
    if flop_counter:
        validation = validate_count(job.model, job.input_shape, name=label)
        report = validation.report
    else:
        report = count(job.model, job.input_shape, name=label)
    checks.append(Check.equal("params == sum(numel)", sum(p.numel() for p in job.model.parameters()), report.params, subject=label))
    checks.append(Check.equal("every op has a cost rule", "", " ".join(op.op for op in report.unsupported_ops), subject=label))
    if flop_counter:
        if validation.unwitnessed_ops:  # ops FlopCounterMode has no formula for: it confirms the rest
            name = f"macs without {', '.join(validation.unwitnessed_ops)} (no FlopCounterMode formula) == FlopCounterMode/2"
            checks.append(Check.equal(name, validation.flop_counter_macs, validation.witnessed_macs, subject=label))
        else:
            checks.append(Check.equal("macs == FlopCounterMode/2", validation.flop_counter_macs, report.macs, subject=label))
    if job.published:
        checks.append(Check.equal("published params", job.published.num_params, report.params, subject=label))
        checks.append(Check.equal("published GMACs (3 decimals)", job.published.gmacs, round(report.macs / 1e9, 3), subject=label))
    for key, value in job.expect.items():
        checks.append(Check.equal(f"expect {key}", value, getattr(report, key), subject=label))
    folds = foldable_layers(report, rs=rs, order=order)
    conv_folds = []
    if isinstance(job.model, CONV_TYPES):
        for option in folds:
            if option.foldable:
                cmp = compare_fold(job.model, job.input_shape, r=option.r, order=order)
                conv_folds.append((option.r, cmp))
                if option.cost_neutral:
                    checks.append(Check.equal(f"fold_conv r={option.r} keeps params and macs", True, cmp.keeps_costs, subject=label))
    model_fold = None
    if compare_r is not None and folds and not isinstance(job.model, CONV_TYPES) and _plain(job.input_shape):
        model_fold = compare_model_fold(job.model, job.input_shape, r=compare_r, order=order)
        if model_fold.folded_layers:
            convs = sum(1 for _ in report.conv_layers())
            scope = "" if model_fold.folded_layers == convs else f" (the {model_fold.folded_layers} of {convs} convs whose fold is cost-neutral)"
            checks.append(Check.equal(f"fold r={compare_r} keeps params and macs{scope}", True, model_fold.keeps_costs, subject=label))
    return _Measured(job, report, tuple(checks), dense_equivalents(report), folds, tuple(conv_folds), model_fold, compare_r)


def _write(m: _Measured, out: Path, plot: bool) -> List[Path]:
    label = m.job.label
    files = list(write_count_report(m.report, out, stem=label).values())
    if m.dense:
        files += write_table(m.dense, out / f"{label}_dense", title=f"{label}: dense-equivalent cost of every conv").values()
    if m.folds:
        title = f"{label}: which convs fold with which r (yes* = costs change)"
        matrix = fold_matrix(m.folds)
        if _plain(m.job.input_shape):
            matrix = with_patterns(matrix, m.job.model, m.job.input_shape)
        files += write_table(matrix, out / f"{label}_fold", title=title).values()
        files += write_table([o.row() for o in m.folds], out / f"{label}_fold_detail", title=f"{label}: fold options per conv").values()
    for r, cmp in m.conv_folds:
        stem = out / f"{label}_fold_compare_r{r}"
        files += write_table(cmp.rows(), stem, title=f"{label}: original vs fold_conv(r={r})").values()
    if m.model_fold is not None:
        cmp = m.model_fold
        layout = len(cmp.report.layout_ops) if cmp.report is not None else 0
        # both numbers belong to this one r: another r folds other convs and needs other layout layers (mobilenet_v2:
        # 34 convs and 70 layout layers at r=2, 32 and 68 at r=4), so the title names r with them
        convs = sum(1 for _ in m.report.conv_layers())
        left = convs - cmp.folded_layers
        title = (f"{label}: totals before and after folding {cmp.folded_layers} of its {convs} conv(s) with r={m.compare_r}, which adds "
                 f"{layout} DepthToSpace/SpaceToDepth layer(s) (both counts are for r={m.compare_r}: {label}_fold.md shows "
                 "which convs fold with each r)"
                 + (f"; the other {left} are left as they are: their fold does not hold at this r, or changes params and MACs "
                    f"(dilated or grouped convs, yes* in {label}_fold.md), so these totals say nothing about them" if left else ""))
        files += write_table(cmp.rows(), out / f"{label}_fold_model", title=title).values()
    if plot:
        files.append(plot_layers(m.report, out / f"{label}_layers.png"))
    json_path = out / f"{label}.json"
    json_path.write_text(json.dumps(m.report.to_dict(), indent=1, default=str) + "\n")
    files.append(json_path)
    tree_path = out / f"{label}_tree.txt"
    tree_path.write_text(m.report.tree() + "\n")
    files.append(tree_path)
    return files


def run_count_jobs(
    jobs: Sequence[CountJob],
    out_dir: Union[str, Path],
    *,
    fold_rs: Sequence[IntOrTuple] = DEFAULT_RS,
    fold_order: Order = "crd",
    fold_compare_r: Optional[IntOrTuple] = 2,
    check_flop_counter: bool = True,
    plot: bool = True,
    d2l: bool = False,
    progress: Optional[Callable[[Iterable, str, int], Iterable]] = None,
    log: Optional[Callable[[str], None]] = None,
) -> CountRun:
    """Count every job, writing each model's ``<label>_*.{csv,md}`` (+ ``_layers.png``) as soon as it is
    counted, then ``comparison`` (+ ``comparison.png``) into ``out_dir``; the checks are the run's
    (:func:`count_result` hands them to the app skeleton, which writes ``checks`` and ``index.md``).

    Resumable: ``models.csv`` records each finished model (totals, checks), ``models.config.json`` the config;
    a rerun of it in ``out_dir`` skips those models (another config there: FoldError naming ``out_dir``).
    ``log`` gets the estimate (how many models, about how long) once the first model is timed. Checks: parameters equal ``sum(p.numel())``; every op that ran has a cost rule; MACs equal
    FlopCounterMode/2 (``check_flop_counter``); published and expected figures; for ``fold_compare_r``
    (and every ``fold_rs`` of a bare conv), a cost-neutral fold keeps parameters and MACs. Arguments are
    validated before the first file is written; ``progress(jobs, desc, total)`` wraps the loop.
    """
    if isinstance(jobs, CountJob) or not jobs or not all(isinstance(j, CountJob) for j in jobs):
        raise fold_error("jobs", jobs, "must be a non-empty list of CountJob")
    validate_fold_request(fold_rs, fold_order, r_param="fold_rs", order_param="fold_order")
    if fold_compare_r is not None:
        validate_fold_request([fold_compare_r], fold_order, r_param="fold_compare_r", order_param="fold_order")
    for name, flag in (("check_flop_counter", check_flop_counter), ("plot", plot), ("d2l", d2l)):
        require_bool(flag, name)
    if len(set(labels := [j.label for j in jobs])) != len(labels):
        raise fold_error("jobs", labels, "must have distinct labels (they name the files)")
    for job in jobs:  # a bare conv on a wrong shape fails before anything is written (other models: when counted)
        if isinstance(job.model, CONV_TYPES) and (len(job.input_shape) != require_conv(job.model) + 2 or job.input_shape[1] != job.model.in_channels):
            raise fold_error("input_shape", job.input_shape, f"must be (N, {job.model.in_channels}, spatial sizes) for {job.label}: {job.model}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = fingerprint(jobs, fold_rs=fold_rs, fold_order=fold_order, fold_compare_r=fold_compare_r,
                          check_flop_counter=check_flop_counter, plot=plot)
    files: List[Path] = []
    reports: List[CountReport] = []
    done: Dict[str, Tuple[Mapping[str, Any], Tuple[Check, ...]]] = {}
    with RowLog(out / "models.csv", ["model", "totals", "checks"], key=["model"], config=config, param="out_dir") as models_log:
        for row in models_log.rows():  # the models an earlier run here finished: their totals and checks
            stored = tuple(Check(**{k: tuples(v) for k, v in c.items()}) for c in json.loads(row["checks"]))
            done[row["model"]] = ({k: tuples(v) for k, v in json.loads(row["totals"]).items()}, stored)
        todo, started = [j for j in jobs if j.label not in done], time.monotonic()
        for i, job in enumerate(progress(todo, "count", len(todo)) if progress is not None else todo):
            try:
                m = _measure(job, fold_rs, fold_order, fold_compare_r, check_flop_counter)
            except FoldError as err:
                if not models_log.resumed and not reports:  # refused before any model finished: leave no record behind
                    models_log.close()
                    for path in (models_log.path, models_log.config_path):
                        path.unlink(missing_ok=True)
                batch = _missing_batch_axis(job) if err.param == "input_shape" else None
                raise (batch or FoldError(f"{job.label}: {err}", param=err.param, value=err.value, rule=err.rule)) from err
            files += _write(m, out, plot)
            totals = m.report.rows("total")[0]
            models_log.append({"model": job.label, "totals": json.dumps(totals, default=str),
                               "checks": json.dumps([dataclasses.asdict(c) for c in m.checks], default=str)})
            reports.append(m.report)
            done[job.label] = (totals, m.checks)
            if i == 0 and log is not None and (len(todo) > 1 or len(todo) < len(jobs)):
                first, resumed = time.monotonic() - started, (f" ({len(jobs) - len(todo)} already counted in {out}, resuming)" if len(todo) < len(jobs) else "")
                log(f"{len(jobs)} models{resumed}; the first took {duration(first)}: about {duration(first * len(todo))} for the {len(todo)} to count on this machine")
        if not todo and log is not None:
            log(f"{len(jobs)} models, all already counted in {out}: nothing left to compute")
    rows = [done[label][0] for label in labels]
    checks = tuple(c for label in labels for c in done[label][1])
    files += write_table(rows, out / "comparison", title="Models compared").values()
    if d2l:
        ladder = as_rows(parameter_ladder(1000, 1000, 10, hidden=1000))
        files += write_table(ladder, out / "d2l_dense", title="D2L: fully connected vs local vs conv (weights)").values()
    if plot:
        files.append(plot_comparison([Totals(r["model"], r["params"], r["macs"]) for r in rows], out / "comparison.png"))
    resumed = tuple(lb for lb in labels if lb not in {j.label for j in todo})
    return CountRun(tuple(reports), checks, tuple(files), tuple(rows), resumed, tuple(labels))


def _count_files(labels: Sequence[str]) -> Dict[str, str]:
    """What each file of a count run holds (index.md): the run-wide files first, then each model's."""
    described = {
        "checks.md": "every checked figure (parameters, MACs vs FlopCounterMode, published/expected totals, folds): expected vs observed",
        "checks.csv": "the same, as CSV",
        "comparison.md": "the totals of every model, one row each (parameters, MACs, FLOPs, activations, memory)",
        "comparison.csv": "the same, as CSV",
        "comparison.png": "the models' totals side by side",
        "d2l_dense.*": "D2L's ladder: fully connected vs local vs conv weights",
        "models.csv": "one row per finished model (totals and checks, JSON): a rerun in this directory skips them",
        "models.config.json": "the config that produced models.csv (a rerun here resumes only with the same one)",
    }
    views = {"total": "totals", "layers": "every layer", "module": "per module", "type": "per layer type", "op": "per aten op",
             "dense": "dense-equivalent cost of every conv", "fold": "which convs fold with which r (yes* = costs change), model-level patterns",
             "fold_detail": "fold options per conv", "fold_model": "totals before and after folding the cost-neutral convs", "fold_compare_r*": "a bare conv against its fold_conv, per r"}
    for label in labels:
        for view, text in views.items():
            described[f"{label}_{view}.md"] = f"{label}: {text}"
            described[f"{label}_{view}.csv"] = f"{label}: {text} (CSV)"
        described[f"{label}_layers.png"] = f"{label}: costs per layer"
        described[f"{label}.json"] = f"{label}: the whole report as JSON (totals exact and readable, every layer with its ops)"
        described[f"{label}_tree.txt"] = f"{label}: the module tree (each module's subtree parameters and MACs)"
    described["*.log"] = "the app's log (Hydra)"
    return described


def run_count(experiment: CountExperiment, out_dir: Union[str, Path]) -> CountRun:
    """Build the experiment's models and :func:`run_count_jobs` them with its settings.

    Example:
        >>> import tempfile
        >>> exp = CountExperiment(models=[], targets={"c": {"model": {"_target_": "torch.nn.Conv2d", "in_channels": 4,
        ...     "out_channels": 2, "kernel_size": 3}, "input_shape": [1, 4, 8, 8]}}, fold_r=[2], plot=False, d2l_table=False)
        >>> run_count(exp, tempfile.mkdtemp()).ok
        True
    """
    if not isinstance(experiment, CountExperiment):
        raise fold_error("experiment", type(experiment).__name__, "must be a CountExperiment")
    jobs = experiment.jobs()
    if not jobs:
        raise fold_error("models", list(experiment.models), "and targets are both empty: nothing to count")
    bar = (lambda items, desc, total: progress_bar(items, desc, total=total, unit="model")) if len(jobs) > 1 else None
    return run_count_jobs(
        jobs, out_dir, fold_rs=experiment.fold_r, fold_order=experiment.fold_order,
        fold_compare_r=experiment.fold_compare_r, check_flop_counter=experiment.check_flop_counter,
        plot=experiment.plot, d2l=experiment.d2l_table, progress=bar, log=status if len(jobs) > 1 else None,
    )


def count_result(
    run: CountRun, *, expect: Optional[Mapping[str, Any]] = None, format: str = "table", tree_depth: Optional[int] = None,
) -> AppResult:
    """A count run as the skeleton takes it: its checks, what each file holds, and what the app prints (the
    failed checks or how many passed, the models compared with readable totals, each model's module tree to
    ``tree_depth`` levels when given, a note on an ``expect`` entry that names no counted model but nearly names one,
    a likely typo; entries for models this run left out, as ``model=`` leaves the defaults', are not noted); ``format="json"``: one JSON
    document instead (``{"models": [CountReport.to_dict(), ...], "checks": [...]}``) of the models counted now."""
    if format not in FORMATS:
        raise fold_error("format", format, f"must be one of {list(FORMATS)}")
    if format == "json":
        document = {"models": [r.to_dict() for r in run.reports], "checks": [dataclasses.asdict(c) for c in run.checks]}
        text = json.dumps(document, indent=1, default=str)
        return AppResult("Counts", f"{len(run.totals)} model(s) counted", run.checks, _count_files(run.labels), text, run,
                         document=True)
    failed = [c.row() for c in run.failed]
    lines = [markdown_table(failed or [{"checks": f"all {len(run.checks)} passed", "models": len(run.totals)}]), ""]
    lines.append(markdown_table([_with_readable(row) for row in run.totals]))
    if tree_depth is not None:
        for report in run.reports:
            lines.append(f"\n{report.model}:\n{report.tree(depth=tree_depth)}")
    if run.resumed:
        lines.append(f"\nresumed: {len(run.resumed)} model(s) counted by an earlier run in this directory: {list(run.resumed)}")
    for report in run.reports:  # a model without a Conv layer gets no fold view: say why instead of leaving it out
        if next(iter(report.conv_layers()), None) is None:
            kinds = sorted({layer.type for layer in report.layers if layer.type.startswith("ConvTranspose")})
            lines.append(f"\nnote: {report.model} has no Conv1d/2d/3d layer, so no fold view or fold check"
                         + (f" (its {', '.join(kinds)} layers are not what fold_conv folds; `foldconv rewrite "
                            f"rules=[transposed_to_subpixel]` rewrites them as sub-pixel convs)" if kinds else ""))
    counted = [str(r["model"]) for r in run.totals]
    for label in sorted(set(expect or {}) - set(counted)):  # notes only about what ran: the defaults' entries for models
        close = close_matches(label, counted, cutoff=0.85)  # left out (model=...) say nothing; a likely typo does
        if close:
            lines.append(f"\nnote: expect.{label} names no counted model (did you mean {' or '.join(close)}?): not checked")
    return AppResult("Counts", f"{len(run.totals)} model(s) counted", run.checks, _count_files(run.labels), "\n".join(lines), run)


def _with_readable(row: Mapping[str, Any]) -> Dict[str, Any]:
    """A totals row with the readable figures beside the exact ones (``macs_readable``: ``4.09 GMACs``)."""
    out: Dict[str, Any] = {}
    for key, value in row.items():
        out[key] = value
        if key in _READABLE and isinstance(value, int) and not isinstance(value, bool):
            out[f"{key}_readable"] = readable(value, _READABLE[key])
    return out


_READABLE = {"params": "params", "macs": "MACs", "flops": "FLOPs", "peak_activation_bytes": "B"}


def count_app(experiment: CountExperiment, out_dir: Union[str, Path]) -> AppResult:
    """The count app's body: :func:`run_count`, then :func:`count_result`.

    Example:
        >>> import tempfile
        >>> from foldconv.experiments.app import conclude
        >>> exp = CountExperiment(model={"_target_": "torch.nn.Conv2d", "in_channels": 4, "out_channels": 2, "kernel_size": 3},
        ...                       input_shape=[1, 4, 8, 8], fold_r=[2], plot=False, d2l_table=False)
        >>> out = tempfile.mkdtemp()
        >>> conclude(count_app(exp, out), out).splitlines()[-1] == f"written to {out}"
        True
    """
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module="torchvision")
    return count_result(run_count(experiment, out_dir), expect=experiment.expect, format=experiment.format,
                        tree_depth=experiment.tree_depth)


def write_count_report(report: CountReport, directory: Union[str, Path], *, stem: Optional[str] = None) -> Dict[str, Path]:
    """Write ``<stem>_{layers,module,type,op,total}.{csv,md}`` into ``directory``; returns the paths.

    Example:
        >>> import tempfile, torch
        >>> from foldconv.analysis import count
        >>> sorted(write_count_report(count(torch.nn.Linear(3, 2), (1, 3)), tempfile.mkdtemp()))[:2]
        ['layers_csv', 'layers_md']
    """
    if not isinstance(report, CountReport):
        raise fold_error("report", type(report).__name__, "must be a CountReport")
    stem = stem or report.model
    paths: Dict[str, Path] = {}
    for view in CountReport.VIEWS:
        out = write_table(report.rows(view), Path(directory) / f"{stem}_{view}", title=f"{report.model}: counts by {view}")
        paths[f"{view}_csv"], paths[f"{view}_md"] = out["csv"], out["md"]
    return paths
