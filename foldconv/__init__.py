"""foldconv: when is a convolution over C^2 channels the same computation as a big strided
single-channel convolution over the pixel-shuffled map, and when is it not?

Example:
    >>> import torch
    >>> from foldconv import check_fold
    >>> bool(check_fold(torch.nn.Conv2d(16, 4, 3, padding=1), 4))
    True
"""
from ._validate import allocation_limit
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
    folded_groups,
    groups_aligned,
    mask_structural_zeros,
    pad_to_multiple,
    plan_fold,
    plan_unfold,
    structural_zero_mask,
    unfold_conv,
    unfold_weight,
)
from .layout import (
    DepthToSpace,
    LayoutModule,
    SpaceToDepth,
    depth_to_space,
    fold_channel_map,
    layout_module,
    normalize_order,
    normalize_r,
    order_string,
    space_to_depth,
)
from .predict import (
    Outcome,
    Prediction,
    conditioned_following,
    fold_following,
    predict_fold,
    predict_following,
    predict_space_to_depth,
    register_following_rule,
)
from .specs import ConvSpec, FoldSpec, conv_class

__version__ = "0.1.0"

# Model surgery sits above every other layer (it imports the equivalences and analyses): loaded on first use,
# each name from the module that defines it (so a submodule can never shadow a function of the same name).
_SURGERY = {"RewriteReport": "report", "SiteReport": "report", "find_sites": "rewrite", "rewrite": "rewrite",
            "benchmark_forms": "speed", "optimize": "fastest"}


def __getattr__(name: str):
    if name in _SURGERY:
        import importlib

        return getattr(importlib.import_module(f".surgery.{_SURGERY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "allocation_limit",
    "ConvSpec",
    "DepthToSpace",
    "LayoutModule",
    "Derived",
    "EquivalenceReport",
    "ErrorStats",
    "FoldError",
    "FoldPlan",
    "FoldSpec",
    "FoldedWeight",
    "Outcome",
    "Prediction",
    "SpaceToDepth",
    "Verdict",
    "check_equivalence",
    "check_fold",
    "conditioned_following",
    "conv_class",
    "depth_to_space",
    "layout_module",
    "derived",
    "expand_dilation",
    "expand_groups",
    "fold_channel_map",
    "fold_conv",
    "fold_following",
    "fold_weight",
    "folded_groups",
    "groups_aligned",
    "mask_structural_zeros",
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
    "register_following_rule",
    "space_to_depth",
    "structural_zero_mask",
    "unfold_conv",
    "unfold_weight",
    # lazily loaded (module __getattr__ above)
    "RewriteReport",
    "SiteReport",
    "find_sites",
    "rewrite",
]
