"""What every Hydra app shares: the run directory, the fold-factor syntax, and how an app ends.

The apps in ``scripts/`` are thin ``@hydra.main`` functions (:func:`hydra_app`); they call :func:`finish`
with the experiment and let it turn the outcome into an exit status:

- 0: the run finished and every checked claim held;
- 1: the run finished, wrote everything, and a checked claim failed (``ClaimFailed``);
- 2: the request was malformed (a :class:`~foldconv.errors.FoldError`): one line on stderr names the
  parameter, its value and the rule, and nothing that looks like a complete output is left behind.

:func:`hydra_app` is ``@hydra.main`` that reports an override Hydra cannot compose (unknown key, value of
the wrong type) the same way: exit 2 with one line.

The structured config of an app IS a library dataclass: :func:`register` stores it in Hydra's ConfigStore
(frozen dataclasses included) and :func:`instantiate` turns the composed config back into it, running its
validation and naming a bad field by its full key (``conv.groups=3: ...``).

Example:
    >>> parse_r("2x4"), parse_r("3"), parse_r(2), parse_r([2, 1])
    ((2, 4), 3, 2, (2, 1))
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Callable, Dict, NoReturn, Optional, Tuple, Union

from .._validate import check_device as _check_device
from .._validate import parse_factors
from ..errors import FoldError, fold_error

__all__ = [
    "CONFIG_DIR", "ClaimFailed", "parse_r", "run_dir", "finish", "hydra_app", "structured", "register", "instantiate",
    "model_node", "model_label", "build_model", "check_device",
]

#: The apps' Hydra configs, shipped inside the package (so installed commands find them).
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class ClaimFailed(Exception):
    """A checked claim did not hold; the outputs are written, the app exits 1."""


def parse_r(value: Any) -> Union[int, Tuple[int, ...]]:
    """A fold factor in the syntax every app accepts: ``4``, ``"4"``, ``"2x4"`` or ``[2, 4]``.

    Validation of the numbers themselves (``>= 1``, one per axis) is the library's; this only parses.

    Example:
        >>> parse_r("2x1x1")
        (2, 1, 1)
    """
    parsed = parse_factors(value, "r")
    if isinstance(parsed, bool) or not isinstance(parsed, (int, tuple)):
        raise fold_error("r", value, "must be an integer or per-axis factors like '2x4'")
    return parsed


def run_dir() -> Path:
    """The Hydra run directory of the current app (the working directory outside Hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except (ImportError, ValueError):
        return Path.cwd()


def _writable(node: Any) -> None:
    from omegaconf import DictConfig, OmegaConf

    node._set_flag("readonly", None)
    for key in node.keys() if isinstance(node, DictConfig) else range(len(node)):
        child = node._get_node(key)
        if isinstance(child, DictConfig) and child._metadata.ref_type is Any:
            # A free-form node (a model's `_target_` and its kwargs): `model.width=8` adds the key, no `+` needed
            child._set_flag("struct", False)
        if OmegaConf.is_config(child):
            _writable(child)


def structured(node: Any) -> Any:
    """``OmegaConf.structured(node)``, writable even for a frozen dataclass (whose config OmegaConf locks).

    Example:
        >>> from foldconv.experiments.operators import OperatorsExperiment
        >>> cfg = structured(OperatorsExperiment)
        >>> cfg.example.r = "2x1"
        >>> cfg.example.r
        '2x1'
    """
    from omegaconf import OmegaConf

    config = OmegaConf.structured(node)
    _writable(config)
    return config


def register(name: str, node: Any) -> None:
    """Store a dataclass as the structured config ``name`` (use it in a config's ``defaults`` list).

    The stored config is :func:`structured`, so command-line overrides reach a frozen dataclass; its own
    checks run in :func:`instantiate`.

    Example:
        >>> from foldconv.experiments.operators import OperatorsExperiment
        >>> register("operators_schema", OperatorsExperiment)
    """
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=name, node=structured(node))


def _prefixed(err: FoldError, prefix: str) -> FoldError:
    if err.param is not None and err.rule is not None:
        return fold_error(prefix + err.param, err.value, err.rule)
    return FoldError(f"{prefix.rstrip('.')}: {err}", param=prefix + (err.param or ""), value=err.value, rule=err.rule)


