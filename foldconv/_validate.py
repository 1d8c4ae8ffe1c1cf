"""The one home of foldconv's input rules: dimensionality, per-axis integers, conv types, output sizes.

The dimension rule, written once:

- a module or a spec knows its spatial dims (``nn.Conv2d`` has 2, ``ConvSpec.dims``), and an int ``r`` means
  that many axes with the same factor;
- a bare tensor with an int ``r`` and no ``dims`` means 2-D, exactly as ``torch.pixel_shuffle`` does: its
  last three axes are ``(C, H, W)`` and any axes before them are batch axes;
- a per-axis tuple carries its own length; any contradiction between two sources of dims is a FoldError.

Config files and command lines spell per-axis factors as ``"2x4"`` (:func:`parse_factors`).

Example:
    >>> per_axis_ints(2, 3, "r", 1), resolve_dims((2, 4), None, "r")
    ((2, 2, 2), 2)
    >>> conv_output_size((8, 8), (3, 3), (2, 2), (1, 1), (1, 1))
    (4, 4)
"""
from __future__ import annotations

import contextlib
import math
import numbers
from typing import Any, Iterator, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .errors import fold_error

__all__ = [
    "IntOrTuple",
    "SPATIAL_NAMES",
    "FACTOR_NAMES",
    "CONV_TYPES",
    "CONV_TRANSPOSE_TYPES",
    "require_dims",
    "require_int",
    "require_bool",
    "parse_factors",
    "per_axis_ints",
    "resolve_dims",
    "conv_output_size",
    "conv_transpose_output_size",
    "require_conv",
    "require_input",
    "MAX_KERNEL_ELEMENTS",
    "require_numel",
    "MAX_ALLOCATION_BYTES",
    "allocation_limit",
    "require_allocation",
    "format_bytes",
]

IntOrTuple = Union[int, Sequence[int]]

#: Names of the spatial axes and of the fold factors, per number of spatial dims (einops axis names).
SPATIAL_NAMES = {1: ("w",), 2: ("h", "w"), 3: ("d", "h", "w")}
FACTOR_NAMES = {1: ("rw",), 2: ("rh", "rw"), 3: ("rd", "rh", "rw")}

#: The largest weight (in elements) foldconv materialises: 2**28 float32 entries are 1 GiB. Folding a conv whose
#: dilation, groups or factors would ask for more is refused with a FoldError instead of exhausting memory.
MAX_KERNEL_ELEMENTS = 2**28

#: The most bytes one foldconv call may allocate from a shape it was given: 8 GiB. Every entry point that runs a
#: model on a user-given input shape or builds a tensor from one (rewrite, the receptive-field measurements, the
#: dense operator, ...) estimates what it would allocate first (:func:`require_allocation`) and raises a FoldError
#: above this limit instead of exhausting the machine's memory. The one setting: assign it, or change it for a block
#: of code with :func:`allocation_limit` (``foldconv.allocation_limit``).
MAX_ALLOCATION_BYTES = 8 * 2**30

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_TRANSPOSE_TYPES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _is_int(value: Any) -> bool:
    kind = type(value)
    if kind is int:  # the common case first: the ABC check below costs ten times more
        return True
    return kind is not bool and isinstance(value, numbers.Integral)


def require_int(value: Any, param: str, minimum: int) -> int:
    """A plain integer ``>= minimum`` (bools, floats, tensors refused); FoldError naming ``param`` otherwise.

    Example:
        >>> require_int(3, "groups", 1)
        3
    """
    if not _is_int(value) or value < minimum:
        raise fold_error(param, value, f"must be an integer >= {minimum}")
    return int(value)


def require_bool(value: Any, param: str) -> bool:
    """A real ``bool`` (``"no"``, ``0`` or ``None`` refused: they would silently read as True or False).

    Example:
        >>> require_bool(False, "bias")
        False
    """
    if not isinstance(value, bool):
        raise fold_error(param, value, "must be a bool (True or False)")
    return value


