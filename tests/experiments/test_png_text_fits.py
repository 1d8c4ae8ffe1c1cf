"""Every text of the experiments' figures fits inside the saved PNG and is readable (>= MIN_FONT_PT).

The plotting functions are called directly on small inputs (no subprocess). ``save_figure`` is replaced by
a check that lays the figure out as ``save_figure`` does (``tight_layout``), then compares each visible text
artist's window extent with the area ``bbox_inches="tight"`` saves (the figure's tight bounding box plus
the pad) and with the canvas itself: a label drawn off the canvas would be saved only because the tight box
grew, so the canvas check is the one that catches a clipped title.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from foldconv.analysis.counting import count
from foldconv.analysis.receptive_field import receptive_field
from foldconv.experiments import count_plots
from foldconv.experiments.io import MIN_FONT_PT
from foldconv.experiments.receptive_field import ERF_AUTO, erf_figure, rf_jump_figure
from foldconv.experiments.sweep import summary

PAD_PX = 0.05 * 120  # save_figure's pad_inches at its dpi


def text_problems(fig) -> list:
    """The texts of ``fig`` that leave the canvas or the saved area, or are smaller than MIN_FONT_PT."""
    fig.set_dpi(120)
    fig.tight_layout()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    saved = fig.get_tightbbox(renderer).transformed(fig.dpi_scale_trans).padded(PAD_PX)
    canvas = fig.bbox.padded(1.0)  # one pixel of rounding
    # tick labels outside the view limits exist but are not drawn: take only the ticks each axis draws
    all_ticks, drawn = set(), []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            all_ticks |= {id(t) for tick in axis.get_major_ticks() + axis.get_minor_ticks() for t in (tick.label1, tick.label2)}
            drawn += [t for tick in axis._update_ticks() for t in (tick.label1, tick.label2)]
    texts = [t for t in fig.findobj(lambda a: hasattr(a, "get_fontsize") and hasattr(a, "get_text")) if id(t) not in all_ticks]
    problems = []
    for text in texts + drawn:
        if not text.get_visible() or not text.get_text().strip():
            continue
        box = text.get_window_extent(renderer)
        label = repr(text.get_text()[:40])
        if text.get_fontsize() < MIN_FONT_PT:
            problems.append(f"{label}: {text.get_fontsize()} pt < {MIN_FONT_PT} pt")
        for name, area in (("canvas", canvas), ("saved area", saved)):
            if not (area.x0 <= box.x0 and box.x1 <= area.x1 and area.y0 <= box.y0 and box.y1 <= area.y1):
                problems.append(f"{label}: {box.bounds} outside the {name} {area.bounds}")
    return problems


@pytest.fixture
def checked(monkeypatch):
    """Patch save_figure in the plotting modules: each saved figure is checked instead of written."""
    seen = []

    def check(fig, path, dpi=120):
        seen.append(path)
        problems = text_problems(fig)
        assert not problems, f"{path}: " + "; ".join(problems)
        return path

    for module in (count_plots, summary):
        monkeypatch.setattr(module, "save_figure", check)
    return seen


def deep_net(layers: int) -> torch.nn.Module:
    return torch.nn.Sequential(*[torch.nn.Conv2d(2, 2, 1) for _ in range(layers)])


@pytest.mark.parametrize("layers", [1, 40, 320])  # one layer, every name shown, every k-th name shown
def test_count_layer_plot_text_fits(checked, layers):
    rep = count(deep_net(layers), (1, 2, 8, 8), name=f"net_with_a_long_name_{layers}")
    count_plots.plot_layers(rep, "layers.png")
    reps = [count(torch.nn.Linear(4, n), (1, 4), name=f"fc{n}") for n in (2, 8)]
    count_plots.plot_comparison(reps, "cmp.png")
    assert checked == ["layers.png", "cmp.png"]


@pytest.mark.parametrize("layers", [3, 200])
def test_rf_figures_text_fits(layers):
    net = torch.nn.Sequential(*[torch.nn.Conv2d(1, 1, 3, padding=1) for _ in range(layers)], torch.nn.AdaptiveAvgPool2d(1))
    rep = receptive_field(net, (1, 1, 16, 16))
    assert not text_problems(rf_jump_figure(rep, "a_model_name"))
    erf = np.random.default_rng(0).random((16, 16))
    fig = erf_figure(erf, ((2, 12), (3, 13)), "layer1_0_relu_1", picked=f"automatic pick: {ERF_AUTO}; erf_node=<name> sets it")
    assert not text_problems(fig)


def sweep_rows():
    rows = []
    for mode in ("zeros", "reflect"):
        for s, p, r in ((1, 0, 2), (2, 1, 3), (1, 1, "(2,1)")):
            rows.append({"section": "modes", "dims": 2, "r": r, "kernel": 3, "stride": s, "padding": p, "padding_mode": mode,
                         "observed": "holds" if mode == "zeros" or p == 0 else "fails", "rel_err_float32": 1e-7 * s, "rel_err_bfloat16": 1e-3})
    rows.append({"section": "theorem", "dims": 1, "r": 2, "kernel": 1, "stride": 1, "padding": 0, "padding_mode": "zeros",
                 "observed": "holds with conditions", "rel_err_float32": 1e-8, "rel_err_bfloat16": 1e-2})
    return rows


@pytest.mark.parametrize("empty", [False, True])  # True: nothing to draw, each figure says "no data"
def test_sweep_figures_text_fits(checked, empty):
    rows = [] if empty else sweep_rows()
    summary.plot_modes(rows, "modes.png")
    summary.plot_errors(rows, "errors.png")
    summary.plot_outcomes(rows, "outcomes.png")
    summary.plot_outcomes_by_r(rows, "outcomes_by_r.png")
    assert checked == ["modes.png", "errors.png", "outcomes.png", "outcomes_by_r.png"]


def test_the_check_can_fail():
    from foldconv.experiments.io import figure

    fig, ax = figure(figsize=(2, 2))
    ax.set_title("a title far too long for a figure two inches wide, so it runs off the canvas", fontsize=10)
    ax.set_xlabel("tiny", fontsize=6)
    problems = text_problems(fig)
    assert any("canvas" in p for p in problems) and any("6.0 pt" in p for p in problems), problems


@pytest.mark.parametrize("r, channels", [(16, 256), (2, 8), ("2x4", 32)])
def test_big_kernel_figure_text_fits(r, channels):
    from foldconv import ConvSpec, FoldSpec, fold_conv
    from foldconv.experiments.fold_kernel import channel_map, kernel_figure

    spec, fold = ConvSpec.make(2, channels, 2, 3, padding=1), FoldSpec.make(r)
    big = fold_conv(spec.to_module(), fold.r, fold.order)
    fig, _ = kernel_figure(big.weight, channel_map(spec, fold), fold.r, title=f"{spec.describe()} folded by r={r}",
                           order=fold.order_string)
    assert not text_problems(fig)


def test_operator_figure_text_fits():
    from foldconv import depth_to_space, fold_conv
    from foldconv.equivalences.dense import dense_operator, layout_permutation
    from foldconv.experiments.operators import operator_figure

    conv = torch.nn.Conv2d(16, 1, 3, padding=1)
    a, b = dense_operator(conv, (1, 16, 8, 8)), dense_operator(fold_conv(conv, 2), (1, 4, 16, 16))
    fig, _ = operator_figure(a, b, layout_permutation(lambda x: depth_to_space(x, 2), (1, 16, 8, 8)), titles=("conv", "folded"))
    assert not text_problems(fig)
