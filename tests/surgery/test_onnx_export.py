"""ONNX: every equivalent form exports, runs in onnxruntime and agrees with torch; the ops it lowers to are listed;
and foldconv's channel orders are bit-identical to ONNX's DepthToSpace (DCR / CRD) and SpaceToDepth."""
from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from foldconv import DepthToSpace, depth_to_space, fold_conv, space_to_depth
from foldconv.equivalences import focus_to_conv, strided_to_spd, subpixel_to_transposed, transposed_to_subpixel
from foldconv.surgery.onnx_export import OnnxReport, export_onnx, onnx_op_types, require_package
from helpers import raises_fold_error

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
helper, TensorProto = onnx.helper, onnx.TensorProto


def _run_single_node(op: str, x: torch.Tensor, out_shape, **attrs) -> torch.Tensor:
    """One ONNX node built by hand (not exported from this code), run in onnxruntime."""
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    graph = helper.make_graph(
        [node], op,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))],
    )
    # IR version 7 is what opset 13 needs; make_model's default is onnx's newest IR, which an older onnxruntime
    # refuses (onnx 1.23.1 wrote IR 14 for onnxruntime 1.30, which reads up to 13)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=7)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"x": x.numpy()})[0])


def _integer_float32(shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(-1000, 1001, shape, generator=gen).float()


CONFORMANCE = [(r, g) for r in (2, 3, 4) for g in (1, 2, 3, 5)]


@pytest.mark.claim("ONNX-1")
@pytest.mark.parametrize("r,groups", CONFORMANCE)
@pytest.mark.parametrize("order,mode", [("dcr", "DCR"), ("crd", "CRD")])
def test_depth_to_space_is_onnx_depth_to_space(r, groups, order, mode):
    x = _integer_float32((2, groups * r * r, 3, 4), seed=r * 10 + groups)
    ours = depth_to_space(x, r, order)
    theirs = _run_single_node("DepthToSpace", x, ours.shape, blocksize=r, mode=mode)
    assert torch.equal(ours, theirs)
    # the other order is a different map whenever a block has more than one channel
    other = depth_to_space(x, r, "crd" if order == "dcr" else "dcr")
    assert groups == 1 or not torch.equal(other, theirs)


@pytest.mark.claim("ONNX-1")
@pytest.mark.parametrize("r,groups", CONFORMANCE)
def test_space_to_depth_dcr_is_onnx_space_to_depth_and_crd_inverts_crd_depth_to_space(r, groups):
    x = _integer_float32((2, groups, 3 * r, 2 * r), seed=r + groups)
    ours = space_to_depth(x, r, "dcr")
    theirs = _run_single_node("SpaceToDepth", x, ours.shape, blocksize=r)
    assert torch.equal(ours, theirs)
    assert groups == 1 or not torch.equal(space_to_depth(x, r, "crd"), theirs)
    # ONNX has no CRD SpaceToDepth: "crd" is the exact inverse of its CRD DepthToSpace
    crd = space_to_depth(x, r, "crd")
    assert torch.equal(_run_single_node("DepthToSpace", crd, x.shape, blocksize=r, mode="CRD"), x)


def _conv(*args, seed=0, **kwargs):
    torch.manual_seed(seed)
    return nn.Conv2d(*args, **kwargs)


FORMS = {
    # name: (module, input shape, ops it must lower to exactly)
    "focus stem as one 6x6 conv": (focus_to_conv(_conv(12, 32, 3, padding=1, bias=False)), (1, 3, 32, 32), ("Conv",)),
    "strided conv": (_conv(3, 16, 7, stride=2, padding=3), (1, 3, 32, 32), ("Conv",)),
    "ConvTranspose2d k4 s2 p1": (nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1), (1, 16, 8, 8), ("ConvTranspose",)),
    "conv + PixelShuffle (ESPCN)": (nn.Sequential(_conv(16, 12, 3, padding=1), nn.PixelShuffle(2)), (1, 16, 8, 8), ("Conv", "DepthToSpace(CRD)")),
}


