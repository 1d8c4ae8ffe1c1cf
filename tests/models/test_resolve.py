"""The one model resolver (foldconv.models): every spelling, its label, how it is built (real, seeded, on meta),
and the one-line errors of a bad spelling."""
from __future__ import annotations

import dataclasses
import sys

import pytest
import torch
from torch import nn

from foldconv.errors import FoldError
from foldconv.models import (
    ARCHITECTURES,
    ModelSpec,
    build_model,
    meta_model,
    model_labels,
    register_architecture,
    resolve_model,
)
from foldconv.tracing import module_device

CONV = {"_target_": "torch.nn.Conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": 3}


@pytest.mark.parametrize("spelling, label, source", [
    ("resnet18", "resnet18", "torchvision"),
    ("yolov5_stem", "yolov5_stem", "architecture"),
    ("resnet18_blur", "resnet18_blur", "architecture"),
    (CONV, "Conv2d", "target"),
    ({"_target_": "torchvision.models.resnet18"}, "resnet18", "target"),
    (nn.Linear(2, 3), "Linear", "module"),
])
def test_every_spelling_resolves_to_its_name(spelling, label, source):
    spec = resolve_model(spelling)
    assert (spec.label, spec.source) == (label, source)
    assert resolve_model(spec) is spec  # a spec is resolved already


def test_timm_names_are_labelled_without_the_prefix():
    pytest.importorskip("timm")
    spec = resolve_model("timm:resnet18d")
    assert (spec.label, spec.source, spec.name, spec.spelling) == ("resnet18d", "timm", "resnet18d", "timm:resnet18d")
    assert spec.input_shape == (1, 3, 224, 224)
    model = build_model(spec, meta=True)
    assert module_device(model).type == "meta" and sum(p.numel() for p in model.parameters()) > 10**6


def test_a_spelling_round_trips_through_its_spec():
    for spelling in ("resnet18", "espcn", CONV):
        assert resolve_model(resolve_model(spelling).spelling) == resolve_model(spelling)
    with_kwargs = resolve_model("dcgan", ngf=8)
    again = resolve_model(with_kwargs.spelling)  # an architecture with arguments: its builder as a _target_
    assert again.source == "target" and tuple(build_model(again)(torch.zeros(1, 100, 1, 1)).shape) == (1, 3, 64, 64)


def test_build_is_random_seeded_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = (build_model("espcn", seed=s) for s in (1, 1, 2))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.subpixel[0].weight, b.subpixel[0].weight) and not torch.equal(a.subpixel[0].weight, c.subpixel[0].weight)


def test_meta_builds_hold_no_memory_even_for_builders_that_compute_with_tensors():
    model = meta_model("regnet_y_400mf")  # its builder computes with torch ops, so torch.device("meta") fails
    assert all(p.device.type == "meta" for p in model.parameters())
    assert all(b.device.type == "meta" for b in model.buffers())
    assert torch.empty(0).device.type == "cpu"  # the patch on register_parameter is gone
    assert torch.nn.Linear(2, 2).weight.device.type == "cpu"
    assert sum(p.numel() for p in meta_model("resnet50").parameters()) == 25_557_032
    assert module_device(build_model(CONV)).type == "cpu"


def test_constructor_arguments_reach_every_kind_of_builder():
    assert build_model("resnet18", num_classes=7).fc.out_features == 7
    assert build_model(CONV, out_channels=9).out_channels == 9
    assert build_model("dcgan", ngf=8).main[0].out_channels == 64
    espcn = build_model("espcn", icnr=True)
    bias = espcn.subpixel[0].bias.view(-1, 9)
    assert bool((bias == bias[:, :1]).all())


def test_nested_targets_and_positional_arguments_are_built_first():
    node = {"_target_": "torch.nn.Sequential", "_args_": [CONV, {"_target_": "torch.nn.ReLU"}]}
    model = build_model(node)
    assert [type(m).__name__ for m in model] == ["Conv2d", "ReLU"]
    assert resolve_model(node).label == "Sequential"


def test_a_module_instance_is_used_as_it_is_and_copied_to_meta():
    net = nn.Linear(2, 3)
    assert build_model(net) is net
    meta = build_model(net, meta=True)
    assert meta is not net and meta.weight.is_meta and not net.weight.is_meta


