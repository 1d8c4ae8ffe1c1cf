"""fold_stage / unfold_stage as rewrite rules: the named stage is replaced, its layers get rows, and it comes back."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from foldconv import Verdict
from foldconv.surgery import rewrite
from helpers import integer_tensor, integer_weights


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.stage = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 3, padding=1))
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.head(self.stage(self.stem(x)))


@pytest.mark.claim("SURGERY-11")
def test_fold_stage_and_unfold_stage_rules():
    pytest.importorskip("foldconv.surgery.stage")
    model = Net().eval()
    with torch.no_grad():
        model.stage[1].running_var.fill_(4.0)  # a scale the float64 check represents exactly
    folded, report = rewrite(model, (1, 3, 8, 8), [("fold_stage", {"stage": "stage", "r": 2})])
    main = [s for s in report.sites if not s.part_of]
    parts = [s for s in report.sites if s.part_of == "stage"]
    assert [(s.location, s.applied) for s in main] == [("stage", True)] and main[0].verdict is Verdict.EQUIVALENT
    assert {p.location for p in parts} >= {"stage.0", "stage.2"} and all(p.reason for p in parts)
    assert type(folded.get_submodule("stage")).__name__ == "FoldedStage" and report.ok
    back, again = rewrite(folded, (1, 3, 8, 8), ["unfold_stage"])
    assert again.applied == 1 and again.ok
    stage = back.get_submodule("stage")
    assert type(stage).__name__ != "FoldedStage"
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(back(x), model(x), atol=1e-5) and torch.allclose(folded(x), model(x), atol=1e-5)


@pytest.mark.claim("SURGERY-11")
def test_fold_stage_of_a_conv_chain_is_exact():
    pytest.importorskip("foldconv.surgery.stage")
    model = integer_weights(nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.Conv2d(8, 4, 1))))
    new, report = rewrite(model, (1, 2, 6, 6), [("fold_stage", {"stage": "1", "r": 2, "order": "dcr"})])
    site = next(s for s in report.sites if not s.part_of)
    assert site.exact and site.verdict is Verdict.EQUIVALENT and report.verification.exact and report.ok
    x = integer_tensor((1, 2, 6, 6))
    assert torch.equal(new(x), model(x))


class Strided(nn.Module):
    """A stage whose second conv sees a smaller map than the stage's input: each part row has its own input."""

    def __init__(self):
        super().__init__()
        self.stage = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1))

    def forward(self, x):
        return self.stage(x)


def test_a_stage_is_one_site_and_each_part_row_shows_its_own_input():
    pytest.importorskip("foldconv.surgery.stage")
    model = integer_weights(Strided()).eval()
    _, report = rewrite(model, (1, 4, 8, 8), [("fold_stage", {"stage": "stage", "r": 2})])
    assert len(report.sites) > 1 and len(report.main_sites) == 1 and report.applied == 1
    assert "1 of 1 site(s) rewritten" in report.summary()
    shapes = {s.location: s.input_shape for s in report.sites}
    assert shapes["stage"] == shapes["stage.0"] == (1, 4, 8, 8)
    assert shapes["stage.1"] == shapes["stage.2"] == (1, 8, 4, 4)  # after the stride-2 conv, not the stage's input


def test_a_stage_fold_that_first_folds_batchnorms_says_so_in_every_report():
    """fold_stage folds each eval-mode BatchNorm into its conv before the fold: a change to the model besides the
    fold itself, stated in the stage's summary, its layer rows and the site row (the app's line:
    tests/experiments/test_rewrite_outputs.py)."""
    from foldconv.surgery import fold_stage

    torch.manual_seed(0)
    stage = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 1)).eval()
    with torch.no_grad():
        stage[1].running_var.uniform_(0.5, 2)
    _, report = fold_stage(stage, 2, input_shape=(1, 4, 8, 8), fold_bn=True)
    assert report.fused_batchnorms == (("1", "0"),)
    assert "first folded 1 eval-mode BatchNorm(s) into the conv before each: 1 into 0" in report.summary()
    (bn,) = [layer for layer in report.layers if layer.name == "1"]
    assert bn.kind == "BatchNorm2d folded into 0" and "folded into the conv before it" in bn.reason
    _, plain = fold_stage(stage, 2, input_shape=(1, 4, 8, 8), fold_bn=False)  # nothing folded: nothing said
    assert plain.fused_batchnorms == () and "BatchNorm" not in plain.summary()

    model = nn.Sequential(nn.Conv2d(4, 4, 1), stage).eval()
    _, rep = rewrite(model, (1, 4, 8, 8), [("fold_stage", {"stage": "1", "r": 2})])
    (site,) = rep.main_sites
    assert site.applied and site.changes == "first folded 1 eval-mode BatchNorm(s) into the conv before each: 1.1 into 1.0"
