"""The shift experiment (issue 13): analytic periods, measured equivariance and consistency on scikit-image's
sample images, and D2L's ladder trained on scikit-learn's digits.

Writes into the run directory: ``periods.{csv,md}`` (every stage's analytic period per model),
``equivariance.{csv,md}`` + ``equivariance.png`` (error by depth under 1-pixel shifts and at the output's
period), ``consistency.{csv,md}`` + ``consistency.png``, ``ladder.{csv,md}`` + ``ladder.png``, ``summary.md``.
Everything is computed before anything is written; a malformed request (FoldError) writes nothing. Checked
claims (a ``+spd`` rewrite gives the same numbers as its model, SHIFT-3; the folded rung tracks the conv
rung, SHIFT-4) raise :class:`~foldconv.experiments.app.ClaimFailed` after writing.

Inputs ship with the packages (nothing is downloaded): ``skimage.data`` images and ``sklearn``'s digits.
Weights are random (seeded); models run in eval mode.

Example:
    >>> ShiftExperiment(models=("resnet18",), crop=64).models
    ('resnet18',)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import check_bool, check_int
from ..analysis.shift import (
    accuracy,
    consistency,
    crops,
    ladder_models,
    parameter_count,
    shift_equivariance,
    shift_images,
    stage_errors,
    train_classifier,
)
from ..errors import fold_error
from ..fold import fold_weight
from .app import ClaimFailed, model_label, model_node
from .app import build_model as app_build_model
from .io import figure, progress_bar, save_figure, write_markdown, write_table

__all__ = ["ShiftExperiment", "LadderConfig", "MODELS", "build_model", "load_images", "load_digits32", "run_shift"]

MODELS = ("resnet18", "resnet18_blur", "mobilenet_v2", "mobilenet_v2_blur", "mobilenet_v3_small")
SKIMAGE_IMAGES = ("astronaut", "camera", "coffee", "chelsea", "rocket", "coins", "brick", "grass")
_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TRACK_TOL = 1e-9


@dataclass(frozen=True)
class LadderConfig:
    """D2L's ladder on digits scaled to ``image_size``: ``channels`` features from ``r*kernel`` windows at
    stride ``r``; ``epochs`` of Adam at ``lr``, batches of ``batch_size``; accuracy under ``shifts`` pixels."""

    enabled: bool = True
    image_size: int = 32
    r: int = 4
    kernel: int = 3
    channels: int = 8
    epochs: int = 2
    batch_size: int = 32
    lr: float = 0.002
    train_fraction: float = 0.75
    shifts: Tuple[int, ...] = (1, 2, 4)

    def __post_init__(self) -> None:
        check_bool(self.enabled, "ladder.enabled")
        for name, minimum in (("image_size", 8), ("r", 1), ("kernel", 1), ("channels", 1), ("epochs", 0), ("batch_size", 1)):
            check_int(getattr(self, name), f"ladder.{name}", minimum)
        if not 0 < float(self.train_fraction) < 1:
            raise fold_error("ladder.train_fraction", self.train_fraction, "must be in (0, 1)")
        if not float(self.lr) > 0:
            raise fold_error("ladder.lr", self.lr, "must be > 0")
        object.__setattr__(self, "shifts", tuple(check_int(s, "ladder.shifts", 0) for s in self.shifts))


@dataclass(frozen=True)
class ShiftExperiment:
    """``models`` (names of :data:`MODELS`; ``"<name>+spd"`` adds the space-to-depth rewrite of its first
    strided conv, which must give the same numbers) on ``crops_per_image`` random ``crop`` x ``crop`` crops
    of each of ``images`` (skimage.data names); errors under horizontal ``shifts`` (input pixels; the
    output's period is added), ``border`` pixels cropped; consistency over ``pairs`` image pairs with offsets
    up to ``max_shift``; the ``ladder``; ``seed`` seeds crops and weights.
    """

    models: Tuple[str, ...] = ("resnet18", "resnet18+spd", "resnet18_blur", "resnet18_blur+spd")
    model: Any = field(default_factory=dict)  # one model, in the apps' spelling (app.model_node); replaces models
    images: Tuple[str, ...] = ("astronaut", "camera", "coffee", "chelsea")
    crop: int = 128
    crops_per_image: int = 1
    shifts: Tuple[int, ...] = (1, 2)
    border: int = 8
    pairs: int = 32
    max_shift: int = 32
    ladder: LadderConfig = field(default_factory=LadderConfig)
    seed: int = 0
    threads: int = 0

    def __post_init__(self) -> None:
        models = tuple(self.models)
        for m in models:
            if not isinstance(m, str) or m.split("+")[0] not in MODELS or m.count("+") > 1 or ("+" in m and not m.endswith("+spd")):
                raise fold_error("models", m, f"must be one of {MODELS}, optionally with '+spd'")
        object.__setattr__(self, "models", models)
        if self.model:  # `model=resnet50`, `model=timm:<name>` or `model._target_=...`: that model alone
            object.__setattr__(self, "model", model_node(self.model))
            object.__setattr__(self, "models", (model_label(self.model),))
        images = tuple(self.images)
        for name in images:
            if name not in SKIMAGE_IMAGES:
                raise fold_error("images", name, f"must be one of the images that ship with scikit-image: {SKIMAGE_IMAGES}")
        object.__setattr__(self, "images", images)
        for name, minimum in (("crop", 32), ("crops_per_image", 1), ("border", 0), ("pairs", 1), ("max_shift", 0),
                              ("seed", 0), ("threads", 0)):
            check_int(getattr(self, name), name, minimum)
        object.__setattr__(self, "shifts", tuple(check_int(s, "shifts", 1) for s in self.shifts))
        if not isinstance(self.ladder, LadderConfig):
            raise fold_error("ladder", self.ladder, "must be a LadderConfig")


def build_model(name: str, seed: int, node: Optional[Dict[str, Any]] = None) -> nn.Module:
    """A model of :data:`MODELS` with seeded random weights, in eval mode (``+spd``: the stem rewritten);
    ``node``: a custom model's ``_target_`` node (the app's ``model=``), built instead of ``name``."""
    base, _, rewrite = name.partition("+")
    torch.manual_seed(seed)
    if node:
        model = app_build_model(node)
    elif base.endswith("_blur"):
        import antialiased_cnns

        model = getattr(antialiased_cnns, base[: -len("_blur")])(pretrained=False, filter_size=4)
    else:
        import torchvision

        model = getattr(torchvision.models, base)(weights=None)
    model.eval()
    if rewrite:
        from ..equivalences import strided_to_spd

        name_conv = next(n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and max(m.stride) > 1)
        parent, _, leaf = name_conv.rpartition(".")
        holder = model.get_submodule(parent) if parent else model
        setattr(holder, leaf, strided_to_spd(getattr(holder, leaf)).eval())
    return model


def stages_of(model: nn.Module) -> List[str]:
    """Top-level children, with a ``nn.Sequential`` of three or more children (``features``) expanded."""
    names = []
    for name, child in model.named_children():
        if isinstance(child, nn.Sequential) and len(child) >= 3:
            names.extend(f"{name}.{k}" for k, _ in child.named_children())
        else:
            names.append(name)
    return names


def load_images(names: Sequence[str]) -> List[torch.Tensor]:
    """skimage.data images as normalised ``(3, H, W)`` float tensors (grey images repeated)."""
    import numpy as np
    import skimage.data

    out = []
    for name in names:
        img = np.asarray(getattr(skimage.data, name)(), dtype=np.float32) / 255.0
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        t = torch.from_numpy(np.ascontiguousarray(img[..., :3])).permute(2, 0, 1)
        out.append((t - torch.tensor(_MEAN)[:, None, None]) / torch.tensor(_STD)[:, None, None])
    return out


def load_digits32(image_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits (1797, shipped with the package) scaled bilinearly to ``image_size`` squared, in [0, 1].

    Example:
        >>> x, y = load_digits32(16)
        >>> tuple(x.shape), tuple(y.shape), float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        ((1797, 1, 16, 16), (1797,), True)
    """
    from sklearn.datasets import load_digits

    image_size = check_int(image_size, "image_size", 1)
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float64).unsqueeze(1) / 16.0
    return F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False), torch.tensor(d.target)