@pytest.mark.parametrize("spelling, param, text", [
    ("resnet181", "model", "is not a torchvision model or a registered architecture; did you mean resnet18, resnet101, resnet152?"),
    ("yolov5", "model", "is not a torchvision model or a registered architecture; did you mean yolov5_stem?"),
    ("", "model", "must be a torchvision name"),
    (3, "model", "must be a torchvision name"),
    ({"in_channels": 3}, "model", "must have a _target_"),
    ({"_target_": "no_such_package_xyz.make_net"}, "model._target_", "is not importable: no module 'no_such_package_xyz' on the Python path"),
    ({"_target_": "torch.nn.Conv3x3"}, "model._target_", "'Conv3x3' is not in 'torch.nn'; did you mean"),
    ({"_target_": "torch.nn"}, "model._target_", "names a module, not a class or function"),
    ({"_target_": "not a path"}, "model._target_", "must be an import path"),
])
def test_a_bad_spelling_is_one_line_naming_the_parameter(spelling, param, text):
    with pytest.raises(FoldError) as info:
        resolve_model(spelling)
    assert info.value.param == param and text in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_a_module_that_fails_to_import_is_told_apart_from_a_missing_one(tmp_path, monkeypatch):
    (tmp_path / "broken_net_pkg.py").write_text("import no_such_dependency_xyz\ndef make(): pass\n")
    (tmp_path / "raising_net_pkg.py").write_text("raise RuntimeError('bad config at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(FoldError, match=r"module 'broken_net_pkg' is on the path but fails to import: ModuleNotFoundError: No module named 'no_such_dependency_xyz'"):
        resolve_model({"_target_": "broken_net_pkg.make"})
    with pytest.raises(FoldError, match=r"module 'raising_net_pkg' is on the path but fails to import: RuntimeError: bad config at import"):
        resolve_model({"_target_": "raising_net_pkg.make"})
    for name in ("broken_net_pkg", "raising_net_pkg"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize("spelling, kwargs, param, text", [
    (CONV | {"in_channels": None}, {}, "model._target_", "cannot be built: TypeError"),
    ({"_target_": "torch.nn.Conv2d", "in_channels": 3}, {}, "model._target_", "cannot be built: TypeError"),
    ({"_target_": "builtins.dict"}, {}, "model._target_", "built a dict, not a torch.nn.Module"),
    ("resnet18", {"no_such_argument": 1}, "model", "cannot be built: TypeError"),
])
def test_a_model_that_cannot_be_built_says_why_in_one_line(spelling, kwargs, param, text):
    with pytest.raises(FoldError) as info:
        build_model(spelling, **kwargs)
    assert info.value.param == param and text in str(info.value) and "\n" not in str(info.value), str(info.value)
    with pytest.raises(FoldError, match="meta=1"):
        build_model("resnet18", meta=1)
    with pytest.raises(FoldError, match="seed=-1"):
        build_model("resnet18", seed=-1)


def test_labels_must_be_distinct_where_they_name_files():
    assert [s.label for s in model_labels(["resnet18", "espcn", CONV])] == ["resnet18", "espcn", "Conv2d"]
    with pytest.raises(FoldError, match="distinct labels"):
        model_labels(["resnet18", {"_target_": "torchvision.models.resnet18"}])
    with pytest.raises(FoldError, match="must be a list of models"):
        model_labels("resnet18")


def test_users_register_their_own_architecture_and_every_spelling_finds_it():
    @register_architecture("tiny_test_net", input_shape=(1, 2, 8, 8), description="a test's net")
    def tiny(width: int = 3) -> nn.Module:
        return nn.Conv2d(2, width, 3)

    try:
        spec = resolve_model("tiny_test_net")
        assert (spec.source, spec.input_shape) == ("architecture", (1, 2, 8, 8))
        assert build_model("tiny_test_net", width=5).out_channels == 5
        with pytest.raises(FoldError, match="is registered already"):
            register_architecture("tiny_test_net", tiny)
        register_architecture("tiny_test_net", lambda: nn.Conv2d(2, 1, 1), replace=True)
        assert build_model("tiny_test_net").out_channels == 1
        with pytest.raises(FoldError, match="without ':'"):
            register_architecture("timm:x", tiny)
    finally:
        ARCHITECTURES.unregister("tiny_test_net")
    assert "tiny_test_net" not in ARCHITECTURES


def test_spec_is_frozen():
    spec = resolve_model("resnet18")
    assert isinstance(spec, ModelSpec)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.label = "x"  # type: ignore[misc]


@pytest.mark.parametrize("name", ["deeplabv3_mobilenet_v3_large", "fcn_resnet50", "fasterrcnn_mobilenet_v3_large_fpn"])
def test_builders_with_a_pretrained_backbone_download_nothing(name, monkeypatch):
    """Segmentation and detection builders load an ImageNet backbone unless told not to: build_model must tell them."""
    import torch.hub

    def refuse(*args, **kwargs):
        raise AssertionError(f"{name} tried to download {args[:1]}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    assert isinstance(build_model(name, meta=True), torch.nn.Module)
