"""Summaries and plots of a sweep's rows: summary.md, results.csv and heatmap PNGs.

Works on rows from :func:`foldconv.sweep.run_sweep` and on rows read back from CSV (where every value is a
string), so that :mod:`~foldconv.experiments.sweep.aggregate` can reuse it. Everything summary.md and the
plots need is gathered in one pass (:class:`Tally`), so a merged full grid (millions of rows) is summarised
from a stream, in memory that does not grow with the number of rows.
"""
from __future__ import annotations

import collections
import math
import textwrap
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Sequence, Tuple, Union

from ...sweep import COLUMNS, CRASHED
from ..io import columns_of, figure, is_true, legend_beside, markdown_table, no_data, save_figure, write_csv, write_markdown

__all__ = ["COVERED", "MEANINGS", "Tally", "coverage_lines", "answer", "crashed", "disagreements", "summarize", "write_sweep_outputs", "plot_modes", "plot_errors",
           "plot_outcomes", "plot_outcomes_by_r", "by_r_pooling", "PROBES", "error_floor"]

_OUTCOMES = ("holds", "holds with conditions", "fails", "invalid")


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


def _size_key(row: Mapping[str, Any]):
    def num(v):
        try:
            return float(v)
        except (TypeError, ValueError):
            return math.inf
    return (num(row.get("in_channels")), num(row.get("size")), num(row.get("kernel")), str(row.get("r")))


def _ones(value: Any) -> bool:
    return all(v.strip() == "1" for v in str(value).strip("()").split(","))


def _block(r: Any, dims: Any) -> int:
    parts = [int(v) for v in str(r).strip("()").split(",")]
    return math.prod(parts) if len(parts) > 1 else parts[0] ** int(dims)


def _on_modes_slice(r: Mapping[str, Any]) -> bool:
    """The modes section's slice (kernel 3, dilation 1, groups 1, one folded channel, crd, folded stride r*S), r > 1."""
    if r.get("section") not in ("modes", "product") or str(r.get("r")) in ("1", "(1,1)", "(1,1,1)"):
        return False
    if r["section"] == "modes":
        return True
    return (r["section"] == "product" and str(r["kernel"]).strip("()").split(",")[0] == "3" and _ones(r["dilation"])
            and _ones(r["groups"]) and r["order"] == "crd" and r["input_order"] == "same" and str(r["folded_stride"]) == "0"
            and int(r["in_channels"]) == _block(r["r"], r["dims"]))


def _grid_values(values: Iterable[str]) -> List[str]:
    return sorted(set(values), key=lambda v: (len(v), v))


