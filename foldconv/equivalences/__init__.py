"""The family of fold equivalences.

- :mod:`.space_to_depth`: a strided conv is space_to_depth followed by a stride-1 conv (YOLOv5 Focus, SPD-Conv).
- :mod:`.subpixel`: a sub-pixel conv (conv + depth_to_space) is a transposed conv; ICNR initialisation.
- :mod:`.dense`: a conv is a structured fully-connected layer (D2L's translation invariance and locality).
- :mod:`.axw`: a conv is a sum of spatial-aggregation and channel-mixing products, ``sum_ab A_ab X W_ab``.

Example:
    >>> import torch
    >>> from foldconv.equivalences import focus_to_conv
    >>> focus_to_conv(torch.nn.Conv2d(12, 8, 3, padding=1)).kernel_size
    (6, 6)
"""
from .axw import AXWFactors, AXWTerm, axis_selection, axw_factors
from .dense import (
    DenseOperator,
    OffsetTensor,
    dense_operator,
    layout_permutation,
    offset_tensor,
    shift_violations,
)
from .flags import copy_requires_grad
from .space_to_depth import *  # noqa: F401,F403  (its __all__ is the public API)
from .space_to_depth import __all__ as _spd_all
from .subpixel import *  # noqa: F401,F403
from .subpixel import __all__ as _sub_all

__all__ = [
    "AXWFactors", "AXWTerm", "axis_selection", "axw_factors", "DenseOperator", "OffsetTensor", "dense_operator",
    "layout_permutation", "offset_tensor", "shift_violations", "copy_requires_grad",
] + list(_spd_all) + list(_sub_all)
