"""Counting: parameters, MACs, FLOPs and memory per layer from one meta-device pass; dense and fold views.

- ``ops``: the cost table ``{aten op: handle(inputs, outputs) -> OpCost}``, ``register_op_cost`` and ``cost_rule``;
- ``counter``: the engine, :func:`count`; ``inputs``: shapes, ``(shape, dtype)`` specs and example tensors;
  ``backward``: the backward pass's rules and module attribution; ``memory``: peak live bytes;
  ``meta_cache``: meta results without the kernels (the speed);
- ``report``: its frozen result, :class:`CountReport` (rows and Markdown per view, ``unsupported_ops``);
- ``dense``: dense-equivalent costs of a conv; ``fold``: costs before and after folding; ``zoo``:
  torchvision models on meta and the independent checks.

Example:
    >>> import torch
    >>> from foldconv.analysis.counting import count
    >>> count(torch.nn.Conv2d(3, 8, 3), (1, 3, 16, 16)).macs
    42336
"""
from . import meta_cache
from .counter import FALLBACKS, count, normalize_input_shapes
from .dense import (
    DenseEquivalent,
    LadderRow,
    axis_pairs,
    dense_equivalent,
    dense_equivalents,
    fc_params,
    operator_nonzeros,
    parameter_ladder,
)
from .fold import (
    DEFAULT_RS,
    Compared,
    FoldComparison,
    FoldedModel,
    FoldOption,
    LayerFold,
    ModelFoldComparison,
    check_fold_request,
    compare_fold,
    compare_model_fold,
    fold_matrix,
    fold_model,
    fold_options,
    foldable_layers,
    meta_copy,
)
from .inputs import InputSpec
from .ops import MAC_OPS, OpCost, cost_rule, op_cost, op_handle, register_op_cost
from .report import ROOT, VIEWS, CountReport, LayerCount, UnsupportedOp
from .zoo import (
    CountValidation,
    PublishedFigures,
    classification_models,
    meta_model,
    published_figures,
    validate_count,
    validate_zoo,
)

__all__ = [
    "CountReport", "CountValidation", "Compared", "DEFAULT_RS", "FALLBACKS", "InputSpec", "cost_rule", "meta_cache", "DenseEquivalent", "FoldComparison", "FoldOption",
    "FoldedModel", "LadderRow", "LayerCount", "LayerFold", "MAC_OPS", "ModelFoldComparison", "OpCost", "PublishedFigures", "ROOT",
    "UnsupportedOp", "VIEWS", "axis_pairs", "check_fold_request", "classification_models", "compare_fold",
    "compare_model_fold", "count", "dense_equivalent", "dense_equivalents", "fc_params", "fold_matrix",
    "fold_model", "fold_options", "foldable_layers", "meta_copy", "meta_model", "normalize_input_shapes", "op_cost",
    "op_handle", "operator_nonzeros", "parameter_ladder", "published_figures", "register_op_cost", "validate_count", "validate_zoo",
]