class Tally:
    """What summary.md and the plots need from a sweep's rows, gathered in one pass (:meth:`add`).

    Counts per outcome and per section, the disagreeing and the crashed rows, per rule its count and smallest
    example, the remedies per rule, the largest error per (r, kernel) and dtype, and the modes slice's cells.

    Example:
        >>> t = Tally.of([{"section": "theorem", "observed": "holds", "predicted": "holds", "agree": "True", "rule": "FOLD-1"}])
        >>> t.n, dict(t.outcomes), t.answer()
        (1, {'holds': 1}, '1 configuration: every prediction agrees with the exact observation.')
    """

    def __init__(self) -> None:
        self.n = 0
        self.outcomes: collections.Counter = collections.Counter()
        self.by_section: Dict[str, collections.Counter] = {}
        self.by_section_r: Dict[str, Dict[str, collections.Counter]] = {}
        self.bad: List[Mapping[str, Any]] = []
        self.lost: List[Mapping[str, Any]] = []
        self.rules: Dict[tuple, List[Any]] = {}
        self.remedies: Dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.reasons: Dict[Tuple[str, str], str] = {}
        self.errors: Dict[str, Dict[Tuple[str, str], float]] = {}
        self.modes: Dict[Tuple[str, str, str], List[int]] = {}
        self.coverage: Dict[str, Dict[str, set]] = {}

    @classmethod
    def of(cls, rows: Union[Tally, Iterable[Mapping[str, Any]]]) -> Tally:
        """The tally of ``rows`` (a tally is returned as it is)."""
        if isinstance(rows, Tally):
            return rows
        tally = cls()
        for row in rows:
            tally.add(row)
        return tally

    def add(self, r: Mapping[str, Any]) -> None:
        """Count one row (columns a row lacks count as empty)."""
        self.n += 1
        observed = r.get("observed")
        self.outcomes[observed] += 1
        self.by_section.setdefault(r.get("section"), collections.Counter())[observed] += 1
        per_r = self.by_section_r.setdefault(str(r.get("section")), {})
        per_r.setdefault(str(r.get("r", "")), collections.Counter())[observed] += 1
        if observed == CRASHED:
            self.lost.append(r)
            return
        if not is_true(r.get("agree")):
            self.bad.append(r)
        key = (r.get("rule", ""), r.get("predicted", ""))
        found = self.rules.get(key)
        if found is None:
            self.rules[key] = [1, r]
        else:
            found[0] += 1
            if _size_key(r) < _size_key(found[1]):
                found[1] = r
        if observed == "holds with conditions" and r.get("conditions"):
            self.remedies[r["rule"]][r["conditions"]] += 1
            # per remedy, not per rule: one rule covers several layers (RULE-6: average and max pooling), and a
            # reason quoted once for the rule would describe only the first layer it met
            self.reasons.setdefault((r["rule"], r["conditions"]), str(r.get("reason", "")))
        if r.get("section") in ("theorem", "product"):
            for k, v in r.items():
                if k.startswith("rel_err_") and v not in (None, ""):
                    cells = self.errors.setdefault(k, {})
                    cell = (str(r.get("r")), str(r.get("kernel")))
                    cells[cell] = max(cells.get(cell, -math.inf), float(v))
        if r.get("section") in COVERED:
            seen = self.coverage.setdefault(r["section"], collections.defaultdict(set))
            seen["convs"].add((str(r.get("kernel")), str(r.get("stride")), str(r.get("padding"))))
            for key in ("dims", "size", "padding_mode"):
                seen[key].add(str(r.get(key)))
        if _on_modes_slice(r):
            cell = self.modes.setdefault((str(r["padding_mode"]), str(r["stride"]), str(r["padding"])), [0, 0])
            cell[0] += observed == "holds"
            cell[1] += 1

    def answer(self) -> str:
        """The direct answer, in one sentence (see :func:`answer`)."""
        n, bad, lost = self.n, len(self.bad), len(self.lost)
        if not n:  # an empty shard: nothing agrees or disagrees
            return "0 configurations: nothing was predicted or observed in this run."
        configs = f"{n:,} configuration{'s' if n != 1 else ''}"
        agree = n - bad - lost
        crash = f"{lost:,} crashed {'their worker processes and were' if lost > 1 else 'its worker process and was'} not observed (listed first below)"
        if not bad:
            if lost:
                return f"{configs}: {crash}; every other prediction agrees with the exact observation."
            return f"{configs}: every prediction agrees with the exact observation."
        return (f"{configs}: {bad:,} prediction{'s' if bad > 1 else ''} disagree{'' if bad > 1 else 's'} with the "
                f"exact observation (listed first below); {agree:,} agree{'s' if agree == 1 else ''}" + (f"; {crash}." if lost else "."))


#: The sections whose exact configurations summary.md lists (:func:`coverage_lines`), and what each tests.
COVERED = {
    "space_to_depth": "a big conv (kernel, stride and padding multiples of r) against space_to_depth(r) + the unfolded "
                      "small conv, on map sizes that are and are not multiples of r (RULE-8)",
    "strided_spd": "a strided conv against space_to_depth(stride) + a stride-1 conv, literally and in strided_to_spd's "
                   "aligned form (SPD-1): the grid's kernel x stride (> 1) x padding and the standard strided forms",
}


def _num(v: str) -> Tuple[float, str]:
    try:
        return (float(v), v)
    except ValueError:
        return (math.inf, v)


