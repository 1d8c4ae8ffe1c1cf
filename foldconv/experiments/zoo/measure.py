"""One model of a zoo, measured: built without weights, counted against ``sum(numel)`` and
``FlopCounterMode``, its receptive field analysed, and (where affordable) checked against gradients.

Every stage is timed and may fail on its own: a failure is one line in ``errors`` (``stage: Type: message``)
and the later stages that need it are skipped. A stage still running when the model's time limit
(``time_limit_s``, in CPU seconds of the measuring process, so that a loaded machine times out no more models
than an idle one) expires is recorded as ``stage: timeout after N s``.

The float64 gradient check (:func:`~foldconv.analysis.receptive_field.check_receptive_field`) needs a real
model (random weights on CPU) and a forward plus one backward per checked position; it is *affordable* when
the model's forward MACs at its input size (known from the count) are at most ``check_max_macs``. The MACs
are the forward's cost itself, so the bound holds for any architecture (``params x pixels``, the other
natural proxy, overstates a strided network's cost by its downsampling factor squared).

With ``check_size``, the check runs at that spatial size instead of the model's own (its MACs there estimated
from the count by the ratio of pixels): a whole classification zoo is then checked at, say, 64 px.

A torchvision model measured at its published input (built on meta) is also held to the parameters and GMACs
torchvision publishes with its DEFAULT weights (``published``: ``ok`` or what differs).

Models are built by the one resolver (:func:`foldconv.models.build_model`): on meta at the zoo's default input
shape, or, when the meta build fails, on CPU at ``small_size`` (saying why).

Example:
    >>> row = measure_model("torchvision", "alexnet", check_max_macs=0)
    >>> row.build, row.params_ok, row.macs_ok, row.published, row.rf_status, row.rf, row.check
    ('meta', True, True, 'ok', 'exact', '(355 (global), 355 (global))', 'unaffordable')
"""
from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn

from ...errors import FoldError, first_line, fold_error
from ...models import TIMM_PREFIX, ModelSpec, build_model, default_input_shape, family_of, published_figures, resolve_model

__all__ = [
    "ZooRow", "Built", "StageTimeout", "measure_model", "zoo_spec", "build_zoo_model", "gradient_check_shape", "rf_blocker", "time_limit",
    "DEFAULT_CHECK_MAX_MACS", "SMALL_SIZE",
]

#: Forward MACs up to which the float64 gradient check runs (about 10 s per model on one loaded core).
DEFAULT_CHECK_MAX_MACS = 300_000_000
#: The spatial size a model built on CPU (its meta build failed) is measured at, so real tensors stay small.
SMALL_SIZE = 64


def _line(exc: BaseException, limit: Optional[int] = 300) -> str:
    return first_line(exc, with_type=True, limit=limit)


def zoo_spec(zoo: str, name: str) -> ModelSpec:
    """The resolver's spec of a zoo model: ``timm:<name>``, or the torchvision name with the constructor arguments
    its DEFAULT weights imply (GoogLeNet without aux heads, ViT at its crop).

    Example:
        >>> zoo_spec("torchvision", "googlenet").kwargs, zoo_spec("timm", "resnet10t").spelling
        ({'aux_logits': False, 'init_weights': False}, 'timm:resnet10t')
    """
    if zoo == "timm":
        return resolve_model(TIMM_PREFIX + name, param="names")
    return resolve_model(name, param="names", **published_figures(name).kwargs)


@dataclass(frozen=True)
class Built:
    """A zoo model without weights: ``device`` is ``"meta"`` (default input shape) or ``"cpu"`` (its meta build
    failed: random weights, measured at ``SMALL_SIZE``), and ``note`` says why in one line."""

    zoo: str
    name: str
    model: nn.Module
    input_shape: Tuple[int, ...]
    device: str
    note: str = ""


