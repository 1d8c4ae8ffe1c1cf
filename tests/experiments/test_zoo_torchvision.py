"""The torchvision classification zoo, measured by the one zoo runner (``foldconv zoo zoo=torchvision check_size=64``);
slow tier (tests/conftest.py marks it by path). Two shards, one test each, so the two test workers share the zoo.

Every model is built on meta the way its DEFAULT weights were measured and counted at the weights' crop size under
FlopCounterMode (COUNT-1, COUNT-6), held to torchvision's published parameters and GMACs (COUNT-2), analysed for
its receptive field, and, where the float64 gradient check is affordable at 64 px, checked against the gradient
supports (RF-2). The models left out of the check are listed here with the reason, and the test fails if the list
changes: a model cannot drop out of the check silently.
"""
from __future__ import annotations

import pytest

from foldconv.experiments.zoo.run import run_zoo, shard_of
from foldconv.models import classification_models

SHARDS = 2
CHECK_SIZE = 64
#: Forward MACs at 64 px up to which the float64 gradient check runs here (a few seconds to a minute per model).
CHECK_MAX_MACS = 1_000_000_000
NOT_CHECKED = {
    # the model cannot run at 64 px: ViT's position embeddings are for 224 px, MaxViT's 7x7 windows need 224's
    # feature sizes, Inception-v3's stem needs 75 px (each is analysed at its own size)
    **{m: "failed" for m in ("vit_b_32", "inception_v3", "maxvit_t")},
    # more than CHECK_MAX_MACS at 64 px (and most of them over 80M parameters for the float64 copy)
    **{m: "unaffordable" for m in (
        "convnext_base", "convnext_large", "regnet_x_16gf", "regnet_x_32gf", "regnet_y_16gf", "regnet_y_32gf", "regnet_y_128gf",
        "resnext101_32x8d", "resnext101_64x4d", "swin_b", "swin_v2_b", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "vit_b_16",
        "vit_h_14", "vit_l_16", "vit_l_32", "wide_resnet101_2")},
}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    measured = {}

    def rows(index: int):
        if index not in measured:
            out = tmp_path_factory.mktemp(f"torchvision{index}")
            measured[index] = {r["model"]: r for r in run_zoo("torchvision", out, shard_index=index, shard_count=SHARDS,
                                                              check_size=CHECK_SIZE, check_max_macs=CHECK_MAX_MACS,
                                                              time_limit_s=None, progress=None)}
        return measured[index]

    return rows


def test_the_shards_are_the_whole_classification_zoo():
    names = classification_models()
    assert len(names) >= 80 and sorted(n for k in range(SHARDS) for n in shard_of(names, index=k, count=SHARDS)) == names
    assert set(NOT_CHECKED) <= set(names)


@pytest.mark.claim("COUNT-1", "COUNT-2", "COUNT-6", "RF-2")
@pytest.mark.parametrize("index", range(SHARDS))
def test_the_zoo_is_counted_exactly_and_its_fields_agree_with_gradients(shards, index):
    rows = shards(index)
    assert sorted(rows) == shard_of(classification_models(), index=index, count=SHARDS)
    assert all(r["build"] == "meta" for r in rows.values()), {n: r["note"] for n, r in rows.items() if r["build"] != "meta"}
    bad = {n: (r["macs"], r["flop_counter_macs"], r["macs_diff_ops"]) for n, r in rows.items() if r["macs_ok"] != "True"}
    assert not bad, f"MACs differ from FlopCounterMode/2 (in total or per op): {bad}"
    bad = {n: (r["params"], r["numel"]) for n, r in rows.items() if r["params_ok"] != "True"}
    assert not bad, f"parameters differ from sum(numel): {bad}"
    bad = {n: r["unsupported_ops"] for n, r in rows.items() if r["unsupported_ops"]}
    assert not bad, f"ops without a cost rule: {bad}"
    bad = {n: r["published"] for n, r in rows.items() if r["published"] != "ok"}
    assert not bad, f"torchvision's published parameters or GMACs not reproduced: {bad}"
    if "resnet50" in rows:
        assert (rows["resnet50"]["params"], rows["resnet50"]["macs"]) == ("25557032", "4089184256")
    assert all(r["rf_status"] in ("exact", "inexact") for r in rows.values()), {n: r["rf_blocker"] for n, r in rows.items()}
    mismatches = {n: r["check_shape"] for n, r in rows.items() if r["check"] == "mismatch"}
    assert not mismatches, f"analytic receptive field != gradient supports: {mismatches}"
    left_out = {n: r["check"] for n, r in rows.items() if r["check"] != "ok"}
    assert left_out == {n: why for n, why in NOT_CHECKED.items() if n in rows}
    assert all("cannot run on it" in rows[n]["errors"] for n, why in left_out.items() if why == "failed")
    checked = [r for r in rows.values() if r["check"] == "ok"]
    assert all(r["check_shape"] == f"(1, 3, {CHECK_SIZE}, {CHECK_SIZE})" and int(r["check_rows"]) > 0 for r in checked)