def parse_factors(value: Any, param: str = "r") -> Any:
    """Per-axis integers in the syntax of config files and command lines: ``4``, ``"4"``, ``"2x4"``, ``[2, 4]``.

    Strings become an int or a tuple, lists become tuples; anything else is returned unchanged, so that
    :func:`per_axis_ints` validates the numbers (``>= 1``, one per axis) and names ``param``.

    Example:
        >>> parse_factors("2x4"), parse_factors("3"), parse_factors(2), parse_factors([2, "1"])
        ((2, 4), 3, 2, (2, 1))
    """
    kind = type(value)
    if kind is int or (kind is tuple and not any(type(v) is str for v in value)):
        return value  # already numbers (the hot path): per_axis_ints validates them
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            return tuple(int(v) for v in text.split("x")) if "x" in text else int(text)
        except ValueError:
            raise fold_error(param, value, "must be an integer >= 1 or one per spatial axis") from None
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return tuple(parse_factors(v, param) if isinstance(v, str) else v for v in value)
    return value


def require_dims(dims: Any, param: str = "dims") -> int:
    """Spatial dims must be 1, 2 or 3.

    Example:
        >>> require_dims(3)
        3
    """
    if not _is_int(dims) or dims not in SPATIAL_NAMES:
        raise fold_error(param, dims, "must be 1, 2 or 3 spatial dims")
    return int(dims)


def per_axis_ints(value: IntOrTuple, dims: int, param: str, minimum: int) -> Tuple[int, ...]:
    """An int (repeated) or one int per spatial axis, each ``>= minimum``; FoldError otherwise.

    Example:
        >>> per_axis_ints(1, 3, "stride", 1), per_axis_ints((0, 2), 2, "padding", 0)
        ((1, 1, 1), (0, 2))
    """
    kind = type(value)
    if kind is int and value >= minimum:  # the hot paths: a plain int, or a tuple of plain ints, per axis
        return (value,) * dims
    if kind is tuple and len(value) == dims and all(type(v) is int and v >= minimum for v in value):
        return value
    if isinstance(value, (bool, torch.Tensor)):
        raise fold_error(param, value, f"must be an integer >= {minimum} or one per spatial axis")
    if isinstance(value, numbers.Integral):
        values: Tuple = (value,) * dims
    elif isinstance(value, Sequence) and not isinstance(value, str):
        values = tuple(value)
        if len(values) != dims:
            raise fold_error(param, value, f"needs one value per spatial axis ({dims}), got {len(values)}")
    else:
        raise fold_error(param, value, f"must be an integer >= {minimum} or one per spatial axis")
    for v in values:
        if not _is_int(v) or v < minimum:
            raise fold_error(param, value, f"must be an integer >= {minimum} or one per spatial axis")  # one wording, whichever entry broke it
    return tuple(int(v) for v in values)


def resolve_dims(value: Any, dims: Optional[int], param: str, *, default: int = 2) -> int:
    """The spatial dims implied by a per-axis value and an explicit ``dims`` (either may be missing).

    A tuple's length is its dims; an int implies nothing and takes ``dims`` or ``default`` (2, like
    ``torch.pixel_shuffle`` on a bare tensor). A tuple whose length contradicts ``dims`` is a FoldError.

    Example:
        >>> resolve_dims(2, None, "r"), resolve_dims(2, 3, "r"), resolve_dims((2, 2, 2), None, "r")
        (2, 3, 3)
    """
    if dims is not None:
        dims = require_dims(dims)
    if isinstance(value, Sequence) and not isinstance(value, str):
        n = len(value)
        if dims is not None and n != dims:
            raise fold_error(param, tuple(value), f"has {n} entries but the operand has {dims} spatial dims")
        return require_dims(n, param)
    return dims if dims is not None else default


