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
from typing import Any, Dict, Iterator, List, Optional, Sequence

import torch
from torch import nn

from ...errors import fold_error
from .counter import ShapeLike, count

__all__ = [
    "classification_models",
    "meta_model",
    "published_figures",
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

    if name not in classification_models() and name not in torchvision.models.list_models():
        raise fold_error("name", name, "is not a torchvision model name (see torchvision.models.list_models())")
    try:
        with torch.device("meta"):
            return torchvision.models.get_model(name, weights=None, **kwargs)
    except (NotImplementedError, RuntimeError):
        pass
    with _register_on_meta():
        model = torchvision.models.get_model(name, weights=None, **kwargs)
    return model


def published_figures(name: str) -> Dict[str, Any]:
    """torchvision's published figures for the DEFAULT weights of a classification model.

    Returns ``num_params``, ``gmacs`` (torchvision's ``_ops``), ``input_shape`` (batch 1 at the weights'
    crop size) and ``kwargs``: the constructor arguments the weights imply (ViT at a larger crop needs
    ``image_size``, GoogLeNet's released weights drop the auxiliary heads).

    Example:
        >>> f = published_figures("resnet50")
        >>> f["num_params"], f["gmacs"], f["input_shape"]
        (25557032, 4.089, (1, 3, 224, 224))
    """
    import torchvision

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
    return {
        "weights": str(weights),
        "num_params": int(weights.meta["num_params"]),
        "gmacs": float(weights.meta["_ops"]),
        "input_shape": (1, 3, crop, crop),
        "kwargs": kwargs,
    }


def validate_count(model: nn.Module, input_shape: ShapeLike, name: Optional[str] = None) -> Dict[str, Any]:
    """Count ``model`` under ``FlopCounterMode`` in the same pass and compare.

    ``macs_ok``: MACs of every op equal FlopCounterMode's FLOPs / 2 for that op (and in total);
    ``params_ok``: the parameter total equals ``sum(p.numel() for p in model.parameters())``.

    Example:
        >>> row = validate_count(torch.nn.Conv2d(16, 4, 3, groups=2), (2, 16, 9, 9))
        >>> row["macs"], row["flop_counter_macs"], row["macs_ok"], row["params_ok"]
        (28224, 28224, True, True)
    """
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        report = count(model, input_shape, name=name)
    theirs = {str(op).split(".")[-1]: int(v) for op, v in counter.get_flop_counts().get("Global", {}).items()}
    ours = report.macs_by_op
    per_op_ok = all(2 * ours.get(op, 0) == flops for op, flops in theirs.items()) and all(
        op in theirs for op in ours
    )
    numel = sum(p.numel() for p in model.parameters())
    total = counter.get_total_flops()
    return {
        "model": report.model,
        "input_shape": report.input_shapes[0],
        "params": report.params,
        "numel": numel,
        "params_ok": report.params == numel,
        "macs": report.macs,
        "flop_counter_macs": total // 2,
        "macs_ok": 2 * report.macs == total and per_op_ok,
        "report": report,
    }


def validate_zoo(names: Optional[Sequence[str]] = None, published: bool = True) -> List[Dict[str, Any]]:
    """:func:`validate_count` for each model (default: the whole classification zoo), built on meta.

    With ``published=True`` each model is built and counted the way its DEFAULT weights were measured
    (:func:`published_figures`) and the rows add ``published_params_ok`` and ``published_gmacs_ok``;
    otherwise every model runs at ``(1, 3, 224, 224)``.

    Example:
        >>> row = validate_zoo(["alexnet"])[0]
        >>> row["macs_ok"], row["params_ok"], row["published_params_ok"], row["published_gmacs_ok"]
        (True, True, True, True)
    """
    rows = []
    for name in names if names is not None else classification_models():
        figures = published_figures(name) if published else {"kwargs": {}, "input_shape": (1, 3, 224, 224)}
        model = meta_model(name, **figures["kwargs"])
        row = validate_count(model, figures["input_shape"], name=name)
        row.pop("report")
        if published:
            row["published_params"] = figures["num_params"]
            row["published_gmacs"] = figures["gmacs"]
            row["gmacs"] = round(row["macs"] / 1e9, 3)
            row["published_params_ok"] = row["params"] == figures["num_params"]
            row["published_gmacs_ok"] = row["gmacs"] == figures["gmacs"]
        rows.append(row)
    return rows