def _fmt(values: Sequence[Any]) -> str:
    return "(" + ",".join(str(v) for v in values) + ")"


def _equivariance(e: ShiftExperiment, images: List[torch.Tensor]) -> Tuple[List[Dict], List[Dict], List[Dict]]:
    gen = torch.Generator().manual_seed(e.seed)
    period_rows, err_rows, cons_rows = [], [], []
    reports: Dict[str, Any] = {}
    for base in dict.fromkeys(n.partition("+")[0] for n in e.models):
        reports[base] = shift_equivariance(build_model(base, e.seed, e.model), (1, 3, e.crop, e.crop))
    extra = max(list(e.shifts) + [r.output.period[1] or 0 for r in reports.values()])  # room for the largest shift
    batch = torch.cat([crops(img, (e.crop + extra, e.crop + extra), e.crops_per_image, generator=gen) for img in images])
    pair_gen = torch.Generator().manual_seed(e.seed + 1)
    pool = torch.cat([crops(img, (e.crop + e.max_shift,) * 2, math.ceil(e.pairs / len(images)), generator=pair_gen) for img in images])[: e.pairs]
    for name in progress_bar(e.models, "shift: models", unit="model"):
        model = build_model(name, e.seed, e.model)
        report = reports[name.partition("+")[0]]
        stages = stages_of(model)
        out_period = report.output.period[1]
        shifts = [(0, s) for s in sorted(set(e.shifts) | {out_period})]
        for err in stage_errors(model, report, stages, batch, input_size=(e.crop, e.crop), shifts=shifts, border=e.border):
            err_rows.append({"model": name, "depth": err.depth, "stage": err.stage, "jump": err.jump[1], "period": err.period[1],
                             "shift": err.shift[1], "error": err.error, "positions": err.positions})
        c = consistency(model, pool, input_size=(e.crop, e.crop), max_shift=e.max_shift, generator=torch.Generator().manual_seed(e.seed + 2))
        cc = consistency(model, pool, input_size=(e.crop, e.crop), max_shift=e.max_shift, generator=torch.Generator().manual_seed(e.seed + 2),
                         center=True)
        cons_rows.append({"model": name, "consistency": c.value, "classes": c.classes, "centred_consistency": cc.value,
                          "centred_classes": cc.classes, "pairs": c.pairs, "output_period": out_period})
        if "+" not in name:
            for depth, st in enumerate(stages):
                info = report.stage(st)
                period_rows.append({"model": name, "depth": depth, "stage": st, "node": info.name, "jump": _fmt(info.jump),
                                    "period": _fmt(info.period), "own_period": _fmt(info.own_period)})
    return period_rows, err_rows, cons_rows


