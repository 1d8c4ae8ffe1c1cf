"""The shift experiment: analytic periods, measured equivariance and consistency of any models on scikit-image's
sample images, and D2L's ladder trained on scikit-learn's digits (the training loop is here: app logic).

Writes into the run directory: ``periods.{csv,md}`` (every stage's analytic period per model),
``equivariance.{csv,md}`` + ``equivariance.png`` (error by depth under every configured shift and at the period
of the deepest spatial stage, over the positions whose receptive field lies inside both crops: exactly 0 where
the period divides the shift; a stage that keeps none says why and which crop would measure it),
``consistency.{csv,md}`` + ``consistency.png``, ``ladder.{csv,md}`` + ``ladder.png``, ``summary.md`` (with the
alignment warnings of the receptive-field analysis).
Everything is computed before anything is written; a malformed request (FoldError) writes nothing. The
checks (a ``+spd`` rewrite gives the same numbers as its model, SHIFT-3; the folded rung tracks the conv
rung, SHIFT-4) go to the app skeleton, which fails the run after writing.

Inputs ship with the packages (nothing is downloaded): ``skimage.data`` images and ``sklearn``'s digits.
Weights are random (seeded); models run in eval mode.

Example:
    >>> ShiftExperiment(models=("resnet18", "resnet18+spd", "timm:resnet18d", {"_target_": "torchvision.models.alexnet"},
    ...                         {"_target_": "torchvision.models.get_model", "name": "vgg11", "num_classes": 10})).labels
    ('resnet18', 'resnet18+spd', 'resnet18d', 'alexnet', 'vgg11')
"""
from __future__ import annotations

import math
import textwrap
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import require_bool, require_int
from ..analysis.receptive_field import RFAlignmentWarning
from ..analysis.shift import (
    RF_BORDER,
    NodeShift,
    consistency_pair,
    crops,
    ladder_models,
    min_clean_length,
    parameter_count,
    shift_equivariance,
    stage_errors,
)
from ..errors import FoldError, fold_error
from ..fold import fold_weight
from ..models import ModelSpec
from .app import AppResult, Check, model_given
from .io import figure, progress_bar, save_figure, write_markdown, write_table
from .spd_models import SPD, SpdSpec, build_spd_model, resolve_spd, spd_site

__all__ = [
    "ShiftExperiment", "LadderConfig", "ShiftModel", "load_images", "load_digits32", "run_shift", "TrainResult",
    "train_classifier", "accuracy", "shift_images", "require_image_model", "consistency_inputs",
]

SKIMAGE_IMAGES = ("astronaut", "camera", "coffee", "chelsea", "rocket", "coins", "brick", "grass")
_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TRACK_TOL = 1e-9
ZERO_TOL = 1e-6  # float32 rounding where a backend blocks positions differently; on CPU the error is exactly 0
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
        require_bool(self.enabled, "ladder.enabled")
        for name, minimum in (("image_size", 8), ("r", 1), ("kernel", 1), ("channels", 1), ("epochs", 0), ("batch_size", 1)):
            require_int(getattr(self, name), f"ladder.{name}", minimum)
        if not 0 < float(self.train_fraction) < 1:
            raise fold_error("ladder.train_fraction", self.train_fraction, "must be in (0, 1)")
        if not float(self.lr) > 0:
            raise fold_error("ladder.lr", self.lr, "must be > 0")
        object.__setattr__(self, "shifts", tuple(require_int(s, "ladder.shifts", 0) for s in self.shifts))
        # the ladder's own rules (image_size a multiple of r, odd kernel) refuse now, not after the models ran, and
        # whatever `enabled` says: a bad value is a typo to fix, not a setting to ignore
        try:
            ladder_models(image_size=self.image_size, r=self.r, channels=1, kernel=self.kernel, seed=0)
        except FoldError as err:
            raise fold_error(f"ladder.{err.param}", err.value, err.rule or str(err)) from None


@dataclass(frozen=True)
class ShiftModel:
    """One model of the shift app: its spec, whether its first strided conv is rewritten to space-to-depth
    (``"<spelling>+spd"``: it must give the same numbers), and its label (the model's name as every app labels
    it, :func:`foldconv.models.resolve_model`; ``+spd`` kept).

    Example:
        >>> ShiftModel.parse("timm:resnet18d+spd").label, ShiftModel.parse({"_target_": "torchvision.models.alexnet"}).spd
        ('resnet18d+spd', False)
    """

    spec: ModelSpec
    spd: bool = False

    @classmethod
    def parse(cls, value: Any, param: str = "models") -> ShiftModel:
        """A spelling of :func:`foldconv.models.resolve_model`, a string optionally ending in ``+spd``
        (:func:`foldconv.experiments.spd_models.resolve_spd`: a typo's hint keeps the suffix)."""
        spec = resolve_spd(value, param=param)
        return cls(spec.base, True) if isinstance(spec, SpdSpec) else cls(spec, False)

    @property
    def base_label(self) -> str:
        """The label of the model itself (without ``+spd``)."""
        return self.spec.label

    @property
    def label(self) -> str:
        return self.base_label + (SPD if self.spd else "")

    @property
    def site(self) -> Optional[str]:
        """What the ``+spd`` rewrite replaces (the conv's name and both forms); None without ``+spd``."""
        return spd_site(SpdSpec.of(self.spec)) if self.spd else None

    def build(self, seed: int) -> nn.Module:
        """The model with seeded random weights, in eval mode (``spd``: its first strided conv rewritten)."""
        return build_spd_model(SpdSpec.of(self.spec) if self.spd else self.spec, seed=seed, param="models").eval()