def build_zoo_model(zoo: str, name: str, *, small_size: int = SMALL_SIZE, cpu_fallback: bool = True) -> Built:
    """Build ``name`` on meta at its default input shape; if that fails, on CPU at ``small_size`` (saying so).

    Example:
        >>> b = build_zoo_model("timm", "resnet10t")
        >>> b.device, b.input_shape, b.model.fc.weight.device.type
        ('meta', (1, 3, 176, 176), 'meta')
    """
    spec = zoo_spec(zoo, name)
    shape = default_input_shape(zoo, name)
    try:
        return Built(zoo, name, build_model(spec, meta=True).eval(), shape, "meta")
    except Exception as exc:  # any builder failure on meta: try real tensors, and say why
        if not cpu_fallback:
            raise
        reason = _line(exc)
    small = shape[:2] + tuple(min(small_size, s) for s in shape[2:])
    return Built(zoo, name, build_model(spec).eval(), small, "cpu", f"meta build failed ({reason}); built on CPU, measured at {small}")


@dataclass(frozen=True)
class ZooRow:
    """One model's row of ``results.csv``.

    ``build``: ``meta``, ``cpu`` (meta failed; measured at a small size, see ``note``) or ``failed``;
    ``params_ok``: count's parameters equal ``sum(numel)``; ``macs_ok``: count's MACs equal
    FlopCounterMode's FLOPs / 2 per op and in total (``macs_diff_ops``: the ops where they differ);
    ``unsupported_ops``: ops count() ran without a cost rule; ``rf_status``: ``exact`` / ``inexact``
    (analysed without fallback; the output's box is exact or not), ``unsupported`` (``rf_blocker`` names
    the op or step it could not analyse) or ``failed``; ``check``: ``ok`` / ``mismatch`` (analytic boxes
    against gradient supports at ``check_shape``), ``unaffordable``, ``skipped`` (no analytic result) or
    ``failed``; ``published``: for a torchvision model measured at its published input, ``ok`` when its params
    and GMACs equal torchvision's published figures, else what differs (empty otherwise).
    Times in seconds; ``errors``: one line per failed stage, joined by `` | ``.
    """

    zoo: str
    model: str
    family: str
    input_shape: str
    build: str
    note: str = ""
    params: Optional[int] = None
    numel: Optional[int] = None
    params_ok: Optional[bool] = None
    macs: Optional[int] = None
    flop_counter_macs: Optional[int] = None
    macs_ok: Optional[bool] = None
    macs_diff_ops: str = ""
    unsupported_ops: str = ""
    published: str = ""
    rf_status: str = "skipped"
    rf: str = ""
    jump: str = ""
    padding: str = ""
    rf_blocker: str = ""
    check: str = "skipped"
    check_shape: str = ""
    check_rows: Optional[int] = None
    t_build: Optional[float] = None
    t_count: Optional[float] = None
    t_rf: Optional[float] = None
    t_check: Optional[float] = None
    errors: str = ""

    def as_row(self) -> Dict[str, Any]:
        """The CSV row (field names as columns)."""
        return dict(self.__dict__)


class StageTimeout(Exception):
    """The model's time limit expired during a stage."""


