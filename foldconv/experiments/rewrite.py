"""The rewrite app: models rewritten into equivalent forms, verified, exported, timed.

:class:`RewriteExperiment` is the whole config of ``foldconv rewrite`` (registered as its structured config)
and validates itself. It takes any model spelling (:func:`foldconv.models.resolve_model`, and ``<model>+spd``: :mod:`.spd_models`): the real models of
:data:`REAL_MODELS` (YOLOv5's Focus stem, TResNet-M, DCGAN, ESPCN, ResNet-18) come with their own rules, input
shapes and inverse rules; any other model needs ``rules=[...]`` (and ``input_shape`` when its input is not
known). :func:`run_rewrite` takes each model through :func:`foldconv.rewrite` (every site and the whole model
checked against the original), back through the inverse rules (``round_trip``), through ONNX
(:func:`foldconv.surgery.export_onnx`: the ops each form lowers to, onnxruntime against torch) and through
:func:`foldconv.surgery.benchmark_forms` and :func:`foldconv.surgery.optimize` (``timing``), then writes

- ``sites.{csv,md}``: one row per site: pattern, location, before/after (every step the site runs), params, MACs,
  applied (or why not), verdict, exact, trains the same;
- ``timings.{csv,md}``: per form the original's median from the rounds that compared them, the form's median and
  IQR, the speedup (the ratio of those two medians) with its interval, the inconclusive flag (the interval holds
  1.0x or is too wide to read) and the machine with its thread count; a comparison optimize made already (the
  same rules at the same sites) is shown, not timed again;
- ``onnx.{csv,md}``: the ONNX ops of the original and the rewritten model, the change and why (the sites' own
  steps; a BatchNorm the exporter could not fold into a Conv), onnxruntime's agreement with torch on the output;
- ``sites.png`` (params and MACs before vs after, per site), ``timings.png`` (speedups with IQR intervals),
  ``summary.md``; the checks (each rewrite, round trip and ONNX form verified) go to the app skeleton.

Every BatchNorm gets seeded random running statistics and affine parameters
(:func:`foldconv.models.randomize_batchnorm`): a fresh BatchNorm is the identity in eval mode, which would make
a check of a BN fold vacuous.

Example:
    >>> RewriteExperiment(model="all").names()
    ('yolov5_stem', 'tresnet_m', 'dcgan', 'espcn', 'resnet18')
    >>> RewriteExperiment(model="espcn", rules=["subpixel_to_transposed"]).rules
    ('subpixel_to_transposed',)
    >>> RewriteExperiment(model={"_target_": "torchvision.models.alexnet"}, rules=["strided_to_spd"], input_shape=[1, 3, 64, 64]).names()
    ('alexnet',)
"""
from __future__ import annotations

import dataclasses
import difflib
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from .._validate import require_bool, require_device, require_int
from ..errors import FoldError, first_line, fold_error
from ..models import ModelSpec, randomize_batchnorm, resolve_model
from ..surgery.rules import RULES, inverse_rules
from ..surgery.timing import require_seconds
from ..tracing import require_batch_axis
from .app import AppResult, Check, model_given
from .io import progress_bar, save_figure, write_markdown, write_table
from .rewrite_plots import sites_figure, timings_figure
from .spd_models import build_spd_model, spd_model_labels

__all__ = [
    "RealModel", "REAL_MODELS", "real_model", "RewriteExperiment", "ModelRun",
    "RewriteRun", "run_rewrite", "normalize_rules", "model_patterns", "with_patterns", "summary_text", "site_rows",
    "timing_rows", "onnx_rows", "no_site_text", "SiteOps", "site_onnx_ops",
]

RuleArg = Union[str, Tuple[str, Mapping[str, Any]]]

#: Forms the app can time besides the original: its own rewrite, and benchmark_forms' model forms.
FORMS = ("rewritten", "channels_last", "compile", "focus_to_conv", "conv_to_focus", "strided_to_spd", "spd_to_strided",
         "transposed_to_subpixel", "subpixel_to_transposed")


@dataclass(frozen=True)
class RealModel:
    """A real model's rewrite case: the ``rules`` that rewrite it, the ``inverse`` rules that take the rewrite
    back, and the small ``test_input_shape`` of the tests; ``input_shape`` is the model's own
    (:attr:`foldconv.models.ModelSpec.input_shape`).

    Example:
        >>> m = REAL_MODELS["espcn"]
        >>> m.rules, m.test_input_shape, m.input_shape
        (('subpixel_to_transposed',), (1, 1, 12, 12), (1, 1, 128, 128))
        >>> tuple(REAL_MODELS["yolov5_stem"].build()(torch.zeros(1, 3, 32, 32)).shape)
        (1, 64, 8, 8)
    """

    name: str
    test_input_shape: Tuple[int, ...]
    rules: Tuple[RuleArg, ...]
    inverse: Tuple[RuleArg, ...]

    @property
    def spec(self) -> ModelSpec:
        return resolve_model(self.name)

    @property
    def input_shape(self) -> Tuple[int, ...]:
        shape = self.spec.input_shape
        if shape is None:  # every real model's input is known (an architecture's own or torchvision's crop)
            raise fold_error("model", self.name, "has no known input shape: give input_shape=[...]")
        return shape

    def build(self, seed: int = 0, **kwargs: Any) -> torch.nn.Module:
        """The model with seeded random weights (BatchNorm statistics included), in eval mode, on the CPU;
        ``kwargs`` go to its builder (``REAL_MODELS["dcgan"].build(ngf=8)``: a narrower generator for tests)."""
        return _seeded(resolve_model(self.name, **kwargs), seed)


def _seeded(spec: ModelSpec, seed: int) -> torch.nn.Module:
    model = build_spd_model(spec, seed=seed)
    randomize_batchnorm(model, torch.Generator().manual_seed(seed))
    return model.eval()


