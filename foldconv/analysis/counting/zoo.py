"""Build torchvision models without memory and check :func:`~foldconv.analysis.counting.count` against
independent figures: ``torch.utils.flop_counter.FlopCounterMode`` (MACs = its FLOPs / 2, exactly, per op),
``sum(p.numel())`` and the parameter and GFLOPS figures torchvision publishes with its weights.

torchvision's published "GFLOPS" (``weights.meta["_ops"]``) are multiply-adds in the sense of
:mod:`foldconv.analysis.counting` (ResNet-50: 4.089), measured at the weights' crop size and rounded to
3 decimals, so the check compares ``round(macs / 1e9, 3)``.

Example:
    >>> m = meta_model("resnet50")
    >>> m.conv1.weight.device.type, sum(p.numel() for p in m.parameters())
    ('meta', 25557032)
"""
from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils._pytree import tree_map

from ...errors import FoldError, fold_error
from .counter import ShapeLike, count
from .inputs import model_inputs
from .report import CountReport

__all__ = [
    "classification_models",
    "meta_model",
    "PublishedFigures",
    "published_figures",
    "CountValidation",
    "validate_count",
    "validate_zoo",
]


def classification_models() -> List[str]:
    """Names of torchvision's image-classification models (80 in torchvision 0.29).

    Example:
        >>> "resnet50" in classification_models()
        True
    """
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


@contextlib.contextmanager
def _register_on_meta() -> Iterator[None]:
    """Move every parameter and buffer to meta the moment a module registers it.

    For builders that compute with tensors while constructing (RegNet derives its widths with torch ops),
    where ``with torch.device("meta")`` fails; each tensor is allocated uninitialised on CPU only until it
    is registered, and initialisers then run on meta.
    """
    register_parameter = nn.Module.register_parameter
    register_buffer = nn.Module.register_buffer

    def on_meta_parameter(module: nn.Module, name: str, param: Optional[nn.Parameter]) -> None:
        register_parameter(module, name, param)
        if param is not None and param.device.type != "meta":
            module._parameters[name] = nn.Parameter(param.detach().to("meta"), requires_grad=param.requires_grad)

    def on_meta_buffer(module: nn.Module, name: str, tensor: Optional[torch.Tensor], persistent: bool = True) -> None:
        register_buffer(module, name, tensor, persistent)
        if tensor is not None and tensor.device.type != "meta":
            module._buffers[name] = tensor.to("meta")

    nn.Module.register_parameter = on_meta_parameter  # type: ignore[method-assign]
    nn.Module.register_buffer = on_meta_buffer  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register_parameter  # type: ignore[method-assign]
        nn.Module.register_buffer = register_buffer  # type: ignore[method-assign]


def meta_model(name: str, **kwargs: Any) -> nn.Module:
    """A torchvision model by name with all parameters and buffers on the meta device (no weights).

    Example:
        >>> meta_model("regnet_x_400mf").stem[0].weight.device.type
        'meta'
    """
    import torchvision

    if not isinstance(name, str) or name not in torchvision.models.list_models():
        raise fold_error("name", name, "is not a torchvision model name (see torchvision.models.list_models())")
    try:
        try:
            with torch.device("meta"):
                return torchvision.models.get_model(name, weights=None, **kwargs)
        except (NotImplementedError, RuntimeError):
            pass
        with _register_on_meta():
            return torchvision.models.get_model(name, weights=None, **kwargs)
    except (TypeError, ValueError) as exc:  # constructor arguments the builder does not take
        raise fold_error("kwargs", kwargs, f"are not valid for {name}: {exc}") from exc


@dataclass(frozen=True)
class PublishedFigures:
    """torchvision's figures for a model's DEFAULT weights: ``num_params``, ``gmacs`` (its ``_ops``), the
    ``input_shape`` they were measured at (batch 1, the weights' crop size) and the constructor ``kwargs``
    the weights imply (ViT at a larger crop needs ``image_size``; GoogLeNet's weights drop the aux heads)."""

    weights: str
    num_params: int
    gmacs: float
    input_shape: Tuple[int, ...]
    kwargs: Mapping[str, Any] = field(default_factory=dict)