@contextlib.contextmanager
def time_limit(seconds: Optional[float]) -> Iterator[None]:
    """Raise :class:`StageTimeout` in the main thread after ``seconds`` of this process's CPU time (SIGPROF: a
    loaded machine, which slows the wall clock, times nothing out early; no limit elsewhere or for None).

    Example:
        >>> with time_limit(5):
        ...     pass
    """
    if not seconds or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGPROF"):
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise StageTimeout(f"timeout after {seconds:g} s")

    previous = signal.signal(signal.SIGPROF, expire)
    signal.setitimer(signal.ITIMER_PROF, float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def rf_blocker(exc: BaseException) -> str:
    """What stopped the receptive-field analysis, as a short label to rank by: the op without a rule, or
    ``fx trace: <why>`` / ``meta run: <why>`` when the model could not be traced or run.

    Example:
        >>> from foldconv.analysis.receptive_field import UnsupportedOpError
        >>> rf_blocker(UnsupportedOpError("model='M': op='aten.roll' (node 'r') has no receptive-field rule", param="model", value="aten.roll"))
        'aten.roll'
    """
    text = str(exc)
    value = getattr(exc, "value", None)
    if "cannot trace it" in text:
        inner = text.split("cannot trace it (", 1)[-1].split("); pass", 1)[0]
        return "fx trace: " + _generic(inner)
    if "cannot run on it" in text:
        inner = text.split("cannot run on it (", 1)[-1]
        return "run: " + _generic(inner.split(")", 1)[0] if inner.count("(") == 0 else inner)
    if "rule failed" in text:
        return f"{value} (rule failed)"
    if "has no receptive-field rule" in text and text.startswith("node="):
        return text.split(": ", 1)[1].replace(" has no receptive-field rule", "")
    if "does not depend on the input" in text:
        return "output does not depend on the input"
    if isinstance(value, str) and "has no receptive-field rule" in text:
        return value
    return _generic(first_line(exc, with_type=True))


def _generic(text: str) -> str:
    """A message with its model-specific details cut (shapes, names in quotes), so equal causes rank together."""
    import re

    text = re.sub(r"'[^']*'", "'…'", text)
    text = re.sub(r"\d+", "N", text)
    return text[:90]


def _shape_text(values: Tuple[Any, ...]) -> str:
    return "(" + ", ".join(str(v) for v in values) + ")"


def _count_stage(built: Built) -> Dict[str, Any]:
    from ...analysis.counting import validate_count

    v = validate_count(built.model, built.input_shape, name=built.name)
    out = dict(
        params=v.params, numel=v.numel, params_ok=v.params_ok, macs=v.macs, flop_counter_macs=v.flop_counter_macs,
        macs_ok=v.macs_ok, macs_diff_ops=" ".join(v.differing_ops), unsupported_ops=" ".join(op.op for op in v.report.unsupported_ops),
    )
    if v.passes == 2:
        out["flop_counter_error"] = f"flop_counter: {_line(FoldError(v.one_pass_failure), 200)} (counted in two passes)"
    if built.zoo == "torchvision" and built.device == "meta":  # measured where torchvision measured its figures
        figures = published_figures(built.name)
        differs = [f"{what} {ours} vs published {theirs}" for what, ours, theirs in
                   (("params", v.params, figures.num_params), ("GMACs", v.gmacs, figures.gmacs)) if ours != theirs]
        out["published"] = "differs: " + "; ".join(differs) if differs else "ok"
    return out


def _rf_stage(built: Built) -> Tuple[Dict[str, Any], Any]:
    import warnings

    from ...analysis.receptive_field import receptive_field

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = receptive_field(built.model, built.input_shape)
    out = report.output
    # an axis every output unit reads whole (after global pooling, a linear head) is marked: its rf counts padding and
    # its jump is no step between neighbours (resnet10t: rf 359, jump 192 at 176 px)
    whole = out.global_axes(report.input_size)
    return dict(
        rf_status="exact" if out.exact else "inexact",
        rf=_shape_text(tuple("global" if v is None else f"{v} (global)" if g else v for v, g in zip(out.rf, whole))),
        jump=_shape_text(tuple(f"{j} (global)" if g else str(j) for j, g in zip(out.jump, whole))),
        padding=_shape_text(out.padding),
    ), report


def gradient_check_shape(input_shape: Tuple[int, ...], check_size: Optional[int]) -> Tuple[int, ...]:
    """The input of the gradient check: the model's own, or ``check_size`` on every spatial axis.

    Example:
        >>> gradient_check_shape((1, 3, 224, 224), 64), gradient_check_shape((1, 3, 224, 224), None)
        ((1, 3, 64, 64), (1, 3, 224, 224))
    """
    return tuple(input_shape) if check_size is None else tuple(input_shape[:2]) + (check_size,) * (len(input_shape) - 2)


def _check_stage(built: Built, report: Any, shape: Tuple[int, ...]) -> Dict[str, Any]:
    import warnings

    from ...analysis.receptive_field import check_receptive_field

    # the check runs a real float64 copy; a meta model's buffers (BN statistics, index tables) have no
    # values, so the model is built again on CPU
    model = built.model if built.device == "cpu" else build_model(zoo_spec(built.zoo, built.name)).eval()
    same = model is built.model and tuple(shape) == tuple(built.input_shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = check_receptive_field(model, shape, max_nodes=3, report=report if same else None)
    return dict(check="ok" if result.ok else "mismatch", check_rows=len(result.rows))


def measure_model(
    zoo: str, name: str, *, check_max_macs: int = DEFAULT_CHECK_MAX_MACS, time_limit_s: Optional[float] = None,
    small_size: int = SMALL_SIZE, check_size: Optional[int] = None,
) -> ZooRow:
    """Measure one model (see the module docstring); never raises for a model that fails, only records.

    Example:
        >>> r = measure_model("timm", "resnet10t", check_max_macs=0)
        >>> r.family, r.input_shape, r.params == r.numel, r.rf_status, r.errors
        ('resnet', '(1, 3, 176, 176)', True, 'exact', '')
    """
    if check_size is not None and (isinstance(check_size, bool) or not isinstance(check_size, int) or check_size < 1):
        raise fold_error("check_size", check_size, "must be a spatial size >= 1, or None (the model's own input)")
    fields: Dict[str, Any] = {"zoo": zoo, "model": name, "family": family_of(zoo, name), "input_shape": "", "build": "failed"}
    errors: List[str] = []
    grad_was = torch.is_grad_enabled()
    torch.set_grad_enabled(False)  # building and counting need no autograd graph; the check turns it back on
    built: Optional[Built] = None
    report = None

    def stage(label: str, fn: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn()
        except StageTimeout as exc:
            errors.append(f"{label}: {exc}")
            raise
        except (Exception, RecursionError) as exc:  # one model's failure is a row, not the end of the run
            if label == "rf" and isinstance(exc, FoldError):
                fields.update(rf_status="unsupported", rf_blocker=rf_blocker(exc))
            elif label == "rf":
                fields.update(rf_status="failed", rf_blocker=_generic(_line(exc)))
            if label == "check":
                fields["check"] = "failed"
            errors.append(f"{label}: {_line(exc)}")
            return None
        finally:
            fields[f"t_{label}"] = round(time.perf_counter() - start, 4)

    try:
        with time_limit(time_limit_s):
            built = stage("build", lambda: build_zoo_model(zoo, name, small_size=small_size))
            if built is not None:
                fields.update(build=built.device, note=built.note, input_shape=_shape_text(built.input_shape))
                counted = stage("count", lambda: _count_stage(built)) or {}
                if "flop_counter_error" in counted:
                    errors.append(counted.pop("flop_counter_error"))
                fields.update(counted)
                analysed = stage("rf", lambda: _rf_stage(built))
                if analysed is not None:
                    fields.update(analysed[0])
                    report = analysed[1]
                    macs = fields.get("macs")
                    shape = gradient_check_shape(built.input_shape, check_size)
                    fields["check_shape"] = _shape_text(shape)
                    if macs is not None and macs * math.prod(shape[2:]) / math.prod(built.input_shape[2:]) <= check_max_macs:
                        torch.set_grad_enabled(True)
                        fields.update(stage("check", lambda: _check_stage(built, report, shape)) or {})
                    else:
                        fields["check"] = "unaffordable"
    except StageTimeout:
        pass
    finally:
        torch.set_grad_enabled(grad_was)
    fields["errors"] = " | ".join(errors)
    return ZooRow(**fields)