@dataclass(frozen=True)
class ShiftExperiment:
    """``models`` (any spellings of :func:`foldconv.models.resolve_model`: ``resnet18``, ``resnet18_blur``
    (antialiased-cnns), ``timm:<name>``, ``_target_`` nodes; a string ending in ``+spd`` adds the space-to-depth
    rewrite of its first strided conv, which must give the same numbers); ``model``: one model instead; on
    ``crops_per_image`` random ``crop`` x ``crop`` crops of each of ``images`` (skimage.data names); errors under
    horizontal ``shifts`` (input pixels; the period of the deepest spatial stage is added) over the positions
    ``border`` leaves: ``"rf"`` keeps exactly those whose receptive field lies inside both crops (the error is 0
    wherever the period divides the shift), an int crops that many pixels; consistency over ``pairs`` image
    pairs with offsets up to ``max_shift``; the ``ladder``; ``seed`` seeds crops and (random) weights.
    """

    models: Tuple[Any, ...] = ("resnet18", "resnet18+spd", "resnet18_blur", "resnet18_blur+spd")
    model: Any = field(default_factory=dict)  # one model, any spelling (foldconv.models.resolve_model); replaces models
    images: Tuple[str, ...] = ("astronaut", "camera", "coffee", "chelsea")
    crop: int = 256
    crops_per_image: int = 1
    shifts: Tuple[int, ...] = (1, 2)
    border: Any = RF_BORDER
    pairs: int = 32
    max_shift: int = 32
    ladder: LadderConfig = field(default_factory=LadderConfig)
    seed: int = 0
    threads: int = 0

    def __post_init__(self) -> None:
        listed = [self.model] if model_given(self.model) else self.models
        if listed is None or isinstance(listed, (str, dict)) or not isinstance(listed, Sequence):
            raise fold_error("models", listed, "must be a list of models (names, timm:<name>, _target_ nodes; '+spd' adds the rewrite)")
        param = "model" if listed is not self.models else "models"
        parsed = tuple(m if isinstance(m, ShiftModel) else ShiftModel.parse(m, param) for m in listed)
        labels = [m.label for m in parsed]
        if len(set(labels)) != len(labels):
            raise fold_error(param, labels, "must have distinct labels (they name the rows)")
        for m in parsed:
            require_image_model(m.spec, param, label=m.label)
            if m.spd:  # a rewrite that cannot apply is the first thing to say, before asking for its base model
                spd_site(SpdSpec.of(m.spec), param=param)
            if m.spd and m.base_label not in labels:
                raise fold_error(param, m.label, f"is compared with its model {m.base_label!r} (the same numbers): list that model too")
        object.__setattr__(self, "models", parsed)
        object.__setattr__(self, "model", parsed[0].spec if param == "model" else {})
        images = tuple(self.images)
        for name in images:
            if name not in SKIMAGE_IMAGES:
                raise fold_error("images", name, f"must be one of the images that ship with scikit-image: {SKIMAGE_IMAGES}")
        object.__setattr__(self, "images", images)
        for name, minimum in (("crop", 32), ("crops_per_image", 1), ("pairs", 1), ("max_shift", 0), ("seed", 0), ("threads", 0)):
            require_int(getattr(self, name), name, minimum)
        if self.border != RF_BORDER:
            if isinstance(self.border, str):
                raise fold_error("border", self.border, f"must be {RF_BORDER!r} (drop the positions that read padding) or pixels >= 0")
            require_int(self.border, "border", 0)
        object.__setattr__(self, "shifts", tuple(require_int(s, "shifts", 1) for s in self.shifts))
        if not isinstance(self.ladder, LadderConfig):
            raise fold_error("ladder", self.ladder, "must be a LadderConfig")

    @property
    def labels(self) -> Tuple[str, ...]:
        """The models' labels, in order (the rows of every table)."""
        return tuple(m.label for m in self.models)


def require_image_model(spec: ModelSpec, param: str = "models", *, label: Optional[str] = None) -> ModelSpec:
    """``spec`` when its model takes an image the shift app can crop (2-D, ``(N, C, H, W)``, not a 1 x 1 map),
    else a FoldError naming ``param``, the model and the input it takes instead (a generator's latent vector has
    no pixels to shift; ``label``, default the spec's, names it). A model whose input shape is not known is let
    through: its first conv decides.

    Example:
        >>> from foldconv.models import resolve_model
        >>> require_image_model(resolve_model("espcn")).label
        'espcn'
        >>> require_image_model(resolve_model("dcgan"))
        Traceback (most recent call last):
        ...
        foldconv.errors.FoldError: models='dcgan': takes an input of shape (1, 100, 1, 1), a latent vector (1 x 1 map), not an image: the shift app measures shifts of cropped images; list image models only
    """
    shape, name = spec.input_shape, label or spec.label
    if shape is None:
        return spec
    if len(shape) != 4:
        raise fold_error(param, name, f"takes a {len(shape) - 2}-D input of shape {tuple(shape)}, not a 2-D image: "
                                            "the shift app measures shifts of cropped images; list 2-D image models only")
    if all(int(n) == 1 for n in shape[2:]):
        raise fold_error(param, name, f"takes an input of shape {tuple(shape)}, a latent vector (1 x 1 map), not an image: "
                                            "the shift app measures shifts of cropped images; list image models only")
    return spec


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

    image_size = require_int(image_size, "image_size", 1)
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float64).unsqueeze(1) / 16.0
    return F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False), torch.tensor(d.target)


