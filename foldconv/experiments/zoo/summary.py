"""What a zoo run shows: coverage figures, what blocks the analyzers (ranked by how many models), plots.

Rows are those of ``results.csv`` (values as strings, as read back) or :meth:`ZooRow.as_row` dicts.
Every percentage has the models that BUILD as denominator (a model whose count failed is not exact), except
``analytic = empirical``, whose denominator is the models the gradient check ran on.

Example:
    >>> rows = [{"model": "a", "build": "meta", "params_ok": "True", "macs_ok": "False", "rf_status": "exact",
    ...          "check": "ok", "macs_diff_ops": "mm", "unsupported_ops": "", "rf_blocker": "", "errors": ""}]
    >>> c = coverage(rows)
    >>> c.built, c.params_exact_pct, c.macs_exact_pct, c.rf_analysed_pct, c.check_ok_pct
    (1, 100.0, 0.0, 100.0, 100.0)
"""
from __future__ import annotations

import collections
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..._tables import markdown_table
from ..io import figure, is_true, save_figure

__all__ = [
    "Coverage", "coverage", "blockers", "summary_markdown", "ranking_markdown", "plot_zoo", "COVERAGE_KEYS", "fast_tier",
    "model_status", "regressions", "coverage_record", "fast_tier_record",
]

#: The percentages a regression test holds (each must not drop below the committed summary's).
#: The ``check`` values of a model whose gradient check ran (any other: not checked).
CHECKED = ("ok", "mismatch", "failed")

COVERAGE_KEYS = ("built_pct", "params_exact_pct", "macs_exact_pct", "rf_analysed_pct", "check_ok_pct")

Row = Mapping[str, Any]


def _pct(part: int, whole: int) -> Optional[float]:
    return None if whole == 0 else round(100.0 * part / whole, 2)


@dataclass(frozen=True)
class Coverage:
    """Counts of models and the coverage percentages (None where the denominator is 0).

    ``rf_analysed``: analysed without fallback (``rf_status`` exact or inexact); ``checked``: the gradient
    check ran (ok, mismatch or failed); ``check_ok``: analytic boxes equal the gradient supports;
    ``published_checked``/``published_ok``: torchvision models held to their published figures / reproducing them.
    """

    models: int
    built: int
    built_on_meta: int
    counted: int
    params_exact: int
    macs_exact: int
    no_unsupported_ops: int
    rf_analysed: int
    rf_exact: int
    checked: int
    check_ok: int
    published_checked: int = 0
    published_ok: int = 0

    @property
    def built_pct(self) -> Optional[float]:
        return _pct(self.built, self.models)

    @property
    def params_exact_pct(self) -> Optional[float]:
        return _pct(self.params_exact, self.built)

    @property
    def macs_exact_pct(self) -> Optional[float]:
        return _pct(self.macs_exact, self.built)

    @property
    def rf_analysed_pct(self) -> Optional[float]:
        return _pct(self.rf_analysed, self.built)

    @property
    def check_ok_pct(self) -> Optional[float]:
        return _pct(self.check_ok, self.checked)

    def percentages(self) -> Dict[str, Optional[float]]:
        """The :data:`COVERAGE_KEYS` percentages (what the committed JSON and the regression test hold)."""
        return {k: getattr(self, k) for k in COVERAGE_KEYS}

    def as_dict(self) -> Dict[str, Any]:
        """Counts and percentages, for the machine-readable summary."""
        return {**asdict(self), **self.percentages()}


