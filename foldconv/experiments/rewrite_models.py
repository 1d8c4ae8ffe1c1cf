"""The real models the rewrite app and its tests rewrite (issue 11, item 4), built with seeded random weights.

Nothing is downloaded. Each :class:`RealModel` holds how to build the model, its default full input shape
(``input_shape``, the app's), a small one for the tests (``test_input_shape``), the rules that rewrite it
(``rules``) and the rules that take the rewrite back (``inverse``):

- ``yolov5_stem``: YOLOv5 v5.0's ``Focus(3, 32, k=3)`` + two ``Conv``, as written there. Rule focus_to_conv:
  the slices + cat + 3x3 conv are one 6x6 stride-2 conv, padding 2 (YOLOv5 v6.0's stem); back: conv_to_focus
  at the stem.
- ``tresnet_m``: ``timm.create_model("tresnet_m")``. Rule spd_to_strided: SpaceToDepth(4) + 3x3 conv is one
  12x12 stride-4 conv; back: strided_to_spd in order dcr (timm's, and ONNX SpaceToDepth's).
- ``dcgan``: the PyTorch DCGAN tutorial's generator. Rule transposed_to_subpixel (each ConvTranspose2d as
  conv + DepthToSpace); back: subpixel_to_transposed.
- ``espcn``: Shi et al. 2016, r=3 (conv5-tanh, conv3-tanh, conv3 + PixelShuffle). Rule subpixel_to_transposed:
  one ConvTranspose2d 9x9 s3 (no bias) + the per-sub-pixel bias the r^2 conv biases of a channel make, or
  one ConvTranspose2d with bias when those are tied (``build(icnr=True)``: :func:`icnr_espcn`); back:
  transposed_to_subpixel.
- ``resnet18``: ``torchvision.models.resnet18()``. Rules strided_to_spd at conv1 (7x7 s2 as space-to-depth +
  4x4) and fold_stage layer1 r=2; back: spd_to_strided and unfold_stage layer1.

Every BatchNorm gets seeded random running statistics and affine parameters (a fresh BatchNorm is the
identity in eval mode, which would make a check of a BN fold vacuous).

Example:
    >>> sorted(REAL_MODELS)
    ['dcgan', 'espcn', 'resnet18', 'tresnet_m', 'yolov5_stem']
    >>> m = real_model("yolov5_stem")
    >>> m.rules, m.inverse, m.input_shape
    (('focus_to_conv',), (('conv_to_focus', {'at': ['focus.conv.conv']}),), (1, 3, 320, 320))
    >>> tuple(m.build()(torch.zeros(m.test_input_shape)).shape)
    (1, 64, 8, 8)
"""
from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..errors import fold_error

__all__ = [
    "Conv", "Focus", "YoloV5Stem", "DCGANGenerator", "ESPCN", "RealModel", "REAL_MODELS", "real_model",
    "inverse_rules", "RULE_INVERSES",
]

RuleArg = Union[str, Tuple[str, Mapping[str, Any]]]


# --- YOLOv5 (ultralytics/yolov5, models/common.py, v5.0), kept as written there --------------------------------

def autopad(k: Any, p: Any = None) -> Any:
    """YOLOv5's 'same' padding: ``k // 2``."""
    if p is None:
        p = k // 2 if isinstance(k, int) else [x // 2 for x in k]
    return p


class Conv(nn.Module):
    """YOLOv5's standard convolution: Conv2d (no bias) + BatchNorm2d + SiLU."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: Any = None, g: int = 1, act: Any = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p), groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU() if act is True else (act if isinstance(act, nn.Module) else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Focus(nn.Module):
    """YOLOv5's Focus: the width-height information into channels (four strided slices, cat), then a Conv."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: Any = None, g: int = 1, act: Any = True) -> None:
        super().__init__()
        self.conv = Conv(c1 * 4, c2, k, s, p, g, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x(b,c,w,h) -> y(b,4c,w/2,h/2)
        return self.conv(torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1))


