"""Summaries and plots of a sweep's rows: summary.md, results.csv and heatmap PNGs.

Works on rows from :func:`foldconv.sweep.run_sweep` and on rows read back from CSV (where every value is a
string), so that :mod:`~foldconv.experiments.sweep.aggregate` can reuse it.
"""
from __future__ import annotations

import collections
import math
import textwrap
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

from ...sweep import COLUMNS, CRASHED
from ..io import columns_of, figure, is_true, markdown_table, save_figure, write_csv, write_markdown

__all__ = ["MEANINGS", "answer", "crashed", "disagreements", "summarize", "write_sweep_outputs", "plot_modes", "plot_errors", "plot_outcomes"]

_OUTCOMES = ("holds", "holds with conditions", "fails", "invalid")


def _size_key(row: Mapping[str, Any]):
    def num(v):
        try:
            return float(v)
        except (TypeError, ValueError):
            return math.inf
    return (num(row.get("in_channels")), num(row.get("size")), num(row.get("kernel")), str(row.get("r")))


#: What each outcome means; summary.md states it before any count.
MEANINGS = {
    "holds": "the literal construction (input and weight folded with depth_to_space in the same order, stride "
             "r*S, padding r*P, everything else passed through; for a following layer, the same layer on the "
             "folded map) computes exactly what the original computes: nothing to change",
    "holds with conditions": "the literal fold does NOT compute the same function, but an equivalent folded form "
                             "exists once the stated condition is applied (the remedy: another stride, a dense "
                             "weight instead of groups or dilation, the input folded in the weight's order, a "
                             "padded input, ...); the remedies are listed below and in results.csv's conditions column",
    "fails": "no folded form of this kind computes the same function (e.g. reflect or replicate padding, which "
             "mirror or copy whole pixels across fold blocks; a following layer that mixes fold blocks, such as "
             "train-mode BatchNorm or upsampling); the reason "
             "column says why",
    "invalid": "the request itself is malformed (r < 1, an unknown order, channels not divisible by the block) or "
               "torch cannot run the original conv; predicted as invalid, not silently answered",
    CRASHED: "not an outcome: the observation took its worker process down (a native crash), so nothing was observed "
             "and nothing is claimed; the row records the point, so that a resumed run does not run it again",
}
_BAD_COLUMNS = ["section", "dims", "r", "in_channels", "kernel", "stride", "padding", "dilation", "groups", "padding_mode",
                "order", "input_order", "folded_stride", "following", "predicted", "observed", "predicted_literal", "observed_literal"]


def _example(row: Mapping[str, Any]) -> str:
    r = collections.defaultdict(str, row)
    return (f"{r['section']}: dims={r['dims']} r={r['r']} C={r['in_channels']} k={r['kernel']} s={r['stride']} p={r['padding']} "
            f"d={r['dilation']} g={r['groups']} mode={r['padding_mode']} order={r['order']}/{r['input_order']} following={r['following']}")


def crashed(rows: Sequence[Mapping[str, Any]]) -> List[Mapping[str, Any]]:
    """The rows of points whose observation took the worker process down (nothing observed).

    Example:
        >>> crashed([{"observed": "crashed"}, {"observed": "holds"}])
        [{'observed': 'crashed'}]
    """
    return [r for r in rows if r.get("observed") == CRASHED]


def disagreements(rows: Sequence[Mapping[str, Any]]) -> List[Mapping[str, Any]]:
    """The observed rows whose prediction does not agree with the exact observation.

    Example:
        >>> disagreements([{"observed": "holds", "agree": "False"}, {"observed": "crashed", "agree": ""}])
        [{'observed': 'holds', 'agree': 'False'}]
    """
    return [r for r in rows if r.get("observed") != CRASHED and not is_true(r["agree"])]


