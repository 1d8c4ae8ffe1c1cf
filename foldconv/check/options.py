"""The checker's settings, validated once: trials, integer range, degree, tolerance, seed, device, dtypes.

:func:`validate_options` turns the keyword arguments of :func:`~foldconv.check.check_equivalence` and
:func:`~foldconv.check.check_fold` into a frozen :class:`CheckOptions` (every bad value a FoldError naming it),
so the trials themselves never validate anything.

Example:
    >>> validate_options(trials=2, dtypes="bfloat16").dtypes
    (torch.bfloat16,)
"""
from __future__ import annotations

import contextlib
import math
import numbers
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence, Tuple, Union

import torch

from .._validate import require_device, require_int
from ..errors import fold_error
from .exact import EXACT_RANGE, MAX_EXACT_RANGE

__all__ = ["CheckOptions", "validate_options", "as_float_dtype", "no_tf32", "MAX_TRIALS"]

#: Largest ``trials``: each trial runs both sides once.
MAX_TRIALS = 1000
_FLOAT_DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class CheckOptions:
    """Validated settings of one check (see :func:`~foldconv.check.check_equivalence` for their meaning)."""

    dtypes: Tuple[torch.dtype, ...]
    trials: int
    exact_range: int
    degree: Optional[int]
    rtol: float
    seed: int
    device: torch.device


def as_float_dtype(value: Any, param: str = "dtype") -> torch.dtype:
    """A floating torch dtype from a dtype or its name (``"float32"``, ``"torch.bfloat16"``); FoldError otherwise.

    Example:
        >>> as_float_dtype("bfloat16"), as_float_dtype(torch.float16)
        (torch.bfloat16, torch.float16)
    """
    if isinstance(value, torch.dtype) and value in _FLOAT_DTYPES.values():
        return value
    if isinstance(value, str) and value.replace("torch.", "") in _FLOAT_DTYPES:
        return _FLOAT_DTYPES[value.replace("torch.", "")]
    raise fold_error(param, value, f"must be a floating dtype or its name, one of {sorted(_FLOAT_DTYPES)}")


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"`` (the key of ``EquivalenceReport.errors``)."""
    return str(dtype).replace("torch.", "")


def validate_options(
    *,
    dtypes: Sequence[Union[torch.dtype, str]] = (torch.float32,),
    trials: int = 3,
    exact_range: int = EXACT_RANGE,
    degree: Optional[int] = None,
    rtol: float = 1e-10,
    seed: int = 0,
    device: Union[str, torch.device] = "cpu",
) -> CheckOptions:
    """Validate a check's settings once; every bad value is a FoldError naming its parameter.

    Example:
        >>> validate_options(exact_range=0)
        Traceback (most recent call last):
        ...
        foldconv.errors.FoldError: exact_range=0: must be an integer >= 1
    """
    trials = require_int(trials, "trials", 1)
    if trials > MAX_TRIALS:
        raise fold_error("trials", trials, f"must be at most {MAX_TRIALS} (3 trials already bound a false 'equivalent' below 1e-9)")
    device = require_device(device)
    exact_range = require_int(exact_range, "exact_range", 1)
    if exact_range > MAX_EXACT_RANGE:
        raise fold_error("exact_range", exact_range, "must be in [1, 2**20] so products stay exact in float64")
    if degree is not None:
        degree = require_int(degree, "degree", 1)
    if isinstance(rtol, bool) or not isinstance(rtol, numbers.Real) or not math.isfinite(rtol) or rtol < 0:
        raise fold_error("rtol", rtol, "must be a finite number >= 0")
    seed = require_int(seed, "seed", 0)
    if isinstance(dtypes, (str, torch.dtype)):
        dtypes = (dtypes,)
    if not isinstance(dtypes, Sequence):
        raise fold_error("dtypes", dtypes, "must be a sequence of floating dtypes or their names")
    return CheckOptions(tuple(as_float_dtype(d, "dtypes") for d in dtypes), trials, exact_range, degree, float(rtol), seed, device)


@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    """Switch TF32 off for matmul and cuDNN inside the block (restored afterwards).

    Example:
        >>> with no_tf32():
        ...     torch.backends.cuda.matmul.allow_tf32
        False
    """
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