def _fmt(values: Sequence[Any]) -> str:
    return "(" + ",".join(str(v) for v in values) + ")"


#: What the period column says for a stage that reads the whole crop (a classifier after global pooling).
GLOBAL = "none: reads the whole input"


def _is_global(info: NodeShift) -> bool:
    return any(a.own_period == 0 for a in info.axes)


def period_text(info: NodeShift) -> str:
    """A stage's period as the tables print it: ``"(4,4)"``; a stage that reads the whole input has none on a
    finite crop (its analytic lattice holds only on circular inputs); ``"none: paths disagree"`` when merged
    paths shift differently.

    Example:
        >>> import torch
        >>> rep = shift_equivariance(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3, stride=2), torch.nn.AdaptiveAvgPool2d(1)), (1, 1, 9, 9))
        >>> period_text(rep.stage("0")), period_text(rep.stage("1"))
        ('(2,2)', 'none: reads the whole input')
    """
    if _is_global(info):
        return GLOBAL
    if any(p is None for p in info.period):
        return "none: paths disagree"
    return _fmt(info.period)


#: How the theory column of a stage that keeps no position begins (:func:`not_measurable` says why).
NOT_MEASURABLE = "not measurable: "


def not_measurable(rf: int, crop: int, shift: int, needed: int) -> str:
    """The theory column of a stage that keeps no position: why (its field is wider than the crop, or no unit's
    field lies inside both crops once the first unit that reads no padding is aligned and the shift is added),
    and the crop that would measure it.

    Example:
        >>> not_measurable(43, 64, 32, 78)
        'not measurable: no unit whose field (43 px) lies inside both crops (64 px, shifted 32 px); crop >= 78 px measures it'
        >>> not_measurable(99, 64, 1, 110)
        'not measurable: the field (99 px) is wider than the crop (64 px); crop >= 110 px measures it'
    """
    why = (f"the field ({rf} px) is wider than the crop ({crop} px)" if rf > crop else
           f"no unit whose field ({rf} px) lies inside both crops ({crop} px, shifted {shift} px)")
    return f"{NOT_MEASURABLE}{why}; crop >= {needed} px measures it"


def _theory(err: Any, rf: int = 0, crop: int = 0, needed: int = 0, border: Any = RF_BORDER) -> str:
    if err.global_:
        return "not equivariant: reads the whole input, borders included"
    if err.positions == 0 and border != RF_BORDER:
        return f"{NOT_MEASURABLE}cropping {border} px from both borders, after the {err.shift[-1]} px shift, leaves no position"
    if err.positions == 0:
        return not_measurable(rf, crop, err.shift[-1], needed)
    if any(p is None for p in err.period):
        return "not equivariant: paths disagree"
    if any(s % p for s, p in zip(err.shift, err.period)):
        return "not equivariant: the shift is not a multiple of the period"
    return "0 exactly: the period divides the shift" if err.exact else "0 away from the borders (not aligned: bound only)"


def deepest_period(report: Any, stages: Sequence[str]) -> Optional[int]:
    """The horizontal period of the deepest stage that is still a spatial map (not global), in input pixels."""
    local = [report.stage(st) for st in stages]
    local = [info for info in local if not _is_global(info) and info.period[-1] is not None]
    return local[-1].period[-1] if local else None


def in_channels(spec: ModelSpec, model: nn.Module) -> int:
    """The channels a model takes: its own input shape's when known (a registered architecture, a zoo model),
    else the first convolution's ``in_channels``, else 3.

    Example:
        >>> from foldconv.models import build_model, resolve_model
        >>> in_channels(resolve_model("espcn"), build_model("espcn", meta=True))
        1
    """
    if spec.input_shape is not None:
        return int(spec.input_shape[1])
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))), None)
    return int(first.in_channels) if first is not None else 3


def with_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """RGB images ``(N, 3, H, W)`` for a model of ``channels`` inputs: grey (the channels' mean) for 1, as they
    are for 3, the RGB planes repeated cyclically otherwise.

    Example:
        >>> tuple(with_channels(torch.zeros(2, 3, 4, 4), 1).shape), tuple(with_channels(torch.zeros(2, 3, 4, 4), 4).shape)
        ((2, 1, 4, 4), (2, 4, 4, 4))
    """
    if channels == images.shape[1]:
        return images
    if channels == 1:
        return images.mean(dim=1, keepdim=True)
    return images[:, [k % images.shape[1] for k in range(channels)]]


def _degenerate(row: Mapping[str, Any]) -> str:
    """A warning for a consistency that measures nothing: a model that gives one class to every image agrees
    with itself under any shift (random weights often collapse to one class)."""
    if row["classes_seen"] == 1 or row["centred_classes_seen"] == 1:
        return ("; DEGENERATE: the model gives one class to every image, so its consistency is 1 whatever its "
                "equivariance (random weights; the measured errors above are the informative figure)")
    return ""