class YoloV5Stem(nn.Module):
    """The first layers of YOLOv5s (v5.0): ``Focus(3, 32, 3)``, ``Conv(32, 64, 3, 2)``, ``Conv(64, 64, 1, 1)``.

    Example:
        >>> tuple(YoloV5Stem()(torch.zeros(1, 3, 32, 32)).shape)
        (1, 64, 8, 8)
    """

    def __init__(self, c1: int = 3, width: int = 32) -> None:
        super().__init__()
        self.focus = Focus(c1, width, k=3)
        self.down = Conv(width, 2 * width, 3, 2)
        self.mix = Conv(2 * width, 2 * width, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(self.down(self.focus(x)))


# --- DCGAN (the PyTorch tutorial, pytorch.org/tutorials/beginner/dcgan_faces_tutorial.html) ---------------------

class DCGANGenerator(nn.Module):
    """The DCGAN tutorial's generator: a 1x1 latent through ConvTranspose2d k4 (s1 p0, then s2 p1) + BN + ReLU, Tanh.

    Example:
        >>> tuple(DCGANGenerator(ngf=8)(torch.zeros(1, 100, 1, 1)).shape)
        (1, 3, 64, 64)
    """

    def __init__(self, nz: int = 100, ngf: int = 64, nc: int = 3) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),  # 1x1 -> 4x4
            nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),  # 8x8
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),  # 16x16
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),  # 32x32
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),  # 64x64
            nn.Tanh(),
        )

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.main(input)


def _dcgan_init(m: nn.Module) -> None:
    """The tutorial's ``weights_init``: conv weights N(0, 0.02), BN weights N(1, 0.02), BN biases 0."""
    classname = m.__class__.__name__
    if classname.find("Conv") != -1:
        nn.init.normal_(m.weight.data, 0.0, 0.02)
    elif classname.find("BatchNorm") != -1:
        nn.init.normal_(m.weight.data, 1.0, 0.02)
        nn.init.constant_(m.bias.data, 0)


# --- ESPCN (Shi et al., CVPR 2016: f1=5, n1=64, f2=3, n2=32, f3=3, r^2 channels, periodic shuffling) ------------

class ESPCN(nn.Module):
    """Efficient sub-pixel CNN: conv 5x5 (64) + tanh, conv 3x3 (32) + tanh, conv 3x3 to ``channels*r^2`` + PixelShuffle(r).

    Example:
        >>> tuple(ESPCN()(torch.zeros(1, 1, 8, 8)).shape)
        (1, 1, 24, 24)
    """

    def __init__(self, r: int = 3, channels: int = 1, n1: int = 64, n2: int = 32) -> None:
        super().__init__()
        self.feature = nn.Sequential(
            nn.Conv2d(channels, n1, 5, padding=2), nn.Tanh(),
            nn.Conv2d(n1, n2, 3, padding=1), nn.Tanh(),
        )
        self.subpixel = nn.Sequential(nn.Conv2d(n2, channels * r * r, 3, padding=1), nn.PixelShuffle(r))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.subpixel(self.feature(x))


# --- the registry ------------------------------------------------------------------------------------------------

def _tresnet_m(**kwargs: Any) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise fold_error("model", "tresnet_m", "needs timm, which is not installed (pip install timm)") from None
    return timm.create_model("tresnet_m", pretrained=False, **kwargs)


def _resnet18(**kwargs: Any) -> nn.Module:
    import torchvision

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torchvision.models.resnet18(weights=None, **kwargs)


def _dcgan(**kwargs: Any) -> nn.Module:
    model = DCGANGenerator(**kwargs)
    model.apply(_dcgan_init)
    return model


