"""Models: the one resolver of every model spelling, the zoos' facts, and the real architectures.

- ``resolve``: :func:`resolve_model` (a torchvision name, ``timm:<name>``, a registered architecture, a
  ``_target_`` mapping or an ``nn.Module`` -> a frozen :class:`ModelSpec`) and :func:`build_model` (random
  weights, seeded, real or on the meta device; nothing downloaded);
- ``zoo``: the torchvision and timm zoos: names, families, default input shapes, torchvision's published figures;
- ``architectures``: YOLOv5's Focus stem, DCGAN, ESPCN, TResNet-M, antialiased-cnns' BlurPool models, registered
  by name in :data:`ARCHITECTURES` (:func:`register_architecture` adds your own).

Example:
    >>> from foldconv.models import build_model, resolve_model
    >>> [resolve_model(m).label for m in ("resnet18", "timm:resnet18d", "yolov5_stem", {"_target_": "torch.nn.Conv2d"})]
    ['resnet18', 'resnet18d', 'yolov5_stem', 'Conv2d']
    >>> build_model("espcn", seed=0)(__import__("torch").zeros(1, 1, 4, 4)).shape
    torch.Size([1, 1, 12, 12])
"""
from .architectures import (
    ARCHITECTURES,
    BLUR_MODELS,
    ESPCN,
    Architecture,
    Conv,
    DCGANGenerator,
    Focus,
    YoloV5Stem,
    autopad,
    dcgan_init,
    icnr_espcn,
    randomize_batchnorm,
    register_architecture,
)
from .resolve import SOURCES, TIMM_PREFIX, ModelSpec, build_model, meta_model, model_labels, resolve_model
from .zoo import ZOOS, PublishedFigures, classification_models, default_input_shape, family_of, published_figures, zoo_models

__all__ = [
    "ARCHITECTURES", "Architecture", "BLUR_MODELS", "Conv", "DCGANGenerator", "ESPCN", "Focus", "ModelSpec", "PublishedFigures",
    "SOURCES", "TIMM_PREFIX", "YoloV5Stem", "ZOOS", "autopad", "build_model", "classification_models", "dcgan_init",
    "default_input_shape", "family_of", "icnr_espcn", "meta_model", "model_labels", "published_figures",
    "randomize_batchnorm", "register_architecture", "resolve_model", "zoo_models",
]
