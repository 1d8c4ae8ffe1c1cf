"""The one model resolver: every spelling of a model that foldconv takes, resolved and built one way.

Spellings (:func:`resolve_model` reads them; every app takes the same ones):

- a torchvision name, ``"resnet18"``;
- ``"timm:<name>"``, a timm model (needs timm);
- a registered architecture, ``"yolov5_stem"``, ``"espcn"``, ``"resnet18_blur"`` (:data:`~foldconv.models.ARCHITECTURES`;
  a registered name is looked up before torchvision's);
- a ``_target_`` mapping, ``{"_target_": "mypkg.nets.make_net", "width": 8}``: the callable at that import path,
  called with the other keys (a value that is itself a ``_target_`` mapping is built first; ``_args_`` lists
  positional arguments), as Hydra's ``instantiate`` would, without Hydra;
- an ``nn.Module`` instance, or a :class:`ModelSpec` (resolved already).

The result is a :class:`ModelSpec`: a frozen description with the model's ``label`` (its name, for file names
and tables: ``resnet18``, ``resnet18d`` for ``timm:resnet18d``, ``make_net`` for a ``_target_``, ``vgg11`` for
``torchvision.models.get_model`` or ``timm.create_model`` given that name), where it comes
from and the arguments it is built with. :func:`build_model` builds it: random weights (``weights=None``,
``pretrained=False``; nothing is downloaded), seeded when asked, on the meta device when ``meta=True`` (no
memory for the weights; a builder that computes with tensors while constructing, as RegNet's does, gets its
parameters moved to meta the moment they are registered). Bad spellings are one-line FoldErrors with close
matches.

Example:
    >>> resolve_model("timm:resnet18d").label, resolve_model({"_target_": "torch.nn.Conv2d"}).label
    ('resnet18d', 'Conv2d')
    >>> build_model("resnet50", meta=True).conv1.weight.device.type
    'meta'
    >>> resolve_model("resnet181")
    Traceback (most recent call last):
    ...
    foldconv.errors.FoldError: model='resnet181': is not a torchvision model or a registered architecture; did you mean resnet18, resnet101, resnet152?
"""
from __future__ import annotations

import contextlib
import copy
import difflib
import importlib
import inspect
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..errors import FoldError, first_line, fold_error
from .architectures import ARCHITECTURES

__all__ = ["TIMM_PREFIX", "SOURCES", "ModelSpec", "resolve_model", "build_model", "meta_model", "model_labels"]

TIMM_PREFIX = "timm:"
#: Where a :class:`ModelSpec` comes from.
SOURCES = ("torchvision", "timm", "architecture", "target", "module")
#: Generic factories whose argument names the model: a ``_target_`` of one is labelled by that name.
_FACTORY_NAMES = {"torchvision.models.get_model": "name", "timm.create_model": "model_name", "timm.models.create_model": "model_name"}
_SPELLINGS = ("must be a torchvision name (model=resnet18), timm:<name>, a registered architecture (model=yolov5_stem), "
              "a _target_ node (model._target_=mypkg.make_net model.width=8) or an nn.Module")


@dataclass(frozen=True)
class ModelSpec:
    """A model named in any spelling, resolved: ``label`` (its name, for files and tables), ``source`` (one of
    :data:`SOURCES`), ``name`` (the torchvision/timm/architecture name, the ``_target_`` import path, or the
    module's class name) and the constructor ``kwargs``; ``module`` is the instance for ``source="module"``.

    Example:
        >>> spec = resolve_model({"_target_": "torch.nn.Conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 3})
        >>> spec.label, spec.source, spec.spelling
        ('Conv2d', 'target', {'_target_': 'torch.nn.Conv2d', 'in_channels': 1, 'out_channels': 2, 'kernel_size': 3})
        >>> spec.build()
        Conv2d(1, 2, kernel_size=(3, 3), stride=(1, 1))
    """

    label: str
    source: str
    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    module: Optional[nn.Module] = field(default=None, repr=False, compare=False)

    @property
    def spelling(self) -> Any:
        """What a config writes to get this model again (None for a module instance).

        Example:
            >>> resolve_model("timm:resnet18d").spelling, resolve_model("resnet18", weights=None).spelling
            ('timm:resnet18d', {'_target_': 'torchvision.models.get_model', 'name': 'resnet18', 'weights': None})
        """
        if self.source == "module":
            return None
        if self.source == "target":
            return {"_target_": self.name, **dict(self.kwargs)}
        text = TIMM_PREFIX + self.name if self.source == "timm" else self.name
        if not self.kwargs:
            return text
        if self.source == "torchvision":
            return {"_target_": "torchvision.models.get_model", "name": self.name, **dict(self.kwargs)}
        if self.source == "timm":
            return {"_target_": "timm.create_model", "model_name": self.name, **dict(self.kwargs)}
        builder = ARCHITECTURES.get(self.name).builder
        return {"_target_": f"{builder.__module__}.{builder.__qualname__}", **dict(self.kwargs)}

    @property
    def input_shape(self) -> Optional[Tuple[int, ...]]:
        """A full input shape the model runs on when one is known (an architecture's own, torchvision's crop of
        its DEFAULT weights, timm's pretrained config); None for a ``_target_`` or a module.

        Example:
            >>> resolve_model("espcn").input_shape, resolve_model("inception_v3").input_shape
            ((1, 1, 128, 128), (1, 3, 299, 299))
        """
        if self.source == "architecture":
            return ARCHITECTURES.get(self.name).input_shape
        if self.source in ("torchvision", "timm"):
            from .zoo import default_input_shape

            try:
                return default_input_shape(self.source, self.name)
            except FoldError:  # a torchvision model outside the classification zoo: no published crop
                return None
        return None

    def build(self, *, meta: bool = False, seed: Optional[int] = None, param: str = "model") -> nn.Module:
        """The module (:func:`build_model`)."""
        return build_model(self, meta=meta, seed=seed, param=param)