def coverage(rows: Sequence[Row]) -> Coverage:
    """The :class:`Coverage` of a set of rows (see the module docstring for the denominators)."""
    built = [r for r in rows if r.get("build") in ("meta", "cpu")]
    checked = [r for r in built if r.get("check") in CHECKED]
    return Coverage(
        models=len(rows),
        built=len(built),
        built_on_meta=sum(r.get("build") == "meta" for r in rows),
        counted=sum(str(r.get("params", "")) not in ("", "None") for r in built),
        params_exact=sum(is_true(r.get("params_ok")) for r in built),
        macs_exact=sum(is_true(r.get("macs_ok")) for r in built),
        no_unsupported_ops=sum(str(r.get("params", "")) not in ("", "None") and not r.get("unsupported_ops") for r in built),
        rf_analysed=sum(r.get("rf_status") in ("exact", "inexact") for r in built),
        rf_exact=sum(r.get("rf_status") == "exact" for r in built),
        checked=len(checked),
        check_ok=sum(r.get("check") == "ok" for r in checked),
        published_checked=sum(bool(r.get("published")) for r in built),
        published_ok=sum(r.get("published") == "ok" for r in built),
    )


def _stage_error(row: Row, stage: str) -> Optional[str]:
    for part in str(row.get("errors") or "").split(" | "):
        if part.startswith(f"{stage}: "):
            text = part[len(stage) + 2:]
            text = re.sub(r"'[^']*'", "'…'", text)
            text = re.sub(r"\(\d[\d, ]*\)", "(…)", text)
            return text[:120]
    return None


def blockers(rows: Sequence[Row]) -> Dict[str, List[Tuple[str, int, str]]]:
    """Per kind, ``(what, number of models, an example model)`` sorted by number of models, most first.

    Kinds: ``build`` (build failures), ``count`` (count() failed to run), ``flop_counter`` (the reference
    FlopCounterMode failed in count()'s pass, so the two were run apart), ``count_unsupported`` (ops without a
    cost rule), ``macs_differ`` (ops whose MACs differ from FlopCounterMode's), ``rf`` (what stopped the
    receptive-field analysis), ``check`` (gradient checks that failed to run or disagreed).

    Example:
        >>> blockers([{"model": "m", "build": "meta", "unsupported_ops": "aten.foo aten.bar", "errors": ""}])["count_unsupported"]
        [('aten.bar', 1, 'm'), ('aten.foo', 1, 'm')]
    """
    found: Dict[str, Dict[str, List[str]]] = {k: collections.defaultdict(list) for k in ("build", "count", "flop_counter", "count_unsupported", "macs_differ", "rf", "check")}
    for r in rows:
        model = str(r.get("model"))
        if r.get("build") not in ("meta", "cpu"):
            found["build"][_stage_error(r, "build") or "unknown"].append(model)
            continue
        if r.get("build") == "cpu":
            found["build"]["(meta failed, built on CPU) " + (str(r.get("note", ""))[:80])].append(model)
        err = _stage_error(r, "count")
        if err:
            found["count"][err].append(model)
        err = _stage_error(r, "flop_counter")
        if err:
            found["flop_counter"][err].append(model)
        for op in str(r.get("unsupported_ops") or "").split():
            found["count_unsupported"][op].append(model)
        for op in str(r.get("macs_diff_ops") or "").split():
            found["macs_differ"][op].append(model)
        if r.get("rf_status") not in ("exact", "inexact"):
            found["rf"][str(r.get("rf_blocker") or _stage_error(r, "rf") or "not run")].append(model)
        if r.get("check") in ("mismatch", "failed"):
            found["check"][f"{r.get('check')}: {_stage_error(r, 'check') or ''}".rstrip(": ")].append(model)
    return {kind: sorted(((what, len(ms), ms[0]) for what, ms in d.items()), key=lambda t: (-t[1], t[0])) for kind, d in found.items()}


_TITLES = {
    "build": "Build failures (and meta failures built on CPU)",
    "count": "count() could not run the model",
    "flop_counter": "FlopCounterMode (the reference) failed in count()'s no_grad pass; counted in two passes, compared per op",
    "count_unsupported": "Ops count() ran without a cost rule",
    "macs_differ": "Ops whose MACs differ from FlopCounterMode's",
    "rf": "What stopped receptive_field() (no fallback)",
    "check": "Gradient checks that disagreed or failed",
}