def _analyse(model: nn.Module, shape: Tuple[int, ...], label: str, seen: List[str]) -> Any:
    """:func:`shift_equivariance`, its alignment warnings kept in ``seen`` (``"label: warning"``) for the summary."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RFAlignmentWarning)  # the report keeps them; the summary says them
        report = shift_equivariance(model, shape)
    seen.extend(f"{label}: {w}" for w in report.rf.warnings)
    return report


def _unmeasured(report: Any, info: NodeShift, crop: int, shift: Tuple[int, int]) -> Tuple[int, int]:
    """A stage's field along the shifted axis and the crop on which it keeps a position under ``shift``."""
    axes = report.rf[info.name].axes
    needed = max(min_clean_length(a, s * (x.rate or 0)) for a, s, x in zip(axes, shift, info.axes))
    return axes[-1].rf, needed


def _equivariance(e: ShiftExperiment, images: List[torch.Tensor],
                  alignment: List[str]) -> Tuple[List[Dict], List[Dict], List[Dict], Dict[str, Optional[int]]]:
    gen = torch.Generator().manual_seed(e.seed)
    period_rows, err_rows, cons_rows = [], [], []
    built = {m.label: m.build(e.seed) for m in e.models if not m.spd}
    channels = {m.base_label: in_channels(m.spec, built[m.base_label]) for m in e.models if not m.spd}
    # a +spd variant has its model's periods and receptive fields (that is the claim its rows check)
    reports = {label: _analyse(model, (1, channels[label], e.crop, e.crop), label, alignment) for label, model in built.items()}
    deepest = {label: deepest_period(reports[label], stages_of(model)) for label, model in built.items()}
    extra = max(list(e.shifts) + [p or 0 for p in deepest.values()])  # room for the largest shift
    batch = torch.cat([crops(img, (e.crop + extra, e.crop + extra), e.crops_per_image, generator=gen) for img in images])
    pair_gen = torch.Generator().manual_seed(e.seed + 1)
    pool = torch.cat([crops(img, (e.crop + e.max_shift,) * 2, math.ceil(e.pairs / len(images)), generator=pair_gen) for img in images])[: e.pairs]
    for m in progress_bar(e.models, "shift: models", unit="model"):
        name = m.label
        model = built[name] if name in built else m.build(e.seed)
        report = reports[m.base_label]
        stages = stages_of(model)
        period = deepest[m.base_label]
        shifts = [(0, s) for s in sorted(set(e.shifts) | ({period} if period else set()))]
        c_in = channels[m.base_label]
        for err in stage_errors(model, report, stages, with_channels(batch, c_in), input_size=(e.crop, e.crop), shifts=shifts, border=e.border):
            info = report.stage(err.stage)
            rf, needed = _unmeasured(report, info, e.crop, err.shift) if not err.global_ else (report.rf[info.name].axes[-1].rf, 0)
            err_rows.append({"model": name, "depth": err.depth, "stage": err.stage, "jump": err.jump[1], "rf": rf,
                             "period": GLOBAL if err.global_ else err.period[1], "shift": err.shift[1],
                             "theory": _theory(err, rf, e.crop, needed, e.border), "error": err.error, "positions": err.positions,
                             "min_crop": needed if not err.positions and not err.global_ and e.border == RF_BORDER else ""})
        out = report.output
        if len(out.shape) == 2:  # a classifier: (N, classes)
            c, cc = consistency_pair(model, with_channels(pool, c_in), input_size=(e.crop, e.crop), max_shift=e.max_shift,
                                     generator=torch.Generator().manual_seed(e.seed + 2))
            cons_rows.append({"model": name, "consistency": c.value, "classes": c.outputs, "classes_seen": c.classes,
                              "centred_consistency": cc.value, "centred_classes_seen": cc.classes, "pairs": c.pairs,
                              "weights": f"random (seed {e.seed})", "output_period": period_text(out)})
        else:  # an argmax over a map's channels is not a class: no consistency
            cons_rows.append({"model": name, "consistency": float("nan"), "classes": 0, "classes_seen": 0, "centred_consistency": float("nan"),
                              "centred_classes_seen": 0, "pairs": 0, "weights": f"random (seed {e.seed})",
                              "output_period": f"{period_text(out)} (not a classifier: output {tuple(out.shape)})"})
        # a +spd model is listed with its model's analysis: the rewrite computes the same function (SHIFT-3 checks the numbers)
        source = "its own" if not m.spd else f"{m.base_label}'s (the same function; SHIFT-3 checks its numbers); +spd replaced {m.site}"
        for depth, st in enumerate(stages):
            info = report.stage(st)
            period_rows.append({"model": name, "depth": depth, "stage": st, "node": info.name, "jump": _fmt(info.jump),
                                "rf": _fmt(report.rf[info.name].rf), "period": period_text(info),
                                "own_period": "-" if _is_global(info) else _fmt(info.own_period), "analysis": source})
    return period_rows, err_rows, cons_rows, deepest