@pytest.mark.claim("ONNX-2")
@pytest.mark.parametrize("name", sorted(FORMS))
def test_forms_export_run_and_agree_with_their_op_lists(name):
    module, shape, ops = FORMS[name]
    report = export_onnx(module, shape)
    assert report.ok and bool(report), report.summary()
    assert report.ops == ops, report.ops


@pytest.mark.claim("ONNX-2")
def test_spd_and_subpixel_forms_lower_to_layout_ops_not_their_partners():
    spd = export_onnx(strided_to_spd(_conv(3, 16, 7, stride=2, padding=3)), (1, 3, 32, 32))
    assert spd.ok, spd.summary()
    assert "Conv" in spd.ops and {"Reshape", "Transpose"} <= set(spd.ops)
    tconv = nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1)
    sub = export_onnx(transposed_to_subpixel(tconv), (1, 16, 8, 8))
    assert sub.ok, sub.summary()
    assert "ConvTranspose" not in sub.ops and "Conv" in sub.ops
    assert {"Reshape", "Transpose"} <= set(sub.ops) or "DepthToSpace(CRD)" in sub.ops
    # and back: sub-pixel (bias tied over sub-pixels) -> one ConvTranspose
    back = export_onnx(subpixel_to_transposed(nn.Sequential(_conv(16, 32, 3, padding=1, bias=False), DepthToSpace(2))), (1, 16, 8, 8))
    assert back.ok and back.ops == ("ConvTranspose",), back.summary()


@pytest.mark.claim("ONNX-2")
def test_folded_conv_with_depth_to_space_exports_and_agrees():
    folded = nn.Sequential(DepthToSpace(2), fold_conv(_conv(16, 8, 3, padding=1), 2))
    report = export_onnx(folded, (2, 16, 8, 8))
    assert report.ok, report.summary()
    assert report.ops.count("Conv") == 1 and {"Reshape", "Transpose"} <= set(report.ops)
    assert "Reshape x2" in report.describe_ops()


def test_a_disagreeing_export_is_not_ok():
    # ok compares with the tolerance: the same numbers with a zero tolerance fail unless the error is exactly 0
    report = export_onnx(_conv(8, 8, 3, padding=1), (1, 8, 16, 16))
    strict = OnnxReport(report.model, report.input_shape, report.opset, report.exporter, report.ops,
                        report.max_abs_error, 1.0, report.rtol)
    assert report.ok and not strict.ok and not bool(strict)


def test_op_types_name_modes_and_skip_constants():
    nodes = [
        helper.make_node("Constant", [], ["c"], value=helper.make_tensor("v", TensorProto.INT64, [1], [1])),
        helper.make_node("DepthToSpace", ["x"], ["a"], blocksize=2),  # mode absent: ONNX's default DCR
        helper.make_node("SpaceToDepth", ["a"], ["b"], blocksize=2),
        helper.make_node("Relu", ["b"], ["y"]),
    ]
    model = helper.make_model(helper.make_graph(nodes, "g", [], []))
    assert onnx_op_types(model) == ("DepthToSpace(DCR)", "SpaceToDepth(DCR)", "Relu")


def test_bad_inputs():
    raises_fold_error("model", export_onnx, "conv", (1, 3, 8, 8))
    raises_fold_error("input_shape", export_onnx, nn.Conv2d(3, 3, 3), "1x3x8x8")
    raises_fold_error("input_shape", export_onnx, nn.Conv2d(3, 3, 3), (1, 0, 8, 8))
    raises_fold_error("input_shape", export_onnx, nn.Conv2d(3, 3, 3), (1, 4, 8, 8))
    raises_fold_error("opset", export_onnx, nn.Conv2d(3, 3, 3), (1, 3, 8, 8), opset=3)
    raises_fold_error("rtol", export_onnx, nn.Conv2d(3, 3, 3), (1, 3, 8, 8), rtol=-1)


def test_a_missing_package_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import raises ImportError
    err = raises_fold_error("package", export_onnx, nn.Conv2d(3, 3, 3), (1, 3, 8, 8))
    assert "onnxruntime" in str(err)
    assert require_package("onnx") is onnx