#: The rewrite app's real models: each model's own rules and the rules that take them back.
REAL_MODELS: Dict[str, RealModel] = {
    m.name: m
    for m in (
        RealModel("yolov5_stem", (1, 3, 32, 32), ("focus_to_conv",), (("conv_to_focus", {"at": ["focus.conv.conv"]}),)),
        RealModel("tresnet_m", (1, 3, 64, 64), ("spd_to_strided",), (("strided_to_spd", {"order": "dcr"}),)),
        RealModel("dcgan", (1, 100, 1, 1), ("transposed_to_subpixel",), ("subpixel_to_transposed",)),
        RealModel("espcn", (1, 1, 12, 12), ("subpixel_to_transposed",), ("transposed_to_subpixel",)),
        RealModel("resnet18", (1, 3, 32, 32), (("strided_to_spd", {"at": ["conv1"]}), ("fold_stage", {"stage": "layer1", "r": 2})),
                  ("spd_to_strided", ("unfold_stage", {"stage": "layer1"}))),
    )
}


def real_model(name: Any, *, param: str = "model") -> RealModel:
    """The :data:`REAL_MODELS` entry ``name``; a FoldError naming ``param`` (with close names) otherwise.

    Example:
        >>> real_model("yolov5").name
        Traceback (most recent call last):
        ...
        foldconv.errors.FoldError: model='yolov5': is not a real model of the rewrite app (one of dcgan, espcn, resnet18, tresnet_m, yolov5_stem); did you mean yolov5_stem?
    """
    if isinstance(name, str) and name in REAL_MODELS:
        return REAL_MODELS[name]
    close = difflib.get_close_matches(name, list(REAL_MODELS), n=2, cutoff=0.5) if isinstance(name, str) else []
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise fold_error(param, name, f"is not a real model of the rewrite app (one of {', '.join(sorted(REAL_MODELS))}){hint}")


