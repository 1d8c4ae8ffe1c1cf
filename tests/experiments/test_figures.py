"""Figures that say what they measure: bars start at 0 and carry their numbers, heatmaps share one colour scale and
have colour bars, the sweep separates r, and one model is not drawn as a lone dot.

The plotting functions run on small inputs; ``save_figure`` is replaced by a spy that keeps each figure.
"""
from __future__ import annotations

import pytest
import torch

from foldconv.analysis.counting import count
from foldconv.experiments import count_plots
from foldconv.experiments.rewrite_plots import sites_figure
from foldconv.experiments.sweep import summary


@pytest.fixture
def kept(monkeypatch):
    figures = {}

    def keep(fig, path, dpi=120):
        fig.canvas.draw()
        figures[str(path)] = fig
        return path

    for module in (count_plots, summary):
        monkeypatch.setattr(module, "save_figure", keep)
    return figures


def bar_widths(ax):
    return [p.get_width() for p in ax.patches]


def texts(ax):
    return [t.get_text() for t in ax.texts]


def sweep_rows():
    rows = []
    for r, observed in (("2", "holds"), ("2", "holds"), ("3", "fails"), ("(2, 1)", "holds with conditions"), ("0", "invalid")):
        rows.append({"section": "theorem", "r": r, "kernel": 3, "stride": 1, "padding": 0, "padding_mode": "zeros", "dims": 2,
                     "observed": observed, "predicted": observed, "agree": "True", "rule": "FOLD-1",
                     "rel_err_float32": 1e-7 if r == "2" else 2e-7, "rel_err_bfloat16": 1e-2})
    rows += [{**rows[0], "section": "modes", "padding_mode": "reflect", "padding": 1, "observed": "fails"}]
    return rows


def test_sweep_separates_r_and_labels_every_count(kept):
    rows = sweep_rows()
    summary.plot_outcomes_by_r(rows, "by_r.png")
    ax = kept["by_r.png"].axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["r=0", "r=2", "r=3", "r=(2, 1)"]  # numeric order
    assert sorted(bar_widths(ax)) == [0] * 11 + [1, 1, 1, 1, 2]  # 4 r values x 4 outcomes; r=2: 2 hold, 1 fails
    assert summary.Tally.of(rows).by_r["2"] == {"holds": 2, "fails": 1}
    summary.plot_outcomes(rows, "outcomes.png")
    ax = kept["outcomes.png"].axes[0]
    # the single invalid configuration is a labelled bar of its own, not a sliver on top of a stack
    assert "1" in texts(ax) and ax.get_xlim()[0] == 0 and all(p.get_x() == 0 for p in ax.patches)


def test_sweep_error_panels_share_one_scale_and_have_a_colour_bar(kept):
    summary.plot_errors(sweep_rows(), "errors.png")
    fig = kept["errors.png"]
    images = [ax.get_images()[0] for ax in fig.axes if ax.get_images()]
    assert len(images) == 2 and len({im.get_clim() for im in images}) == 1  # float32 and bfloat16 on one scale
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)
    assert "-7.0" in texts(images[0].axes) and "-2.0" in texts(images[1].axes)  # each cell's value printed
    summary.plot_modes(sweep_rows(), "modes.png")
    assert any(ax.get_label() == "<colorbar>" for ax in kept["modes.png"].axes)


def test_count_bars_start_at_zero_and_compare_linearly(kept):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.Conv2d(4, 44, 1))
    rep = count(net, (1, 3, 4, 4), name="net")
    count_plots.plot_layers(rep, "layers.png")
    ax = kept["layers.png"].axes[0]
    assert ax.get_xscale() == "linear" and ax.get_xlim()[0] == 0
    small, big = bar_widths(ax)
    assert (small, big) == (16, 220) and texts(ax) == ["16", "220"]  # 13.75x apart, and drawn so
    count_plots.plot_comparison([rep], "one.png")
    fig = kept["one.png"]
    assert not any(ax.collections for ax in fig.axes)  # no scatter dot
    assert [bar_widths(ax) for ax in fig.axes[:2]] == [[rep.params], [rep.macs]]
    assert texts(fig.axes[0]) == [count_plots.short_count(rep.params)]


def test_sites_bars_start_at_zero():
    rows = [{"model": "m", "step": "rewrite", "rule": "focus_to_conv", "location": "stem", "applied": True,
             "params before": 3456, "params after": 3456, "MACs before": 884736, "MACs after": 884736},
            {"model": "m", "step": "rewrite", "rule": "strided_to_spd", "location": "down", "applied": "no: groups",
             "params before": 100, "params after": 1100, "MACs before": 10, "MACs after": 10}]
    fig = sites_figure(rows)
    for ax in fig.axes:
        assert ax.get_xscale() == "linear" and ax.get_xlim()[0] == 0 and all(p.get_x() == 0 for p in ax.patches)
    assert bar_widths(fig.axes[0]) == [3456, 3456, 100, 1100]
    assert "not applied" in fig.axes[0].get_yticklabels()[1].get_text()