def published_figures(name: str) -> PublishedFigures:
    """torchvision's published figures for the DEFAULT weights of a classification model.

    Example:
        >>> f = published_figures("resnet50")
        >>> f.num_params, f.gmacs, f.input_shape
        (25557032, 4.089, (1, 3, 224, 224))
    """
    import torchvision

    if not isinstance(name, str) or name not in classification_models():
        raise fold_error("name", name, "is not a torchvision classification model (see classification_models())")
    weights = torchvision.models.get_model_weights(name).DEFAULT
    crop = weights.transforms().crop_size[0]
    kwargs: Dict[str, Any] = {}
    if name.startswith("vit_") and crop != 224:
        kwargs["image_size"] = crop
    if name == "googlenet":
        kwargs["aux_logits"] = False
        kwargs["init_weights"] = False
    if name == "inception_v3":
        kwargs["init_weights"] = False
    return PublishedFigures(str(weights), int(weights.meta["num_params"]), float(weights.meta["_ops"]), (1, 3, crop, crop), kwargs)


@dataclass(frozen=True)
class CountValidation:
    """:func:`count` against independent figures for one model.

    ``macs_ok``: MACs of every op equal FlopCounterMode's FLOPs / 2 for that op (and in total);
    ``params_ok``: the parameter total equals ``sum(p.numel())``; with ``published`` figures,
    ``published_params_ok`` and ``published_gmacs_ok`` (GMACs rounded to torchvision's 3 decimals).
    ``passes``: 1 when FlopCounterMode watched count()'s own pass, 2 when it watched a separate forward
    (``one_pass_failure`` says why); ``differing_ops``: the ops whose MACs differ from FlopCounterMode's.
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

    @property
    def params_ok(self) -> bool:
        return self.params == self.numel

    @property
    def macs_ok(self) -> bool:
        return self.macs == self.flop_counter_macs and self.per_op_ok

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
    from torch.utils.flop_counter import FlopCounterMode

    if published is not None and not isinstance(published, PublishedFigures):
        raise fold_error("published", published, "must be PublishedFigures (from published_figures(name)) or None")
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
        device = next((t.device for t in itertools.chain(model.parameters(), model.buffers())), torch.device("cpu"))
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)  # as count() does
        args, kwargs = model_inputs(input_shape, dtype=dtype, real=not on_meta)
        args, kwargs = tree_map(lambda t: t.to(device) if isinstance(t, torch.Tensor) else t, (args, kwargs))
        with torch.enable_grad(), FlopCounterMode(display=False) as counter:
            model(*args, **kwargs)
    theirs = {str(op).split(".")[-1]: int(v) for op, v in counter.get_flop_counts().get("Global", {}).items()}
    ours = report.macs_by_op
    differing = tuple(sorted(op for op in set(theirs) | set(ours) if 2 * ours.get(op, 0) != theirs.get(op, 0)))
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
    )


def validate_zoo(names: Optional[Sequence[str]] = None, *, published: bool = True) -> Tuple[CountValidation, ...]:
    """:func:`validate_count` for each model (default: the whole classification zoo), built on meta.

    With ``published=True`` each model is built and counted the way its DEFAULT weights were measured
    (:func:`published_figures`) and checked against those figures; otherwise every model runs at
    ``(1, 3, 224, 224)``.

    Example:
        >>> (v,) = validate_zoo(["alexnet"])
        >>> v.macs_ok, v.params_ok, v.published_params_ok, v.published_gmacs_ok, v.report.complete
        (True, True, True, True, True)
    """
    rows = []
    for name in names if names is not None else classification_models():
        figures = published_figures(name) if published else None
        model = meta_model(name, **(figures.kwargs if figures else {}))
        shape = figures.input_shape if figures else (1, 3, 224, 224)
        rows.append(validate_count(model, shape, name=name, published=figures))
    return tuple(rows)