def normalize_rules(rules: Any, *, param: str = "rules") -> Tuple[RuleArg, ...]:
    """Rules as :func:`foldconv.rewrite` takes them, from the spellings a config allows: ``"strided_to_spd"``,
    ``{"fold_stage": {"stage": "layer1", "r": 2}}`` or ``["fold_stage", {...}]``.

    One rule name alone (``rules=subpixel_to_transposed``) is a list of one.

    Example:
        >>> normalize_rules(["focus_to_conv", ["fold_stage", {"stage": "s", "r": 2}]])
        ('focus_to_conv', ('fold_stage', {'stage': 's', 'r': 2}))
        >>> normalize_rules("subpixel_to_transposed")
        ('subpixel_to_transposed',)
        >>> normalize_rules(["fold_stag"])
        Traceback (most recent call last):
        ...
        foldconv.errors.FoldError: rules='fold_stag': is not a rule (one of conv_to_focus, ..., unfold_stage); did you mean fold_stage?
    """
    if isinstance(rules, str) and rules:
        rules = [rules]
    if isinstance(rules, Mapping) or not isinstance(rules, Sequence) or not rules:
        raise fold_error(param, rules, "must be a non-empty list of rule names or {rule: {option: value}} entries")
    out: List[RuleArg] = []
    for rule in rules:
        if isinstance(rule, Mapping) and len(rule) == 1:
            name, options = next(iter(rule.items()))
        elif isinstance(rule, Sequence) and not isinstance(rule, str) and len(rule) == 2 and isinstance(rule[1], Mapping):
            name, options = rule
        else:
            name, options = rule, None
        if not isinstance(name, str) or name not in RULES:
            close = difflib.get_close_matches(str(name), RULES.names(), n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise fold_error(param, name, f"is not a rule (one of {', '.join(RULES.names())}){hint}")
        if options is not None and not isinstance(options, Mapping):
            raise fold_error(f"{param}.{name}", options, "must map option names to values, e.g. {stage: layer1, r: 2}")
        out.append((name, dict(options)) if options else name)
    return tuple(out)


def _spelling(spec: ModelSpec) -> str:
    """How a model was asked for: ``timm:tresnet_m`` for timm's build of a name a real model also has."""
    if spec.label in REAL_MODELS and spec.source and spec.name:
        return f"{spec.source}:{spec.name}"
    return spec.label


def _rule_text(rule: RuleArg) -> str:
    if isinstance(rule, str):
        return rule
    return f"{rule[0]}(" + ", ".join(f"{k}={v}" for k, v in rule[1].items()) + ")"


@dataclass(frozen=True)
class RewriteExperiment:
    """The rewrite app's whole config, validated when built (every bad field is a FoldError naming it).

    ``models``: models in any spelling of :func:`foldconv.models.resolve_model` (``all``: every real model of
    :data:`REAL_MODELS`); ``model``: one model (or ``all``, or a list) instead; ``rules``: the rules to apply
    (None: each real model's own; required for any other model); ``input_shape``: full input shape (None: each
    model's own; one model only; required for a model whose input is not known, e.g. a ``_target_``);
    ``size``: ``default`` (each model's input size) or ``test`` (the real models' small test inputs, for a quick
    run); ``round_trip``: rewrite back with the inverse rules and verify again; ``onnx``: export every form and run
    it in onnxruntime; ``timing``: time the original and the ``forms`` (:func:`foldconv.surgery.benchmark_forms`:
    ``rewritten`` is this run's rewrite, the others are its model forms: ``channels_last``, ``compile`` and
    each rule applied everywhere it applies) in one run on ``device``, ``min_run_time`` seconds each, then
    :func:`foldconv.surgery.optimize` (``optimize``); ``seed``: the RNG seed of the random weights (and of the
    checks); ``threads``: torch threads (default 1, as benchmarks/ time: steady on a shared machine; 0: torch's
    default); ``dpi``: of the PNGs.

    Example:
        >>> RewriteExperiment(model=["espcn", "dcgan"], timing=False).names()
        ('espcn', 'dcgan')
        >>> RewriteExperiment(model="all", input_shape=[1, 3, 64, 64])
        Traceback (most recent call last):
        ...
        foldconv.errors.FoldError: input_shape=[1, 3, 64, 64]: is one model's shape: give it with a single model (model=resnet18), or leave it null for each model's default
        >>> RewriteExperiment(model="alexnet")
        Traceback (most recent call last):
        ...
        foldconv.errors.FoldError: rules=None: must be given for alexnet, which is not a real model of the rewrite app (dcgan, espcn, resnet18, tresnet_m, yolov5_stem): e.g. rules=[strided_to_spd]
    """

    models: Tuple[Any, ...] = ("yolov5_stem",)
    model: Any = field(default_factory=dict)  # one model (any spelling), all, or a list; replaces models
    rules: Optional[Any] = None
    input_shape: Optional[Tuple[int, ...]] = None
    size: str = "default"
    round_trip: bool = True
    onnx: bool = True
    timing: bool = True
    device: str = "cpu"
    min_run_time: float = 0.2
    forms: Tuple[str, ...] = ("rewritten", "channels_last")
    optimize: bool = True
    seed: int = 0
    threads: int = 1
    dpi: int = 120

    def __post_init__(self) -> None:
        given = self.model if model_given(self.model) else None
        param = "model" if given is not None else "models"
        listed = self.models if given is None else given
        if listed == "all" or (isinstance(listed, Sequence) and not isinstance(listed, str) and list(listed) == ["all"]):
            listed = tuple(REAL_MODELS)
        if isinstance(listed, (str, Mapping, ModelSpec, torch.nn.Module)):
            listed = [listed]
        if not isinstance(listed, Sequence) or not listed:
            raise fold_error(param, listed, f"must be a model (any spelling), all, or a list of them (the real models: {', '.join(REAL_MODELS)})")
        object.__setattr__(self, "models", spd_model_labels(list(listed), param=param))
        object.__setattr__(self, "model", {})
        for name in ("round_trip", "onnx", "timing", "optimize"):
            require_bool(getattr(self, name), name)
        if self.rules is not None:
            object.__setattr__(self, "rules", normalize_rules(self.rules))
        else:
            other = [s for s in self.models if self.case(s) is None]
            if other:
                # a label shared with a real model is another build of it (timm's, a _target_'s): say which one is real
                same = [f"{_spelling(s)} is {s.source}'s build; the rewrite app's real model is model={s.label}"
                        for s in other if s.label in REAL_MODELS]
                real = ", ".join(sorted(REAL_MODELS))
                raise fold_error("rules", None, f"must be given for {', '.join(_spelling(s) for s in other)}"
                                                + (f": {'; '.join(same)} (the real models: {real})" if same
                                                   else f", which is not a real model of the rewrite app ({real})")
                                                + ": e.g. rules=[strided_to_spd]")
        if self.input_shape is not None:
            shape = self.input_shape
            if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence) or len(shape) < 3:
                raise fold_error("input_shape", shape, "must be a full input shape with batch and channels, e.g. [1, 3, 224, 224]")
            if len(self.models) != 1:
                raise fold_error("input_shape", list(shape), "is one model's shape: give it with a single model "
                                                              "(model=resnet18), or leave it null for each model's default")
            object.__setattr__(self, "input_shape", tuple(require_int(v, "input_shape", 1) for v in shape))
        else:
            unknown = [s.label for s in self.models if self.case(s) is None and s.input_shape is None]
            if unknown:
                raise fold_error("input_shape", None, f"must be given for {unknown[0]}: its input shape is not known (e.g. input_shape=[1,3,64,64])")
        if self.size not in ("default", "test"):
            raise fold_error("size", self.size, "must be default (each model's input size) or test (the tests' small inputs)")
        object.__setattr__(self, "min_run_time", require_seconds(self.min_run_time))
        require_device(self.device, "device")
        if isinstance(self.forms, (str, Mapping)) or not isinstance(self.forms, Sequence):
            raise fold_error("forms", self.forms, f"must be a list of form names ({', '.join(FORMS)})")
        for form in self.forms:
            if form not in FORMS:
                raise fold_error("forms", form, f"is not a form the app times (one of {', '.join(FORMS)})")
        object.__setattr__(self, "forms", tuple(self.forms))
        require_int(self.seed, "seed", 0)
        require_int(self.threads, "threads", 0)
        require_int(self.dpi, "dpi", 50)

    @staticmethod
    def case(spec: ModelSpec) -> Optional[RealModel]:
        """The real model's rewrite case, when ``spec`` is one of :data:`REAL_MODELS` as it is built there."""
        case = REAL_MODELS.get(spec.label)
        return case if case is not None and spec == case.spec else None

    def names(self) -> Tuple[str, ...]:
        """The labels of the models this experiment rewrites, in order."""
        return tuple(s.label for s in self.models)

    def shape_of(self, spec: ModelSpec) -> Tuple[int, ...]:
        """The input shape ``spec`` is rewritten on (``input_shape``, else ``size``'s: the test input of a real model
        with ``size=test``, else the model's own)."""
        case = self.case(spec)
        if self.input_shape is not None:
            return self.input_shape
        if case is not None:
            return case.test_input_shape if self.size == "test" else case.input_shape
        if spec.input_shape is None:  # refused in __post_init__ already
            raise fold_error("input_shape", None, f"must be given for {spec.label}: its input shape is not known")
        return spec.input_shape