def instantiate(cfg: Any, *, prefix: str = "") -> Any:
    """The dataclass behind a composed structured config, built (and so validated) field by field.

    A FoldError raised by a nested dataclass names the field by its full key; a missing mandatory value
    (``???``) is a FoldError too.

    Example:
        >>> from foldconv.experiments.operators import OperatorsExperiment
        >>> cfg = structured(OperatorsExperiment)
        >>> instantiate(cfg).example.r
        (2, 2)
        >>> cfg.example.stride = 0
        >>> instantiate(cfg)
        Traceback (most recent call last):
        ...
        foldconv.errors.FoldError: example.stride=0: every entry must be an integer >= 1
    """
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import MissingMandatoryValue

    cls = OmegaConf.get_type(cfg)
    if not dataclasses.is_dataclass(cls):
        return OmegaConf.to_object(cfg)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    names = {f.name for f in fields}
    for key in cfg:
        if key not in names:  # e.g. a `+key=value` override: nothing would read it
            node = cfg._get_node(key)
            value = OmegaConf.to_container(node) if OmegaConf.is_config(node) else node._value()
            raise fold_error(prefix + str(key), value, f"is not a field of {cls.__name__} ({', '.join(sorted(names))})")
    kwargs = {}
    for f in fields:
        if f.name in cfg._content and OmegaConf.is_missing(cfg, f.name):  # `in` is False for a ??? value
            raise fold_error(prefix + f.name, "???", f"must be given on the command line ({prefix}{f.name}=...)")
        if f.name not in cfg:
            continue
        child = cfg._get_node(f.name)
        try:
            if isinstance(child, DictConfig) and dataclasses.is_dataclass(OmegaConf.get_type(child)):
                kwargs[f.name] = instantiate(child, prefix=f"{prefix}{f.name}.")
            else:
                kwargs[f.name] = OmegaConf.to_object(child) if OmegaConf.is_config(child) else getattr(cfg, f.name)
        except MissingMandatoryValue:
            raise fold_error(prefix + f.name, "???", "must be given") from None
    try:
        return cls(**kwargs)
    except FoldError as err:
        raise (_prefixed(err, prefix) if prefix else err) from None


TIMM_PREFIX = "timm:"


def _did_you_mean(name: str, known: Any) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else ""


def model_node(value: Any, *, param: str = "model") -> Dict[str, Any]:
    """The ``_target_`` node that builds the model an app was given, in the one spelling every app takes:

    - ``model=resnet18``: a torchvision model (random weights; nothing is downloaded);
    - ``model=timm:resnet18d``: a timm model (needs ``pip install timm``);
    - ``model._target_=mypkg.make_net model.width=8``: anything a Hydra ``_target_`` builds, with its kwargs.

    A name that is not known is a FoldError that suggests close matches.

    Example:
        >>> model_node("resnet18")
        {'_target_': 'torchvision.models.get_model', 'name': 'resnet18', 'weights': None}
        >>> model_node("resnet181")
        Traceback (most recent call last):
        ...
        foldconv.errors.FoldError: model='resnet181': is not a torchvision model; did you mean resnet18, resnet101, resnet152?
        >>> model_node({"_target_": "torch.nn.Conv2d", "in_channels": 3, "out_channels": 8, "kernel_size": 3})["_target_"]
        'torch.nn.Conv2d'
    """
    from collections.abc import Mapping

    if isinstance(value, Mapping) and isinstance(value.get("_target_"), str) and value["_target_"].strip():
        return dict(value)
    if not isinstance(value, str) or not value.strip():
        raise fold_error(param, value, "must be a torchvision name (model=resnet18), timm:<name>, or a _target_ node "
                                       "(model._target_=mypkg.make_net model.width=8)")
    if value.startswith(TIMM_PREFIX):
        name = value[len(TIMM_PREFIX):]
        try:
            import timm
        except ImportError:
            raise fold_error(param, value, "needs timm, which is not installed (pip install timm)") from None
        known = timm.list_models()
        if name not in known:
            raise fold_error(param, value, "is not a timm model" + _did_you_mean(name, known))
        return {"_target_": "timm.create_model", "model_name": name, "pretrained": False}
    import torchvision

    known = torchvision.models.list_models()
    if value not in known:
        hint = _did_you_mean(value, known) or " (see torchvision.models.list_models(); a timm model: model=timm:<name>)"
        raise fold_error(param, value, "is not a torchvision model" + hint)
    return {"_target_": "torchvision.models.get_model", "name": value, "weights": None}


def model_label(value: Any) -> str:
    """A short name for a model spelled as :func:`model_node` takes it (for file names and tables).

    Example:
        >>> model_label("resnet18"), model_label("timm:resnet18d"), model_label({"_target_": "mypkg.nets.make_net"})
        ('resnet18', 'resnet18d', 'make_net')
    """
    if isinstance(value, str):
        return value[len(TIMM_PREFIX):] if value.startswith(TIMM_PREFIX) else value
    return str(value["_target_"]).rsplit(".", 1)[-1]


