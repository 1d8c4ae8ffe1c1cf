"""Receptive fields: analytic (fx trace + per-op rules), empirical (gradient support, ERF), fold-aware.

Modules, each importing only those above it:

- ``registry`` (the rule table :data:`RF_RULES`, :func:`register_rf_rule`; ``receptive_field(..., rules=...)``
  adds rules for one call), ``geometry`` (index maps, ``Geometry``),
  ``trace`` (fx tracing, the meta run), ``context`` (what a rule sees), ``rules_window`` / ``rules_tensor``
  (the built-in rules, registered like user rules), ``pullback`` and ``report`` (boxes, ``RFReport``),
  ``measure`` (gradient measurements: positive copy, support hull, the ``fallback="real"`` of one node);
- ``analyse`` (:func:`receptive_field`), then ``empirical`` (checks against gradients, ERF) and ``fold``.

Example:
    >>> import torch
    >>> from foldconv.analysis.receptive_field import receptive_field
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 8, 3))
    >>> receptive_field(net, (1, 3, 16, 16)).output.rf
    (5, 5)
"""
from .analyse import RFAlignmentWarning, receptive_field
from .context import RuleContext
from .empirical import (
    BoxCheck,
    RFCheck,
    check_receptive_field,
    effective_receptive_field,
    empirical_box,
    empirical_boxes,
    empirical_support,
)
from .fold import FoldedRF, RFRow, folded_receptive_field
from .geometry import Geometry
from .measure import positive_copy
from .registry import RF_RULES, register_rf_rule
from .report import AxisRF, NodeRF, RFReport
from .trace import UnsupportedOpError, trace_model

__all__ = [
    "AxisRF", "BoxCheck", "RF_RULES", "FoldedRF", "Geometry", "NodeRF", "RFAlignmentWarning", "RFCheck", "RFReport", "RFRow",
    "RuleContext", "UnsupportedOpError", "check_receptive_field", "effective_receptive_field", "empirical_box",
    "empirical_boxes", "empirical_support", "folded_receptive_field", "positive_copy", "receptive_field", "register_rf_rule", "trace_model",
]