@dataclass(frozen=True)
class ModelRun:
    """One model's rewrite: the forward report, the round trip's (None when off), the ONNX reports
    (``{"original": ..., "rewritten": ...}``; a form whose export failed holds the failure's line), the forms' timings and optimize's report (None when timing is off;
    the FoldError's message when optimize could not run on this model: a limit of optimize, not a failed claim);
    ``site_ops``: each applied site's own ONNX ops (:func:`site_onnx_ops`), what onnx.md gives each op change to."""

    label: str
    input_shape: Tuple[int, ...]
    rules: Tuple[RuleArg, ...]
    report: Any
    back: Any = None
    onnx: Mapping[str, Any] = field(default_factory=dict)
    forms: Any = None
    optimized: Any = None
    site_ops: Mapping[str, Any] = field(default_factory=dict)

    @property
    def checks(self) -> Tuple[Check, ...]:
        """What must hold: the rewrite and its round trip verified (each site exactly, the whole model against the
        original), every ONNX form agreeing with torch in onnxruntime."""
        out = []
        for what, report in (("the rewrite", self.report), ("the round trip", self.back)):
            if report is not None:
                out.append(Check(f"{what} is verified", bool(report.ok), subject=self.label, claim="REAL-6",
                                 detail="" if report.ok else report.summary()))
        for form, rep in self.onnx.items():
            if isinstance(rep, str):  # the export itself failed
                out.append(Check(f"ONNX {form} agrees with torch in onnxruntime", False, subject=self.label, detail=rep))
            else:
                out.append(Check(f"ONNX {form} agrees with torch in onnxruntime", bool(rep.ok), subject=self.label,
                                 detail="" if rep.ok else f"max abs error {rep.max_abs_error}"))
        return tuple(out)

    @property
    def failures(self) -> List[str]:
        """The checks that did not hold, one line each."""
        return [c.describe() for c in self.checks if not c.ok]


@dataclass(frozen=True)
class RewriteRun:
    """Every model's :class:`ModelRun` and the files written; ``ok`` when nothing failed."""

    models: Tuple[ModelRun, ...]
    files: Tuple[Path, ...] = ()

    @property
    def failures(self) -> List[str]:
        return [f for m in self.models for f in m.failures]

    @property
    def ok(self) -> bool:
        return not self.failures

    def __bool__(self) -> bool:
        return self.ok


def _op_counts(report: Any) -> Counter:
    ops = report.ops
    return Counter(dict(ops)) if isinstance(ops, Mapping) else Counter(ops)


def _op_change(before: Any, after: Any) -> str:
    """``"+DepthToSpace(CRD)x2 -ConvTranspose x2"``: the ONNX ops a form gained and lost against the original."""
    a, b = _op_counts(before), _op_counts(after)
    gained = [f"+{op}" + (f" x{n}" if n > 1 else "") for op, n in sorted((b - a).items())]
    lost = [f"-{op}" + (f" x{n}" if n > 1 else "") for op, n in sorted((a - b).items())]
    return " ".join(gained + lost) or "same ops"


def _verdict(site: Any) -> str:
    v = site.verdict
    return "" if v is None else getattr(v, "value", str(v))


def site_rows(run: ModelRun) -> List[Dict[str, Any]]:
    """The sites table's rows of one model: forward sites, then the round trip's."""
    rows = []
    for step, report in (("rewrite", run.report), ("round trip", run.back)):
        if report is None:
            continue
        for s in report.sites:
            rows.append({
                "model": run.label, "step": step, "rule": s.rule, "pattern": s.pattern, "location": s.location,
                "input shape": "x".join(str(v) for v in s.input_shape), "before": s.before, "after": s.after,
                # a part's parameters and MACs are counted in its site's row, and a site not applied has no "after"
                # (blank, never a false 0 that reads as a cost)
                **{k: "" if s.part_of or (not s.applied and k.endswith("after")) else v
                   for k, v in (("params before", s.params_before), ("params after", s.params_after),
                                ("MACs before", s.macs_before), ("MACs after", s.macs_after))},
                "applied": (f"yes: {s.reason}" if s.reason else True) if s.applied else f"no: {s.reason}", "verdict": _verdict(s), "exact": s.exact,
                "part of": s.part_of,
                "trains same": "" if s.trains_same is None else (True if s.trains_same else f"no: {s.training}"),
            })
    return rows


def _whole_rows(run: ModelRun) -> List[Dict[str, Any]]:
    rows = []
    for step, report in (("rewrite", run.report), ("round trip", run.back)):
        if report is None:
            continue
        v = report.verification
        rows.append({"model": run.label, "step": step, "rules": ", ".join(report.rules), "traced": report.traced,
                     "fallback": report.fallback_reason, "sites applied": report.applied, "sites": len(report.main_sites),
                     "whole model": v.summary() if v is not None else "not verified",
                     "training": report.training.describe() if report.training is not None else "",
                     "withdrawn": report.withdrawn, "ok": report.ok})
    return rows


@dataclass(frozen=True)
class SiteOps:
    """One applied site's ONNX ops, its ``before`` and ``after`` modules each exported alone on the site's input
    (:func:`foldconv.surgery.onnx_ops`): the ops its own steps are, told apart from what the exporter makes of the
    model around it. ``after_text``: the site's "after" in sites.md."""

    rule: str
    after_text: str
    before: Tuple[str, ...]
    after: Tuple[str, ...]

    def delta(self) -> Counter:
        """Ops gained (positive) and lost (negative) by the site's own steps."""
        d = Counter(self.after)
        d.subtract(Counter(self.before))
        return Counter({k: v for k, v in d.items() if v})