def _did_you_mean(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _timm(param: str, value: Any) -> Any:
    try:
        import timm
    except ImportError:
        raise fold_error(param, value, "needs timm, which is not installed (pip install timm)") from None
    return timm


def _torchvision_names() -> List[str]:
    import torchvision

    return torchvision.models.list_models()


def _import_target(path: str, param: str) -> Callable[..., Any]:
    """The object at ``path`` (``pkg.module.name``); a one-line FoldError saying whether no module of the path can
    be imported (not on the path, or it fails to import) or the module has no such name."""
    parts = path.split(".")
    if len(parts) < 2 or not all(p.isidentifier() for p in parts):
        raise fold_error(param, path, "must be an import path like mypkg.nets.make_net (module, then the name in it)")
    module, found = None, 0
    for k in range(len(parts) - 1, 0, -1):
        name = ".".join(parts[:k])
        try:
            module, found = importlib.import_module(name), k
            break
        except ModuleNotFoundError as err:
            if err.name is not None and not name.startswith(err.name) and not err.name.startswith(name):
                # the module exists but imports something that does not: an error inside it, not a missing module
                raise fold_error(param, path, f"module {name!r} is on the path but fails to import: {first_line(err, with_type=True)}") from None
            continue
        except Exception as err:  # noqa: BLE001  (a module that raises while importing: say what it raised)
            raise fold_error(param, path, f"module {name!r} is on the path but fails to import: {first_line(err, with_type=True)}") from None
    if module is None:
        raise fold_error(param, path, f"is not importable: no module {parts[0]!r} on the Python path (sys.path; "
                                      "install it or add its folder to PYTHONPATH)")
    obj: Any = module
    for k, attr in enumerate(parts[found:], start=found):
        if not hasattr(obj, attr):
            where = ".".join(parts[:k])
            public = [n for n in dir(obj) if not n.startswith("_")]
            raise fold_error(param, path, f"{attr!r} is not in {where!r}" + (_did_you_mean(attr, public) or f" (module file {getattr(obj, '__file__', '?')})"))
        obj = getattr(obj, attr)
    if not callable(obj):
        raise fold_error(param, path, f"names a {type(obj).__name__}, not a class or function that builds a model")
    return obj


def _check_kwargs(value: Any, param: str) -> Dict[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise fold_error(param, value, "must map argument names to values")
    return dict(value)


def resolve_model(model: Any, *, param: str = "model", **kwargs: Any) -> ModelSpec:
    """The :class:`ModelSpec` of ``model`` in any spelling (see the module docstring); ``kwargs`` are constructor
    arguments added to the spelling's own. Nothing is built; a ``_target_`` is imported (so a bad path fails
    here, before any work). A FoldError names ``param`` (``model._target_`` for a bad import path).

    Args:
        model: a torchvision name, ``"timm:<name>"``, a registered architecture, a ``_target_`` mapping, an
            ``nn.Module`` or a :class:`ModelSpec`.
        param: the parameter name FoldErrors give (default ``"model"``; an app passes its config key).
        **kwargs: constructor arguments, added to the spelling's own (none for a module instance).

    Returns:
        A :class:`ModelSpec`: ``label``, ``source`` (one of :data:`SOURCES`), ``name``, ``kwargs``; ``build()``.

    Raises:
        FoldError: naming ``param`` (an unknown name, with close matches; arguments for a module instance) or
        ``<param>._target_`` (an import path that does not resolve to a callable).

    Example:
        >>> resolve_model("yolov5_stem")
        ModelSpec(label='yolov5_stem', source='architecture', name='yolov5_stem', kwargs={})
        >>> resolve_model({"_target_": "torch.nn.Conv3x3"})
        Traceback (most recent call last):
        ...
        foldconv.errors.FoldError: model._target_='torch.nn.Conv3x3': 'Conv3x3' is not in 'torch.nn'; did you mean Conv3d, Conv2d, Conv1d?
    """
    if isinstance(model, ModelSpec):
        if not kwargs:
            return model
        if model.source == "module":
            raise fold_error(param, model.label, "is a module instance: it takes no constructor arguments")
        return ModelSpec(model.label, model.source, model.name, {**dict(model.kwargs), **kwargs})
    if isinstance(model, nn.Module):
        if kwargs:
            raise fold_error(param, type(model).__name__, "is a module instance: it takes no constructor arguments")
        return ModelSpec(type(model).__name__, "module", type(model).__name__, {}, model)
    if isinstance(model, Mapping):
        target = model.get("_target_")
        if not isinstance(target, str) or not target.strip():
            raise fold_error(param, dict(model), "must have a _target_ naming what builds the model (model._target_=mypkg.make_net)")
        target = target.strip()
        _import_target(target, f"{param}._target_")
        args = {k: v for k, v in dict(model).items() if k != "_target_"}
        named = args.get(_FACTORY_NAMES.get(target, ""))  # get_model(name=...): the model's name, not the factory's
        label = named if isinstance(named, str) and named else target.rsplit(".", 1)[-1]
        return ModelSpec(label, "target", target, {**args, **kwargs})
    if not isinstance(model, str) or not model.strip():
        raise fold_error(param, model, _SPELLINGS)
    if model.startswith(TIMM_PREFIX):
        name = model[len(TIMM_PREFIX):]
        known = _timm(param, model).list_models()
        if name not in known:
            raise fold_error(param, model, "is not a timm model" + _did_you_mean(name, known))
        return ModelSpec(name, "timm", name, dict(kwargs))
    if model in ARCHITECTURES:
        return ModelSpec(model, "architecture", model, dict(kwargs))
    known = _torchvision_names()
    if model not in known:
        hint = _did_you_mean(model, known + list(ARCHITECTURES.names()))
        hint = hint or (" (torchvision.models.list_models(); the registered architectures: "
                        "foldconv.models.ARCHITECTURES.names(); a timm model: model=timm:<name>)")
        raise fold_error(param, model, "is not a torchvision model or a registered architecture" + hint)
    return ModelSpec(model, "torchvision", model, dict(kwargs))


def model_labels(models: Sequence[Any], *, param: str = "models") -> Tuple[ModelSpec, ...]:
    """Every entry of ``models`` resolved, refusing two with the same label (labels name files and table rows).

    Example:
        >>> [s.label for s in model_labels(["resnet18", "timm:resnet18d"])]
        ['resnet18', 'resnet18d']
        >>> model_labels(["resnet18", {"_target_": "torchvision.models.resnet18"}])
        Traceback (most recent call last):
        ...
        foldconv.errors.FoldError: models=['resnet18', 'resnet18']: must have distinct labels (they name files and rows)
    """
    if isinstance(models, (str, Mapping, nn.Module)) or not isinstance(models, Sequence):
        raise fold_error(param, models, "must be a list of models, each " + _SPELLINGS[len("must be "):])
    specs = tuple(resolve_model(m, param=param) for m in models)
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise fold_error(param, labels, "must have distinct labels (they name files and rows)")
    return specs


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


def _instantiate(value: Any, param: str) -> Any:
    """``value`` with every nested ``_target_`` mapping (in mappings and lists) replaced by what it builds."""
    if isinstance(value, Mapping):
        if isinstance(value.get("_target_"), str):
            fn = _import_target(value["_target_"], f"{param}._target_")
            args = [_instantiate(a, param) for a in value.get("_args_", ())]
            kwargs = {k: _instantiate(v, f"{param}.{k}") for k, v in value.items() if k not in ("_target_", "_args_")}
            try:
                return fn(*args, **kwargs)
            except FoldError:
                raise
            except Exception as err:  # noqa: BLE001  (a user's callable: whatever it raised, in one line)
                raise fold_error(f"{param}._target_", value["_target_"], f"cannot be built: {first_line(err, with_type=True, limit=300)}") from None
        return {k: _instantiate(v, f"{param}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_instantiate(v, param) for v in value)
    return value


def _maker(spec: ModelSpec, param: str) -> Callable[[], Any]:
    if spec.source == "torchvision":
        import torchvision

        def build() -> Any:
            fn = torchvision.models.get_model_builder(spec.name)
            # Detection and segmentation builders also load a pretrained backbone by default: never download.
            none = {"weights": None, **({"weights_backbone": None} if "weights_backbone" in inspect.signature(fn).parameters else {})}
            return fn(**{**none, **dict(spec.kwargs)})

        return build
    if spec.source == "timm":
        timm = _timm(param, TIMM_PREFIX + spec.name)
        return lambda: timm.create_model(spec.name, **{"pretrained": False, **dict(spec.kwargs)})
    if spec.source == "architecture":
        builder = ARCHITECTURES.get(spec.name).builder
        return lambda: builder(**dict(spec.kwargs))
    node = {"_target_": spec.name, **dict(spec.kwargs)}
    return lambda: _instantiate(node, param)


def _construct(make: Callable[[], Any], meta: bool) -> Any:
    if not meta:
        return make()
    try:
        with torch.device("meta"):
            return make()
    except (NotImplementedError, RuntimeError):  # a builder that computes with tensors while constructing
        pass
    with _register_on_meta():
        return make()


def build_model(model: Any, *, meta: bool = False, seed: Optional[int] = None, param: str = "model", **kwargs: Any) -> nn.Module:
    """The ``nn.Module`` that ``model`` (any spelling of :func:`resolve_model`, with constructor ``kwargs``) names.

    Random weights, nothing downloaded; ``seed``: the weights drawn from it (the global RNG is left as it was);
    ``meta``: every parameter and buffer on the meta device. A module instance is returned as it is (``meta``:
    a copy on meta). A model that cannot be built is a FoldError naming ``param`` and saying why in one line.

    Args:
        model: a torchvision name, ``"timm:<name>"``, a registered architecture, a ``_target_`` mapping, an
            ``nn.Module`` or a :class:`ModelSpec`.
        meta: put every parameter and buffer on the meta device (default False).
        seed: draw the weights from this seed, an int >= 0 (default None: the global RNG).
        param: the parameter name FoldErrors give (default ``"model"``).
        **kwargs: constructor arguments, added to the spelling's own.

    Returns:
        The built ``nn.Module`` with random weights (a module instance itself, or its meta copy).

    Raises:
        FoldError: naming ``param`` (or ``<param>._target_``) for a spelling that does not resolve or a model that
        cannot be built, ``meta`` or ``seed``.

    Example:
        >>> build_model({"_target_": "torch.nn.Conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 3})
        Conv2d(1, 2, kernel_size=(3, 3), stride=(1, 1))
        >>> build_model("regnet_x_400mf", meta=True).stem[0].weight.device.type
        'meta'
        >>> torch.equal(build_model("espcn", seed=3).subpixel[0].bias, build_model("espcn", seed=3).subpixel[0].bias)
        True
    """
    spec = resolve_model(model, param=param, **kwargs)
    if not isinstance(meta, bool):
        raise fold_error("meta", meta, "must be True or False")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise fold_error("seed", seed, "must be an integer >= 0 (or None: the global RNG)")
    if spec.source == "module":
        return copy.deepcopy(spec.module).to("meta") if meta else spec.module
    make = _maker(spec, param)
    what = spec.name if spec.source == "target" else spec.spelling if isinstance(spec.spelling, str) else spec.label
    try:
        with warnings.catch_warnings(), torch.random.fork_rng(devices=[], enabled=seed is not None):
            warnings.simplefilter("ignore", FutureWarning)  # torchvision's notes on weights=None
            if seed is not None:
                torch.manual_seed(seed)
            built = _construct(make, meta)
    except FoldError:
        raise
    except Exception as err:  # noqa: BLE001  (a builder's own error, e.g. an argument it does not take)
        where = f"{param}._target_" if spec.source == "target" else param
        raise fold_error(where, what, f"cannot be built{' on meta' if meta else ''}: {first_line(err, with_type=True, limit=300)}") from None
    if not isinstance(built, nn.Module):
        where = f"{param}._target_" if spec.source == "target" else param
        raise fold_error(where, what, f"built a {type(built).__name__}, not a torch.nn.Module")
    return built


def meta_model(model: Any, **kwargs: Any) -> nn.Module:
    """``build_model(model, meta=True, **kwargs)``: the model with no memory for its weights.

    Args:
        model: a torchvision name, ``"timm:<name>"``, a registered architecture, a ``_target_`` mapping, an
            ``nn.Module`` or a :class:`ModelSpec`.
        **kwargs: constructor arguments, and the other keywords of :func:`build_model` (``seed``, ``param``).

    Returns:
        The built ``nn.Module`` with every parameter and buffer on the meta device.

    Raises:
        FoldError: as :func:`build_model`.

    Example:
        >>> m = meta_model("resnet50")
        >>> m.conv1.weight.device.type, sum(p.numel() for p in m.parameters())
        ('meta', 25557032)
    """
    return build_model(model, meta=True, **kwargs)


