"""The two model zoos, as facts about their models: names, families, default input shapes, published figures.

``torchvision``: its image-classification models, at their DEFAULT weights' crop size; ``timm``: every
architecture of ``timm.list_models()``, at ``pretrained_cfg["input_size"]``. torchvision's published
"GFLOPS" (``weights.meta["_ops"]``) are multiply-adds in the sense of :mod:`foldconv.analysis.counting`
(ResNet-50: 4.089), measured at the weights' crop size and rounded to 3 decimals.

Example:
    >>> zoo_models("torchvision", ["resnet1*", "alexnet"])
    ['alexnet', 'resnet101', 'resnet152', 'resnet18']
    >>> f = published_figures("resnet50")
    >>> f.num_params, f.gmacs, f.input_shape
    (25557032, 4.089, (1, 3, 224, 224))
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from ..errors import fold_error

__all__ = ["ZOOS", "classification_models", "zoo_models", "family_of", "default_input_shape", "PublishedFigures", "published_figures"]

ZOOS = ("torchvision", "timm")


def _check_zoo(zoo: str) -> str:
    if zoo not in ZOOS:
        raise fold_error("zoo", zoo, f"must be one of {ZOOS}")
    return zoo


def _timm() -> Any:
    try:
        import timm
    except ImportError as exc:  # a dev-extra dependency
        raise fold_error("zoo", "timm", "needs the timm package (pip install 'foldconv[dev]')") from exc
    return timm


def classification_models() -> List[str]:
    """Names of torchvision's image-classification models (80 in torchvision 0.29), sorted.

    Example:
        >>> "resnet50" in classification_models()
        True
    """
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def zoo_models(zoo: str, names: Sequence[str] = ()) -> List[str]:
    """The zoo's model names (sorted), restricted to those matching any of the ``fnmatch`` patterns ``names``.

    Example:
        >>> zoo_models("torchvision", ["vgg1?"])
        ['vgg11', 'vgg13', 'vgg16', 'vgg19']
    """
    _check_zoo(zoo)
    if isinstance(names, str):
        names = [names]
    every = sorted(_timm().list_models()) if zoo == "timm" else classification_models()
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
        _timm()
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
        cfg = _timm().models.get_pretrained_cfg(name)
        size = tuple(cfg.input_size) if cfg is not None and cfg.input_size else (3, 224, 224)
        return (1,) + tuple(int(v) for v in size)
    return tuple(published_figures(name).input_shape)


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
        >>> published_figures("vit_h_14").kwargs
        {'image_size': 518}
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
