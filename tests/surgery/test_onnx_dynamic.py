"""ONNX files with dynamic axes: every form runs in onnxruntime at other input sizes than the example's.

The forms read no input size while traced: a sub-pixel conv crops rows counted from each end, a periodic bias splits
its axes with unflatten, a space-to-depth form computes its cut and extension from the traced sizes. So the periodic
bias exports without a TracerWarning, and onnxruntime agrees with torch at sizes the export never saw.
"""
from __future__ import annotations

import io
import warnings

import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from foldconv.equivalences import strided_to_spd, transposed_to_subpixel
from foldconv.surgery import rewrite
from foldconv.surgery.onnx_export import export_onnx
from foldconv.surgery.periodic import PeriodicBias
from helpers import examples


def _espcn_tail() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3 * 9, 3, padding=1), nn.PixelShuffle(3))


@pytest.mark.claim("ONNX-3")
def test_the_periodic_bias_exports_without_tracer_warnings_and_runs_at_other_sizes():
    model, report = rewrite(_espcn_tail(), (1, 4, 6, 6), ["subpixel_to_transposed"])
    assert isinstance(model[2][1], PeriodicBias) and report.ok  # an ESPCN's untied sub-pixel biases
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.onnx.export(model.eval(), (torch.randn(1, 4, 6, 6),), io.BytesIO(), dynamo=False,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {2: "h", 3: "w"}})
    assert not [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)], [str(w.message) for w in caught]
    exported = export_onnx(model, (1, 4, 6, 6), other_shapes=[(2, 4, 7, 5), (1, 4, 11, 13)])
    assert exported.dynamic and exported.ok and len(exported.other_sizes) == 2, exported.summary()


FORMS = {
    "sub-pixel with a crop (transposed k4 s2 p1)": (transposed_to_subpixel(nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1)), (1, 4, 5, 5)),
    "sub-pixel, output_padding": (transposed_to_subpixel(nn.ConvTranspose2d(4, 3, 5, stride=3, padding=2, output_padding=1)), (1, 4, 4, 6)),
    "SPD form, explicit (3x3 s2 p1)": (strided_to_spd(nn.Conv2d(3, 4, 3, stride=2, padding=1)), (1, 3, 9, 9)),
    "SPD form, inner (6x6 s2 p2, Focus)": (strided_to_spd(nn.Conv2d(3, 4, 6, stride=2, padding=2), "focus"), (1, 3, 8, 8)),
    "transposed + periodic bias": (rewrite(_espcn_tail(), (1, 4, 6, 6), ["subpixel_to_transposed"])[0], (1, 4, 6, 6)),
}


@pytest.mark.claim("ONNX-3")
@pytest.mark.parametrize("name", sorted(FORMS))
def test_every_form_runs_in_onnxruntime_at_sizes_the_export_never_saw(name):
    module, shape = FORMS[name]
    odd = (shape[0] + 1, shape[1]) + tuple(n + 3 for n in shape[2:])
    report = export_onnx(module, shape, other_shapes=[odd])
    assert report.dynamic and report.ok, report.summary()
    assert [s for s, _ in report.other_sizes] == [odd]
    # the bytes are the file: onnx reads them, its input axes are named, not numbers
    dims = onnx.load_from_string(report.data).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["batch", "", "x_2", "x_3"]


def test_a_file_that_holds_the_example_size_is_not_ok_at_another():
    class Baked(nn.Module):  # reads its input's size as a Python int: the trace holds that number
        def forward(self, x):
            return x[..., : int(x.shape[-1]) - 1]

    report = export_onnx(Baked(), (1, 2, 4, 6), other_shapes=[(1, 2, 4, 9)])
    assert not report.ok and report.other_sizes[0][1] == float("inf"), report.summary()


@st.composite
def strided_and_transposed(draw):
    k, s = draw(st.integers(1, 5)), draw(st.integers(2, 3))
    if draw(st.booleans()):
        p = draw(st.integers(0, k // 2))
        conv = nn.Conv2d(2, 3, k, stride=s, padding=p, padding_mode=draw(st.sampled_from(["zeros", "circular"])))
        form = strided_to_spd(conv, draw(st.sampled_from(["crd", "dcr", "focus"])), padding=draw(st.sampled_from(["auto", "explicit"])))
    else:
        p = draw(st.integers(0, k - 1))
        conv = nn.ConvTranspose2d(2, 3, k, stride=s, padding=p, output_padding=draw(st.integers(0, s - 1)))
        form = transposed_to_subpixel(conv, draw(st.sampled_from(["crd", "dcr"])))
    sizes = [tuple(draw(st.integers(max(k, 3), 12)) for _ in range(2)) for _ in range(3)]
    return conv.eval(), form.eval(), sizes


@pytest.mark.claim("ONNX-3")
@settings(max_examples=examples(25))
@given(strided_and_transposed())
def test_hunt_forms_exported_once_agree_with_their_source_layer_at_every_size(case):
    conv, form, sizes = case
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = torch.randn((1, 2) + sizes[0])
        torch.onnx.export(form, (x,), buffer, dynamo=False, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h", 3: "w"}})
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for size in sizes:
        x = torch.randn((2, 2) + size)
        try:
            with torch.no_grad():
                want = conv(x)
        except RuntimeError:  # padding torch refuses at this size
            continue
        got = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
        assert got.shape == want.shape and torch.allclose(got, want, atol=1e-4), (conv, size)
