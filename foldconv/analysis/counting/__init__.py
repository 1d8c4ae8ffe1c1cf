"""Counting: parameters, MACs, FLOPs and memory per layer from one meta-device pass; dense and fold views.

Example:
    >>> import torch
    >>> from foldconv.analysis.counting import count
    >>> count(torch.nn.Conv2d(3, 8, 3), (1, 3, 16, 16)).macs
    42336
"""
from .counter import MAC_OPS, ROOT, CountReport, LayerCount, count, normalize_input_shapes, op_cost
from .dense import DenseEquivalent, axis_pairs, d2l_table, dense_equivalent, dense_equivalents, fc_params, operator_nonzeros
from .fold import DEFAULT_RS, compare_fold, compare_model_fold, fold_matrix, fold_model, fold_options, foldable_layers, meta_copy
from .zoo import classification_models, meta_model, published_figures, validate_count, validate_zoo

__all__ = [
    "CountReport", "DEFAULT_RS", "DenseEquivalent", "LayerCount", "MAC_OPS", "ROOT", "axis_pairs", "classification_models",
    "compare_fold", "compare_model_fold", "count", "d2l_table", "dense_equivalent", "dense_equivalents", "fc_params",
    "fold_matrix", "fold_model", "fold_options", "foldable_layers", "meta_copy", "meta_model", "normalize_input_shapes",
    "op_cost", "operator_nonzeros", "published_figures", "validate_count", "validate_zoo",
]
