"""foldconv: when is a convolution over C^2 channels the same computation as a big strided
single-channel convolution over the pixel-shuffled map, and when is it not?

The top-level API, by question (every other name lives in its subpackage):

- Lay channels out in space and back: :func:`depth_to_space`, :func:`space_to_depth` (and the modules
  :class:`DepthToSpace`, :class:`SpaceToDepth`), :func:`fold_channel_map` (which channel lands where).
- Fold a conv and back: :func:`fold_conv`, :func:`unfold_conv`, :func:`fold_weight`, :func:`unfold_weight`,
  :func:`plan_fold` (:class:`FoldPlan`); specs :class:`ConvSpec`, :class:`FoldSpec`.
- Is it the same function? :func:`check_fold`, :func:`check_equivalence` (:func:`derived` for all weights),
  :class:`EquivalenceReport`, :class:`Verdict`.
- Will it be, before trying? :func:`predict_fold`, :func:`predict_space_to_depth`, :func:`predict_following`
  (:class:`Prediction`, :class:`Outcome`).
- What does it cost and see? :func:`count`, :func:`receptive_field`, :func:`check_receptive_field`,
  :func:`shift_equivariance`.
- The neighbouring equivalences: :func:`strided_to_spd`, :func:`spd_to_strided`, :func:`conv_to_focus`,
  :func:`focus_to_conv`, :func:`subpixel_to_transposed`, :func:`transposed_to_subpixel`, :func:`dense_operator`.
- Whole models: :func:`rewrite`, :func:`find_sites` (:class:`RewriteReport`), :func:`fold_model`,
  :func:`fold_stage`, :func:`benchmark_forms`, :func:`optimize`, :func:`export_onnx`; models by name:
  :func:`build_model`, :func:`meta_model`, :func:`resolve_model`.
- Errors and limits: :class:`FoldError` (a ``ValueError`` naming the parameter, its value and the rule),
  :func:`allocation_limit`.

The analyses, equivalences, surgery and model resolver are loaded on first use.

Example:
    >>> import torch
    >>> from foldconv import check_fold
    >>> bool(check_fold(torch.nn.Conv2d(16, 4, 3, padding=1), 4))
    True
"""
from ._validate import allocation_limit
from .check import EquivalenceReport, Verdict, check_equivalence, check_fold, derived
from .errors import FoldError
from .fold import FoldPlan, fold_conv, fold_weight, plan_fold, unfold_conv, unfold_weight
from .layout import DepthToSpace, SpaceToDepth, depth_to_space, fold_channel_map, space_to_depth
from .predict import Outcome, Prediction, predict_fold, predict_following, predict_space_to_depth
from .specs import ConvSpec, FoldSpec

__version__ = "0.1.0"

# The layers above predict (analyses, equivalences, surgery, the model resolver) are loaded on first use,
# each name from the module that defines it (so a submodule can never shadow a function of the same name).
_LAZY = {
    "count": "analysis.counting.counter", "CountReport": "analysis.counting.report",
    "receptive_field": "analysis.receptive_field.analyse", "check_receptive_field": "analysis.receptive_field.empirical",
    "RFReport": "analysis.receptive_field.report", "shift_equivariance": "analysis.shift.analytic",
    "strided_to_spd": "equivalences.space_to_depth", "spd_to_strided": "equivalences.space_to_depth",
    "conv_to_focus": "equivalences.space_to_depth", "focus_to_conv": "equivalences.space_to_depth",
    "subpixel_to_transposed": "equivalences.subpixel", "transposed_to_subpixel": "equivalences.subpixel",
    "dense_operator": "equivalences.dense",
    "rewrite": "surgery.rewrite", "find_sites": "surgery.rewrite", "RewriteReport": "surgery.report",
    "SiteReport": "surgery.report", "fold_model": "surgery.stage", "fold_stage": "surgery.stage",
    "benchmark_forms": "surgery.speed", "optimize": "surgery.fastest", "export_onnx": "surgery.onnx_export",
    "build_model": "models.resolve", "meta_model": "models.resolve", "resolve_model": "models.resolve",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    # layout
    "depth_to_space", "space_to_depth", "DepthToSpace", "SpaceToDepth", "fold_channel_map",
    # fold
    "fold_conv", "unfold_conv", "fold_weight", "unfold_weight", "plan_fold", "FoldPlan", "ConvSpec", "FoldSpec",
    # check and predict
    "check_fold", "check_equivalence", "derived", "EquivalenceReport", "Verdict",
    "predict_fold", "predict_space_to_depth", "predict_following", "Prediction", "Outcome",
    # errors and limits
    "FoldError", "allocation_limit",
] + list(_LAZY)