def build_model(value: Any, *, param: str = "model", meta: bool = False) -> Any:
    """The ``torch.nn.Module`` a :func:`model_node` spelling builds; ``meta``: on the meta device when its
    constructor allows (no memory for the weights). A FoldError names ``param`` when it cannot be built.

    Example:
        >>> build_model({"_target_": "torch.nn.Conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 3})
        Conv2d(1, 2, kernel_size=(3, 3), stride=(1, 1))
    """
    import warnings

    import hydra.utils
    import torch

    node = model_node(value, param=param)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torchvision's notes on weights=None
            if meta:
                try:
                    with torch.device("meta"):
                        model = hydra.utils.instantiate(node)
                except (NotImplementedError, RuntimeError):
                    model = hydra.utils.instantiate(node)
            else:
                model = hydra.utils.instantiate(node)
    except Exception as exc:  # an unknown _target_ or kwargs it does not take; Hydra's first lines say which
        reason = " ".join(str(exc).split())[:300]
        raise fold_error(param, node["_target_"], f"cannot be built: {reason}") from None
    if not isinstance(model, torch.nn.Module):
        raise fold_error(param, node["_target_"], f"builds a {type(model).__name__}, not a torch.nn.Module")
    return model


def check_device(device: Any, *, param: str = "device") -> str:
    """``device`` (as given in the config) if this machine has it; otherwise a FoldError that says which
    device to use instead (the rule is :func:`foldconv._validate.check_device`).

    Example:
        >>> check_device("cpu")
        'cpu'
    """
    _check_device(device, param)
    return device


def _refuse(name: str, reason: str) -> NoReturn:
    print(f"{name}: error: {' '.join(reason.split())}", file=sys.stderr)  # one line, always
    sys.exit(2)


def _first_lines(err: BaseException) -> str:
    """``"<first line of err>: <first line of its cause>"``: Hydra's composition errors put the override
    in the first and OmegaConf's reason (wrong type, unknown key) in the second."""
    import re

    parts = [str(e).strip().splitlines()[0].rstrip(".") for e in (err, err.__cause__) if e is not None and str(e).strip()]
    options = re.search(r"Available options in '([^']+)':\n((?:\t.*\n?)+)", str(err))  # a config group's choices
    if options:
        parts.append(f"{options.group(1)} is one of {', '.join(o.strip() for o in options.group(2).splitlines())}")
    return ": ".join(parts) or type(err).__name__


def hydra_app(config_name: str, *, config_path: Optional[str] = None) -> Callable[[Callable[[Any], None]], Callable]:
    """``@hydra.main(version_base="1.3", config_path=..., config_name=...)`` that reports a bad override in one line.

    An override Hydra cannot compose (an unknown key, a value of the wrong type, bad syntax) exits 2 with one
    line on stderr, as a FoldError does through :func:`finish`, instead of Hydra's multi-line report.
    ``config_path`` defaults to the packaged :data:`CONFIG_DIR` (a relative one is relative to the script, as
    with ``hydra.main``); ``config_name`` also names the app in its error lines. Called with a composed
    config (as Hydra's compose API allows) the task runs directly.
    """

    def decorate(task: Callable[[Any], None]) -> Callable:
        import functools
        import os

        import hydra
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        entry = hydra.main(version_base="1.3", config_path=config_path or str(CONFIG_DIR), config_name=config_name)(task)
        name = config_name

        @functools.wraps(task)
        def main(cfg: Any = None) -> None:
            if cfg is not None:
                return entry(cfg)
            previous = os.environ.get("HYDRA_FULL_ERROR")
            os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises instead of printing: the report is ours
            try:
                entry()
            except (HydraException, OmegaConfBaseException) as err:  # composing the config (the task's are FoldErrors)
                _refuse(name, _first_lines(err))
            finally:
                if previous is None:
                    os.environ.pop("HYDRA_FULL_ERROR", None)
                else:
                    os.environ["HYDRA_FULL_ERROR"] = previous

        return main

    return decorate


def finish(run: Callable[[], Optional[str]], *, name: str = "foldconv") -> None:
    """Run an experiment and exit with the status described in the module docstring.

    ``run`` returns an optional line to print on success; it raises :class:`ClaimFailed` when a checked
    claim fails (after writing its outputs) and :class:`FoldError` for a malformed request.
    """
    try:
        message = run()
    except FoldError as err:
        _refuse(name, str(err))
    except ClaimFailed as err:
        print(f"CLAIM FAILED: {err}", file=sys.stderr)
        sys.exit(1)
    if message:
        print(message)