def _rewrite_mismatch(err_rows: List[Dict], cons_rows: List[Dict]) -> List[str]:
    """SHIFT-3: every ``+spd`` model's numbers equal its model's (float tolerance)."""
    bad = []
    errs = {(r["model"], r["stage"], r["shift"]): r["error"] for r in err_rows}
    cons = {r["model"]: (r["consistency"], r["centred_consistency"]) for r in cons_rows}
    for (model, stage, shift), value in errs.items():
        if "+" in model:
            ref = errs.get((model.partition("+")[0], stage, shift))
            if ref is None or not (abs(ref - value) <= 1e-4 * max(1.0, abs(ref)) or (math.isnan(ref) and math.isnan(value))):
                bad.append(f"{model} {stage} shift {shift}: {value} vs {ref}")
    for model, value in cons.items():
        if "+" in model and cons.get(model.partition("+")[0]) != value:
            bad.append(f"{model} consistency {value} vs {cons.get(model.partition('+')[0])}")
    return bad


def _ladder(cfg: LadderConfig, seed: int) -> Tuple[List[Dict], float]:
    x, y = load_digits32(cfg.image_size)
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    cut = int(cfg.train_fraction * x.shape[0])
    tr, te = perm[:cut], perm[cut:]
    rungs = ladder_models(image_size=cfg.image_size, r=cfg.r, channels=cfg.channels, kernel=cfg.kernel, seed=seed, dtype=torch.float64)
    rows = []
    for name, model in progress_bar(list(rungs.items()), "shift: ladder", unit="rung"):
        # float64 where the tracking claim is checked; the big unshared rungs train in float32 (CPU time)
        xs = x if name in ("conv", "folded") else x.float()
        model = model if name in ("conv", "folded") else model.float()
        res = train_classifier(model, xs[tr], y[tr], epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=seed)
        row = {"layer": name, "params": parameter_count(model), "dtype": str(xs.dtype).replace("torch.", ""),
               "train_s": round(res.seconds, 3), "final_loss": res.losses[-1] if res.losses else float("nan"),
               "accuracy": accuracy(model, xs[te], y[te])}
        for s in cfg.shifts:
            row[f"acc_shift{s}"] = (accuracy(model, shift_images(xs[te], (0, s)), y[te]) + accuracy(model, shift_images(xs[te], (s, 0)), y[te])) / 2
        rows.append(row)
    drift = float((fold_weight(rungs["conv"][1].weight.detach(), cfg.r).weight - rungs["folded"][0].weight.detach()).abs().max())
    return rows, drift


