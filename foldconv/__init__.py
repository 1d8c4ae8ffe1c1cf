"""foldconv: when is a convolution over C^2 channels the same computation as a big strided
single-channel convolution over the pixel-shuffled map, and when is it not?

Example:
    >>> import torch
    >>> from foldconv import check_fold
    >>> bool(check_fold(torch.nn.Conv2d(16, 4, 3, padding=1), 4))
    True
"""
from .check import (
    Derived,
    EquivalenceReport,
    ErrorStats,
    Verdict,
    check_equivalence,
    check_fold,
    derived,
    no_tf32,
)
from .errors import FoldError
from .fold import (
    FoldedWeight,
    FoldPlan,
    expand_dilation,
    expand_groups,
    fold_conv,
    fold_weight,
    groups_aligned,
    pad_to_multiple,
    plan_fold,
    plan_unfold,
    unfold_conv,
    unfold_weight,
)
from .layout import (
    DepthToSpace,
    SpaceToDepth,
    depth_to_space,
    fold_channel_map,
    normalize_order,
    normalize_r,
    order_string,
    space_to_depth,
)
from .predict import Literal, Outcome, Prediction, fold_following, predict_fold, predict_following, predict_space_to_depth
from .specs import ConvSpec, FoldSpec, conv_class

__version__ = "0.1.0"

__all__ = [
    "ConvSpec",
    "DepthToSpace",
    "Derived",
    "EquivalenceReport",
    "ErrorStats",
    "FoldError",
    "FoldPlan",
    "FoldSpec",
    "FoldedWeight",
    "Literal",
    "Outcome",
    "Prediction",
    "SpaceToDepth",
    "Verdict",
    "check_equivalence",
    "check_fold",
    "conv_class",
    "depth_to_space",
    "derived",
    "expand_dilation",
    "expand_groups",
    "fold_channel_map",
    "fold_conv",
    "fold_following",
    "fold_weight",
    "groups_aligned",
    "no_tf32",
    "normalize_order",
    "normalize_r",
    "order_string",
    "pad_to_multiple",
    "plan_fold",
    "plan_unfold",
    "predict_fold",
    "predict_following",
    "predict_space_to_depth",
    "space_to_depth",
    "unfold_conv",
    "unfold_weight",
]