def icnr_espcn(model: ESPCN) -> ESPCN:
    """ICNR (Aitken et al. 2017) on ESPCN's sub-pixel conv, in place: one random low-resolution kernel and bias,
    copied to the ``r^2`` sub-pixels of each output channel (the init that avoids checkerboard artefacts; the
    initial output is the nearest upsampling of one conv). Tied biases make conv + PixelShuffle one transposed conv
    with a bias; free ones (torch's default init, or after training) need a per-sub-pixel bias after it.

    Example:
        >>> conv = icnr_espcn(ESPCN(r=2)).subpixel[0]
        >>> bool((conv.bias.view(-1, 4) == conv.bias.view(-1, 4)[:, :1]).all())
        True
        >>> torch.equal(conv.weight[0], conv.weight[3])
        True
    """
    from einops import repeat

    from ..equivalences import icnr_

    conv, shuffle = model.subpixel[0], model.subpixel[1]
    r = shuffle.upscale_factor
    with torch.no_grad():
        icnr_(conv.weight, r)  # crd order: channels (c, rh, rw), PixelShuffle's
        low = conv.bias.view(-1, r * r)[:, 0].clone()
        conv.bias.copy_(repeat(low, "c -> (c rh rw)", rh=r, rw=r))
    return model


def _espcn(*, icnr: bool = False, **kwargs: Any) -> nn.Module:
    model = ESPCN(**kwargs)
    return icnr_espcn(model) if icnr else model


def randomize_batchnorm(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Give every BatchNorm of ``model`` random running statistics and affine parameters (in place).

    Example:
        >>> bn = randomize_batchnorm(nn.BatchNorm2d(4), torch.Generator().manual_seed(0))
        >>> bool((bn.running_var > 0).all()), bool(bn.running_mean.abs().sum() > 0)
        (True, True)
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            n = module.num_features
            with torch.no_grad():
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) * 0.5 + 0.75)
                if module.affine:
                    module.weight.copy_(1.0 + torch.randn(n, generator=generator) * 0.1)
                    module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
    return model


@dataclass(frozen=True)
class RealModel:
    """A real model to rewrite: its builder, shapes, rules and inverse rules (see the module docstring).

    Example:
        >>> m = REAL_MODELS["espcn"]
        >>> m.rules, m.test_input_shape
        (('subpixel_to_transposed',), (1, 1, 12, 12))
    """

    name: str
    source: str
    input_shape: Tuple[int, ...]
    test_input_shape: Tuple[int, ...]
    rules: Tuple[RuleArg, ...]
    inverse: Tuple[RuleArg, ...]
    builder: Callable[..., nn.Module] = field(repr=False, compare=False)

    def build(self, seed: int = 0, **kwargs: Any) -> nn.Module:
        """The model with seeded random weights (BatchNorm statistics included), in eval mode, on the CPU;
        ``kwargs`` go to the builder (``REAL_MODELS["dcgan"].build(ngf=8)``: a narrower generator for tests)."""
        torch.manual_seed(seed)
        model = self.builder(**kwargs)
        randomize_batchnorm(model, torch.Generator().manual_seed(seed))
        return model.eval()


REAL_MODELS: Dict[str, RealModel] = {
    m.name: m
    for m in (
        RealModel("yolov5_stem", "YOLOv5 v5.0 (ultralytics/yolov5 models/common.py): Focus(3, 32, k=3), Conv(32, 64, 3, 2), Conv(64, 64, 1)",
                  (1, 3, 320, 320), (1, 3, 32, 32), ("focus_to_conv",), (("conv_to_focus", {"at": ["focus.conv.conv"]}),), YoloV5Stem),
        RealModel("tresnet_m", "timm tresnet_m (Ridnik et al. 2021): SpaceToDepth(4) stem then a 3x3 conv",
                  (1, 3, 224, 224), (1, 3, 64, 64), ("spd_to_strided",), (("strided_to_spd", {"order": "dcr"}),), _tresnet_m),
        RealModel("dcgan", "PyTorch DCGAN tutorial generator (Radford et al. 2016): nz=100, ngf=64, 64x64 RGB",
                  (1, 100, 1, 1), (1, 100, 1, 1), ("transposed_to_subpixel",), ("subpixel_to_transposed",), _dcgan),
        RealModel("espcn", "ESPCN (Shi et al. 2016): conv5x5-tanh, conv3x3-tanh, conv3x3 + PixelShuffle(3)",
                  (1, 1, 128, 128), (1, 1, 12, 12), ("subpixel_to_transposed",), ("transposed_to_subpixel",), _espcn),
        RealModel("resnet18", "torchvision resnet18 (He et al. 2016): 7x7 s2 stem, four stages",
                  (1, 3, 224, 224), (1, 3, 32, 32),
                  (("strided_to_spd", {"at": ["conv1"]}), ("fold_stage", {"stage": "layer1", "r": 2})),
                  ("spd_to_strided", ("unfold_stage", {"stage": "layer1"})), _resnet18),
    )
}


