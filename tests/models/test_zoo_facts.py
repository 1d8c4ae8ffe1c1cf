"""Facts about the zoos' models (foldconv.models.zoo): names, families, input shapes, torchvision's published
figures, and that a count against the published figures can fail (COUNT-2's mutation check)."""
from __future__ import annotations

import pytest

from foldconv.analysis.counting import count, validate_count
from foldconv.errors import FoldError
from foldconv.models import classification_models, default_input_shape, family_of, meta_model, published_figures, zoo_models


def test_the_classification_zoo_and_its_filters():
    names = classification_models()
    assert len(names) >= 80 and names == sorted(names)
    assert {"resnet50", "vit_b_16", "swin_t", "maxvit_t", "regnet_y_128gf", "efficientnet_b7"} <= set(names)
    assert zoo_models("torchvision", ["vgg1?"]) == ["vgg11", "vgg13", "vgg16", "vgg19"]
    with pytest.raises(FoldError, match="match no model of the torchvision zoo"):
        zoo_models("torchvision", ["no_such_*"])
    with pytest.raises(FoldError, match="zoo='keras'"):
        zoo_models("keras")
    assert family_of("torchvision", "efficientnet_b7") == "efficientnet"


@pytest.mark.claim("COUNT-2")
def test_published_figures_and_where_they_were_measured():
    f = published_figures("resnet50")
    assert (f.num_params, f.gmacs, f.input_shape) == (25_557_032, 4.089, (1, 3, 224, 224))
    assert default_input_shape("torchvision", "inception_v3") == (1, 3, 299, 299)
    assert published_figures("googlenet").kwargs == {"aux_logits": False, "init_weights": False}
    v = validate_count(meta_model("resnet50"), f.input_shape, published=f)
    assert v.published_params_ok and v.published_gmacs_ok and (v.params, v.macs) == (25_557_032, 4_089_184_256)
    with pytest.raises(FoldError, match="name='resnet51'"):
        published_figures("resnet51")


@pytest.mark.claim("COUNT-2")
def test_published_check_can_fail():
    # GoogLeNet built with its auxiliary heads is not the model the published figure describes.
    figures = published_figures("googlenet")
    model = meta_model("googlenet", aux_logits=True, init_weights=False)
    assert count(model, figures.input_shape).params != figures.num_params
    assert not validate_count(model, figures.input_shape, published=figures).ok
