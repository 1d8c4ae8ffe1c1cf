"""Whole-model surgery: rewrite a model into an equivalent form, verify it, fold it, time the forms, export to ONNX.

- :mod:`.rewrite`: :func:`rewrite` (rules applied in order, every site and the whole model checked) and
  :func:`find_sites`; :mod:`.rules` the rules (:data:`RULES`, a :class:`foldconv.registry.Registry`; each rule names
  its inverse, :func:`inverse_rules`), :mod:`.patterns` where they apply (the traced model and its sites),
  :mod:`.bn` BatchNorm folding, :mod:`.report` the per-site table, :mod:`.hazards` what keeps a site from being
  rewritten (hooks, subclasses with their own forward), :mod:`.params` what trains through a rewrite (frozen, shared
  and parametrised weights kept; the training check).
- :mod:`.stage`: fold a stage or a whole model with its activations kept folded (:func:`fold_stage`,
  :func:`fold_model`, :func:`compare_model_fold`) and unfold it (:func:`unfold_stage`).
- :mod:`.speed`: timing of equivalent forms (:func:`benchmark_forms`; a form is a single-site rewrite; :mod:`.timing`
  the timer, interleaved rounds); :mod:`.fastest`: the fastest verified form per site (:func:`optimize`);
  :mod:`.onnx_export`: ONNX export and onnxruntime conformance. Those three are imported when first used.

Every function that returns a changed model returns it with what happened, as one pair ``(model, report)``:
:func:`rewrite` -> ``(model, RewriteReport)``, :func:`fold_stage` / :func:`fold_model` -> ``(model, FoldReport)``,
:func:`optimize` -> ``(model, OptimizeReport)``. Every one takes the example input as ``input_shape``, the full shape
``(N, C, *spatial)``.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1))
    >>> new, report = rewrite(net, (1, 4, 5, 5), ["transposed_to_subpixel"])
    >>> report.ok, report.sites[0].pattern, inverse_rules(report.rules, report=report)
    (True, 'ConvTranspose2d 4x4 s2', (('subpixel_to_transposed', {'at': ['0']}),))
"""
from importlib import import_module
from typing import Any

from .bn import fold_bn
from .report import RewriteReport, SiteReport
from .rewrite import check_model, find_sites, rewrite
from .rules import REQUIRED, RULES, Rule, RuleArg, form_rules, inverse_rules
from .stage import (
    FoldedStage,
    FoldReport,
    ModelFoldComparison,
    StageLayer,
    compare_model_fold,
    fold_model,
    fold_stage,
    unfold_stage,
)

# Names of the sibling modules written alongside this one, imported on first use.
_LAZY = {
    "benchmark_forms": ".speed", "optimize": ".fastest", "FormTiming": ".speed", "FormsReport": ".speed",
    "OptimizeReport": ".fastest", "SiteChoice": ".fastest", "export_onnx": ".onnx_export", "OnnxReport": ".onnx_export",
    "onnx_ops": ".onnx_export",
}

__all__ = [
    "REQUIRED", "RULES", "FoldReport", "FoldedStage", "ModelFoldComparison", "Rule", "RuleArg", "RewriteReport", "SiteReport",
    "StageLayer", "check_model", "compare_model_fold", "find_sites", "fold_bn", "fold_model", "fold_stage", "form_rules",
    "inverse_rules", "rewrite", "unfold_stage", *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        # importing a submodule binds its name here (".optimize" would shadow optimize()): bind the object instead
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
