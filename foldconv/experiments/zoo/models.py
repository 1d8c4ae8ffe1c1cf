"""The models of a zoo: their names, their families, their default input shapes, and how to build them
without weights (on the meta device, or on CPU at a small input size when meta fails, and saying so).

Two zoos: ``torchvision`` (the classification models, at their weights' crop size) and ``timm`` (every
architecture of ``timm.list_models()``, at ``pretrained_cfg["input_size"]``). Nothing is downloaded
(``pretrained=False`` / ``weights=None``).

Example:
    >>> built = build_model("torchvision", "resnet18")
    >>> built.device, built.input_shape, built.note
    ('meta', (1, 3, 224, 224), '')
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from ...errors import fold_error

__all__ = ["ZOOS", "SMALL_SIZE", "Built", "zoo_models", "family_of", "default_input_shape", "build_model", "one_line"]

ZOOS = ("torchvision", "timm")

#: The spatial size a model built on CPU (its meta build failed) is measured at, so real tensors stay small.
SMALL_SIZE = 64


def _check_zoo(zoo: str) -> str:
    if zoo not in ZOOS:
        raise fold_error("zoo", zoo, f"must be one of {ZOOS}")
    return zoo


def _timm():
    try:
        import timm
    except ImportError as exc:  # a dev-extra dependency
        raise fold_error("zoo", "timm", "needs the timm package (pip install 'foldconv[dev]')") from exc
    return timm


def zoo_models(zoo: str, names: Sequence[str] = ()) -> List[str]:
    """The zoo's model names (sorted), restricted to those matching any of the ``fnmatch`` patterns ``names``.

    Example:
        >>> zoo_models("torchvision", ["resnet1*", "alexnet"])
        ['alexnet', 'resnet101', 'resnet152', 'resnet18']
    """
    _check_zoo(zoo)
    if isinstance(names, str):
        names = [names]
    if zoo == "timm":
        every = sorted(_timm().list_models())
    else:
        from ...analysis.counting import classification_models

        every = classification_models()
    if not names:
        return every
    picked = [n for n in every if any(fnmatch.fnmatchcase(n, p) for p in names)]
    if not picked:
        raise fold_error("names", list(names), f"match no model of the {zoo} zoo")
    return picked


def family_of(zoo: str, name: str) -> str:
    """The model's family: timm's module (``resnet``, ``vision_transformer``, ...) or torchvision's prefix.

    Example:
        >>> family_of("torchvision", "resnet50"), family_of("timm", "vit_tiny_patch16_224")
        ('resnet', 'vision_transformer')
    """
    _check_zoo(zoo)
    if zoo == "timm":
        from timm.models._registry import _model_to_module

        return _model_to_module.get(name, name.split("_")[0])
    return name.rstrip("0123456789").split("_")[0].rstrip("0123456789") or name


def default_input_shape(zoo: str, name: str) -> Tuple[int, ...]:
    """``(1, *pretrained_cfg input_size)`` for timm, ``(1, 3, crop, crop)`` of the DEFAULT weights for torchvision.

    Example:
        >>> default_input_shape("timm", "fastvit_t8"), default_input_shape("torchvision", "inception_v3")
        ((1, 3, 256, 256), (1, 3, 299, 299))
    """
    _check_zoo(zoo)
    if zoo == "timm":
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(name)
        size = tuple(cfg.input_size) if cfg is not None and cfg.input_size else (3, 224, 224)
        return (1,) + tuple(int(v) for v in size)
    from ...analysis.counting import published_figures

    return tuple(published_figures(name).input_shape)


@dataclass(frozen=True)
class Built:
    """A model without weights: ``device`` is ``"meta"`` (default input shape) or ``"cpu"`` (its meta build
    failed: random weights, measured at ``SMALL_SIZE``), and ``note`` says why in one line."""

    zoo: str
    name: str
    model: nn.Module
    input_shape: Tuple[int, ...]
    device: str
    note: str = ""


def _construct(zoo: str, name: str) -> nn.Module:
    if zoo == "timm":
        return _timm().create_model(name, pretrained=False)
    import torchvision

    from ...analysis.counting import published_figures

    return torchvision.models.get_model(name, weights=None, **published_figures(name).kwargs)


def build_model(zoo: str, name: str, *, small_size: int = SMALL_SIZE, cpu_fallback: bool = True) -> Built:
    """Build ``name`` on meta at its default input shape; if that fails, on CPU at ``small_size`` (saying so).

    Example:
        >>> b = build_model("timm", "resnet10t")
        >>> b.device, b.input_shape, b.model.fc.weight.device.type
        ('meta', (1, 3, 176, 176), 'meta')
    """
    _check_zoo(zoo)
    shape = default_input_shape(zoo, name)
    try:
        if zoo == "torchvision":
            from ...analysis.counting import meta_model, published_figures

            return Built(zoo, name, meta_model(name, **published_figures(name).kwargs).eval(), shape, "meta")
        with torch.device("meta"):
            return Built(zoo, name, _construct(zoo, name).eval(), shape, "meta")
    except Exception as exc:  # any builder failure on meta: try real tensors, and say why
        if not cpu_fallback:
            raise
        reason = one_line(exc)
    small = shape[:2] + tuple(min(small_size, s) for s in shape[2:])
    return Built(zoo, name, _construct(zoo, name).eval(), small, "cpu", f"meta build failed ({reason}); built on CPU, measured at {small}")


def one_line(exc: BaseException, limit: Optional[int] = 300) -> str:
    """An exception as one line: its type and the first line of its message, cut at ``limit`` characters.

    Example:
        >>> one_line(ValueError("bad\\nmore"))
        'ValueError: bad'
    """
    text = str(exc).strip().splitlines()
    line = f"{type(exc).__name__}: {text[0] if text else ''}".strip()
    return line if limit is None or len(line) <= limit else line[: limit - 3] + "..."