def _coverage_table(c: Coverage) -> str:
    def cell(n: int, d: int, pct: Optional[float]) -> str:
        return f"{n} / {d} ({'n/a' if pct is None else f'{pct:.1f} %'})"

    rows = [
        {"figure": "models built (meta or CPU fallback)", "value": cell(c.built, c.models, c.built_pct)},
        {"figure": "built on meta", "value": cell(c.built_on_meta, c.models, _pct(c.built_on_meta, c.models))},
        {"figure": "params exact (= sum(numel))", "value": cell(c.params_exact, c.built, c.params_exact_pct)},
        {"figure": "MACs = FlopCounterMode / 2 (per op and total)", "value": cell(c.macs_exact, c.built, c.macs_exact_pct)},
        {"figure": "every op has a cost rule", "value": cell(c.no_unsupported_ops, c.built, _pct(c.no_unsupported_ops, c.built))},
        {"figure": "RF analysed without fallback", "value": cell(c.rf_analysed, c.built, c.rf_analysed_pct)},
        {"figure": "RF output box exact", "value": cell(c.rf_exact, c.built, _pct(c.rf_exact, c.built))},
        {"figure": "analytic = empirical (where the check is affordable)", "value": cell(c.check_ok, c.checked, c.check_ok_pct)},
    ]
    if c.published_checked:
        rows.append({"figure": "params and GMACs = torchvision's published figures",
                     "value": cell(c.published_ok, c.published_checked, _pct(c.published_ok, c.published_checked))})
    return markdown_table(rows)


def _ranked(kind: str, ranked: Sequence[Tuple[str, int, str]], top: int) -> str:
    if not ranked:
        return f"### {_TITLES[kind]}\n\nnone\n"
    rows = [{"what": what.replace("|", "/"), "models": n, "e.g.": example} for what, n, example in ranked[:top]]
    more = f"\n\n… and {len(ranked) - top} more" if len(ranked) > top else ""
    return f"### {_TITLES[kind]}\n\n{markdown_table(rows)}{more}\n"


def ranking_markdown(rows: Sequence[Row], *, top: int = 25, title: str = "Zoo: what blocks the analyzers") -> str:
    """Every blocker kind ranked (see :func:`blockers`), for the people fixing the analyzers."""
    ranked = blockers(rows)
    return f"# {title}\n\n" + "\n".join(_ranked(kind, ranked[kind], top) for kind in _TITLES)


def summary_markdown(rows: Sequence[Row], *, zoo: str, title: Optional[str] = None, note: str = "") -> str:
    """summary.md: the coverage table first, then the blockers ranked by how many models they block."""
    c = coverage(rows)
    head = f"# {title or f'The {zoo} zoo: coverage of count() and receptive_field()'}\n\n"
    return head + (note + "\n\n" if note else "") + "## Coverage\n\n" + _coverage_table(c) + "\n\n## Blockers, ranked\n\n" + "\n".join(
        _ranked(kind, blockers(rows)[kind], 25) for kind in _TITLES
    )