def site_onnx_ops(report: Any) -> Dict[str, Union[SiteOps, str]]:
    """Every applied site's :class:`SiteOps` by location (the line of the failure when a site's module does not
    export alone).

    Example:
        >>> from foldconv.surgery import rewrite
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(2, 8, 3, padding=1, bias=False), torch.nn.PixelShuffle(2))
        >>> ops = site_onnx_ops(rewrite(net, (1, 2, 4, 4), ["subpixel_to_transposed"])[1])
        >>> ops["0"].before, ops["0"].after
        (('Conv', 'DepthToSpace(CRD)'), ('ConvTranspose',))
    """
    from ..surgery.onnx_export import onnx_ops

    out: Dict[str, Union[SiteOps, str]] = {}
    for s in report.main_sites:
        if not s.applied or s.before_module is None or s.after_module is None:
            continue
        try:
            out[s.location] = SiteOps(s.rule, s.after, onnx_ops(s.before_module, s.input_shape, name=f"site {s.location}"),
                                      onnx_ops(s.after_module, s.input_shape, name=f"site {s.location}"))
        except FoldError as err:
            out[s.location] = f"site {s.location or 'model'} does not export alone: {first_line(err)}"
    return out


def _counted(n: int, op: str) -> str:
    return f"{'+' if n > 0 else '-'}{op}" + (f" x{abs(n)}" if abs(n) > 1 else "")


def _where(locations: Sequence[str]) -> str:
    names = [loc or "model" for loc in locations]
    return f"site {names[0]}" if len(names) == 1 else (f"sites {', '.join(names)}" if len(names) <= 3 else f"the {len(names)} rewritten sites")


def op_change_reasons(before: Any, after: Any, site_ops: Optional[Mapping[str, Union[SiteOps, str]]] = None) -> str:
    """Why a form's ONNX ops differ from the original's, each change given to what made it: the rewritten sites'
    own steps as ``site_ops`` (:func:`site_onnx_ops`: each site's modules exported alone) show them, and, for the
    rest, what the exporter did around the sites (a BatchNormalization it could not fold into a Conv says what it
    follows). Only what applies to the row is said.

    Example:
        >>> from types import SimpleNamespace as R
        >>> sites = {"0": SiteOps("strided_to_spd", "SpaceToDepth(...) + Conv2d(...)", ("Conv",), ("Pad", "Conv", "Slice"))}
        >>> op_change_reasons(R(ops=("Conv", "Relu")), R(ops=("Pad", "Conv", "Slice", "Relu")), sites).split(": ")[0]
        '+Pad, +Slice'
    """
    a, b = _op_counts(before), _op_counts(after)
    changed = sorted(set(b - a) | set(a - b))
    ops = {loc: v for loc, v in (site_ops or {}).items() if isinstance(v, SiteOps)}
    deltas = {loc: v.delta() for loc, v in ops.items()}
    groups: Dict[Tuple[str, ...], List[str]] = {}
    rest: Dict[str, int] = {}
    for op in changed:
        n = b[op] - a[op]
        mine = tuple(loc for loc, d in deltas.items() if d.get(op))
        own = sum(deltas[loc][op] for loc in mine)
        if own:
            groups.setdefault(mine, []).append(_counted(own, op))
        if n - own:
            rest[op] = n - own
    reasons = []
    for locations, parts in groups.items():
        parts.sort(key=lambda t: t[0] == "-")  # gained, then lost
        text = f"{', '.join(parts)}: the own steps of {_where(locations)} (each site's modules exported alone)"
        fit_ops = {"Pad", "Slice"} & {p.lstrip("+-").split(" x")[0] for p in parts}  # said once, beside the Pad/Slice
        fitted = [loc for loc in locations if "SpaceToDepth" in ops[loc].after_text and fit_ops & set(ops[loc].after)]
        if fitted:
            text += (f"; {_where(fitted)} export{'s' if len(fitted) == 1 else ''} the space-to-depth end fit as a Pad by r-1 "
                     f"zeros and a Slice to a length computed from the input's size, so that the file runs at any size, also "
                     f"where the example's size needs no fit")
        reasons.append(text)
    for op, n in rest.items():
        if op == "BatchNormalization" and n > 0:
            inputs = Counter(getattr(after, "norm_inputs", ()))
            after_what = ", ".join(f"{k}" + (f" x{c}" if c > 1 else "") for k, c in sorted(inputs.items())) or "another op"
            reasons.append(f"{_counted(n, op)}: eval-mode BatchNorms that the exporter folds into the Conv before them in the "
                           f"original; here they follow {after_what} (a rewritten site's last step), so they stay separate "
                           f"nodes, one more op each at run time (the function is checked: onnx.md 'ok')")
        elif op == "BatchNormalization":
            reasons.append(f"{_counted(n, op)}: a BatchNorm the original exports as its own node is folded into a Conv here "
                           f"(a rewritten site now ends with a Conv before it)")
        else:
            reasons.append(f"{_counted(n, op)}: not in any rewritten site's own export"
                           + ("" if ops else " (no site was exported alone)") + "; the exporter's work on the model around "
                           "the sites: the ONNX files show where")
    reasons += [v for v in (site_ops or {}).values() if isinstance(v, str)]
    return "; ".join(reasons)


def onnx_rows(run: ModelRun) -> List[Dict[str, Any]]:
    """One row per exported form of the whole model: its ONNX ops (with counts), the change against the original and
    why, onnxruntime's agreement with torch on the model's output."""
    rows: List[Dict[str, Any]] = []
    for form, rep in run.onnx.items():
        if isinstance(rep, str) or isinstance(run.onnx["original"], str) and form != "original":
            failed = rep if isinstance(rep, str) else f"exported, but the original's {run.onnx['original']}"
            rows.append({"model": run.label, "form": form, "ops": rep.describe_ops() if not isinstance(rep, str) else "",
                         "change vs original": "", "why the ops changed": failed, "max abs error": "", "max rel error": "",
                         "other sizes": "", "dynamic": "", "ok": not isinstance(rep, str) and rep.ok, "exporter": ""})
            continue
        rows.append({"model": run.label, "form": form, "ops": rep.describe_ops(),
                     "change vs original": _op_change(run.onnx["original"], rep) if form != "original" else "",
                     "why the ops changed": op_change_reasons(run.onnx["original"], rep, run.site_ops) if form != "original" else "",
                     "max abs error": rep.max_abs_error, "max rel error": rep.max_rel_error,
                     "other sizes": "; ".join(f"{shape}: {err:.1e}" for shape, err in rep.other_sizes), "dynamic": rep.dynamic,
                     "ok": rep.ok, "exporter": f"{rep.exporter}, opset {rep.opset}"})
    return rows