def _zero_checks(e: ShiftExperiment, err_rows: List[Dict]) -> List[Check]:
    """SHIFT-1 measured: every stage whose period divides the shift has error 0 over the positions that read no
    padding (float32 evaluates the same window the same way at every position)."""
    if e.border != RF_BORDER:
        return []
    checks = []
    for m in e.models:
        rows = [r for r in err_rows if r["model"] == m.label and r["theory"].startswith("0 exactly")]
        worst = max((r["error"] for r in rows), default=0.0)
        bad = [f"{r['stage']} shift {r['shift']}: {r['error']:.3g}" for r in rows if not r["error"] <= ZERO_TOL]
        checks.append(Check(f"the error is 0 wherever the period divides the shift ({len(rows)} stage-shifts, borders from the rf)",
                            not bad, subject=m.label, claim="SHIFT-1", expected=f"<= {ZERO_TOL}", observed=worst, detail="; ".join(bad[:3])))
    return checks


def _zero_lines(err_rows: List[Dict]) -> List[str]:
    lines = []
    for m in dict.fromkeys(r["model"] for r in err_rows):
        rows = [r for r in err_rows if r["model"] == m]
        zero = [r for r in rows if r["theory"].startswith("0 exactly")]
        none = [r for r in rows if r["theory"].startswith(NOT_MEASURABLE)]
        order = list(dict.fromkeys(r["stage"] for r in sorted(rows, key=lambda r: r["depth"])))
        need = {}
        for r in none:  # per stage: the shifts it could not be measured at, and the crop that measures all of them
            shifts, crop = need.get(r["stage"], ([], 0))
            need[r["stage"]] = (shifts + [r["shift"]], max(crop, r["min_crop"] or 0))
        unmeasured = "; ".join(f"{st} (rf {next(r['rf'] for r in none if r['stage'] == st)} px, shift {'/'.join(map(str, sh))} px"
                               + (f": crop >= {c} px)" if c else ")") for st, (sh, c) in sorted(need.items(), key=lambda kv: order.index(kv[0])))
        why = "no unit's field lies inside both crops" if any(c for _, c in need.values()) else "the border leaves no position"
        lines.append(f"- {m}: error {max((r['error'] for r in zero), default=0.0):.3g} at the {len(zero)} stage-shifts where the period "
                     f"divides the shift (theory: 0)" + (f"; not measurable ({why}): {unmeasured}" if none else ""))
    return lines


def _rewrite_checks(e: ShiftExperiment, err_rows: List[Dict], cons_rows: List[Dict]) -> List[Check]:
    """SHIFT-3: every ``+spd`` model's numbers equal its model's (float tolerance)."""
    checks = []
    errs = {(r["model"], r["stage"], r["shift"]): r["error"] for r in err_rows}
    cons = {r["model"]: (r["consistency"], r["centred_consistency"]) for r in cons_rows}
    for m in e.models:
        if not m.spd:
            continue
        bad = []
        for (model, stage, shift), value in errs.items():
            if model == m.label:
                ref = errs.get((m.base_label, stage, shift))
                if ref is None or not (abs(ref - value) <= 1e-4 * max(1.0, abs(ref)) or (math.isnan(ref) and math.isnan(value))):
                    bad.append(f"{stage} shift {shift}: {value} vs {ref}")
        if cons.get(m.label) != cons.get(m.base_label):
            bad.append(f"consistency {cons.get(m.label)} vs {cons.get(m.base_label)}")
        checks.append(Check(f"the space-to-depth rewrite gives the numbers of {m.base_label}", not bad, subject=m.label, claim="SHIFT-3",
                            detail="; ".join(bad[:3])))
    return checks


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


