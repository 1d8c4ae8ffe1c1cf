"""Counting: parameters, MACs, FLOPs and memory per layer from one meta-device pass; dense and fold views.

- ``ops``: the cost table :data:`OP_COSTS` ``{aten op: handle(inputs, outputs) -> OpCost}`` and ``register_op_cost``
  (``count(..., op_costs={op: handle})`` prices ops for one count);
- ``counter``: the engine, :func:`count`; ``inputs``: shapes, ``(shape, dtype)`` specs and example tensors;
  ``backward``: the backward pass's rules and module attribution; ``memory``: peak live bytes;
  ``meta_cache``: meta results without the kernels (the speed);
- ``report``: its frozen result, :class:`CountReport` (rows and Markdown per view, ``unsupported_ops``);
- ``dense``: dense-equivalent costs of a conv; ``fold``: costs of a conv before and after folding (a whole
  model: :func:`foldconv.surgery.compare_model_fold`); ``zoo``: count against independent figures
  (FlopCounterMode, ``sum(numel)``, torchvision's published ones).

Example:
    >>> import torch
    >>> from foldconv.analysis.counting import count
    >>> count(torch.nn.Conv2d(3, 8, 3), (1, 3, 16, 16)).macs
    42336
"""
from . import meta_cache
from .counter import count, normalize_input_shapes
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
    Comparison,
    FoldComparison,
    FoldOption,
    compare_fold,
    fold_matrix,
    fold_options,
    foldable_layers,
    meta_copy,
    validate_fold_request,
)
from .inputs import InputSpec
from .ops import MAC_OPS, OP_COSTS, OpCost, op_cost, register_op_cost
from .report import CountReport, LayerCount, UnsupportedOp
from .zoo import CountValidation, validate_count

__all__ = [
    "CountReport", "CountValidation", "Compared", "Comparison", "DEFAULT_RS", "InputSpec", "meta_cache",
    "DenseEquivalent", "LadderRow", "FoldComparison", "FoldOption", "LayerCount", "MAC_OPS", "OP_COSTS", "OpCost",
    "UnsupportedOp", "axis_pairs", "compare_fold", "count", "dense_equivalent",
    "dense_equivalents", "fc_params", "fold_matrix", "fold_options", "foldable_layers", "meta_copy",
    "normalize_input_shapes", "op_cost", "operator_nonzeros", "parameter_ladder", "register_op_cost",
    "validate_count", "validate_fold_request",
]