def answer(rows: Sequence[Mapping[str, Any]]) -> str:
    """The direct answer of a sweep, in one sentence: does every prediction agree with the exact observation?

    Example:
        >>> answer([{"agree": "True"}] * 1354)
        '1,354 configurations: every prediction agrees with the exact observation.'
        >>> answer([{"agree": "True"}, {"agree": False}])
        '2 configurations: 1 prediction disagrees with the exact observation (listed first below); 1 agree.'
        >>> answer([{"agree": "True"}, {"agree": "", "observed": "crashed"}])
        '2 configurations: 1 crashed its worker process and was not observed (listed first below); every other prediction agrees with the exact observation.'
    """
    n, bad, lost = len(rows), len(disagreements(rows)), len(crashed(rows))
    crash = f"{lost:,} crashed {'their worker processes and were' if lost > 1 else 'its worker process and was'} not observed (listed first below)"
    if not bad:
        if lost:
            return f"{n:,} configurations: {crash}; every other prediction agrees with the exact observation."
        return f"{n:,} configurations: every prediction agrees with the exact observation."
    return (f"{n:,} configurations: {bad:,} prediction{'s' if bad > 1 else ''} disagree{'' if bad > 1 else 's'} with the "
            f"exact observation (listed first below); {n - bad - lost:,} agree" + (f"; {crash}." if lost else "."))


def _remedies(rows: Sequence[Mapping[str, Any]], per_rule: int = 4) -> List[str]:
    """One line per rule whose outcome is 'holds with conditions': its count and its remedies, commonest first."""
    by_rule: Dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    reasons: Dict[str, str] = {}
    for r in rows:
        if r["observed"] == "holds with conditions" and r.get("conditions"):
            by_rule[r["rule"]][r["conditions"]] += 1
            reasons.setdefault(r["rule"], str(r.get("reason", "")))
    lines = []
    for rule, remedies in sorted(by_rule.items(), key=lambda kv: -sum(kv[1].values())):
        shown = "; ".join(f"*{text}* ({count})" for text, count in remedies.most_common(per_rule))
        more = len(remedies) - per_rule
        lines.append(f"- **{rule}** ({sum(remedies.values()):,} configurations; {reasons[rule]}): {shown}"
                     + (f"; and {more} more forms of the same remedy (results.csv, conditions column)" if more > 0 else ""))
    return lines


def summarize(rows: Sequence[Mapping[str, Any]], title: str = "Equivalence sweep") -> str:
    """Markdown, the answer first: do predictions agree with the exact observation (the disagreements, if
    any, right after); what each outcome means; the remedies of 'holds with conditions'; counts per section
    and per rule with the smallest example of each.

    Example:
        >>> print(summarize([{"predicted": "holds", "observed": "holds", "agree": True, "rule": "FOLD-1",
        ...     "reason": "ok", "section": "theorem"}]).splitlines()[2])
        1 configurations: every prediction agrees with the exact observation.
    """
    total = collections.Counter(r["observed"] for r in rows)
    lost = crashed(rows)
    outcomes = _OUTCOMES + ((CRASHED,) if lost else ())
    tally = ", ".join(f"{total.get(o, 0):,} {o}" for o in outcomes)
    lines = [f"# {title}", "", answer(rows), "", f"Observed outcomes: {tally} (each defined below).", ""]
    bad = disagreements(rows)
    if bad:
        lines += ["## Disagreements", "", markdown_table(bad, _BAD_COLUMNS), ""]
    if lost:
        lines += ["## Crashed: not observed", "", "Each of these configurations took its worker process down (a native crash); "
                  "the run went on with the next one, and a resumed run does not try it again.", "",
                  markdown_table(lost, _BAD_COLUMNS[:14] + ["reason"]), ""]
    lines += ["## What the outcomes mean", ""] + [f"- **{o}**: {MEANINGS[o]}." for o in outcomes] + [""]
    remedies = _remedies(rows)
    lines += ["## Remedies: the conditions under which a fold holds", ""]
    if remedies:
        lines += ["Each configuration that *holds with conditions* holds once its condition is applied; per rule, the "
                  "remedies with how many configurations need each:", ""] + remedies + [""]
    else:
        lines += ["No configuration of this run holds only with conditions.", ""]
    lines += ["## Outcomes per section (predicted = observed)", ""]
    by_section: Dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for r in rows:
        by_section[r["section"]][r["observed"]] += 1
    table = [{"section": s, **{o: c.get(o, 0) for o in outcomes}, "total": sum(c.values())} for s, c in by_section.items()]
    table.append({"section": "**all**", **{o: total.get(o, 0) for o in outcomes}, "total": len(rows)})
    lines += [markdown_table(table), ""]
    lines += ["## Rules and reasons", "", "Each rule is a claim in paper_notes/claims.md; the example is the smallest configuration it decided.", ""]
    groups: Dict[tuple, List[Mapping[str, Any]]] = collections.defaultdict(list)
    for r in rows:
        if r["observed"] != CRASHED:
            groups[(r["rule"], r["predicted"])].append(r)
    rule_rows = []
    for (rule, outcome), members in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        smallest = collections.defaultdict(str, min(members, key=_size_key))
        rule_rows.append({"rule": rule, "outcome": outcome, "count": len(members), "reason (smallest example)": smallest["reason"],
                          "remedy (smallest example)": smallest.get("conditions") or "", "smallest example": _example(smallest)})
    lines += [markdown_table(rule_rows), ""]
    if not bad:
        lines += ["## Disagreements", "", "None: every prediction matched the exact observation."]
    return "\n".join(lines)