def plot_zoo(rows: Sequence[Row], out: Path, *, zoo: str, dpi: int = 120) -> List[Path]:
    """coverage.png (bars), macs_ratio.png (count MACs / FlopCounterMode MACs), time.png (seconds per model)."""
    c = coverage(rows)
    paths = []
    labels = ["built", "params exact", "MACs = FlopCounterMode", "RF analysed\n(no fallback)", "analytic =\nempirical"]
    values = [c.built_pct, c.params_exact_pct, c.macs_exact_pct, c.rf_analysed_pct, c.check_ok_pct]
    fig, ax = figure(figsize=(7.5, 3.6))
    bars = ax.barh(labels[::-1], [v or 0 for v in values[::-1]], color="tab:blue")
    for bar, v, n in zip(bars, values[::-1], [c.checked, c.built, c.built, c.built, c.models]):
        ax.text(min((v or 0) + 1, 101), bar.get_y() + bar.get_height() / 2, "n/a" if v is None else f"{v:.1f} % of {n}", va="center", fontsize=9)
    ax.set_xlim(0, 125)
    ax.set_xticks(range(0, 101, 20))
    ax.set_xlabel("% of models (denominator after the bar)", fontsize=9)
    ax.set_title(f"{zoo} zoo: coverage of count() and receptive_field() ({c.models} models)", fontsize=10)
    ax.tick_params(labelsize=9)
    paths.append(save_figure(fig, Path(out) / "coverage.png", dpi))

    ratios = []
    for r in rows:
        try:
            ours, theirs = int(r.get("macs")), int(r.get("flop_counter_macs"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if theirs > 0:
            ratios.append(ours / theirs)
    fig, ax = figure(figsize=(6.5, 3.4))
    equal = sum(abs(x - 1.0) < 1e-12 for x in ratios)
    ax.hist(ratios, bins=40, color="tab:green")
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.7)  # a log axis would otherwise start near the tallest bar and hide its height
    ax.set_xlabel("count() MACs / (FlopCounterMode FLOPs / 2)", fontsize=9)
    ax.set_ylabel("models (log scale)", fontsize=9)
    ax.set_title(f"{zoo}: MACs ratio per model ({equal} of {len(ratios)} exactly 1)", fontsize=10)
    ax.tick_params(labelsize=9)
    paths.append(save_figure(fig, Path(out) / "macs_ratio.png", dpi))

    fig, ax = figure(figsize=(6.5, 3.4))
    stages = [("t_build", "build"), ("t_count", "count"), ("t_rf", "rf"), ("t_check", "check")]
    data, names = [], []
    for key, label in stages:
        vals = [float(r[key]) for r in rows if str(r.get(key, "")) not in ("", "None")]
        if vals:
            data.append(vals)
            names.append(f"{label}\n(n={len(vals)}, total {sum(vals):.1f} s)")
    if data:
        ax.boxplot(data, whis=(0, 100))
        ax.set_xticks(range(1, len(names) + 1), names)
        ax.set_yscale("log")
    ax.set_ylabel("seconds per model (log scale)", fontsize=9)
    ax.set_title(f"{zoo}: time per model and stage (whiskers: min and max)", fontsize=10)
    ax.tick_params(labelsize=8)
    paths.append(save_figure(fig, Path(out) / "time.png", dpi))
    return paths


def fast_tier(rows: Sequence[Row], *, max_build_s: float = 1.0) -> List[str]:
    """One model per family: the cheapest to measure (build + count + RF seconds) of those built on meta in
    under ``max_build_s``; sorted by name.

    Example:
        >>> fast_tier([{"model": "a", "family": "f", "build": "meta", "t_build": "0.1", "t_count": "2", "t_rf": "1"},
        ...            {"model": "b", "family": "f", "build": "meta", "t_build": "0.2", "t_count": "1", "t_rf": "1"}])
        ['b']
    """
    best: Dict[str, Tuple[float, str]] = {}
    for r in rows:
        times = [str(r.get(k, "")) for k in ("t_build", "t_count", "t_rf")]
        if r.get("build") != "meta" or any(t in ("", "None") for t in times) or float(times[0]) >= max_build_s:
            continue
        cost = (sum(float(t) for t in times), str(r["model"]))
        family = str(r.get("family"))
        if family not in best or cost < best[family]:
            best[family] = cost
    return sorted(model for _, model in best.values())


def model_status(row: Row) -> Dict[str, Any]:
    """What the regression tests hold per model: params and MACs exact, RF analysed, gradient check outcome
    (``check_ok``: True when the analytic boxes equal the gradient supports, False when the check ran and they
    did not or it failed, None when it did not run: not affordable, or no analysis to check).

    Example:
        >>> model_status({"family": "f", "params_ok": "True", "macs_ok": "False", "rf_status": "inexact", "check": "ok"})
        {'family': 'f', 'params_ok': True, 'macs_ok': False, 'rf_analysed': True, 'check_ok': True}
        >>> [model_status({"check": c})["check_ok"] for c in ("mismatch", "failed", "skipped", "")]
        [False, False, None, None]
    """
    check = row.get("check")
    return {
        "family": row.get("family"), "params_ok": is_true(row.get("params_ok")), "macs_ok": is_true(row.get("macs_ok")),
        "rf_analysed": row.get("rf_status") in ("exact", "inexact"),
        "check_ok": None if check not in CHECKED else check == "ok",
    }


def regressions(before: Mapping[str, Mapping[str, Any]], rows: Sequence[Row]) -> List[str]:
    """``model: what`` for every status that held in ``before`` (a committed ``models`` map) and no longer holds.

    Example:
        >>> regressions({"m": {"params_ok": True, "macs_ok": True}}, [{"model": "m", "params_ok": "True", "macs_ok": "False"}])
        ['m: macs_ok']
    """
    now = {str(r["model"]): model_status(r) for r in rows}
    lost = []
    for model, status in sorted(before.items()):
        for key, held in status.items():
            if key != "family" and held is True and model in now and now[model].get(key) is not True:
                lost.append(f"{model}: {key}")
    return lost


def coverage_record(rows: Sequence[Row], *, zoo: str, **extra: Any) -> Dict[str, Any]:
    """The machine-readable summary a regression test compares against: versions, coverage, every model's status.

    Example:
        >>> rec = coverage_record([{"model": "m", "build": "meta", "params_ok": "True"}], zoo="timm")
        >>> rec["coverage"]["params_exact_pct"], rec["models"]["m"]["params_ok"]
        (100.0, True)
    """
    import torch

    versions = {"torch": torch.__version__.split("+")[0]}
    if zoo == "timm":
        import timm

        versions["timm"] = timm.__version__
    return {
        "zoo": zoo, **versions, **extra, "coverage": coverage(rows).as_dict(),
        "models": {str(r["model"]): model_status(r) for r in sorted(rows, key=lambda r: str(r["model"]))},
    }


def fast_tier_record(rows: Sequence[Row], *, zoo: str, max_build_s: float = 1.0, **extra: Any) -> Dict[str, Any]:
    """The fast tier a regression test measures again (``fast_tier.json``): one model per family
    (:func:`fast_tier`), each with its statuses, exact params and MACs and time per stage; the families left
    out, with why (no model built on meta in under ``max_build_s``); the tier's own coverage.

    Example:
        >>> rows = [{"model": "a", "family": "f", "build": "meta", "t_build": "0.1", "t_count": "2", "t_rf": "1",
        ...          "params": "10", "params_ok": "True", "macs": "99", "macs_ok": "True", "rf_status": "exact"},
        ...         {"model": "b", "family": "g", "build": "meta", "t_build": "3.0", "t_count": "1", "t_rf": "1"}]
        >>> rec = fast_tier_record(rows, zoo="timm")
        >>> sorted(rec["models"]), rec["models"]["a"]["macs"], rec["excluded_families"]
        (['a'], 99, {'g': 'no model built on meta in under 1.0 s (b: 3.0 s)'})
    """
    chosen = set(fast_tier(rows, max_build_s=max_build_s))
    tier_rows = [r for r in rows if str(r["model"]) in chosen]
    record = coverage_record(tier_rows, zoo=zoo, max_build_s=max_build_s, **extra)
    for r in tier_rows:
        record["models"][str(r["model"])].update(
            params=_int(r.get("params")), macs=_int(r.get("macs")) if is_true(r.get("macs_ok")) else None,
            seconds=round(sum(float(r.get(k) or 0) for k in ("t_build", "t_count", "t_rf", "t_check")), 2),
        )
    covered = {str(r.get("family")) for r in tier_rows}
    quickest: Dict[str, Tuple[float, str]] = {}
    for r in rows:
        family = str(r.get("family"))
        if family in covered:
            continue
        seconds = float(r.get("t_build") or "inf") if r.get("build") == "meta" else float("inf")
        if family not in quickest or (seconds, str(r["model"])) < quickest[family]:
            quickest[family] = (seconds, str(r["model"]))
    record["excluded_families"] = {
        family: f"no model built on meta in under {max_build_s} s ({model}: {'failed' if s == float('inf') else f'{s} s'})"
        for family, (s, model) in sorted(quickest.items())
    }
    return record


def _int(value: Any) -> Optional[int]:
    return None if value in (None, "", "None") else int(value)
