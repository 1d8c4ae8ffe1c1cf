"""The rewrite app takes a model in every spelling of foldconv.models, and a real model with an explicit rule list
rewrites and takes its rewrite back like its own rules do."""
from __future__ import annotations

import pytest

from foldconv.experiments.rewrite import RewriteExperiment, run_rewrite


@pytest.mark.parametrize("model, extra", [
    ("espcn", {"size": "test"}),
    ({"_target_": "foldconv.models.ESPCN"}, {"input_shape": [1, 1, 12, 12]}),
    ({"_target_": "foldconv.models.architectures.ESPCN"}, {"input_shape": [1, 1, 12, 12]}),
])
def test_espcn_in_every_spelling_with_an_explicit_rule_round_trips(tmp_path, model, extra):
    exp = RewriteExperiment(model=model, rules=["subpixel_to_transposed"], timing=False, onnx=False, **extra)
    run = run_rewrite(exp, tmp_path).value
    assert run.ok, run.failures
    (m,) = run.models
    assert m.report.applied == 1 and m.back is not None and m.back.applied == 1 and m.back.ok
    assert [s.rule for s in m.back.sites if s.applied] == ["transposed_to_subpixel"]
