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
    # 4 r values x 4 outcomes; r=2: 2 hold (the modes row, run at r=2 only, is not pooled with r's effect: named instead)
    assert sorted(bar_widths(ax)) == [0] * 12 + [1, 1, 1, 2]
    assert "modes (run at r=2 only)" in ax.get_title()
    assert summary.Tally.of(rows).by_section_r["theorem"]["2"] == {"holds": 2}
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
    assert bar_widths(fig.axes[0]) == [3456, 3456, 100]  # a site not applied has no 'after' cost to draw
    assert "not applied" in fig.axes[0].get_yticklabels()[1].get_text()


def rows_without_modes_or_errors():
    """A shard's rows that touch neither the modes slice nor the theorem/product errors (a 'following' shard)."""
    return [{"section": "following", "r": "2", "kernel": 3, "stride": 1, "padding": 0, "padding_mode": "zeros", "dims": 2,
             "observed": "holds", "predicted": "holds", "agree": "True", "rule": "FOLLOW-1"}]


def test_a_figure_with_nothing_to_draw_says_no_data(kept):
    for rows in (rows_without_modes_or_errors(), []):
        summary.plot_modes(rows, "modes.png")
        summary.plot_errors(rows, "errors.png")
        for name in ("modes.png", "errors.png"):
            fig = kept[name]
            assert not any(ax.get_images() for ax in fig.axes), name  # no empty grid drawn as if it held values
            assert any(t.startswith("no data") for ax in fig.axes for t in texts(ax)), name
    summary.plot_outcomes([], "outcomes.png")
    summary.plot_outcomes_by_r([], "by_r.png")
    for name in ("outcomes.png", "by_r.png"):
        assert any(t.startswith("no data") for t in texts(kept[name].axes[0])) and not kept[name].axes[0].patches, name
    # with data, no panel says it has none
    summary.plot_modes(sweep_rows(), "modes.png")
    assert not any(t.startswith("no data") for ax in kept["modes.png"].axes for t in texts(ax))


def test_a_heatmap_cell_without_configurations_says_so(kept):
    rows = sweep_rows()  # the modes slice: reflect at (S=1, P=1) only
    rows.append({**rows[-1], "stride": 2, "padding": 0, "observed": "holds"})  # and (S=2, P=0): a 2x2 grid, 2 cells empty
    summary.plot_modes(rows, "modes.png")
    panels = [ax for ax in kept["modes.png"].axes if ax.get_images()]
    assert [ax.get_title() for ax in panels] == ["padding_mode=reflect"]
    assert sorted(texts(panels[0])) == ["0%\nof 1", "100%\nof 1", "no data", "no data"]


def overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize("plot", ["plot_outcomes", "plot_outcomes_by_r"])
def test_bar_legends_cover_no_bar_and_no_label(kept, plot):
    # the largest counts in the last group, which is where a legend in the lower right used to sit
    rows = []
    for section in ("theorem", "modes", "following"):  # every section at every r: the by-r figure pools them all
        for r in ("2", "3", "4"):
            n = 400 if "following" in (section, r) or r == "4" else 3
            for observed in ("holds", "holds with conditions", "fails", "invalid"):
                rows += [{"section": section, "r": r, "kernel": 3, "stride": 1, "padding": 0, "padding_mode": "zeros", "dims": 2,
                          "observed": observed, "predicted": observed, "agree": "True"}] * n
    getattr(summary, plot)(rows, "bars.png")
    fig = kept["bars.png"]
    fig.tight_layout()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent(renderer)
    labels = [t.get_window_extent(renderer) for t in ax.texts]
    bars = [p.get_window_extent(renderer) for p in ax.patches if p.get_width() > 0]
    assert len(labels) == 12 and len(bars) == 12
    assert not [b for b in labels + bars if overlaps(legend, b)]
    assert legend.x0 >= ax.get_window_extent(renderer).x1  # beside the plot area, outside the data


def test_the_error_heatmap_says_what_the_error_is_measured_against(tmp_path, monkeypatch):
    """A relative error of 5e-3 at r=1 is bfloat16's own rounding, not folding: the figure names the reference."""
    import matplotlib.figure

    from foldconv.experiments.sweep.summary import plot_errors

    titles = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: titles.extend(
        [fig._suptitle.get_text() if fig._suptitle else ""] + [ax.get_title() for ax in fig.axes]))
    rows = [{"section": "theorem", "r": str(r), "kernel": "3", "rel_err_bfloat16": "5e-3", "outcome": "holds",
             "predicted": "holds", "observed": "equivalent"} for r in (1, 2)]
    plot_errors(rows, tmp_path / "e.png")
    text = " ".join(titles)
    assert "vs the original in float64" in text and "the r=1 row" in text and "rounding" in text, text
