"""``<model>+spd``: a model with its first strided conv rewritten to space-to-depth + a stride-1 conv, in every app.

The one parser and builder of the spelling (shift, count, rf and rewrite take it): ``"resnet18+spd"`` is resnet18
with its first strided ``nn.Conv1d/2d/3d`` (in ``named_modules`` order: the stem) replaced by
:func:`foldconv.equivalences.strided_to_spd` of it. The rewrite computes the same function (its shift periods are
its model's) but has other parameters and MACs: the kernel is zero-padded to a multiple of the stride, so the
architecture's receptive field (what rf analyses: any weights, the padded taps live once trained) can be up to
stride - 1 px wider per axis than its model's. It lives here, not in :mod:`foldconv.models`, because the rewrite
is above that layer.
A misspelt model keeps its suffix in the close-match hint (``resnt18+spd`` -> ``resnet18+spd``).

Example:
    >>> spec = resolve_spd("resnet18+spd")
    >>> spec.label, spec.base.label, isinstance(resolve_spd("resnet18"), SpdSpec)
    ('resnet18+spd', 'resnet18', False)
    >>> spd_site(spec)
    'conv1: Conv2d(3->64, k=(7, 7), s=(2, 2), p=(3, 3)) -> space_to_depth(2) + Conv2d(12->64, k=(4, 4), s=(1, 1), p=(0, 0))'
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Tuple

from torch import nn

from .._validate import CONV_TYPES
from ..errors import FoldError, fold_error
from ..models import ModelSpec, build_model, resolve_model
from ..specs import ConvSpec

__all__ = ["SPD", "SpdSpec", "build_spd_model", "resolve_spd", "spd_model_labels", "spd_rewrite", "spd_site"]

#: The suffix that asks for the space-to-depth rewrite of a model's first strided conv.
SPD = "+spd"


@dataclass(frozen=True)
class SpdSpec(ModelSpec):
    """The :class:`~foldconv.models.ModelSpec` of ``<spelling>+spd``: the model's own fields, its label with
    ``+spd``; :func:`build_spd_model` (and :meth:`build`) rewrites its first strided conv.

    Example:
        >>> SpdSpec.of(resolve_model("resnet18")).label
        'resnet18+spd'
    """

    @classmethod
    def of(cls, base: ModelSpec) -> SpdSpec:
        """The +spd spec of ``base`` (a spec that is already one is returned as it is)."""
        if isinstance(base, SpdSpec):
            return base
        return cls(base.label + SPD, base.source, base.name, base.kwargs, base.module)

    @property
    def base(self) -> ModelSpec:
        """The spec of the model itself, without the rewrite."""
        return ModelSpec(self.label[: -len(SPD)], self.source, self.name, self.kwargs, self.module)

    @property
    def spelling(self) -> Any:
        """The base spelling with ``+spd`` when it is a string; None when it is not (a ``_target_`` node)."""
        base = self.base.spelling
        return base + SPD if isinstance(base, str) else None

    def build(self, *, meta: bool = False, seed: Optional[int] = None, param: str = "model") -> nn.Module:
        """The rewritten module (:func:`build_spd_model`)."""
        return build_spd_model(self, meta=meta, seed=seed, param=param)


def _keep_suffix(err: FoldError, value: str, param: str) -> FoldError:
    """``err`` (about the model without its suffix) restated about ``value``, every suggestion with ``+spd``."""
    rule = err.rule or str(err)
    prefix = "timm:" if value.startswith("timm:") else ""

    def suffixed(match: re.Match) -> str:
        names = [n.strip() for n in match.group(1).split(",")]
        return "did you mean " + ", ".join((n if n.startswith(prefix) else prefix + n) + SPD for n in names) + "?"

    rule = re.sub(r"did you mean ([^?]+)\?", suffixed, rule)
    return fold_error(err.param if err.param and err.param != param else param, value, rule)


def resolve_spd(value: Any, *, param: str = "model") -> ModelSpec:
    """:func:`foldconv.models.resolve_model`, plus ``"<spelling>+spd"`` (an :class:`SpdSpec`); a typo's hint keeps
    the suffix.

    Example:
        >>> resolve_spd("resnt18+spd")
        Traceback (most recent call last):
        ...
        foldconv.errors.FoldError: model='resnt18+spd': is not a torchvision model or a registered architecture; did you mean resnet18+spd, resnet152+spd, resnet101+spd?
    """
    if isinstance(value, str) and value.endswith(SPD):
        try:
            return SpdSpec.of(resolve_model(value[: -len(SPD)], param=param))
        except FoldError as err:
            raise _keep_suffix(err, value, param) from None
    return resolve_model(value, param=param)


def spd_model_labels(models: Sequence[Any], *, param: str = "models") -> Tuple[ModelSpec, ...]:
    """Every entry resolved (:func:`resolve_spd`), refusing two with the same label (labels name files and rows).

    Example:
        >>> [s.label for s in spd_model_labels(["resnet18", "resnet18+spd"])]
        ['resnet18', 'resnet18+spd']
    """
    if isinstance(models, (str, Mapping, nn.Module)) or not isinstance(models, Sequence):
        raise fold_error(param, models, "must be a list of models (names, timm:<name>, _target_ nodes; '+spd' adds the rewrite)")
    specs = tuple(resolve_spd(m, param=param) for m in models)
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise fold_error(param, labels, "must have distinct labels (they name files and rows)")
    return specs


def _first_strided(model: nn.Module) -> Optional[str]:
    return next((n for n, m in model.named_modules() if isinstance(m, CONV_TYPES) and max(m.stride) > 1), None)


def spd_rewrite(model: nn.Module, *, label: str = "model", param: str = "model") -> Tuple[nn.Module, str]:
    """``model`` with its first strided conv replaced, in place, by its space-to-depth form, and a line naming the
    conv it replaced and what replaced it. A model without a strided conv is a FoldError naming ``param``.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU())
        >>> spd_rewrite(net)[1]
        '0: Conv2d(3->8, k=(3, 3), s=(2, 2), p=(1, 1)) -> space_to_depth(2) + Conv2d(12->8, k=(2, 2), s=(1, 1), p=(0, 0))'
    """
    from ..equivalences import strided_to_spd

    name = _first_strided(model)
    if name is None:
        raise fold_error(param, label, "has no strided conv for the +spd rewrite (its first strided Conv1d/2d/3d is rewritten)")
    parent, _, leaf = name.rpartition(".")
    holder = model.get_submodule(parent) if parent else model
    conv = getattr(holder, leaf)
    new = strided_to_spd(conv)
    setattr(holder, leaf, new)
    r = new.r[0] if len(set(new.r)) == 1 else "x".join(map(str, new.r))
    return model, f"{name}: {ConvSpec.from_module(conv).describe()} -> space_to_depth({r}) + {ConvSpec.from_module(new.conv).describe()}"


def build_spd_model(spec: Any, *, meta: bool = False, seed: Optional[int] = None, param: str = "model", **kwargs: Any) -> nn.Module:
    """:func:`foldconv.models.build_model`, with the +spd rewrite applied when ``spec`` asks for it (an
    :class:`SpdSpec`, or a string ending in ``+spd``); the weights are the model's own (same ``seed``).

    Example:
        >>> build_spd_model("resnet18+spd", meta=True).conv1.conv.kernel_size
        (4, 4)
    """
    spec = resolve_spd(spec, param=param)
    if not isinstance(spec, SpdSpec):
        return build_model(spec, meta=meta, seed=seed, param=param, **kwargs)
    model = build_model(spec.base, meta=meta, seed=seed, param=param, **kwargs)
    return spd_rewrite(model, label=spec.label, param=param)[0]


def spd_site(spec: Any, *, param: str = "model") -> Optional[str]:
    """What the +spd rewrite of ``spec`` replaces (:func:`spd_rewrite`'s line, built on meta); None for a model
    without the suffix.

    Example:
        >>> spd_site("resnet18") is None
        True
    """
    spec = resolve_spd(spec, param=param)
    if not isinstance(spec, SpdSpec):
        return None
    return spd_rewrite(build_model(spec.base, meta=True, param=param), label=spec.label, param=param)[1]