def coverage_lines(tally: Tally) -> List[str]:
    """Exactly which configurations the space-to-depth sections of this run tested: every (kernel, stride,
    padding) of the strided conv, the map sizes, padding modes and dims.

    Example:
        >>> t = Tally.of([{"section": "strided_spd", "kernel": "3", "stride": "2", "padding": "1", "dims": "2", "size": "8",
        ...     "padding_mode": "zeros", "observed": "holds", "agree": "True"}])
        >>> coverage_lines(t)[0][:60]
        '- **strided_spd** (a strided conv against space_to_depth(str'
    """
    lines = []
    for section, seen in tally.coverage.items():
        convs = ", ".join(f"{k}x{k} s{st} p{pad}" for k, st, pad in sorted(seen["convs"], key=lambda c: tuple(_num(v) for v in c)))
        lines.append(f"- **{section}** ({COVERED[section]}): {len(seen['convs'])} conv(s) (kernel x kernel, stride, padding; "
                     f"the kernel per spatial axis): {convs}; map sizes {', '.join(sorted(seen['size'], key=_num))} px; padding "
                     f"modes {', '.join(sorted(seen['padding_mode']))}; dims {', '.join(sorted(seen['dims']))}")
    return lines


def crashed(rows: Union[Tally, Iterable[Mapping[str, Any]]]) -> List[Mapping[str, Any]]:
    """The rows of points whose observation took the worker process down (nothing observed).

    Example:
        >>> crashed([{"observed": "crashed"}, {"observed": "holds", "agree": True, "section": "x", "rule": "", "predicted": ""}])
        [{'observed': 'crashed'}]
    """
    if isinstance(rows, Tally):
        return rows.lost
    return [r for r in rows if r.get("observed") == CRASHED]


def disagreements(rows: Union[Tally, Iterable[Mapping[str, Any]]]) -> List[Mapping[str, Any]]:
    """The observed rows whose prediction does not agree with the exact observation.

    Example:
        >>> disagreements([{"observed": "holds", "agree": "False"}, {"observed": "crashed", "agree": ""}])
        [{'observed': 'holds', 'agree': 'False'}]
    """
    if isinstance(rows, Tally):
        return rows.bad
    return [r for r in rows if r.get("observed") != CRASHED and not is_true(r["agree"])]


def answer(rows: Union[Tally, Sequence[Mapping[str, Any]]]) -> str:
    """The direct answer of a sweep, in one sentence: does every prediction agree with the exact observation?

    Example:
        >>> answer([{"agree": "True"}] * 1354)
        '1,354 configurations: every prediction agrees with the exact observation.'
        >>> answer([{"agree": "True"}, {"agree": False}])
        '2 configurations: 1 prediction disagrees with the exact observation (listed first below); 1 agrees.'
        >>> answer([])
        '0 configurations: nothing was predicted or observed in this run.'
        >>> answer([{"agree": "True"}, {"agree": "", "observed": "crashed"}])
        '2 configurations: 1 crashed its worker process and was not observed (listed first below); every other prediction agrees with the exact observation.'
    """
    if isinstance(rows, Tally):
        return rows.answer()
    tally = Tally()
    tally.n, tally.bad, tally.lost = len(rows), disagreements(rows), crashed(rows)
    return tally.answer()


def _remedies(tally: Tally, per_rule: int = 4) -> List[str]:
    """Per rule whose outcome is 'holds with conditions': its count, then one line per remedy (commonest first)
    with its own count and the reason of a configuration that needs it, so that no line describes another
    layer or size than the configurations it counts."""
    lines = []
    for rule, remedies in sorted(tally.remedies.items(), key=lambda kv: -sum(kv[1].values())):
        total = sum(remedies.values())
        lines.append(f"- **{rule}** ({total:,} configuration{'s' if total != 1 else ''}, {len(remedies)} remed{'ies' if len(remedies) != 1 else 'y'}):")
        for text, count in remedies.most_common(per_rule):
            lines.append(f"  - *{text}* ({count:,}; e.g. {tally.reasons[(rule, text)]})")
        more = len(remedies) - per_rule
        if more > 0:
            lines.append(f"  - and {more} more forms of these remedies (results.csv, conditions column)")
    return lines