def conv_output_size(
    input_size: Sequence[int],
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> Tuple[int, ...]:
    """torch's output size per axis, ``(n + 2p - d(k-1) - 1) // s + 1`` (may be < 1: callers decide).

    Example:
        >>> conv_output_size((7,), (3,), (2,), (0,), (1,))
        (3,)
    """
    return tuple(
        (n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in zip(input_size, kernel_size, stride, padding, dilation)
    )


def conv_transpose_output_size(
    input_size: Sequence[int],
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    output_padding: Sequence[int],
) -> Tuple[int, ...]:
    """torch's transposed-conv output size per axis, ``(n-1)s - 2p + d(k-1) + op + 1`` (may be < 1).

    Example:
        >>> conv_transpose_output_size((3,), (4,), (2,), (1,), (1,), (0,))
        (6,)
    """
    return tuple(
        (n - 1) * s - 2 * p + d * (k - 1) + op + 1
        for n, k, s, p, d, op in zip(input_size, kernel_size, stride, padding, dilation, output_padding)
    )


def require_numel(shape: Sequence[int], param: str, value: Any, what: str = "a weight") -> int:
    """The element count of a tensor about to be built; FoldError naming ``param`` above MAX_KERNEL_ELEMENTS, or
    when the tensor in float64 would exceed foldconv's allocation limit (:func:`allocation_limit`).

    Example:
        >>> require_numel((64, 256, 3, 3), "kernel_size", 3)
        147456
    """
    n = math.prod(shape)
    if n > MAX_KERNEL_ELEMENTS:
        raise fold_error(
            param,
            value,
            f"would materialise {what} of shape {tuple(shape)} ({n:,} elements), above "
            f"MAX_KERNEL_ELEMENTS = 2**28 = {MAX_KERNEL_ELEMENTS:,}",
        )
    # float64: the checks hold every built tensor in float64 too
    require_allocation(8 * n, param=param, value=value, what=f"{what} of shape {tuple(shape)} in float64")
    return n


def format_bytes(nbytes: float) -> str:
    """``nbytes`` in binary units, two decimals.

    Example:
        >>> format_bytes(3 * 2**30), format_bytes(1536), format_bytes(12)
        ('3.00 GiB', '1.50 KiB', '12 B')
    """
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= size:
            return f"{nbytes / size:.2f} {unit}"
    return f"{int(nbytes)} B"


@contextlib.contextmanager
def allocation_limit(nbytes: int) -> Iterator[int]:
    """Change :data:`MAX_ALLOCATION_BYTES` for a block of code (restored afterwards, also on an error).

    Args:
        nbytes: the new limit in bytes, a positive int (the default limit is 8 GiB).

    Yields:
        The limit in force inside the block (``nbytes`` as an int).

    Raises:
        FoldError: naming ``nbytes`` when it is not a positive integer.

    Example:
        >>> with allocation_limit(2**20):
        ...     require_allocation(2**21, param="input_shape", value=(1, 3, 512, 512), what="a forward pass")
        Traceback (most recent call last):
        ...
        foldconv.errors.FoldError: input_shape=(1, 3, 512, 512): would allocate about 2.00 MiB for a forward pass, above foldconv's allocation limit of 1.00 MiB (MAX_ALLOCATION_BYTES; raise it with foldconv.allocation_limit(nbytes))
    """
    global MAX_ALLOCATION_BYTES
    require_int(nbytes, "nbytes", 1)
    before, MAX_ALLOCATION_BYTES = MAX_ALLOCATION_BYTES, int(nbytes)
    try:
        yield MAX_ALLOCATION_BYTES
    finally:
        MAX_ALLOCATION_BYTES = before


def require_allocation(nbytes: float, *, param: str, value: Any, what: str) -> int:
    """``nbytes``, the estimate of what a call is about to allocate; a FoldError naming ``param`` (the user's
    shape) and the limit when it is above :data:`MAX_ALLOCATION_BYTES`. The one memory guard of foldconv.

    Example:
        >>> require_allocation(8 * 224 * 224 * 3, param="input_shape", value=(1, 3, 224, 224), what="an input")
        1204224
    """
    if nbytes > MAX_ALLOCATION_BYTES:
        raise fold_error(
            param, value,
            f"would allocate about {format_bytes(nbytes)} for {what}, above foldconv's allocation limit of "
            f"{format_bytes(MAX_ALLOCATION_BYTES)} (MAX_ALLOCATION_BYTES; raise it with foldconv.allocation_limit(nbytes))",
        )
    return int(nbytes)


def require_conv(module: Any, param: str = "conv") -> int:
    """The spatial dims of an ``nn.Conv1d/2d/3d``; FoldError for anything else.

    Example:
        >>> require_conv(nn.Conv3d(1, 1, 1))
        3
    """
    if not isinstance(module, CONV_TYPES):
        raise fold_error(param, type(module).__name__, "must be an nn.Conv1d, nn.Conv2d or nn.Conv3d")
    return len(module.kernel_size)


def traced_input(x: Any) -> bool:
    """Whether ``x`` is being traced rather than run: a torch.fx Proxy (symbolic tracing), or any input while
    TorchScript traces (the ONNX exporter). A module's forward then validates nothing and reads no size as a
    Python int, so that fx can record it and an exported model runs at every input size.

    Example:
        >>> traced_input(torch.zeros(1)), traced_input(torch.fx.Proxy(torch.fx.Graph().placeholder("x")))
        (False, True)
    """
    return torch.jit.is_tracing() or isinstance(x, torch.fx.Proxy)


def require_input(x: Any, dims: int, *, channels: Optional[int] = None, param: str = "x") -> Tuple[int, ...]:
    """The spatial size of an input ``(..., C, *S)`` with ``dims`` spatial axes (and ``channels`` channels).

    Example:
        >>> require_input(torch.zeros(2, 3, 5, 7), 2, channels=3)
        (5, 7)
    """
    if not isinstance(x, torch.Tensor):
        raise fold_error(param, type(x).__name__, "must be a torch.Tensor")
    if x.dim() < dims + 1:
        raise fold_error(f"{param}.shape", tuple(x.shape), f"needs at least {dims + 1} dims (channels + {dims} spatial)")
    if channels is not None and x.shape[-dims - 1] != channels:
        raise fold_error(f"{param}.shape", tuple(x.shape), f"needs {channels} channels at axis {-dims - 1}")
    # int(): under the ONNX (TorchScript) exporter's tracing the sizes are 0-d tensors, which later checks reject
    return tuple(int(s) for s in x.shape[-dims:])


def require_device(device: Any, param: str = "device") -> torch.device:
    """The ``torch.device`` for ``device`` (None means cpu) if this machine has it; otherwise a FoldError that
    says which device to use instead. The one device rule of the library and the apps.

    Example:
        >>> require_device("cpu"), require_device(None)
        (device(type='cpu'), device(type='cpu'))
        >>> require_device("gpu")
        Traceback (most recent call last):
        ...
        foldconv.errors.FoldError: device='gpu': must be a torch device such as 'cpu' or 'cuda:0'
    """
    if device is None:
        return torch.device("cpu")
    if isinstance(device, bool) or not isinstance(device, (str, torch.device, int)):
        raise fold_error(param, device, "must be a torch device such as 'cpu' or 'cuda:0'")
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise fold_error(param, device, "must be a torch device such as 'cpu' or 'cuda:0'") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise fold_error(param, device, "needs CUDA, which this machine does not have (torch.cuda.is_available() is False): use device=cpu")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise fold_error(param, device, f"is not one of this machine's {torch.cuda.device_count()} CUDA devices")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise fold_error(param, device, "needs Apple's MPS, which this machine does not have: use device=cpu")
    try:
        torch.zeros(1, device=parsed)  # any other backend: does it actually run here?
    except (RuntimeError, AssertionError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise fold_error(param, device, f"is not available here: {first}: use device=cpu") from None
    return parsed