def timing_rows(run: ModelRun) -> List[Dict[str, Any]]:
    """One row per timed form (speedup = original median ms / median ms, both from the rounds that compared them:
    the ratio of the two times the row shows), then optimize's whole-model result."""
    rows = []
    if run.forms is not None:
        for t in run.forms.timings:
            anchor = t.form == "original"  # the reference: 1.00x by definition, no interval to read
            rows.append({"model": run.label, "form": t.form, "original median ms": t.original_median_s * 1e3,
                         "median ms": t.median_s * 1e3, "IQR ms": t.iqr_s * 1e3,
                         "speedup": t.speedup, "speedup low": "" if anchor else t.speedup_low,
                         "speedup high": "" if anchor else t.speedup_high, "inconclusive": "" if anchor else t.inconclusive,
                         "verified": t.verified, "note": t.note,
                         "device": run.forms.device, "machine": run.forms.machine})
    if isinstance(run.optimized, str):
        rows.append({"model": run.label, "form": "optimize: not run", "original median ms": "", "median ms": "", "IQR ms": "",
                     "speedup": float("nan"),
                     "speedup low": float("nan"), "speedup high": float("nan"), "inconclusive": "", "verified": "",
                     "note": run.optimized, "device": run.forms.device if run.forms is not None else "", "machine": ""})
    elif run.optimized is not None:
        o = run.optimized
        picked = "; ".join(f"{rule} at {', '.join(locs)}" for rule, locs in o.rules)
        t = o.timing
        rows.append({"model": run.label, "form": "optimize: " + ("original kept" if o.kept_original else picked),
                     "original median ms": t.original_median_s * 1e3 if t is not None else "",
                     "median ms": t.median_s * 1e3 if t is not None else "", "IQR ms": t.iqr_s * 1e3 if t is not None else "",
                     "speedup": o.speedup, "speedup low": o.speedup_low, "speedup high": o.speedup_high,
                     "inconclusive": t.inconclusive if t is not None else "", "verified": True, "note": o.reason,
                     "device": o.device, "machine": o.machine})
    return rows


#: The rules whose sites are model-level patterns that ARE another single layer (the count app's fold view names them).
PATTERN_RULES = ("focus_to_conv", "spd_to_strided", "subpixel_to_transposed")


def model_patterns(model: torch.nn.Module, input_shape: Sequence[int]) -> Dict[str, str]:
    """``{layer path: "<pattern> = <the one layer it is>"}`` for the model-level patterns of ``model``: slices + cat
    + conv (Focus) and space-to-depth + conv are one strided conv, conv + PixelShuffle is a transposed conv
    (:func:`foldconv.surgery.find_sites`; a pattern whose rule does not apply says why). Empty when the model
    does not trace or has none.

    Example:
        >>> from foldconv.models import YoloV5Stem
        >>> model_patterns(YoloV5Stem(), (1, 3, 32, 32))
        {'focus.conv.conv': 'slice+cat+Conv2d (Focus) = Conv2d(3->32, k=(6, 6), s=(2, 2), p=(2, 2))'}
    """
    try:
        sites = _surgery().find_sites(model, tuple(input_shape), list(PATTERN_RULES))
    except FoldError:  # a model fx cannot trace, or that cannot run on the shape: no pattern to name
        return {}
    meta = any(t.is_meta for t in model.parameters())
    found: Dict[str, str] = {}
    for site in sites:
        reason = " ".join(site.reason.split())
        if reason and meta:  # e.g. tied sub-pixel biases: a property of values the meta device does not hold
            reason = "it depends on the weights, and these are on the meta device"
        text = f"{site.pattern} = {site.after}" if site.after and not reason else f"{site.pattern}: not one layer here ({reason[:120]})"
        found.setdefault(site.location, text)
    return found


def with_patterns(rows: Sequence[Mapping[str, Any]], model: torch.nn.Module, input_shape: Sequence[int]) -> List[Dict[str, Any]]:
    """``rows`` (one per layer, a ``layer`` column) with a ``model-level pattern`` column when ``model`` has any.

    Example:
        >>> from foldconv.models import YoloV5Stem
        >>> [r["model-level pattern"][:24] for r in with_patterns([{"layer": "focus.conv.conv"}, {"layer": "mix.conv"}], YoloV5Stem(), (1, 3, 32, 32))]
        ['slice+cat+Conv2d (Focus)', '']
    """
    found = model_patterns(model, input_shape)
    if not found:
        return [dict(r) for r in rows]
    return [{**r, "model-level pattern": found.get(r["layer"], "")} for r in rows]


def _surgery() -> Any:
    """The surgery functions this app calls (imported here, not at module level: timm/onnx load only when used)."""
    from types import SimpleNamespace

    from ..surgery import find_sites, rewrite
    from ..surgery.fastest import optimize
    from ..surgery.onnx_export import export_onnx
    from ..surgery.speed import benchmark_forms

    return SimpleNamespace(rewrite=rewrite, find_sites=find_sites, export_onnx=export_onnx, optimize=optimize,
                           benchmark_forms=benchmark_forms)