def _error_figure(err_rows: List[Dict], *, crop: int, border: Any, deepest: Dict[str, Optional[int]]):
    """One row per model (its ``+spd`` rewrite drawn over it, dashed), one panel per input shift it was measured
    at (the configured shifts and the period of its deepest spatial stage): the error of every stage."""
    models = list(dict.fromkeys(r["model"] for r in err_rows))
    bases = [m for m in models if not (m.endswith(SPD) and m[: -len(SPD)] in models)]
    per_base = {b: sorted({r["shift"] for r in err_rows if r["model"] == b}) for b in bases}
    ncols = max(len(v) for v in per_base.values())
    fig, axes = figure(len(bases), ncols, figsize=(5.2 * ncols + 2.4, 3.9 * len(bases) + 1.6), squeeze=False)
    floor, nan = 1e-9, float("nan")
    for row, base in zip(axes, bases):
        shown = per_base[base]
        period = deepest.get(base)
        drawn = [base] + [m for m in models if m == base + SPD]
        for ax in row[len(shown):]:
            ax.set_visible(False)
        for ax, s in zip(row, shown):
            for k, m in enumerate(drawn):
                rows = [r for r in err_rows if r["model"] == m and r["shift"] == s]
                spd = m != base  # the same function: drawn over its model, dashed
                style = dict(marker="x" if spd else "o", ls="--" if spd else "-", ms=8 if spd else 5, color=f"C{k}")
                # a missing point (no position reads no padding) breaks the line; global stages are drawn apart
                local = [max(r["error"], floor) if r["positions"] and r["period"] != GLOBAL else nan for r in rows]
                ax.plot([r["depth"] for r in rows], local, label=m + (" (same numbers)" if spd else ""), **style)
                glob = [(r["depth"], max(r["error"], floor)) for r in rows if r["period"] == GLOBAL and r["positions"]]
                ax.plot([g[0] for g in glob], [g[1] for g in glob], ls="none", marker="^", mfc="none", ms=8, color=f"C{k}")
                zero = [r["depth"] for r in rows if r["theory"].startswith("0 exactly")]
                if zero and not spd:
                    ax.plot(zero, [floor] * len(zero), ls="none", marker="s", mfc="none", ms=11, color=f"C{k}")
            rows = [r for r in err_rows if r["model"] == base and r["shift"] == s]
            ax.set_yscale("log")
            ax.set_ylim(floor / 3, 3.0)
            for r in rows:
                if r["theory"].startswith(NOT_MEASURABLE):
                    ax.text(r["depth"], floor * 2.2, f"needs crop {r['min_crop']}" if r["min_crop"] else "none kept", ha="center", va="bottom", fontsize=8, color="0.4", rotation=90)
            step = max(1, math.ceil(len(rows) / 40))
            ax.set_xticks([r["depth"] for r in rows][::step])
            ax.set_xticklabels([r["stage"] for r in rows][::step], rotation=60, ha="right", fontsize=8)
            which = " (the period of its deepest spatial stage)" if s == period else ""
            ax.set_title(f"{' and '.join(drawn)}:\nerror of every stage (x axis), input shift {s} px{which}", fontsize=9)
            ax.set_ylabel("relative error (0 drawn at 1e-9)", fontsize=9)
        row[len(shown) - 1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)  # beside, not over
    how = ("positions whose receptive field lies inside both crops (border from the rf)" if border == RF_BORDER
           else f"{border} px cropped from the borders")
    fig.suptitle(f"Error of each stage over the {how}; crop {crop} px, random weights.\n"
                 "Squares: the period divides the shift, theory says 0. Triangles: stages that read the whole input (no period,\n"
                 "borders included). needs crop N: no unit's field lies inside both crops at this crop and shift; a crop of N px measures it.",
                 fontsize=9)
    return fig


def consistency_inputs(pairs: int, images: Sequence[str]) -> str:
    """What the consistency pairs are: ``pairs`` random crops, each shifted twice, taken in turn from ``images``
    (as many from each, the last image fewer when they do not divide evenly; images past the last crop unused).

    Example:
        >>> consistency_inputs(8, ["camera", "astronaut"])
        '8 random crops (4 from each of 2 images: camera, astronaut)'
        >>> consistency_inputs(3, ["camera", "astronaut", "coffee"])
        '3 random crops (1 from each of 3 images: camera, astronaut, coffee)'
        >>> consistency_inputs(3, ["camera", "astronaut"])
        '3 random crops (2 from camera, 1 from astronaut)'
        >>> consistency_inputs(4, ["camera"])
        '4 random crops (all from camera)'
    """
    per = math.ceil(pairs / len(images))
    counts = [min(per, pairs - per * i) for i in range(len(images)) if pairs - per * i > 0]
    used = list(images[: len(counts)])
    crops_text = f"{pairs} random crop{'s' if pairs != 1 else ''}"
    if len(used) == 1:
        return f"{crops_text} (all from {used[0]})"
    if len(set(counts)) == 1:
        return f"{crops_text} ({per} from each of {len(used)} images: {', '.join(used)})"
    return f"{crops_text} ({', '.join(f'{c} from {name}' for c, name in zip(counts, used))})"


