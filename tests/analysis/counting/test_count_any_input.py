"""count() on inputs and models the peers' users bring: token ids and masks (also spelled as the command line
writes them), transformer fast paths that pack the batch into nested tensors, and the views those users expect
(readable totals, a module tree with a depth limit, a JSON-ready dict)."""
from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from foldconv.analysis.counting import count
from foldconv.analysis.counting.inputs import input_specs
from foldconv.analysis.counting.report import readable
from foldconv.errors import FoldError
from helpers import examples


def _encoder(layers=2):
    torch.manual_seed(0)
    return nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, batch_first=True), layers).eval()


def _flop_counter_macs_on_meta(model, *args, **kwargs):
    """FlopCounterMode around the composite path on a meta copy (its own fused CPU kernels have no FLOP rule)."""
    model = _encoder(len(model.layers)).to("meta")
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            model(*(a.to("meta") for a in args), **{k: v.to("meta") for k, v in kwargs.items()})
    finally:
        torch.backends.mha.set_fastpath_enabled(before)
    return fc.get_total_flops() // 2


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("padded", [0, 3])
def test_a_transformer_encoder_with_a_padding_mask_counts_exactly(layers, padded):
    """Given src_key_padding_mask, TransformerEncoder's inference fast path packs the batch into nested tensors
    (once a crash in the counter, blaming the model); count() runs the composite ops, on meta, and its MACs are
    FlopCounterMode's, op by op family, whatever the mask holds."""
    enc = _encoder(layers)
    x = torch.randn(2, 10, 32)
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[0, 10 - padded:] = True
    rep = count(enc, examples={"src": x, "src_key_padding_mask": mask})
    assert rep.device == "meta" and rep.complete
    assert rep.macs == _flop_counter_macs_on_meta(enc, x, src_key_padding_mask=mask)
    # per layer: 4 projections (q, k, v, out) + 2 feed-forward matmuls + the two attention products
    per_layer = 2 * 10 * (4 * 32 * 32 + 2 * 32 * 64) + 2 * 2 * 4 * 10 * 10 * 8
    assert rep.macs == layers * per_layer
    assert torch.backends.mha.get_fastpath_enabled()  # the switch is put back


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
def test_a_nested_tensor_given_to_a_module_has_no_single_shape():
    """A module that receives a nested tensor gets no input shape (there is none) instead of a crash."""
    class Inner(nn.Module):
        def forward(self, x):
            return x

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = Inner()

        def forward(self, x):
            nested = torch.nested.nested_tensor([torch.ones(2, 3), torch.ones(4, 3)])
            self.inner(nested)
            return x * 2

    rep = count(Outer(), examples=torch.ones(2, 3))
    assert rep.output_shapes["inner"] is None
    assert rep.output_shapes[rep.ROOT] == (2, 3)


def test_token_ids_and_masks_spelled_as_on_the_command_line():
    emb = nn.Sequential(nn.Embedding(100, 8), nn.Linear(8, 2))
    specs = input_specs([[1, 16, "long"], [1, 16, "bool"]])
    assert [(s.shape, s.dtype) for s in specs] == [((1, 16), torch.long), ((1, 16), torch.bool)]
    assert count(emb, [1, 16, "long"]).macs == count(emb, ((1, 16), torch.long)).macs == 16 * 8 * 2
    with pytest.raises(FoldError, match="names no torch dtype"):
        count(emb, [1, 16, "lnog"])


@settings(max_examples=examples(200), deadline=None)
@given(st.integers(0, 10**18))
def test_readable_totals_keep_three_significant_digits(value):
    text = readable(value, "MACs")
    number, unit = text.split(" ")
    scale = 1000 ** "KMGTPE".find(unit[0]) * 1000 if unit[0] in "KMGTPE" else 1
    if value < 1000:
        assert text == f"{value} MACs"
    else:
        assert 1 <= float(number) < 1000
        assert abs(float(number) * scale - value) <= 0.005 * value  # within rounding to 3 digits
    assert readable(4_089_184_256, "MACs") == "4.09 GMACs" and readable(25_557_032, "params") == "25.6 M params"


def test_the_summary_gives_readable_totals_beside_the_exact_integers():
    rep = count(nn.Conv2d(256, 256, 3, padding=1), (1, 256, 32, 32))
    text = rep.summary()
    assert f"{rep.macs:,} MACs" in text and "604 MMACs" in text and "590 K params" in text


def test_to_dict_is_json_and_holds_every_figure():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    rep = count(m, (2, 3, 8, 8))
    back = json.loads(json.dumps(rep.to_dict()))
    assert back["totals"]["macs"] == rep.macs and back["totals"]["params"] == rep.params
    assert back["totals"]["flops"] == rep.flops and back["input_shapes"] == [[2, 3, 8, 8]]
    assert [layer["name"] for layer in back["layers"]] == [layer.name for layer in rep.layers]
    assert sum(layer["macs"] for layer in back["layers"]) == rep.macs
    assert back["macs_by_op"] == rep.macs_by_op


def test_the_tree_sums_each_subtree_and_stops_at_the_depth():
    inner = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4))
    m = nn.Sequential(inner, nn.Linear(4, 2))
    rep = count(m, (3, 4))
    shallow, deep = rep.tree(depth=1), rep.tree()
    assert "├─ 0" in shallow and "└─ 1" in shallow and "0.0" not in shallow and "0.2" not in shallow
    row = next(line for line in shallow.splitlines() if line.startswith("├─ 0"))
    assert row.split()[-2:] == [f"{4 * 8 + 8 + 8 * 4 + 4:,}", f"{3 * (32 + 32):,}"]
    assert "│  ├─ 0" in deep and "│  └─ 2" in deep
    assert shallow.splitlines()[-1] == f"total: {readable(rep.params, 'params')}, {readable(rep.macs, 'MACs')}"
    with pytest.raises(FoldError, match="depth"):
        rep.tree(depth=-1)