def _one_model(e: RewriteExperiment, spec: ModelSpec) -> ModelRun:
    surgery = _surgery()
    case = e.case(spec)
    shape = e.shape_of(spec)
    rules = e.rules or case.rules  # a model without a case has rules (refused in RewriteExperiment otherwise)
    model = _seeded(spec, e.seed)
    if e.input_shape is not None:
        require_batch_axis(model, shape, label=spec.label)
    try:
        new, report = surgery.rewrite(model, shape, list(rules), verify=True, seed=e.seed)
        back = None
        inverse: Tuple[RuleArg, ...] = ()
        if e.round_trip and report.applied:
            inverse = case.inverse if e.rules is None else inverse_rules(rules, report=report, model=new, input_shape=shape)
        if inverse:
            _, back = surgery.rewrite(new, shape, list(inverse), verify=True, seed=e.seed)
    except FoldError as err:
        raise FoldError(f"{spec.label}: {err}", param=err.param, value=err.value, rule=err.rule) from err
    onnx: Dict[str, Any] = {}
    site_ops: Dict[str, Any] = {}
    if e.onnx:
        for form, module in (("original", model), ("rewritten", new)):
            try:
                onnx[form] = surgery.export_onnx(module, shape, seed=e.seed, name=spec.label)
            except FoldError as err:  # the verified rewrite stands: the export's failure is its own row and check
                onnx[form] = f"export failed: {first_line(err)}"
        site_ops = site_onnx_ops(report)
    forms = optimized = None
    if e.timing:
        threads = e.threads or None
        if e.optimize:
            try:
                _, optimized = surgery.optimize(model, shape, device=e.device, min_run_time=e.min_run_time, threads=threads)
            except FoldError as err:  # the request was valid (it got this far): a limit of optimize, reported as such
                optimized = f"optimize could not run: {err}"
        label = f"rewritten ({', '.join(_rule_text(r) for r in rules)})"
        reused = _timed_by_optimize(optimized, rules, report)
        wanted: List[Any] = [f for f in e.forms if f != "rewritten"]
        if "rewritten" in e.forms and report.applied and reused is None:
            # built from the weights it is given, so the check (derived) resamples them: exact for every weight
            wanted.append((label, lambda m: surgery.rewrite(m, shape, list(rules), verify=False)[0]))
        forms = surgery.benchmark_forms(model, shape, forms=wanted, device=e.device, channels_last="channels_last" in e.forms,
                                        compile="auto" if "compile" in e.forms else False, min_run_time=e.min_run_time,
                                        threads=threads)
        if "rewritten" in e.forms and reused is not None:
            note = f"the comparison optimize made (timed once, in its rounds): {reused.note}"
            forms = dataclasses.replace(forms, timings=forms.timings + (dataclasses.replace(reused, form=label, note=note),))
    return ModelRun(spec.label, tuple(shape), tuple(rules), report, back, onnx, forms, optimized, site_ops)


def _timed_by_optimize(optimized: Any, rules: Sequence[RuleArg], report: Any) -> Any:
    """optimize's timing of the whole model rewritten at exactly this rewrite's sites, by the same rules with their
    default options (so the same model), or None: that comparison is then timed once and shown once."""
    if optimized is None or isinstance(optimized, str) or any(not isinstance(r, str) for r in rules):
        return None
    mine = {(s.rule, s.location) for s in report.main_sites if s.applied}
    if optimized.timing is not None and mine == {(rule, loc) for rule, locs in optimized.rules for loc in locs}:
        return optimized.timing
    for site in optimized.sites:  # one site's form, timed in the whole model
        for c in site.candidates:
            if site.scope == "model" and c.timed and mine == {(c.form, site.location)}:
                return c
    return None


def _files() -> Dict[str, str]:
    return {
        "summary.md": "the answer: per model, the rules, sites applied, whole-model verdict, round trip, fastest form",
        "sites.md": "one row per site: pattern, location, before/after (every step the site runs), params, MACs, applied or why "
                    "not, verdict, exact, trains the same (per site; the ONNX ops are the whole model's: onnx.md)",
        "sites.csv": "the same, as CSV",
        "models.md": "per model and step: traced or fallback, sites applied, the whole-model verification",
        "models.csv": "the same, as CSV",
        "sites.png": "parameters and MACs before vs after, per site",
        "onnx.md": "per exported form of the whole model: its ONNX ops, the change against the original and why, whether "
                   "onnxruntime agrees with torch on the model's output (errors are the whole model's, not a site's)",
        "onnx.csv": "the same, as CSV",
        "*.onnx": "the ONNX files, model.form.onnx, with dynamic batch and spatial axes (original and rewritten)",
        "timings.md": "per form: the original's and the form's median from the same rounds, IQR, speedup (their ratio) with its "
                      "interval, inconclusive flag, machine and thread count",
        "timings.csv": "the same, as CSV",
        "timings.png": "the speedups with their IQR intervals and the 1.0x line",
        "*.log": "the app's log (Hydra)",
    }


