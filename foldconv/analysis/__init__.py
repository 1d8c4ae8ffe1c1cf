"""Analyses around folding: receptive fields (analytic and empirical) and parameter/MAC/memory counting.

Example:
    >>> import torch
    >>> from foldconv.analysis import count, receptive_field
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 8, 3))
    >>> report = count(net, (1, 3, 16, 16))
    >>> report.params, report.macs
    (808, 125280)
    >>> receptive_field(net, (1, 3, 16, 16)).output.rf
    (5, 5)
"""
from .count_dense import DenseEquivalent, axis_pairs, d2l_table, dense_equivalent, dense_equivalents, fc_params, operator_nonzeros
from .count_fold import DEFAULT_RS, compare_fold, compare_model_fold, fold_matrix, fold_model, fold_options, foldable_layers, meta_copy
from .count_plots import plot_comparison, plot_layers
from .count_run import CountJob, run_count_jobs
from .count_zoo import classification_models, meta_model, published_figures, validate_count, validate_zoo
from .counting import MAC_OPS, ROOT, CountReport, LayerCount, count, normalize_input_shapes, op_cost
from .receptive_field import (
    AxisRF,
    NodeRF,
    RFAlignmentWarning,
    RFReport,
    UnsupportedOpError,
    receptive_field,
    register_rf_rule,
    trace_model,
)
from .rf_empirical import RFCheck, check_receptive_field, effective_receptive_field, empirical_box, empirical_boxes, positive_copy
from .rf_fold import FoldedRF, folded_receptive_field

__all__ = [
    "AxisRF", "CountJob", "CountReport", "DEFAULT_RS", "DenseEquivalent", "FoldedRF", "LayerCount", "MAC_OPS", "NodeRF",
    "RFAlignmentWarning", "RFCheck", "RFReport", "ROOT", "UnsupportedOpError", "axis_pairs", "check_receptive_field",
    "classification_models", "compare_fold", "compare_model_fold", "count", "d2l_table", "dense_equivalent",
    "dense_equivalents", "effective_receptive_field", "empirical_box", "empirical_boxes", "fc_params", "fold_matrix",
    "fold_model", "fold_options", "foldable_layers", "folded_receptive_field", "meta_copy", "meta_model",
    "normalize_input_shapes", "op_cost", "operator_nonzeros", "plot_comparison", "plot_layers", "positive_copy",
    "published_figures", "receptive_field", "register_rf_rule", "run_count_jobs", "trace_model", "validate_count",
    "validate_zoo",
]
