"""Real architectures, written as their papers and repositories write them, and the table that names them.

Each is built with random weights (nothing is downloaded) and registered by name in :data:`ARCHITECTURES`,
so every app and :func:`foldconv.models.build_model` take ``"yolov5_stem"`` as they take ``"resnet18"``:

- ``yolov5_stem``: YOLOv5 v5.0's ``Focus(3, 32, k=3)`` + two ``Conv``, as written in ultralytics/yolov5
  ``models/common.py`` (the four strided slices + cat + 3x3 conv that v6.0 replaced by one 6x6 stride-2 conv);
- ``tresnet_m``: ``timm.create_model("tresnet_m")`` (Ridnik et al. 2021): a SpaceToDepth(4) stem, then a 3x3 conv;
- ``dcgan``: the PyTorch DCGAN tutorial's generator (Radford et al. 2016) with the tutorial's ``weights_init``;
- ``espcn``: Shi et al. 2016's efficient sub-pixel CNN, r=3 (``icnr=True``: ICNR on its sub-pixel conv);
- ``<name>_blur``: antialiased-cnns' BlurPool models (Zhang 2019; ``resnet18_blur``, ``mobilenet_v2_blur``, ...).

:func:`register_architecture` adds a user's own (``replace=True`` to replace one). :func:`randomize_batchnorm`
gives a model's BatchNorms random statistics: a fresh BatchNorm is the identity in eval mode, which would make
a check that folds it into a conv vacuous.

Example:
    >>> "yolov5_stem" in ARCHITECTURES.names(), ARCHITECTURES.get("espcn").input_shape
    (True, (1, 1, 128, 128))
    >>> tuple(YoloV5Stem()(torch.zeros(1, 3, 32, 32)).shape)
    (1, 64, 8, 8)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Tuple

import einops
import torch
from torch import nn

from ..errors import fold_error
from ..registry import Registry

__all__ = [
    "Architecture", "ARCHITECTURES", "register_architecture", "autopad", "Conv", "Focus", "YoloV5Stem", "DCGANGenerator",
    "dcgan_init", "ESPCN", "icnr_espcn", "randomize_batchnorm", "BLUR_MODELS",
]


@dataclass(frozen=True)
class Architecture:
    """A named architecture: ``builder(**kwargs)`` makes it (random weights); ``description`` says where it comes
    from; ``input_shape`` is a full input shape it runs on (batch 1).

    Example:
        >>> Architecture("tiny", lambda: nn.Conv2d(1, 1, 3), "a 3x3 conv", (1, 1, 8, 8)).input_shape
        (1, 1, 8, 8)
    """

    name: str
    builder: Callable[..., nn.Module] = field(repr=False, compare=False)
    description: str = ""
    input_shape: Tuple[int, ...] = (1, 3, 224, 224)


def _check_entry(name: Any, entry: Any) -> None:
    if not isinstance(name, str) or not name.strip() or ":" in name:
        raise fold_error("architecture", name, "must be a non-empty name without ':' (that prefix spells timm:<name>)")
    if not isinstance(entry, Architecture) or not callable(entry.builder):
        raise fold_error("architecture", name, "must be registered with an Architecture whose builder is callable")


#: The architectures the resolver builds by name (looked up before torchvision's names).
ARCHITECTURES: Registry[Architecture] = Registry("architecture", check_value=_check_entry)


def register_architecture(
    name: str, builder: Optional[Callable[..., nn.Module]] = None, *, description: str = "",
    input_shape: Sequence[int] = (1, 3, 224, 224), replace: bool = False,
) -> Any:
    """Register ``builder`` as the architecture ``name`` (a decorator when ``builder`` is omitted); returns it.

    Every app then takes ``model=<name>``. A name registered already is a FoldError unless ``replace=True``.

    Example:
        >>> @register_architecture("tiny_net_doc", input_shape=(1, 1, 8, 8), description="a doctest's net")
        ... def tiny(width: int = 2):
        ...     return nn.Conv2d(1, width, 3)
        >>> ARCHITECTURES.get("tiny_net_doc").builder(width=4)
        Conv2d(1, 4, kernel_size=(3, 3), stride=(1, 1))
        >>> _ = ARCHITECTURES.unregister("tiny_net_doc")
    """
    shape = tuple(input_shape)
    if len(shape) < 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in shape):
        raise fold_error("input_shape", input_shape, "must be a full input shape of integers >= 1, e.g. (1, 3, 224, 224)")

    def add(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        ARCHITECTURES.register(name, Architecture(name, fn, description, shape), replace=replace)
        return fn

    return add if builder is None else add(builder)


# --- YOLOv5 (ultralytics/yolov5, models/common.py, v5.0), kept as written there --------------------------------

def autopad(k: Any, p: Any = None) -> Any:
    """YOLOv5's 'same' padding: ``k // 2``.

    Example:
        >>> autopad(3), autopad([3, 5])
        (1, [1, 2])
    """
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


def dcgan_init(m: nn.Module) -> None:
    """The tutorial's ``weights_init`` (``model.apply(dcgan_init)``): conv weights N(0, 0.02), BN weights
    N(1, 0.02), BN biases 0.

    Example:
        >>> nn.BatchNorm2d(2).apply(dcgan_init).bias.tolist()
        [0.0, 0.0]
    """
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


def icnr_espcn(model: ESPCN) -> ESPCN:
    """ICNR (Aitken et al. 2017) on ESPCN's sub-pixel conv, in place: one random low-resolution kernel and bias
    (Kaiming normal, as :func:`foldconv.equivalences.icnr_`), copied to the ``r^2`` sub-pixels of each output
    channel in PixelShuffle's channel order ``(c, rh, rw)``. The initial output is the nearest upsampling of one
    conv (no checkerboard). Tied biases make conv + PixelShuffle one transposed conv with a bias; free ones
    (torch's default init, or after training) need a per-sub-pixel bias after it.

    Example:
        >>> conv = icnr_espcn(ESPCN(r=2)).subpixel[0]
        >>> bool((conv.bias.view(-1, 4) == conv.bias.view(-1, 4)[:, :1]).all())
        True
        >>> torch.equal(conv.weight[0], conv.weight[3])
        True
    """
    if not isinstance(model, ESPCN):
        raise fold_error("model", type(model).__name__, "must be an ESPCN")
    conv, shuffle = model.subpixel[0], model.subpixel[1]
    r = shuffle.upscale_factor
    with torch.no_grad():
        low = conv.weight.new_empty((conv.out_channels // (r * r),) + tuple(conv.weight.shape[1:]))
        nn.init.kaiming_normal_(low)
        conv.weight.copy_(einops.repeat(low, "c ... -> (c rh rw) ...", rh=r, rw=r))
        bias = conv.bias.view(-1, r * r)[:, 0].clone()
        conv.bias.copy_(einops.repeat(bias, "c -> (c rh rw)", rh=r, rw=r))
    return model


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


# --- the table ---------------------------------------------------------------------------------------------------

def _dcgan(**kwargs: Any) -> nn.Module:
    model = DCGANGenerator(**kwargs)
    model.apply(dcgan_init)
    return model


def _espcn(*, icnr: bool = False, **kwargs: Any) -> nn.Module:
    model = ESPCN(**kwargs)
    return icnr_espcn(model) if icnr else model


def _tresnet_m(**kwargs: Any) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise fold_error("model", "tresnet_m", "needs timm, which is not installed (pip install timm)") from None
    return timm.create_model("tresnet_m", pretrained=False, **kwargs)


#: antialiased-cnns' models, registered as ``<name>_blur`` (BlurPool with a 4-tap filter, random weights).
BLUR_MODELS = (
    "alexnet", "densenet121", "densenet161", "densenet169", "densenet201", "mobilenet_v2", "resnet18", "resnet34",
    "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d", "vgg11", "vgg11_bn", "vgg13",
    "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "wide_resnet50_2", "wide_resnet101_2",
)


def _blur(name: str) -> Callable[..., nn.Module]:
    def build(**kwargs: Any) -> nn.Module:
        try:
            import antialiased_cnns
        except ImportError:
            raise fold_error("model", f"{name}_blur", "needs antialiased-cnns, which is not installed (pip install antialiased-cnns)") from None
        return getattr(antialiased_cnns, name)(pretrained=False, **{"filter_size": 4, **kwargs})

    return build


register_architecture("yolov5_stem", YoloV5Stem, input_shape=(1, 3, 320, 320), description=(
    "YOLOv5 v5.0 (ultralytics/yolov5 models/common.py): Focus(3, 32, k=3), Conv(32, 64, 3, 2), Conv(64, 64, 1)"))
register_architecture("tresnet_m", _tresnet_m, input_shape=(1, 3, 224, 224), description=(
    "timm tresnet_m (Ridnik et al. 2021): SpaceToDepth(4) stem then a 3x3 conv"))
register_architecture("dcgan", _dcgan, input_shape=(1, 100, 1, 1), description=(
    "PyTorch DCGAN tutorial generator (Radford et al. 2016): nz=100, ngf=64, 64x64 RGB"))
register_architecture("espcn", _espcn, input_shape=(1, 1, 128, 128), description=(
    "ESPCN (Shi et al. 2016): conv5x5-tanh, conv3x3-tanh, conv3x3 + PixelShuffle(3)"))
for _name in BLUR_MODELS:
    register_architecture(f"{_name}_blur", _blur(_name), input_shape=(1, 3, 224, 224), description=(
        f"antialiased-cnns {_name} (Zhang 2019): BlurPool before every downsampling, filter_size=4"))