def run_rewrite(e: RewriteExperiment, out_dir: Union[str, Path]) -> AppResult:
    """The rewrite app's body: rewrite, verify, export and time every model of ``e``, write the tables and figures
    into ``out_dir``; returns the summary and the checks (each rewrite, round trip and ONNX form verified;
    ``value``: the :class:`RewriteRun`) for the app skeleton, which fails the run after writing.
    """
    if not isinstance(e, RewriteExperiment):
        raise fold_error("experiment", type(e).__name__, "must be a RewriteExperiment")
    if e.threads:
        torch.set_num_threads(e.threads)
    runs = [_one_model(e, spec) for spec in progress_bar(e.models, "rewrite: models", unit="model")]
    out = Path(out_dir)
    files: List[Path] = []
    sites = [row for run in runs for row in site_rows(run)]
    if sites:
        files += write_table(sites, out / "sites", title="Sites: each rule's pattern, before and after").values()
    else:  # an empty table reads as a broken file: say why there is no row
        none = "; ".join(no_site_text(r, run.label) for run in runs for r in run.rules)
        files.append(write_markdown(f"# Sites: each rule's pattern, before and after\n\nNo site: {none}.\n", out / "sites.md"))
    files += write_table([row for run in runs for row in _whole_rows(run)], out / "models", title="Whole models verified").values()
    if sites:
        files.append(save_figure(sites_figure(sites), out / "sites.png", dpi=e.dpi))
    onnx = [row for run in runs for row in onnx_rows(run)]
    if onnx:
        files += write_table(onnx, out / "onnx", title="ONNX: ops per form of the whole model, onnxruntime vs torch on the model's output").values()
        for run in runs:  # the files themselves, with dynamic batch and spatial axes
            for form, rep in run.onnx.items():
                if isinstance(rep, str):
                    continue
                stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", run.label).strip("_.")  # a label may be a _target_ or timm:name
                path = out / f"{stem}.{form}.onnx"
                path.write_bytes(rep.data)
                files.append(path)
    timings = [row for run in runs for row in timing_rows(run)]
    if timings:
        machine = next((str(r["machine"]) for r in timings if r["machine"]), "")
        files += write_table(timings, out / "timings", title=f"Speed of the forms ({machine})").values()
        files.append(save_figure(timings_figure(timings, machine=machine), out / "timings.png", dpi=e.dpi))
    summary = summary_text(RewriteRun(tuple(runs)), seed=e.seed)
    files.append(write_markdown(summary, out / "summary.md"))
    result = RewriteRun(tuple(runs), tuple(files))
    answer = f"{len(runs)} model(s) rewritten: " + ", ".join(
        f"{m.label} ({m.report.applied} of {len(m.report.main_sites)} site(s) applied)" if m.report.main_sites
        else f"{m.label} (no site: {'; '.join(no_site_text(r, m.label) for r in m.rules)})" for m in runs)
    return AppResult("Rewrite", answer, tuple(c for m in runs for c in m.checks), _files(), summary, result)


def no_site_text(rule: RuleArg, label: str) -> str:
    """What a rule that matched no site in model ``label`` looks for.

    Example:
        >>> no_site_text("transposed_to_subpixel", "espcn")
        'rule transposed_to_subpixel matches no site in espcn (it looks for a ConvTranspose1d/2d/3d)'
    """
    name = _rule_text(rule)
    base = rule if isinstance(rule, str) else rule[0]
    looks = RULES.get(base).looks_for if isinstance(base, str) and base in RULES else getattr(base, "looks_for", "")
    return f"rule {name} matches no site in {label}" + (f" (it looks for {looks})" if looks else "")


def summary_text(run: RewriteRun, *, seed: Optional[int] = None) -> str:
    """One line per model: rules, sites applied, the whole-model verdict, what the rules changed besides their own
    replacement, the round trip, the fastest form; then what the app did to every model before the rules (its
    weights, its BatchNorms' statistics, eval mode), when ``seed`` is given."""
    lines = ["# Rewrite", ""]
    for m in run.models:
        r = m.report
        whole = r.verification.summary() if r.verification is not None else "not verified"
        line = f"- {m.label} {tuple(m.input_shape)}: {', '.join(_rule_text(x) for x in m.rules)}: {r.applied} of {len(r.main_sites)} site(s) applied; whole model {whole}"
        if not r.main_sites:  # a rule that matched nothing is the answer, not "rewritten"
            line += "; " + "; ".join(no_site_text(x, m.label) for x in m.rules)
        refused = [x for x in r.main_sites if not x.applied]
        if refused:  # why a site kept its layers belongs beside the count, not only in sites.md
            line += "; not applied: " + "; ".join(f"{x.rule} at {x.location or 'the model'}: {x.reason}" for x in refused)
        applied = [x for x in r.main_sites if x.applied]
        if applied:  # what the rewrite costs, and whether it trains the same, belong beside "equivalent"
            p0, p1 = sum(x.params_before for x in applied), sum(x.params_after for x in applied)
            m0, m1 = sum(x.macs_before for x in applied), sum(x.macs_after for x in applied)
            line += (f"; at the applied sites parameters {p0:,} -> {p1:,} ({p1 / max(p0, 1):.2f}x), "
                     f"MACs {m0:,} -> {m1:,} ({m1 / max(m0, 1):.2f}x) (sites.md: per site)")
        changed = [f"{x.rule} at {x.location} {x.changes}" for x in applied if x.changes]
        if changed:  # what the rules did to the model besides the replacement they are named for
            line += "; besides the rules: " + "; ".join(changed)
        if r.training is not None:
            line += f"; {r.training.describe()}"
        if m.back is not None:
            back = [x for x in m.back.main_sites if x.applied]
            # against the original: what the rewrite added, plus what going back changed
            kept = sum(x.params_after - x.params_before for x in applied) + sum(x.params_after - x.params_before for x in back)
            line += (f"; back: {m.back.applied} site(s), {'verified' if m.back.ok else 'NOT verified'} equal to the rewritten "
                     f"model by the inverse rules" + (f" (the layer types come back, not the original kernels: "
                                                      f"{kept:+,} parameters against the original)" if kept else ""))
        if m.forms is not None:
            best = m.forms.fastest
            timed = "; ".join(f"{t.form} {t.describe()}" for t in m.forms.timings[1:])
            head = "no form conclusively faster than the original" if best.form == "original" else f"fastest {best.form}"
            line += f"; speed ({m.forms.machine}; speedup = original / form, higher is faster): {head}" + (f" ({timed})" if timed else "")
        lines.append(line)
    if seed is not None:
        lines += ["", f"Every model ran with seeded random weights (seed {seed}), every BatchNorm given random running "
                      "statistics and affine parameters (a fresh one is the identity in eval mode, which would make a check "
                      "of a BatchNorm fold vacuous), and in eval mode: the verdicts are about eval-mode inference."]
    lines += [""] + [f"FAILED: {f}" for f in run.failures]
    return "\n".join(lines).rstrip() + "\n"
