"""The rewrite app's outputs say what they measure: figure axes name the quantity and its unit, a speedup is the
ratio of the times shown beside it."""
from __future__ import annotations

import math

from foldconv.experiments.rewrite_plots import sites_figure

ROW = {"model": "m", "step": "rewrite", "rule": "focus_to_conv", "location": "focus.conv.conv", "applied": True,
       "input shape": "1x3x32x32", "params before": 3456, "params after": 3456, "MACs before": 884736, "MACs after": 884736}


def test_the_sites_figure_names_what_each_axis_counts():
    fig = sites_figure([ROW])
    params, macs = (ax.get_xlabel() for ax in fig.axes)
    assert "per sample" not in params + macs  # parameters do not depend on the input
    assert params.startswith("parameters") and "MACs (multiply-accumulates) of one forward pass" in macs
    assert "input 1x3x32x32" in fig.axes[0].get_yticklabels()[0].get_text()
    assert not math.isnan(fig.axes[0].get_xlim()[1])