def real_model(name: Any, *, param: str = "model") -> RealModel:
    """The :data:`REAL_MODELS` entry ``name``; a FoldError naming ``param`` (with close names) otherwise.

    Example:
        >>> real_model("yolov5").name
        Traceback (most recent call last):
        ...
        foldconv.errors.FoldError: model='yolov5': is not a real model of the rewrite app (one of dcgan, espcn, resnet18, tresnet_m, yolov5_stem); did you mean yolov5_stem?
    """
    if isinstance(name, str) and name in REAL_MODELS:
        return REAL_MODELS[name]
    close = difflib.get_close_matches(name, list(REAL_MODELS), n=2, cutoff=0.5) if isinstance(name, str) else []
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise fold_error(param, name, f"is not a real model of the rewrite app (one of {', '.join(sorted(REAL_MODELS))}){hint}")


#: The rule that takes each rule's rewrite back.
RULE_INVERSES: Dict[str, str] = {
    "focus_to_conv": "conv_to_focus", "conv_to_focus": "focus_to_conv",
    "strided_to_spd": "spd_to_strided", "spd_to_strided": "strided_to_spd",
    "transposed_to_subpixel": "subpixel_to_transposed", "subpixel_to_transposed": "transposed_to_subpixel",
    "fold_stage": "unfold_stage", "unfold_stage": "fold_stage",
}


def inverse_rules(rules: Sequence[RuleArg], *, report: Any = None, param: str = "rules") -> Tuple[RuleArg, ...]:
    """The rules that undo ``rules`` (in reverse order); a stage rule keeps its ``stage`` option only.

    ``report`` (the forward rewrite's RewriteReport): each inverse rule is restricted (``at``) to the sites its
    rule rewrote, which keep their locations; without it an inverse rule also rewrites other sites of its
    pattern (``conv_to_focus`` takes every stride-2 conv), which is still exact but not the original's form.

    Example:
        >>> inverse_rules(["strided_to_spd", ("fold_stage", {"stage": "layer1", "r": 2})])
        (('unfold_stage', {'stage': 'layer1'}), 'spd_to_strided')
    """
    out: list = []
    for rule in reversed(list(rules)):
        name, options = (rule, {}) if isinstance(rule, str) else (rule[0], dict(rule[1]))
        if name not in RULE_INVERSES:
            raise fold_error(param, name, f"is not a rule (one of {', '.join(RULE_INVERSES)})")
        inverse = RULE_INVERSES[name]
        kept = {k: v for k, v in options.items() if k == "stage"}
        if report is not None and "stage" not in kept:
            kept["at"] = sorted({s.location for s in report.sites if s.applied and s.rule == name and not getattr(s, "part_of", "")})
            if not kept["at"]:
                continue  # the rule rewrote nothing: nothing to undo
        out.append((inverse, kept) if kept else inverse)
    return tuple(out)


def model_input_shape(model: RealModel, override: Optional[Sequence[int]]) -> Tuple[int, ...]:
    """``override`` as a tuple when given, else the model's default input shape."""
    return tuple(int(v) for v in override) if override else model.input_shape
