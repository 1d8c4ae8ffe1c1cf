"""Shift equivariance: the exact lattice of input shifts each node commutes with (``analytic``), feature-map
equivariance error and the antialiased-cnns consistency metric on real inputs (``measure``), and D2L's ladder
(fully-connected, locally-connected, conv, folded conv) as trainable layers (``ladder``; trained by the shift app).

Example:
    >>> import torch
    >>> from foldconv.analysis.shift import shift_equivariance
    >>> shift_equivariance(torch.nn.Conv2d(1, 1, 3, stride=4), (1, 1, 16, 16)).output.period
    (4, 4)
"""
from .analytic import AxisShift, NodeShift, ShiftReport, edge_lattice, shift_equivariance
from .ladder import LocallyConnected2d, kaiming_bound, ladder_models, parameter_count
from .measure import (
    RF_BORDER,
    Consistency,
    StageError,
    clean_positions,
    consistency,
    consistency_pair,
    crops,
    equivariance_error,
    min_clean_length,
    phase_boxes,
    phase_positions,
    read_shifted,
    stage_errors,
)

__all__ = [
    "AxisShift", "Consistency", "LocallyConnected2d", "NodeShift", "RF_BORDER", "ShiftReport", "StageError", "clean_positions",
    "consistency", "consistency_pair", "crops", "edge_lattice", "equivariance_error", "kaiming_bound", "ladder_models", "min_clean_length",
    "parameter_count", "phase_boxes", "phase_positions", "read_shifted", "shift_equivariance", "stage_errors",
]