def summarize(rows: Union[Tally, Iterable[Mapping[str, Any]]], title: str = "Equivalence sweep") -> str:
    """Markdown, the answer first: do predictions agree with the exact observation (the disagreements, if
    any, right after); what each outcome means; the remedies of 'holds with conditions'; counts per section
    and per rule with the smallest example of each.

    Example:
        >>> print(summarize([{"predicted": "holds", "observed": "holds", "agree": True, "rule": "FOLD-1",
        ...     "reason": "ok", "section": "theorem"}]).splitlines()[2])
        1 configuration: every prediction agrees with the exact observation.
    """
    t = Tally.of(rows)
    outcomes = _OUTCOMES + ((CRASHED,) if t.lost else ())
    tally = ", ".join(f"{t.outcomes.get(o, 0):,} {o}" for o in outcomes)
    lines = [f"# {title}", "", t.answer(), "", f"Observed outcomes: {tally} (each defined below).", ""]
    if t.bad:
        lines += ["## Disagreements", "", markdown_table(t.bad, _BAD_COLUMNS), ""]
    if t.lost:
        lines += ["## Crashed: not observed", "", "Each of these configurations took its worker process down (a native crash); "
                  "the run went on with the next one, and a resumed run does not try it again.", "",
                  markdown_table(t.lost, _BAD_COLUMNS[:14] + ["reason"]), ""]
    lines += ["## What the outcomes mean", ""] + [f"- **{o}**: {MEANINGS[o]}." for o in outcomes] + [""]
    remedies = _remedies(t)
    lines += ["## Remedies: the conditions under which a fold holds", ""]
    if remedies:
        lines += ["Each configuration that *holds with conditions* holds once its condition is applied; per rule, the "
                  "remedies with how many configurations need each:", ""] + remedies + [""]
    else:
        lines += ["No configuration of this run holds only with conditions.", ""]
    lines += ["## Outcomes per section (predicted = observed)", ""]
    table = [{"section": s, **{o: c.get(o, 0) for o in outcomes}, "total": sum(c.values())} for s, c in t.by_section.items()]
    table.append({"section": "**all**", **{o: t.outcomes.get(o, 0) for o in outcomes}, "total": t.n})
    lines += [markdown_table(table), ""]
    covered = coverage_lines(t)
    if covered:
        lines += ["## What the space-to-depth sections cover", "", "Exactly the configurations below (every row of these "
                  "sections is one of them; results.csv has each):", ""] + covered + [""]
    lines += ["## Rules and reasons", "", "Each rule is a claim in paper_notes/claims.md; the example is the smallest configuration it decided.", ""]
    rule_rows = []
    for (rule, outcome), (count, smallest) in sorted(t.rules.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        smallest = collections.defaultdict(str, smallest)
        rule_rows.append({"rule": rule, "outcome": outcome, "count": count, "reason (smallest example)": smallest["reason"],
                          "remedy (smallest example)": smallest.get("conditions") or "", "smallest example": _example(smallest)})
    lines += [markdown_table(rule_rows), ""]
    if not t.bad:
        lines += ["## Disagreements", "", "None: every prediction matched the exact observation."]
    return "\n".join(lines)


def plot_modes(rows: Union[Tally, Iterable[Mapping[str, Any]]], path: Path) -> Path:
    """Heatmaps over stride x padding, per padding mode: the share of the ``modes`` slice's r > 1
    configurations whose literal fold holds. The slice is the modes section's (kernel 3, dilation 1, groups 1,
    one folded channel, crd order, folded stride r*S); product rows count only where they lie on it, so the
    quick and the full grid draw the same quantity. Each cell aggregates over dims and r (the count is shown).
    """
    import numpy as np

    cells = Tally.of(rows).modes
    if not cells:  # e.g. a shard that holds no row of the modes slice: say so, not an empty grid
        fig, ax = figure(figsize=(5.0, 2.4))
        no_data(ax, "no configuration of this run lies on the modes slice\n(K=3, dilation 1, groups 1, crd, r > 1)")
        ax.set_title("Share of configurations whose literal fold holds, per padding mode", fontsize=9)
        return save_figure(fig, path)
    modes = _grid_values(m for m, _, _ in cells)
    strides, pads = _grid_values(s for _, s, _ in cells) or ["1"], _grid_values(p for _, _, p in cells) or ["0"]
    fig, axes = figure(1, len(modes), figsize=(3.2 * len(modes), 3.2), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        grid = np.full((len(strides), len(pads)), np.nan)
        counts = [[0] * len(pads) for _ in strides]
        for i, s in enumerate(strides):
            for j, p in enumerate(pads):
                holds, total = cells.get((mode, s, p), (0, 0))
                if total:
                    grid[i, j] = holds / total
                    counts[i][j] = total
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", origin="lower")
        for i in range(len(strides)):
            for j in range(len(pads)):
                if np.isnan(grid[i, j]):  # a blank cell would read as a colour of the scale's end
                    ax.text(j, i, "no data", ha="center", va="center", fontsize=8, color="0.35")
                else:
                    ax.text(j, i, f"{grid[i, j]:.0%}\nof {counts[i][j]:,}", ha="center", va="center", fontsize=9)
        ax.set_xticks(range(len(pads)), pads)
        ax.set_yticks(range(len(strides)), strides)
        ax.set_xlabel("padding P")
        ax.set_ylabel("stride S")
        ax.set_title(f"padding_mode={mode}", fontsize=10)
    bar = fig.colorbar(image, ax=axes[0][-1], fraction=0.046, pad=0.04)  # one scale for every panel
    bar.set_label("share whose literal fold holds")
    bar.set_ticks([0, 0.25, 0.5, 0.75, 1.0], labels=["0%", "25%", "50%", "75%", "100%"])
    caption = ("Share of configurations whose literal fold holds (r > 1; K=3, dilation 1, groups 1, crd, folded stride r*S; "
               "each cell pools every dims and r of the grid, its count shown; outcomes_by_r.png separates r)")
    fig.suptitle(textwrap.fill(caption, int(13 * 3.2 * len(modes))), fontsize=9)  # ~13 chars of 9 pt per inch
    return save_figure(fig, path)


def error_floor(rows: Union[Tally, Iterable[Mapping[str, Any]]]) -> str:
    """What the low-precision errors of ``rows`` can be compared with: the r=1 row (the identity fold: the dtype's
    own rounding alone) when the run has one, else the plain statement that no floor row was run.

    Example:
        >>> print(error_floor([{"section": "theorem", "r": 2, "kernel": 3, "rel_err_bfloat16": 0.01, "observed": "holds"}]))
        no r=1 row was run, so no row shows the dtype's own rounding alone (run fold.r=1 too for that floor)
    """
    errors = Tally.of(rows).errors
    if any(r == "1" for cells in errors.values() for r, _ in cells):
        return "the r=1 row (the identity fold) is the dtype's own rounding alone: its floor"
    return "no r=1 row was run, so no row shows the dtype's own rounding alone (run fold.r=1 too for that floor)"


def plot_errors(rows: Union[Tally, Iterable[Mapping[str, Any]]], path: Path) -> Path:
    """Heatmaps: log10 of the largest relative error of the folded form over r x kernel, one panel per
    low-precision dtype, all on one colour scale (one colour bar) and each cell's value printed, so that two
    panels compare at a glance and a spread of a few units in the last place does not read as structure."""
    import numpy as np

    tally = Tally.of(rows)
    errors = tally.errors
    keys = list(errors)
    if not keys:  # no theorem or product rows with low-precision errors (a shard of other sections, dtypes=[])
        fig, ax = figure(figsize=(5.0, 2.4))
        no_data(ax, "no theorem or product configuration of this run\nrecorded a low-precision error")
        ax.set_title("Largest relative error of the folded form, r x kernel", fontsize=9)
        return save_figure(fig, path)
    rs = _grid_values(r for cells in errors.values() for r, _ in cells) or ["1"]
    ks = _grid_values(k for cells in errors.values() for _, k in cells) or ["1"]
    grids = {}
    for key in keys:
        grid = np.full((len(rs), len(ks)), np.nan)
        for i, r in enumerate(rs):
            for j, k in enumerate(ks):
                if (r, k) in errors[key]:
                    grid[i, j] = math.log10(max(errors[key][(r, k)], 1e-17))
        grids[key] = grid
    found = [g[~np.isnan(g)] for g in grids.values()]
    values = np.concatenate(found) if found else np.array([])
    low, high = (math.floor(values.min()), math.ceil(values.max())) if values.size else (-17, 0)
    high = max(high, low + 1)
    fig, axes = figure(1, max(1, len(keys)), figsize=(3.6 * max(1, len(keys)) + 1.0, 3.4), squeeze=False)
    image = None
    for ax, key in zip(axes[0], keys):
        grid = grids[key]
        image = ax.imshow(grid, cmap="viridis", origin="lower", vmin=low, vmax=high)
        for i in range(len(rs)):
            for j in range(len(ks)):
                if np.isnan(grid[i, j]):
                    ax.text(j, i, "none", ha="center", va="center", fontsize=8, color="0.35")
                else:
                    light = grid[i, j] < low + 0.5 * (high - low)
                    ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", fontsize=8, color="white" if light else "black")
        ax.set_xticks(range(len(ks)), ks)
        ax.set_yticks(range(len(rs)), rs)
        ax.set_xlabel("kernel K")
        ax.set_ylabel("fold r")
        ax.set_title(f"folded form in {key.replace('rel_err_', '')}\nvs the original in float64", fontsize=9)
    fig.suptitle(f"Largest relative error: the dtype's own rounding plus what folding adds\n({error_floor(tally)})",
                 fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=axes[0][-1], fraction=0.046, pad=0.04).set_label("log10 max rel error\n(one scale for all panels)")
    return save_figure(fig, path)


_COLOURS = {"holds": "#2e7d32", "holds with conditions": "#f9a825", "fails": "#c62828", "invalid": "#757575", CRASHED: "#000000"}


def _outcome_bars(ax: Any, groups: Sequence[str], counts: Mapping[str, collections.Counter], outcomes: Sequence[str]) -> None:
    """Side-by-side horizontal bars, one per outcome in each group, each labelled with its count: a small count
    (a handful of invalid requests beside thousands that hold) stays readable instead of a sliver of a stack."""
    if not groups:
        no_data(ax, "no configuration in this run")
        return
    height = 0.8 / len(outcomes)
    top = max([c.get(o, 0) for c in counts.values() for o in outcomes] + [1])
    for k, outcome in enumerate(outcomes):
        ys = [g + (k - (len(outcomes) - 1) / 2) * height for g in range(len(groups))]
        values = [counts[name].get(outcome, 0) for name in groups]
        ax.barh(ys, values, height=height, color=_COLOURS[outcome], label=outcome)
        for y, v in zip(ys, values):
            if v:  # an absent outcome has no bar and no label: the legend names every outcome
                ax.text(v + top * 0.01, y, f"{v:,}", va="center", fontsize=8)
    ax.set_yticks(range(len(groups)), groups, fontsize=8)
    ax.set_ylim(len(groups) - 0.5, -0.5)
    ax.set_xlim(0, top * 1.18)  # room for the count labels
    ax.set_xlabel("configurations (each bar labelled with its count; no bar: none)")
    legend_beside(ax)  # outside the data: inside, it covered the count labels of the lowest bars


def plot_outcomes(rows: Union[Tally, Iterable[Mapping[str, Any]]], path: Path) -> Path:
    """Observed outcome counts per section: one labelled bar per outcome, side by side (see :func:`_outcome_bars`)."""
    t = Tally.of(rows)
    sections = [str(s) for s in t.by_section]
    outcomes = _OUTCOMES + ((CRASHED,) if t.lost else ())
    fig, ax = figure(figsize=(8, 1.2 + 0.2 * len(outcomes) * max(1, len(sections))))
    _outcome_bars(ax, sections, {str(k): v for k, v in t.by_section.items()}, outcomes)
    ax.set_title("Observed outcome per section", fontsize=10)
    return save_figure(fig, path)


def _r_key(r: str) -> Tuple[float, str]:
    """Numeric order for r ("-1" < "2" < "16"); per-axis factors "(2, 1)" after, by their product, then as written."""
    try:
        return (float(r), r)
    except ValueError:
        parts = [p for p in r.strip("()").replace(" ", "").split(",") if p]
        try:
            return (1e9 + math.prod(float(p) for p in parts), r)
        except ValueError:
            return (math.inf, r)


#: The section whose r values are probes of invalid requests (r=-1, 0, 1.5), not fold factors a job ran.
PROBES = "invalid"


def by_r_pooling(rows: Union[Tally, Iterable[Mapping[str, Any]]]) -> Tuple[List[str], List[str], Dict[str, str]]:
    """What :func:`plot_outcomes_by_r` may pool so that its bars compare like with like: the fold factors (the r
    values of the sections other than the invalid-input probes), the sections run at every one of them (pooled),
    and each section left out with why (run at some r only, e.g. the strided_spd section of an r=2 job alone;
    the probes' r values are not fold factors).

    Example:
        >>> rows = [{"section": s, "r": r, "observed": "holds"} for s, r in
        ...         [("theorem", 2), ("theorem", 3), ("strided_spd", 2), ("invalid", 0)]]
        >>> rs, pooled, left = by_r_pooling(rows)
        >>> rs, pooled, left["strided_spd"], left["invalid"]
        (['2', '3'], ['theorem'], 'run at r=2 only', 'probes of invalid requests at r=0, not fold factors')
    """
    t = Tally.of(rows)
    folds = {s: per_r for s, per_r in t.by_section_r.items() if s != PROBES}
    rs = sorted({r for per_r in folds.values() for r in per_r}, key=_r_key)
    pooled = [s for s, per_r in folds.items() if set(per_r) == set(rs)]
    left = {s: f"run at {', '.join(f'r={r}' for r in sorted(per_r, key=_r_key))} only" for s, per_r in folds.items() if s not in pooled}
    if PROBES in t.by_section_r:
        left[PROBES] = f"probes of invalid requests at r={', '.join(sorted(t.by_section_r[PROBES], key=_r_key))}, not fold factors"
    return rs, pooled, left


def plot_outcomes_by_r(rows: Union[Tally, Iterable[Mapping[str, Any]]], path: Path) -> Path:
    """Observed outcome counts per fold factor r, pooling only the sections run at every r (like with like: a
    section that one job alone ran would pass for r's effect) and never the invalid-input probes, whose r values
    are not fold factors; the title names what is pooled and what is left out (see :func:`by_r_pooling`)."""
    t = Tally.of(rows)
    rs, pooled, left = by_r_pooling(t)
    counts = {f"r={r}": sum((t.by_section_r[s].get(r, collections.Counter()) for s in pooled), collections.Counter()) for r in rs}
    outcomes = _OUTCOMES + ((CRASHED,) if t.lost else ())
    fig, ax = figure(figsize=(8, 1.6 + 0.2 * len(outcomes) * max(1, len(rs))))
    _outcome_bars(ax, list(counts), counts, outcomes)
    if rs:
        ax.set_ylabel("fold factor r")
    title = f"Observed outcome per fold factor r: the {len(pooled)} section{'s' if len(pooled) != 1 else ''} run at every r, pooled"
    lines = [title] + textwrap.wrap("not drawn: " + "; ".join(f"{s} ({why})" for s, why in left.items()), 110) if left else [title]
    ax.set_title("\n".join(lines), fontsize=9)
    return save_figure(fig, path)


def write_sweep_outputs(
    rows: Union[Tally, Sequence[Mapping[str, Any]]], out: Path, title: str = "Equivalence sweep", plots: bool = True, *, csv: bool = True,
) -> Dict[str, Path]:
    """Write results.csv (the rows' own columns, in order; ``csv=False`` when the run already wrote it row by
    row, and always for a :class:`Tally`), summary.md and (optionally) the PNGs into ``out``."""
    out = Path(out)
    paths: Dict[str, Path] = {}
    if csv and not isinstance(rows, Tally):
        paths["csv"] = write_csv(rows, out / "results.csv", columns_of(rows) if rows else COLUMNS)
    tally = Tally.of(rows)
    if plots:
        paths["modes"] = plot_modes(tally, out / "heatmap_modes.png")
        paths["errors"] = plot_errors(tally, out / "heatmap_errors.png")
        paths["outcomes"] = plot_outcomes(tally, out / "outcomes.png")
        paths["outcomes_by_r"] = plot_outcomes_by_r(tally, out / "outcomes_by_r.png")
    # summary.md last: a job cut while drawing keeps the summary that says it is incomplete, and its resume redraws
    paths["summary"] = write_markdown(summarize(tally, title), out / "summary.md")
    return paths
