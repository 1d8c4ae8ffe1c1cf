"""Receptive fields: analytic (fx trace + per-op rules), empirical (gradient support, ERF), fold-aware.

Example:
    >>> import torch
    >>> from foldconv.analysis.receptive_field import receptive_field
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 8, 3))
    >>> receptive_field(net, (1, 3, 16, 16)).output.rf
    (5, 5)
"""
from .core import AxisRF, NodeRF, RFAlignmentWarning, RFReport, UnsupportedOpError, receptive_field, register_rf_rule, trace_model
from .empirical import RFCheck, check_receptive_field, effective_receptive_field, empirical_box, empirical_boxes, positive_copy
from .fold import FoldedRF, folded_receptive_field

__all__ = [
    "AxisRF", "FoldedRF", "NodeRF", "RFAlignmentWarning", "RFCheck", "RFReport", "UnsupportedOpError", "check_receptive_field",
    "effective_receptive_field", "empirical_box", "empirical_boxes", "folded_receptive_field", "positive_copy",
    "receptive_field", "register_rf_rule", "trace_model",
]