def _grid_values(rows, key):
    values = sorted({str(r[key]) for r in rows}, key=lambda v: (len(v), v))
    return values


def _ones(value: Any) -> bool:
    return all(v.strip() == "1" for v in str(value).strip("()").split(","))


def _block(r: Any, dims: Any) -> int:
    parts = [int(v) for v in str(r).strip("()").split(",")]
    return math.prod(parts) if len(parts) > 1 else parts[0] ** int(dims)


def plot_modes(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Heatmaps over stride x padding, per padding mode: the share of the ``modes`` slice's r > 1
    configurations whose literal fold holds. The slice is the modes section's (kernel 3, dilation 1, groups 1,
    one folded channel, crd order, folded stride r*S); product rows count only where they lie on it, so the
    quick and the full grid draw the same quantity. Each cell aggregates over dims and r (the count is shown).
    """
    import numpy as np

    def on_slice(r: Mapping[str, Any]) -> bool:
        if str(r["r"]) in ("1", "(1,1)", "(1,1,1)"):
            return False
        if r["section"] == "modes":
            return True
        return (r["section"] == "product" and str(r["kernel"]).strip("()").split(",")[0] == "3" and _ones(r["dilation"])
                and _ones(r["groups"]) and r["order"] == "crd" and r["input_order"] == "same" and str(r["folded_stride"]) == "0"
                and int(r["in_channels"]) == _block(r["r"], r["dims"]))

    sel = [r for r in rows if on_slice(r)]
    modes = sorted({r["padding_mode"] for r in sel}) or ["zeros"]
    strides, pads = _grid_values(sel, "stride") or ["1"], _grid_values(sel, "padding") or ["0"]
    fig, axes = figure(1, len(modes), figsize=(3.2 * len(modes), 3.2), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        grid = np.full((len(strides), len(pads)), np.nan)
        counts = [[0] * len(pads) for _ in strides]
        for i, s in enumerate(strides):
            for j, p in enumerate(pads):
                cell = [r for r in sel if r["padding_mode"] == mode and str(r["stride"]) == s and str(r["padding"]) == p]
                if cell:
                    grid[i, j] = sum(r["observed"] == "holds" for r in cell) / len(cell)
                    counts[i][j] = len(cell)
        ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", origin="lower")
        for i in range(len(strides)):
            for j in range(len(pads)):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.0%}\nof {counts[i][j]}", ha="center", va="center", fontsize=9)
        ax.set_xticks(range(len(pads)), pads)
        ax.set_yticks(range(len(strides)), strides)
        ax.set_xlabel("padding P")
        ax.set_ylabel("stride S")
        ax.set_title(f"padding_mode={mode}", fontsize=10)
    caption = ("Share of configurations whose literal fold holds (r > 1; K=3, dilation 1, groups 1, crd, folded stride r*S; "
               "each cell pools every dims and r of the grid, its count shown)")
    fig.suptitle(textwrap.fill(caption, int(13 * 3.2 * len(modes))), fontsize=9)  # ~13 chars of 9 pt per inch
    return save_figure(fig, path)


def plot_errors(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Heatmaps: log10 of the largest relative error of the folded form over r x kernel, per low-precision dtype."""
    import numpy as np

    sel = [r for r in rows if r["section"] in ("theorem", "product")]
    keys = [k for k in columns_of(sel) if k.startswith("rel_err_") and any(r.get(k) not in (None, "") for r in sel)]
    rs, ks = _grid_values(sel, "r") or ["1"], _grid_values(sel, "kernel") or ["1"]
    fig, axes = figure(1, max(1, len(keys)), figsize=(3.6 * max(1, len(keys)), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        grid = np.full((len(rs), len(ks)), np.nan)
        for i, r in enumerate(rs):
            for j, k in enumerate(ks):
                vals = [float(x[key]) for x in sel if str(x["r"]) == r and str(x["kernel"]) == k and x.get(key) not in (None, "")]
                if vals:
                    grid[i, j] = math.log10(max(max(vals), 1e-17))
        im = ax.imshow(grid, cmap="viridis", origin="lower")
        fig.colorbar(im, ax=ax, label="log10 max rel error")
        ax.set_xticks(range(len(ks)), ks)
        ax.set_yticks(range(len(rs)), rs)
        ax.set_xlabel("kernel K")
        ax.set_ylabel("fold r")
        ax.set_title(key.replace("rel_err_", ""))
    return save_figure(fig, path)


def plot_outcomes(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Stacked bars: observed outcome counts per section."""
    sections = list(dict.fromkeys(r["section"] for r in rows))
    fig, ax = figure(figsize=(7, 3.4))
    bottom = [0] * len(sections)
    colors = {"holds": "#2e7d32", "holds with conditions": "#f9a825", "fails": "#c62828", "invalid": "#757575", CRASHED: "#000000"}
    for outcome in _OUTCOMES + ((CRASHED,) if crashed(rows) else ()):
        counts = [sum(1 for r in rows if r["section"] == s and r["observed"] == outcome) for s in sections]
        ax.bar(sections, counts, bottom=bottom, label=outcome, color=colors[outcome])
        bottom = [b + c for b, c in zip(bottom, counts)]
    ax.set_ylabel("configurations")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=8)
    ax.set_title("Observed outcome per section")
    return save_figure(fig, path)


def write_sweep_outputs(
    rows: Sequence[Mapping[str, Any]], out: Path, title: str = "Equivalence sweep", plots: bool = True, *, csv: bool = True,
) -> Dict[str, Path]:
    """Write results.csv (the rows' own columns, in order; ``csv=False`` when the run already wrote it row by
    row), summary.md and (optionally) the PNGs into ``out``."""
    out = Path(out)
    paths: Dict[str, Path] = {}
    if csv:
        paths["csv"] = write_csv(rows, out / "results.csv", columns_of(rows) if rows else COLUMNS)
    paths["summary"] = write_markdown(summarize(rows, title), out / "summary.md")
    if plots:
        paths["modes"] = plot_modes(rows, out / "heatmap_modes.png")
        paths["errors"] = plot_errors(rows, out / "heatmap_errors.png")
        paths["outcomes"] = plot_outcomes(rows, out / "outcomes.png")
    return paths
