"""What :func:`~foldconv.analysis.counting.count` feeds the model: shapes, ``(shape, dtype)`` specs or example tensors.

There are two ways to say what goes in, and one name for each (the project's convention):

- ``input_shape``: full tensor shapes, batch axis included: ``(1, 3, 224, 224)``, a list of them for several
  positional inputs, or ``(shape, dtype)`` specs for inputs that are not floating point, e.g. token ids
  ``((1, 16), torch.long)`` or a mask ``((1, 16), torch.bool)`` (an :class:`InputSpec` says the same; the
  command line's ``[1, 16, long]``, a shape followed by a dtype name, too);
- ``examples``: tensors, as the model takes them: one tensor, a tuple of positional arguments (each may be a
  tuple, list or dict of tensors) or a dict of keyword arguments, like torchinfo's ``input_data``.

Either way the model runs on meta tensors of the same shapes, dtypes and strides (and on meta stand-ins of its
parameters, buffers and tensor attributes: :func:`meta_like`, :func:`tensor_attributes`); only if that fails
because the model needs data (see :func:`~foldconv.analysis.counting.count`) are real CPU tensors made:
the example tensors themselves, or for specs ``randn`` (floating, RNG seed 0), zeros (integers: valid
token ids) and ones (bool).

Example:
    >>> import torch
    >>> input_specs([(2, 3), ((2, 16), torch.long)])
    (InputSpec(shape=(2, 3), dtype=None), InputSpec(shape=(2, 16), dtype=torch.int64))
    >>> input_specs([[1, 16, "long"], [1, 16, "bool"]])  # as the command line writes them
    (InputSpec(shape=(1, 16), dtype=torch.int64), InputSpec(shape=(1, 16), dtype=torch.bool))
    >>> args, kwargs = model_inputs(examples={"ids": torch.zeros(2, 16, dtype=torch.long)})
    >>> args, kwargs["ids"].device.type, kwargs["ids"].dtype
    ((), 'meta', torch.int64)
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_map

from ...errors import fold_error

__all__ = [
    "InputSpec", "InputLike", "dtype_named", "input_specs", "normalize_input_shapes", "model_inputs", "input_leaves", "meta_like",
    "real_like", "tensor_attributes",
]

Shape = Tuple[int, ...]
_SHAPE_RULE = (
    "must be a shape such as (1, 3, 224, 224) (batch axis included), a (shape, dtype) spec such as "
    "((1, 16), torch.long) or [1, 16, 'long'], or a list of those (one per positional input)"
)
_DTYPE_RULE = "names no torch dtype (long, int32, bool, float16, bfloat16, float32, ...) after its shape"


def _bad_dtype_name(value: Any) -> bool:
    """A shape followed by a string that names no dtype (``[1, 16, "lnog"]``)."""
    return (
        isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and len(value) >= 2
        and isinstance(value[-1], str) and dtype_named(value[-1]) is None
    )


_PLAIN_SHAPE_RULE = "must be a shape such as (1, 3, 224, 224) (batch axis included) or a list of such shapes"


@dataclass(frozen=True)
class InputSpec:
    """One input by its full shape and dtype (``None``: the model's floating dtype).

    Example:
        >>> InputSpec((1, 16), torch.long)
        InputSpec(shape=(1, 16), dtype=torch.int64)
    """

    shape: Shape
    dtype: Optional[torch.dtype] = None


InputLike = Union[Sequence[int], InputSpec, Tuple[Sequence[int], torch.dtype], Sequence[Any]]


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_shape(value: Any) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, (str, bytes))
        and len(value) > 0
        and all(_is_int(s) for s in value)
    )


def dtype_named(value: Any) -> Optional[torch.dtype]:
    """``value`` as a torch dtype: a dtype, or its name as torch spells it (``"long"``, ``"int64"``, ``"bool"``,
    ``"float16"``, ``"torch.bfloat16"``); None for anything else.

    Example:
        >>> dtype_named("long"), dtype_named("torch.bool"), dtype_named("floaty")
        (torch.int64, torch.bool, None)
    """
    if isinstance(value, torch.dtype):
        return value
    if not isinstance(value, str):
        return None
    found = getattr(torch, value[len("torch."):] if value.startswith("torch.") else value, None)
    return found if isinstance(found, torch.dtype) else None


def _is_flat_spec(value: Any) -> bool:
    """``[1, 16, "long"]``: a shape followed by a dtype (its name), as the command line writes a spec."""
    return (
        isinstance(value, Sequence)
        and not isinstance(value, (str, bytes))
        and len(value) >= 2
        and dtype_named(value[-1]) is not None
        and all(_is_int(s) for s in value[:-1])
    )


def _is_spec(value: Any) -> bool:
    if isinstance(value, InputSpec) or _is_flat_spec(value):
        return True
    return (
        isinstance(value, Sequence)
        and not isinstance(value, (str, bytes))
        and len(value) == 2
        and dtype_named(value[1]) is not None
        and isinstance(value[0], Sequence)
    )


def _spec(value: Any, whole: Any) -> InputSpec:
    if isinstance(value, InputSpec):
        shape, dtype = value.shape, value.dtype
    elif _is_flat_spec(value):
        shape, dtype = value[:-1], dtype_named(value[-1])
    else:
        shape, dtype = value[0], dtype_named(value[1]) if value[1] is not None else None
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if not _is_shape(shape) or not all(s >= 1 for s in shape):
        raise fold_error("input_shape", whole, "every shape must be a non-empty sequence of integers >= 1")
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise fold_error("input_shape", whole, "a spec's dtype must be a torch.dtype such as torch.long")
    return InputSpec(tuple(int(s) for s in shape), dtype)


def input_specs(input_shape: InputLike) -> Tuple[InputSpec, ...]:
    """``input_shape`` as one :class:`InputSpec` per positional input, validated (FoldError naming ``input_shape``).

    Example:
        >>> input_specs((1, 3, 8, 8))
        (InputSpec(shape=(1, 3, 8, 8), dtype=None),)
        >>> input_specs(((4, 7), torch.bool))
        (InputSpec(shape=(4, 7), dtype=torch.bool),)
    """
    if isinstance(input_shape, torch.Size):
        input_shape = tuple(input_shape)
    if (
        isinstance(input_shape, torch.Tensor)
        or not isinstance(input_shape, (Sequence, InputSpec))
        or isinstance(input_shape, (str, bytes))
    ):
        raise fold_error("input_shape", input_shape, _SHAPE_RULE)
    if isinstance(input_shape, InputSpec) or _is_spec(input_shape):
        return (_spec(input_shape, input_shape),)
    if _bad_dtype_name(input_shape) or any(_bad_dtype_name(item) for item in input_shape):
        raise fold_error("input_shape", input_shape, _DTYPE_RULE)
    if len(input_shape) == 0:
        raise fold_error("input_shape", input_shape, _SHAPE_RULE)
    if all(_is_int(s) for s in input_shape):
        return (_spec((input_shape, None), input_shape),)
    items = []
    for item in input_shape:
        if isinstance(item, torch.Size):
            item = tuple(item)
        if _is_spec(item):
            items.append(_spec(item, input_shape))
        elif isinstance(item, Sequence) and not isinstance(item, (str, bytes)):
            items.append(_spec((item, None), input_shape))
        else:
            raise fold_error("input_shape", input_shape, "every shape must be a non-empty sequence of integers >= 1")
    return tuple(items)


def normalize_input_shapes(input_shape: Sequence[Any]) -> Tuple[Shape, ...]:
    """One full input shape ``(N, C, H, W)`` or a sequence of them (one per positional input), validated
    (the fold view's inputs: plain float shapes, no dtype specs).

    Example:
        >>> normalize_input_shapes((1, 3, 8, 8)), normalize_input_shapes([(2, 4), [2, 5]])
        (((1, 3, 8, 8),), ((2, 4), (2, 5)))
    """
    if isinstance(input_shape, torch.Size):
        input_shape = tuple(input_shape)
    if not isinstance(input_shape, Sequence) or isinstance(input_shape, (str, bytes)) or len(input_shape) == 0:
        raise fold_error("input_shape", input_shape, _PLAIN_SHAPE_RULE)
    shapes = [input_shape] if all(_is_int(s) for s in input_shape) else list(input_shape)
    result = []
    for shape in shapes:
        if isinstance(shape, torch.Size):
            shape = tuple(shape)
        if (
            not isinstance(shape, Sequence)
            or isinstance(shape, (str, bytes))
            or len(shape) == 0
            or not all(_is_int(s) and s >= 1 for s in shape)
        ):
            raise fold_error("input_shape", input_shape, "every shape must be a non-empty sequence of integers >= 1")
        result.append(tuple(int(s) for s in shape))
    return tuple(result)


def _split_examples(examples: Any) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
    if isinstance(examples, torch.Tensor):
        return (examples,), {}
    if isinstance(examples, Mapping):
        if not all(isinstance(k, str) for k in examples):
            raise fold_error("examples", examples, "a dict of examples is passed as keyword arguments: its keys must be strings")
        return (), dict(examples)
    if isinstance(examples, (tuple, list)):
        return tuple(examples), {}
    raise fold_error(
        "examples", examples, "must be a tensor, a tuple of positional arguments or a dict of keyword arguments"
    )


def input_leaves(args: Tuple[Any, ...], kwargs: Mapping[str, Any]) -> Tuple[torch.Tensor, ...]:
    """The tensors among the model's arguments, in order (positional, then keyword).

    Example:
        >>> [t.shape for t in input_leaves((torch.zeros(2), 3), {"m": [torch.zeros(1)]})]
        [torch.Size([2]), torch.Size([1])]
    """
    return tuple(t for t in tree_flatten((args, dict(kwargs)))[0] if isinstance(t, torch.Tensor))


def _real(spec: InputSpec, dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    if dtype.is_floating_point or dtype.is_complex:
        return torch.randn(spec.shape, generator=generator, dtype=dtype)
    if dtype == torch.bool:
        return torch.ones(spec.shape, dtype=dtype)
    return torch.zeros(spec.shape, dtype=dtype)


def model_inputs(
    input_shape: Optional[InputLike] = None,
    *,
    examples: Any = None,
    dtype: Optional[torch.dtype] = None,
    real: bool = False,
) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
    """``(args, kwargs)`` to call the model with: meta tensors, or real CPU tensors with ``real=True``.

    Exactly one of ``input_shape`` and ``examples`` is given. ``dtype`` is the dtype of floating inputs
    (specs without a dtype take it too; ``None`` keeps example dtypes and gives specs float32).

    Example:
        >>> (x,), _ = model_inputs([(2, 3)], dtype=torch.float16)
        >>> x.shape, x.dtype, x.device.type
        (torch.Size([2, 3]), torch.float16, 'meta')
        >>> (t,), _ = model_inputs(examples=(torch.ones(2, 2),), real=True)
        >>> t.sum().item()
        4.0
    """
    if input_shape is not None and examples is not None:
        raise fold_error("examples", type(examples).__name__, "give input_shape or examples, not both")
    if examples is None:
        if input_shape is None:
            raise fold_error(
                "input_shape", None, "give input_shape (full shapes, or (shape, dtype) specs) or examples (tensors)"
            )
        generator = torch.Generator().manual_seed(0)
        tensors = []
        for spec in input_specs(input_shape):
            target = spec.dtype or dtype or torch.float32
            tensors.append(_real(spec, target, generator) if real else torch.empty(spec.shape, dtype=target, device="meta"))
        return tuple(tensors), {}

    args, kwargs = _split_examples(examples)
    if not input_leaves(args, kwargs):
        raise fold_error("examples", type(examples).__name__, "must hold at least one tensor")
    generator = torch.Generator().manual_seed(0)

    def convert(value: Any) -> Any:
        if not isinstance(value, torch.Tensor):
            return value
        if value.layout != torch.strided:
            raise fold_error("examples", f"a {value.layout} tensor", "must hold dense (strided) tensors")
        target = dtype if (dtype is not None and value.is_floating_point()) else value.dtype
        if not real:
            out = torch.empty_strided(value.shape, value.stride(), dtype=target, device="meta")
        elif value.device.type == "meta":  # a meta example has no data: make some, as for a spec
            out = _real(InputSpec(tuple(value.shape)), target, generator)
        else:
            out = value.detach().to("cpu", target)
        return out.requires_grad_(True) if value.requires_grad and target.is_floating_point else out

    return tree_map(convert, args), tree_map(convert, kwargs)


# ------------------------------------------------------------------- parameters and buffers to run with


def _target_dtype(t: torch.Tensor, dtype: Optional[torch.dtype]) -> torch.dtype:
    return dtype if (dtype is not None and t.is_floating_point()) else t.dtype


def _as_parameter(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return nn.Parameter(t, requires_grad=like.requires_grad) if isinstance(like, nn.Parameter) else t


def meta_like(t: torch.Tensor, dtype: Optional[torch.dtype]) -> torch.Tensor:
    """A meta stand-in for a parameter or buffer (a Parameter stays one; ``dtype`` recasts floating ones).

    Example:
        >>> p = meta_like(torch.nn.Parameter(torch.ones(2)), torch.float16)
        >>> type(p).__name__, p.device.type, p.dtype
        ('Parameter', 'meta', torch.float16)
    """
    return _as_parameter(torch.empty_like(t, device="meta", dtype=_target_dtype(t, dtype)), t)


def real_like(t: torch.Tensor, dtype: Optional[torch.dtype], generator: torch.Generator) -> torch.Tensor:
    """A CPU stand-in for the real-tensor fallback: the tensor itself when it already is one, else seeded
    values (parameters ~ N(0, 0.02²); float buffers such as running variances 1; integer buffers 0).

    Example:
        >>> real_like(torch.empty(3, device="meta"), None, torch.Generator()).tolist()
        [1.0, 1.0, 1.0]
    """
    target = _target_dtype(t, dtype)
    if t.device.type == "cpu" and t.dtype == target:
        return t
    if t.device.type != "meta":
        return _as_parameter(t.detach().to("cpu", target), t)
    if not (target.is_floating_point or target.is_complex):
        real = torch.zeros(t.shape, dtype=target)
    elif isinstance(t, nn.Parameter):
        real = (torch.randn(t.shape, generator=generator) * 0.02).to(target)
    else:
        real = torch.ones(t.shape, dtype=target)
    return _as_parameter(real, t)


_MODULE_KEYS = frozenset(nn.Module().__dict__) - {"training"}


def tensor_attributes(modules: Iterable[nn.Module], generator: Optional[torch.Generator]) -> List[Tuple[nn.Module, str, Any, Any]]:
    """``(module, attribute, value, value to run with)`` for plain attributes holding tensors (or lists of
    them), such as torchvision's cached anchors: a forward may replace them (on meta: with meta tensors),
    so they are put back afterwards; for a run on real tensors (``generator`` given) meta ones get data.

    Example:
        >>> m = torch.nn.Module(); m.anchors = [torch.zeros(2, device="meta")]
        >>> [(name, run[0].device.type) for _, name, _, run in tensor_attributes([m], torch.Generator())]
        [('anchors', 'cpu')]
    """
    found = []
    kinds = (torch.Tensor, list, tuple)
    for module in modules:
        # nn.Module's own bookkeeping (hook dicts, flags) is skipped by a C-level set difference first:
        # models have thousands of attributes and this runs on every count
        own = module.__dict__
        for attribute in own.keys() - _MODULE_KEYS:
            value = own[attribute]
            if not isinstance(value, kinds):
                continue
            if isinstance(value, torch.Tensor):
                items: Sequence[Any] = (value,)
            elif value and isinstance(value[0], torch.Tensor) and all(isinstance(t, torch.Tensor) for t in value):
                items = value
            else:
                continue
            run_with = value
            if generator is not None and any(t.is_meta for t in items):
                real = [real_like(t, None, generator) for t in items]
                run_with = type(value)(real) if isinstance(value, (list, tuple)) else real[0]
            found.append((module, attribute, value, run_with))
    return found
