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
from .counting import *  # noqa: F401,F403  (each subpackage's __all__ is its public API, less _LOCAL)
from .counting import __all__ as _count_all
from .receptive_field import *  # noqa: F401,F403
from .receptive_field import __all__ as _rf_all
from .shift import ShiftReport, shift_equivariance  # noqa: F401  (the rest: foldconv.analysis.shift)

#: Names that mean something only inside their subpackage (the fold app's default factors, the meta-kernel cache,
#: a helper of the gradient measurement): reached as foldconv.analysis.counting.DEFAULT_RS and so on.
_LOCAL = {"DEFAULT_RS", "meta_cache", "positive_copy"}
for _name in _LOCAL:
    globals().pop(_name, None)

__all__ = [n for n in list(_count_all) + list(_rf_all) if n not in _LOCAL] + ["ShiftReport", "shift_equivariance"]