def _error_figure(err_rows: List[Dict], shifts: Sequence[int]):
    models = [m for m in dict.fromkeys(r["model"] for r in err_rows) if "+" not in m]
    fig, axes = figure(1, len(shifts), figsize=(5.2 * len(shifts), 4.2), squeeze=False)
    for ax, s in zip(axes[0], shifts):
        for m in models:
            pts = [(r["depth"], r["error"]) for r in err_rows if r["model"] == m and r["shift"] == s]
            ax.plot([p[0] for p in pts], [max(p[1], 1e-9) for p in pts], marker="o", label=m)
        stages = [r["stage"] for r in err_rows if r["model"] == models[0] and r["shift"] == s]
        ax.set_xticks(range(len(stages)))
        ax.set_xticklabels(stages, rotation=60, ha="right", fontsize=7)
        ax.set_yscale("log")
        ax.set_title(f"input shift {s} px (exact 0 drawn at 1e-9)", fontsize=10)
        ax.set_ylabel("relative feature error")
        ax.legend(fontsize=8)
    return fig


def _consistency_figure(cons_rows: List[Dict]):
    fig, ax = figure(figsize=(1.6 + 1.3 * len(cons_rows), 4.0))
    xs = torch.arange(len(cons_rows)).tolist()
    ax.bar([x - 0.2 for x in xs], [r["consistency"] for r in cons_rows], width=0.4, label="argmax of logits")
    ax.bar([x + 0.2 for x in xs], [r["centred_consistency"] for r in cons_rows], width=0.4, label="argmax of centred logits")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_xticks(xs)
    ax.set_xticklabels([r["model"] for r in cons_rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("consistency (argmax agrees)")
    ax.set_title("two random shifts per image", fontsize=10)
    return fig


def _ladder_figure(rows: List[Dict], shifts: Sequence[int]):
    fig, ax = figure(figsize=(6, 3.8))
    xs = [0] + list(shifts)
    for r in rows:
        ax.plot(xs, [r["accuracy"]] + [r[f"acc_shift{s}"] for s in shifts], marker="o", label=f"{r['layer']} ({r['params']:,} params)")
    ax.set_xlabel("test images shifted by (px)")
    ax.set_ylabel("accuracy")
    ax.set_xticks(xs)
    ax.legend(fontsize=8)
    ax.set_title("D2L ladder on digits 32x32", fontsize=10)
    return fig


def run_shift(e: ShiftExperiment, out_dir: Union[str, Path]) -> str:
    """Run everything, then write the tables and figures into ``out_dir``; returns a one-paragraph summary."""
    if not isinstance(e, ShiftExperiment):
        raise fold_error("experiment", type(e).__name__, "must be a ShiftExperiment")
    if e.threads:
        torch.set_num_threads(e.threads)
    out = Path(out_dir)
    period_rows, err_rows, cons_rows = _equivariance(e, load_images(e.images)) if e.models else ([], [], [])
    ladder_rows, drift = _ladder(e.ladder, e.seed) if e.ladder.enabled else ([], 0.0)
    failures = _rewrite_mismatch(err_rows, cons_rows)
    if drift > TRACK_TOL:
        failures.append(f"folded rung drifted from the conv rung by {drift:.3g} > {TRACK_TOL}")
    lines = []
    if e.models:
        write_table(period_rows, out / "periods", "Analytic shift periods per stage (input px; own px)")
        write_table(err_rows, out / "equivariance", f"Equivariance error by stage (crop {e.crop}, border {e.border} px)")
        write_table(cons_rows, out / "consistency", f"Consistency over {e.pairs} pairs, shifts up to {e.max_shift} px")
        shown = sorted({r["shift"] for r in err_rows})
        save_figure(_error_figure(err_rows, [shown[0], shown[-1]] if len(shown) > 1 else shown), out / "equivariance.png")
        save_figure(_consistency_figure(cons_rows), out / "consistency.png")
        lines += [f"- {r['model']}: consistency {r['consistency']:.3f} ({r['classes']} classes), centred "
                  f"{r['centred_consistency']:.3f} ({r['centred_classes']} classes), output period {r['output_period']} px" for r in cons_rows]
    if ladder_rows:
        write_table(ladder_rows, out / "ladder", f"D2L ladder on digits {e.ladder.image_size}x{e.ladder.image_size}")
        save_figure(_ladder_figure(ladder_rows, e.ladder.shifts), out / "ladder.png")
        lines += [f"- ladder {r['layer']}: {r['params']:,} params, accuracy {r['accuracy']:.3f}" for r in ladder_rows]
        lines.append(f"- folded rung vs conv rung after training: max weight difference {drift:.3g}")
    summary = "\n".join(["# Shift equivariance", ""] + lines + ([""] + ["FAILED: " + f for f in failures] if failures else []))
    write_markdown(summary + "\n", out / "summary.md")
    if failures:
        raise ClaimFailed("; ".join(failures[:3]))
    return summary
