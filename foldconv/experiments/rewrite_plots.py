"""The rewrite app's figures: per-site parameters and MACs before vs after, and the speedups of the forms.

Both take the rows of the app's tables (:func:`foldconv.experiments.rewrite.site_rows`,
:func:`foldconv.experiments.rewrite.timing_rows`) and return a figure from :func:`foldconv.experiments.io.figure`.

Example:
    >>> row = {"model": "m", "step": "rewrite", "rule": "focus_to_conv", "location": "focus.conv.conv", "applied": True,
    ...        "params before": 3456, "params after": 3456, "MACs before": 884736, "MACs after": 884736}
    >>> len(sites_figure([row]).axes)
    2
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from .io import figure

__all__ = ["sites_figure", "timings_figure"]


def sites_figure(rows: Sequence[Mapping[str, Any]]):
    """Params and MACs before vs after, one pair of bars per site, each bar labelled with its value, on a linear
    axis from 0 (bars start at 0, so their lengths compare as the numbers do; a site whose counts
    are small beside another's still shows its numbers); a site not applied has no "after" bar (it has no "after"),
    the reason it was not applied written in its place."""
    from .count_plots import short_count

    rows = [r for r in rows if r["step"] == "rewrite" and not r.get("part of")]
    labels = [f"{r['model']}: {r['location']}\n({r['rule']}" + (f", input {r['input shape']})" if r.get("input shape") else ")")
              + ("\nnot applied" if _refused(r) else "") for r in rows]
    fig, axes = figure(1, 2, figsize=(13.0, 1.4 + 0.75 * max(1, len(rows))), squeeze=False)
    ys = list(range(len(rows)))
    # parameters do not depend on the input; MACs are one forward pass on the site's input (its shape, batch included,
    # is in the row's label), so the axes say so instead of a "per sample" that fits neither
    axis_labels = {"parameters": "parameters of the site's layers (weights + biases; linear, from 0)",
                   "MACs": "MACs (multiply-accumulates) of one forward pass on the site's input (linear, from 0)"}
    for ax, (what, before, after) in zip(axes[0], (("parameters", "params before", "params after"), ("MACs", "MACs before", "MACs after"))):
        top = max([int(r[k]) for r in rows for k in (before, after) if str(r[k]) != ""] + [1])
        for y, r in zip(ys, rows):
            for dy, key, colour, name in ((-0.2, before, "#999999", "before"), (0.2, after, "#1f77b4", "after")):
                if _refused(r) and key == after:
                    reason = " ".join(str(r["applied"])[3:].split())
                    reason = reason[:60] + ("..." if len(reason) > 60 else "")
                    ax.text(top * 0.01, y + dy, f"not applied: {reason}" if ax is axes[0][0] else "not applied",
                            va="center", fontsize=7, color="#b00000")
                    continue
                v = int(r[key])
                ax.barh(y + dy, v, height=0.38, color=colour, label=name if y == 0 else None)
                ax.text(v + top * 0.01, y + dy, f"{v:,}", va="center", fontsize=8)
        ax.set_xlim(0, top * 1.3)  # from 0; room for the value labels
        ax.xaxis.set_major_formatter(_short(short_count))
        ax.set_xlabel(axis_labels[what], fontsize=9)
        ax.set_title(f"{what} per site: before (grey) vs after (blue)", fontsize=10)
        ax.set_yticks(ys)
        ax.set_yticklabels(labels if ax is axes[0][0] else [""] * len(ys), fontsize=8)
        # top to bottom, room for both bars of every row (a not-applied row's text stands where its "after" bar would);
        # the title names the colours: a legend would sit on the bars' labels
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.tick_params(axis="x", labelsize=8)
    return fig


def _refused(row: Mapping[str, Any]) -> bool:
    return str(row["applied"]).startswith("no")


def _short(fmt):
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _: fmt(v))


def timings_figure(rows: Sequence[Mapping[str, Any]], *, machine: str = ""):
    """Speedup (original / form, log scale) per form with its interval (quartiles of both timings) and the 1.0x
    line; inconclusive bars (interval holds 1.0x) grey and hatched; a form that was not timed (not verified, or
    optimize could not run) is listed with the reason instead of a bar. The original itself (1.0x) is the line."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    def number(v: Any) -> float:  # rows read back from the CSV hold numbers as text, and "" where there is none
        try:
            return float("nan") if isinstance(v, bool) else float(v)
        except (TypeError, ValueError):
            return float("nan")

    rows = [r for r in rows if r["form"] != "original"]
    timed = [r for r in rows if number(r["speedup"]) == number(r["speedup"])]
    labels = [f"{r['model']}: {r['form']}" for r in rows]
    fig, ax = figure(figsize=(10.0, 1.7 + 0.45 * max(1, len(rows))))
    ys = list(range(len(rows)))
    ends = [number(r[k]) for r in timed for k in ("speedup", "speedup low", "speedup high")]
    ends = [v for v in ends if v == v and v > 0]
    lo, hi = min(ends + [0.5]), max(ends + [2.0])
    for y, r in zip(ys, rows):
        mid, low, high = number(r["speedup"]), number(r["speedup low"]), number(r["speedup high"])
        if mid != mid:
            note = " ".join(str(r.get("note", "")).split())
            note = note[:75] + ("..." if len(note) > 75 else "")
            kept = str(r["form"]).endswith("original kept")
            ax.text(lo / 1.4, y, note if kept else f"not timed: {note}", va="center", fontsize=8,
                    color="#444444" if kept else "#b00000", bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})
            continue
        inconclusive = str(r["inconclusive"]) == "True"
        colour = "#bbbbbb" if inconclusive else ("#2ca02c" if mid > 1 else "#d62728")
        # bars grow from 1.0x, so a slowdown points left and a speedup right
        ax.barh(y, mid - 1.0, left=1.0, height=0.6, color=colour, hatch="//" if inconclusive else None, edgecolor="#555555")
        if low == low and high == high and low > 0:
            ax.errorbar(mid, y, xerr=[[max(0.0, mid - low)], [max(0.0, high - mid)]], fmt="none", ecolor="black", capsize=3, lw=1)
        text = f"{mid:.2f}x" + (f" [{low:.2f}, {high:.2f}]" if low == low and high == high else "")
        ax.text(hi * 1.15, y, text + (" inconclusive" if inconclusive else ""), va="center", fontsize=8)
    ax.axvline(1.0, color="black", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_xlim(lo / 1.5, hi * 6)  # the right part holds the value labels
    ax.xaxis.set_major_locator(LogLocator(base=2))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_ylim(len(rows) - 0.4, -0.6)  # top to bottom, half a row of room at both ends
    ax.set_xlabel("speedup = original median / form median, from the same rounds (log scale)\n"
                  "whisker: [original q25 / form q75, original q75 / form q25]; dashed: 1.0x", fontsize=9)
    ax.set_title("Speed of the equivalent forms (green faster, red slower, grey hatched inconclusive)"
                 + (f"\n{machine}" if machine else ""), fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    return fig