def _consistency_figure(cons_rows: List[Dict], others: Sequence[str] = (), *, seed: int, max_shift: int, pairs: int,
                        images: Sequence[str]):
    fig, ax = figure(figsize=(4.0 + 1.3 * len(cons_rows), 4.8))
    xs = list(range(len(cons_rows)))
    ax.bar([x - 0.2 for x in xs], [r["consistency"] for r in cons_rows], width=0.4, label="argmax of logits")
    ax.bar([x + 0.2 for x in xs], [r["centred_consistency"] for r in cons_rows], width=0.4, label="argmax of centred logits")
    for x, r in zip(xs, cons_rows):
        ax.text(x - 0.2, r["consistency"] + 0.01, f"{r['classes_seen']}", ha="center", va="bottom", fontsize=8)
        ax.text(x + 0.2, r["centred_consistency"] + 0.01, f"{r['centred_classes_seen']}", ha="center", va="bottom", fontsize=8)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)  # beside the bars, never over them
    ax.set_xticks(xs)
    ax.set_xticklabels([r["model"] for r in cons_rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("consistency (argmax agrees)")
    classes = sorted({r["classes"] for r in cons_rows})
    text = (f"Consistency: two random shifts (up to {max_shift} px) of each of {consistency_inputs(pairs, images)}; "
            f"random weights (seed {seed}); argmax over {'/'.join(str(c) for c in classes)} classes; on the bars: distinct classes seen")
    width = int(9 * fig.get_figwidth())  # characters of a 9 pt title per line: one model's narrow figure wraps it more
    lines = textwrap.wrap(text, width) + (textwrap.wrap(f"not drawn (not classifiers): {', '.join(others)}", width) if others else [])
    ax.set_title("\n".join(lines), fontsize=9)
    return fig


_MARKERS = ("o", "s", "^", "D", "v")


def coinciding(rows: Sequence[Mapping[str, Any]], keys: Sequence[str], name: str = "layer") -> List[List[str]]:
    """Groups of two or more rows whose values at ``keys`` are all equal (lines a figure would draw on top of
    each other), by ``name``.

    Example:
        >>> coinciding([{"layer": "a", "x": 1}, {"layer": "b", "x": 1}, {"layer": "c", "x": 2}], ["x"])
        [['a', 'b']]
    """
    groups: Dict[Tuple[Any, ...], List[str]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(str(r[name]))
    return [g for g in groups.values() if len(g) > 1]


def _ladder_figure(rows: List[Dict], cfg: LadderConfig, seed: int):
    """Accuracy against the test images' shift, one line per rung; each rung has its own marker, line style
    and marker size (largest first), so that rungs with identical accuracies (the folded rung computes what the
    conv rung computes) stay visible, and the figure says which coincide."""
    fig, ax = figure(figsize=(6, 4.2))
    shifts = cfg.shifts
    xs = [0] + list(shifts)
    keys = ["accuracy"] + [f"acc_shift{s}" for s in shifts]
    same = coinciding(rows, keys)
    # within a group of identical lines, each drawn wider, with larger hollow markers, than the ones drawn over it
    under = {name: len(g) - 1 - i for g in same for i, name in enumerate(g)}
    for k, r in enumerate(rows):
        depth, drawn_over = under.get(str(r["layer"]), 0), str(r["layer"]) in under
        ax.plot(xs, [r[key] for key in keys], marker=_MARKERS[k % len(_MARKERS)], ls="--" if drawn_over and not depth else "-",
                lw=1.5 + 2.5 * depth, ms=6 + 5 * depth, mfc="none" if depth else None, zorder=2 - 0.1 * depth,  # wide lines below every thin one
                label=f"{r['layer']} ({r['params']:,} params)")
    ax.set_xlabel("test images shifted by (px of the digit images)")
    ax.set_ylabel("accuracy (share of test images)")
    ax.set_xticks(xs)
    ax.legend(fontsize=8)
    if same:
        note = "; ".join(" and ".join(g) + " coincide (identical accuracies at every shift)" for g in same)
        ax.text(0.5, -0.22, note, transform=ax.transAxes, ha="center", va="top", fontsize=8)
    ax.set_title(f"D2L ladder on digits {cfg.image_size}x{cfg.image_size} (r={cfg.r}, kernel {cfg.kernel}, {cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''}, "
                 f"seed {seed})", fontsize=9)
    return fig


#: What each file of the app's run directory holds (index.md).
SHIFT_FILES = {
    "summary.md": "the answer: the measured error where theory says 0, every model's consistency (classes, random weights), the ladder",
    "periods.*": "every stage's analytic shift period (input px), own period and receptive field, per model (+spd: its model's analysis)",
    "equivariance.*": "relative feature error by stage under every configured shift and at the deepest spatial stage's period, with what "
                      "theory says (a stage that keeps no position: why, and the crop that measures it)",
    "equivariance.png": "the same, by depth: one row per model (its +spd drawn over it), one panel per shift",
    "consistency.*": "how often the argmax agrees under two random shifts (and of centred logits)",
    "consistency.png": "the same, per model",
    "ladder.*": "D2L's ladder on digits: parameters, accuracy, accuracy of shifted test images",
    "ladder.png": "accuracy against the shift of the test images, per rung",
    "*.log": "the app's log (Hydra)",
}


def run_shift(e: ShiftExperiment, out_dir: Union[str, Path]) -> AppResult:
    """The shift app's body: run everything, then write the tables and figures into ``out_dir``; returns the
    summary and the checks (SHIFT-1: the measured error is 0 wherever theory says so, per model; SHIFT-3 per
    ``+spd`` model; SHIFT-4 for the ladder) for the app skeleton."""
    if not isinstance(e, ShiftExperiment):
        raise fold_error("experiment", type(e).__name__, "must be a ShiftExperiment")
    if e.threads:
        torch.set_num_threads(e.threads)
    out = Path(out_dir)
    alignment: List[str] = []
    period_rows, err_rows, cons_rows, deepest = _equivariance(e, load_images(e.images), alignment) if e.models else ([], [], [], {})
    checks = _zero_checks(e, err_rows) + _rewrite_checks(e, err_rows, cons_rows)
    ladder_rows, drift = _ladder(e.ladder, e.seed) if e.ladder.enabled else ([], 0.0)
    if ladder_rows:
        checks.append(Check("the folded rung tracks the conv rung through training (max weight difference <= tolerance)",
                            drift <= TRACK_TOL, subject="ladder", expected=f"<= {TRACK_TOL}", observed=drift, claim="SHIFT-4"))
    lines = []
    if e.models:
        write_table(period_rows, out / "periods", "Analytic shift periods per stage (jump, rf, period: input px; own_period: px of the stage's own map)")
        how = "positions whose receptive field lies inside both crops" if e.border == RF_BORDER else f"border {e.border} px"
        write_table(err_rows, out / "equivariance", f"Equivariance error by stage (crop {e.crop} px, {how}; random weights, seed {e.seed}); "
                    "jump, rf, period, shift, min_crop: input px; error: relative, ||f(shifted x) - shifted f(x)|| / ||f(x)|| over the "
                    "positions compared; positions: output positions compared")
        write_table(cons_rows, out / "consistency", f"Consistency over {e.pairs} pairs, shifts up to {e.max_shift} input px (random weights, seed {e.seed}); "
                    "consistency: share of pairs whose argmax agrees; classes: the argmax's range; classes_seen: distinct argmaxes")
        save_figure(_error_figure(err_rows, crop=e.crop, border=e.border, deepest=deepest), out / "equivariance.png")
        classifiers = [r for r in cons_rows if r["pairs"]]
        others = [r["model"] for r in cons_rows if not r["pairs"]]
        if classifiers:
            save_figure(_consistency_figure(classifiers, others, seed=e.seed, max_shift=e.max_shift, pairs=e.pairs, images=e.images), out / "consistency.png")
        else:
            lines.append(f"- no consistency.png: no model is a classifier (outputs (N, classes)): {', '.join(others)}")
        lines += [f"- {m.label}: the +spd rewrite replaced {m.site}" for m in e.models if m.spd]
        lines += _zero_lines(err_rows)
        lines += [f"- {r['model']}: consistency {r['consistency']:.3f} over {r['pairs']} pairs (argmax over {r['classes']} classes, "
                  f"{r['classes_seen']} seen; random weights, seed {e.seed}), centred {r['centred_consistency']:.3f} "
                  f"({r['centred_classes_seen']} seen); output period: {r['output_period']}" + _degenerate(r) if r["pairs"] else
                  f"- {r['model']}: no consistency; output period: {r['output_period']}" for r in cons_rows]
    if ladder_rows:
        write_table(ladder_rows, out / "ladder", f"D2L ladder on digits {e.ladder.image_size}x{e.ladder.image_size} px (params: count; train_s: "
                    "seconds; accuracy: share of test images; acc_shift<s>: the same on test images shifted by s px)")
        save_figure(_ladder_figure(ladder_rows, e.ladder, e.seed), out / "ladder.png")
        lines += [f"- ladder {r['layer']}: {r['params']:,} params, accuracy {r['accuracy']:.3f}" for r in ladder_rows]
        lines.append(f"- folded rung vs conv rung after training: max weight difference {drift:.3g}")
    lines += [f"- alignment warning: {w}" for w in alignment]
    failed = [c for c in checks if not c.ok]
    summary = "\n".join(["# Shift equivariance", ""] + lines + ([""] + ["FAILED: " + c.describe() for c in failed] if failed else []))
    write_markdown(summary + "\n", out / "summary.md")
    answer = f"{len(e.models)} model(s) measured" + (", the ladder trained" if ladder_rows else "")
    return AppResult("Shift equivariance", answer, tuple(checks), SHIFT_FILES, summary)


# --- the ladder's training loop ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainResult:
    """Losses per step and the wall time of :func:`train_classifier` (the model is trained in place)."""

    losses: Tuple[float, ...]
    seconds: float


def train_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, batch_size: int, lr: float,
                     seed: int, optimizer: str = "adam") -> TrainResult:
    """Train in place with cross-entropy; the batch order is drawn from ``seed`` only, so two models see the
    same batches. ``optimizer``: ``"adam"`` or ``"sgd"`` (momentum 0.9).

    Example:
        >>> net = torch.nn.Linear(2, 2)
        >>> res = train_classifier(net, torch.eye(2), torch.tensor([0, 1]), epochs=2, batch_size=2, lr=0.1, seed=0)
        >>> len(res.losses)
        2
    """
    if optimizer not in ("adam", "sgd"):
        raise fold_error("optimizer", optimizer, "must be 'adam' or 'sgd'")
    epochs, batch_size = require_int(epochs, "epochs", 0), require_int(batch_size, "batch_size", 1)
    opt = torch.optim.Adam(model.parameters(), lr=lr) if optimizer == "adam" else torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    losses: List[float] = []
    model.train()
    start = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], batch_size):
            idx = perm[i:i + batch_size]
            opt.zero_grad()
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            losses.append(loss.item())
    seconds = time.perf_counter() - start
    model.eval()
    return TrainResult(tuple(losses), seconds)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy (no gradients).

    Example:
        >>> accuracy(nn.Identity(), torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), torch.tensor([0, 1, 1]))
        0.6666666666666666
    """
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).double().mean())


def shift_images(x: torch.Tensor, shift: Sequence[int]) -> torch.Tensor:
    """``x`` (N, C, H, W) translated by ``shift`` = (down, right) pixels (negative: up, left), zero-filled.

    Example:
        >>> shift_images(torch.arange(4.).reshape(1, 1, 1, 4), (0, 1)).flatten().tolist()
        [0.0, 0.0, 1.0, 2.0]
    """
    out = x
    for axis, s in zip((-2, -1), shift):
        s = int(s)
        if s == 0:
            continue
        n = out.shape[axis]
        if abs(s) >= n:
            out = torch.zeros_like(out)
            continue
        kept = out.narrow(axis, 0, n - s) if s > 0 else out.narrow(axis, -s, n + s)
        zeros = torch.zeros_like(out.narrow(axis, 0, abs(s)))
        out = torch.cat([zeros, kept] if s > 0 else [kept, zeros], dim=axis)
    return out
