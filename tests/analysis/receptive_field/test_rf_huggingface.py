"""Hugging Face vision models, built from small configs (nothing downloaded), analysed from their aten operations.

torch.fx cannot trace any of them; the default analysis records what they run. On the CNNs (ResNet, ConvNeXt)
every checked box equals the float64 gradient support; the transformers' outputs read the whole input.
(`make test` runs this tier; `make check` deselects it with the zoo tier.)
"""
from __future__ import annotations

import warnings

import pytest
import torch

from foldconv.analysis import shift_equivariance
from foldconv.analysis.receptive_field import UnsupportedOpError, check_receptive_field, receptive_field

T = pytest.importorskip("transformers")
pytestmark = pytest.mark.zoo

SHAPE = (1, 3, 32, 32)


def _resnet():
    return T.ResNetModel(T.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic"))


def _detr():
    backbone = T.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1], layer_type="basic", out_features=["stage4"])
    return T.DetrModel(T.DetrConfig(use_timm_backbone=False, use_pretrained_backbone=False, backbone_config=backbone, d_model=16,
                                    encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                                    encoder_ffn_dim=16, decoder_ffn_dim=16, num_queries=4))


MODELS = {
    "resnet": _resnet,
    "convnext": lambda: T.ConvNextModel(T.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)),
    "segformer": lambda: T.SegformerModel(T.SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
                                                            num_attention_heads=[1, 2], patch_sizes=[7, 3], strides=[4, 2],
                                                            decoder_hidden_size=16)),
    "swin": lambda: T.SwinModel(T.SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=2)),
    "vit": lambda: T.ViTModel(T.ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                          intermediate_size=32)),
    "mobilevit": lambda: T.MobileViTModel(T.MobileViTConfig(image_size=32, patch_size=2, hidden_sizes=[16, 16, 16],
                                                            neck_hidden_sizes=[8, 8, 8, 8, 8, 8, 16], num_attention_heads=2)),
    "detr": _detr,
}
CNNS = ("resnet", "convnext")


def build(name):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MODELS[name]().eval()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_hugging_face_models_are_analysed(name):
    model = build(name)
    with pytest.raises(UnsupportedOpError, match="cannot trace"):
        receptive_field(model, SHAPE, trace="fx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = receptive_field(model, SHAPE, output="last_hidden_state")
    out = report.output
    assert not report.fallback_nodes and out.op.startswith(("aten.", "getitem"))
    assert out.rf[0] >= 1 and len(out.rf) == 2
    if name in CNNS:
        assert out.exact and not out.constant
    if name in ("vit", "detr"):  # global attention over every patch: every output reads the whole input, exactly
        assert out.exact and out.constant and report.box(index=(0, 0)) == ((0, 31), (0, 31))


@pytest.mark.parametrize("name", CNNS)
def test_hugging_face_cnn_boxes_equal_the_gradient_support(name):
    model = build(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check = check_receptive_field(model, SHAPE, output="last_hidden_state", max_nodes=5)
    assert check.ok and len(check.rows) >= 9, [r for r in check.rows if not r.ok]
    # a wider stem kernel changes the answer (the boxes are computed, not recalled)
    if name == "resnet":
        wide = T.ResNetModel(T.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")).eval()
        wide.embedder.embedder.convolution = torch.nn.Conv2d(3, 8, 9, stride=2, padding=4, bias=False)
        assert receptive_field(wide, SHAPE).output.rf != receptive_field(model, SHAPE).output.rf


def test_hugging_face_shift_equivariance_and_the_fallback():
    model = build("resnet")
    rep = shift_equivariance(model, SHAPE)
    assert rep.output.period == (8, 8) and rep.output.module.startswith("encoder.")
    segformer = build("segformer")  # the gradient fallback of a whole untraceable model: no crash, a measured box
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        measured = receptive_field(segformer, SHAPE, fallback="real", trace="fx")
    assert measured.fallback_nodes and measured.output.shape == (1, 16, 4, 4)
