"""Whole-model surgery: rewrite a model into an equivalent form, verify it, time the forms, export to ONNX.

- :mod:`.rewrite`: :func:`rewrite` (rules applied in order, every site and the whole model checked) and
  :func:`find_sites`; :mod:`.rules` the rule registry (:func:`register_rule`), :mod:`.patterns` the model-level
  patterns, :mod:`.graph` tracing, :mod:`.bn` BatchNorm folding, :mod:`.report` the per-site table.
- :mod:`.stage`: fold / unfold a whole stage (:mod:`.stage_unfold` the unfolding). :mod:`.speed`: timing of
  equivalent forms (:mod:`.timing` the timer, interleaved rounds); :mod:`.fastest`: the fastest verified form per site. :mod:`.onnx_export`: ONNX export and onnxruntime conformance. Those are
  imported when first used.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1))
    >>> new, report = rewrite(net, (1, 4, 5, 5), ["transposed_to_subpixel"])
    >>> report.ok, report.sites[0].pattern
    (True, 'ConvTranspose2d 4x4 s2')
"""
from importlib import import_module
from typing import Any

from .bn import fold_bn
from .report import RewriteReport, SiteReport
from .rewrite import find_sites, rewrite
from .rules import RULE_NAMES, Rule, RuleArg, get_rule, register_rule, rule_names, unregister_rule

# Names of the sibling modules written alongside this one, imported on first use.
_LAZY = {
    "fold_stage": ".stage", "unfold_stage": ".stage", "FoldedStage": ".stage", "StageLayer": ".stage",
    "benchmark_forms": ".speed", "optimize": ".fastest", "FormTiming": ".speed", "FormsReport": ".speed",
    "OptimizeReport": ".fastest", "SiteChoice": ".fastest", "export_onnx": ".onnx_export", "OnnxReport": ".onnx_export",
}

__all__ = [
    "RULE_NAMES", "Rule", "RuleArg", "RewriteReport", "SiteReport", "find_sites", "fold_bn", "get_rule", "register_rule",
    "rewrite", "rule_names", "unregister_rule",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        # importing a submodule binds its name here (".optimize" would shadow optimize()): bind the object instead
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
