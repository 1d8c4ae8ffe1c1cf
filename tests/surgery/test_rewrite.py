"""foldconv.rewrite: every conversion rule on small models, the per-site and whole-model verdicts, the report.

Models are polynomial (convs, layout ops) wherever the claim is about exactness, so the verdicts are exact:
integer-valued float64 arithmetic with resampled integer weights (derived), compared with torch.equal.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import foldconv
from foldconv import SpaceToDepth, Verdict, depth_to_space, space_to_depth
from foldconv.equivalences import SpaceToDepthConv, SubPixelConv
from foldconv.surgery import RULES, RewriteReport, Rule, find_sites, inverse_rules, rewrite
from helpers import integer_tensor, integer_weights


def _state(model: nn.Module):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_state(model: nn.Module, saved) -> bool:
    now = model.state_dict()
    return now.keys() == saved.keys() and all(torch.equal(now[k], saved[k]) for k in saved)


def _exact_sites(report: RewriteReport):
    return [(s.location, s.verdict, s.exact) for s in report.sites if s.applied]


class Unshuffled(nn.Module):
    """A PixelUnshuffle stem and a strided conv, written as a module with a forward (not a Sequential)."""

    def __init__(self):
        super().__init__()
        self.spd = nn.PixelUnshuffle(2)
        self.conv = nn.Conv2d(12, 6, 3, padding=1)
        self.down = nn.Conv2d(6, 4, 3, stride=2, padding=1)

    def forward(self, x):
        return self.down(self.conv(self.spd(x)))


@pytest.mark.claim("SURGERY-1")
def test_spd_to_strided_on_pixel_unshuffle_and_functional_form_is_exact():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(8, 4, 3, padding=1)

        def forward(self, x):
            return self.conv(torch.nn.functional.pixel_unshuffle(x, 2))

    for model, pattern in ((Unshuffled(), "PixelUnshuffle+Conv2d (space-to-depth)"),
                           (Functional(), "pixel_unshuffle+Conv2d (space-to-depth)")):
        shape = (2, 3 if pattern.startswith("Pixel") else 2, 8, 8)
        new, report = rewrite(model, shape, ["spd_to_strided"])
        site = report.sites[0]
        assert site.pattern == pattern and site.applied and site.exact and site.verdict is Verdict.EQUIVALENT
        assert site.after.startswith("Conv2d(") and "k=(6, 6), s=(2, 2), p=(2, 2)" in site.after
        assert report.traced and report.ok and report.verification.exact
        assert isinstance(new.get_submodule("conv"), nn.Conv2d)
        x = integer_tensor(shape)
        assert torch.equal(new.double()(x), model.double()(x))


@pytest.mark.claim("SURGERY-1")
def test_foldconv_layout_functions_in_a_forward_are_sites_in_their_own_orders():
    class Functions(nn.Module):
        def __init__(self):
            super().__init__()
            self.down = nn.Conv2d(12, 4, 3, padding=1)
            self.up = nn.Conv2d(4, 16, 3, padding=1, bias=False)

        def forward(self, x):
            return depth_to_space(self.up(self.down(space_to_depth(x, 2, "focus"))), 2, order="dcr")

    model = Functions()
    new, report = rewrite(model, (1, 3, 8, 8), ["spd_to_strided", "subpixel_to_transposed"])
    assert [s.pattern for s in report.sites] == ["space_to_depth+Conv2d (space-to-depth)", "Conv2d+depth_to_space (sub-pixel)"]
    assert "order='rw rh c'" in report.sites[0].before and "order='rh rw c'" in report.sites[1].before
    assert report.applied == 2 and report.ok and report.verification.exact
    assert isinstance(new.get_submodule("up"), nn.ConvTranspose2d)


@pytest.mark.claim("SURGERY-2")
def test_strided_to_spd_and_back_is_exact_for_a_whole_model():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.Conv2d(8, 4, 4, stride=2, padding=1),
                          nn.Conv2d(4, 4, 3, stride=(1, 2)))
    new, report = rewrite(model, (1, 3, 16, 16), ["strided_to_spd"])
    assert report.applied == 3 and report.ok and report.verification.exact
    assert all(isinstance(new.get_submodule(str(i)), SpaceToDepthConv) for i in range(3))
    back, again = rewrite(new, (1, 3, 16, 16), ["spd_to_strided"])
    assert again.applied == 3 and again.ok and again.verification.exact
    assert [type(back.get_submodule(str(i))) for i in range(3)] == [nn.Conv2d] * 3
    x = integer_tensor((1, 3, 16, 16))
    assert torch.equal(back.double()(x), model.double()(x))


@pytest.mark.claim("SURGERY-3")
def test_transposed_to_subpixel_and_back_through_rewrite():
    model = nn.Sequential(nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1), nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1, bias=False))
    new, report = rewrite(model, (1, 8, 3, 3), ["transposed_to_subpixel"])
    assert report.applied == 2 and report.ok and report.verification.exact
    assert all(isinstance(new.get_submodule(str(i)), SubPixelConv) for i in range(2))
    back, again = rewrite(new, (1, 8, 3, 3), ["subpixel_to_transposed"])
    assert again.applied == 2 and again.ok
    for i in range(2):
        original, rebuilt = model[i], back.get_submodule(str(i))
        assert isinstance(rebuilt, nn.ConvTranspose2d)
        assert (rebuilt.kernel_size, rebuilt.stride, rebuilt.padding) == (original.kernel_size, original.stride, original.padding)
        assert torch.equal(rebuilt.weight, original.weight)
    # the SubPixelConv's bias is tied over sub-pixels only for these weights: checked with the model's own
    assert "model's weights only" in again.sites[0].reason and not again.sites[0].exact
    assert again.sites[1].exact  # no bias: the rewrite holds for all weights


@pytest.mark.claim("SURGERY-3")
def test_subpixel_to_transposed_espcn_with_an_untied_bias_adds_a_periodic_bias():
    model = nn.Sequential(nn.Conv2d(1, 8, 5, padding=2), nn.Conv2d(8, 4 * 3, 3, padding=1), nn.PixelShuffle(2))
    new, report = rewrite(model, (1, 1, 6, 6), ["subpixel_to_transposed"])
    site = report.sites[0]
    assert site.pattern == "Conv2d+PixelShuffle (sub-pixel)" and site.location == "1" and site.applied
    assert site.verdict is Verdict.EQUIVALENT and report.ok and report.verification.exact
    assert isinstance(new.get_submodule("1")[0], nn.ConvTranspose2d)
    unbiased = copy.deepcopy(model)
    unbiased[1].bias = None
    new, report = rewrite(unbiased, (1, 1, 6, 6), ["subpixel_to_transposed"])
    assert isinstance(new.get_submodule("1"), nn.ConvTranspose2d) and report.sites[0].exact and report.ok


@pytest.mark.claim("SURGERY-4")
def test_conv_to_focus_and_focus_to_conv_round_trip():
    model = nn.Sequential(nn.Conv2d(3, 8, 6, stride=2, padding=2), nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2))
    new, report = rewrite(model, (1, 3, 8, 8), ["conv_to_focus", "focus_to_conv"])
    assert [s.rule for s in report.sites if s.applied] == ["conv_to_focus"] * 2 + ["focus_to_conv"] * 2
    assert report.ok and report.verification.exact
    assert [type(new.get_submodule(str(i))) for i in range(2)] == [nn.Conv2d] * 2
    focus = next(s for s in report.sites if s.rule == "conv_to_focus")
    assert "order='rw rh c'" in focus.after and focus.params_before == focus.params_after


@pytest.mark.claim("SURGERY-5")
def test_tresnet_style_timm_space_to_depth_stem_becomes_one_strided_conv():
    timm_layers = pytest.importorskip("timm.layers")
    stem = nn.Sequential(timm_layers.SpaceToDepth(), nn.Conv2d(48, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.LeakyReLU())
    new, report = rewrite(stem.eval(), (1, 3, 16, 16), ["spd_to_strided"])
    site = report.sites[0]
    assert site.pattern == "SpaceToDepth+Conv2d (space-to-depth)" and site.exact and site.verdict is Verdict.EQUIVALENT
    assert site.after == "Conv2d(3->8, k=(12, 12), s=(4, 4), p=(4, 4))"
    assert report.ok and not report.verification.exact  # BatchNorm and LeakyReLU: a sampled whole-model verdict
    assert "aten.leaky_relu" in report.verification_note and "not polynomial" in report.verification_note


@pytest.mark.claim("SURGERY-6")
def test_the_input_model_is_never_modified_and_the_result_is_real_and_in_the_same_mode():
    model = Unshuffled().train()
    saved = _state(model)
    new, report = rewrite(model, (1, 3, 8, 8), ["spd_to_strided", "strided_to_spd"])
    assert _same_state(model, saved) and isinstance(model.spd, nn.PixelUnshuffle)
    assert report.applied == 3 and report.ok  # the new strided conv is rewritten by the second rule too
    assert type(new) is Unshuffled  # module-only sites are swapped in place: the model keeps its class
    assert new.training and all(p.device.type == "cpu" and p.dtype == torch.float32 for p in new.parameters())
    assert new(torch.randn(2, 3, 8, 8)).shape == (2, 4, 2, 2)
    new_eval, _ = rewrite(model.double().eval(), (1, 3, 8, 8), ["spd_to_strided"], verify=False)
    assert not new_eval.training and all(p.dtype == torch.float64 for p in new_eval.parameters())


@pytest.mark.claim("SURGERY-7")
def test_a_corrupted_rewritten_weight_flips_the_site_verdict_and_is_never_applied():
    good = RULES.get("strided_to_spd")

    def corrupted(match, get, options):
        module = good.build(match, get, options)
        weight = module.conv.weight
        one = torch.zeros(weight.numel(), dtype=weight.dtype)
        one[0] = 1
        module.conv.weight = nn.Parameter(weight.detach() + one.reshape(weight.shape))  # one unit on one tap: a polynomial change
        return module

    # a rule for this call only: never registered
    bad = Rule("corrupted_strided_to_spd", good.find, corrupted, {"order": "crd", "padding": "auto"})
    model = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.Conv2d(4, 2, 3, stride=2, padding=1))
    _, honest = rewrite(model, (1, 2, 8, 8), ["strided_to_spd"])
    new, report = rewrite(model, (1, 2, 8, 8), [(bad, {"at": ["1"]})])
    assert "corrupted_strided_to_spd" not in RULES and report.rules == ("corrupted_strided_to_spd",)
    assert honest.ok and [s.verdict for s in honest.sites] == [Verdict.EQUIVALENT] * 2
    site = report.sites[0]
    assert site.location == "1" and not site.applied and site.exact and site.verdict is Verdict.NOT_EQUIVALENT
    assert site.reason.startswith("not applied: its check found the rewrite not equivalent (exact")
    assert not report.ok and not bool(report) and "not applied because their check found a difference" in report.summary()
    # the model returned keeps its layers there: it is the original's function
    assert isinstance(new[1], nn.Conv2d) and report.verification.verdict is Verdict.EQUIVALENT
    x = integer_tensor((1, 2, 8, 8))
    assert torch.equal(new.double()(x), model.double()(x))


@pytest.mark.claim("SURGERY-8")
def test_fallback_when_fx_cannot_trace_says_so_and_still_rewrites():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(SpaceToDepth(2, "focus"), nn.Conv2d(8, 4, 3, padding=1))
            self.head = nn.Conv2d(4, 4, 3, stride=2, padding=1)

        def forward(self, x):
            y = self.body(x)
            return self.head(y) if bool(y.sum() > 0) else self.head(-y)

    model = Branchy()
    new, report = rewrite(model, (1, 2, 8, 8), ["spd_to_strided", "strided_to_spd"])
    assert not report.traced and "torch.fx cannot trace" in report.fallback_reason
    assert [(s.location, s.applied) for s in report.sites] == [("body.1", True), ("body.1", True), ("head", True)]
    assert all(s.exact and s.verdict is Verdict.EQUIVALENT for s in report.sites)
    assert report.ok and isinstance(new.body[0], nn.Identity) and isinstance(new.head, SpaceToDepthConv)
    assert "module-level replacement" in report.summary()


@pytest.mark.claim("SURGERY-9")
def test_a_site_that_cannot_be_rewritten_says_why_and_the_others_still_apply():
    shared = nn.Conv2d(4, 4, 3, stride=2, padding=1)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.first = nn.Conv2d(4, 4, 3, stride=2, padding=1, padding_mode="reflect")
            self.shared = shared
            self.last = nn.Conv2d(4, 4, 1, stride=2)

        def forward(self, x):
            return self.last(self.shared(self.shared(self.first(x))))

    sites = find_sites(Twice(), (1, 4, 32, 32), [("strided_to_spd", {"padding": "inner"})])
    reasons = {s.location: s.reason for s in sites}
    assert "padding='inner'" in reasons["first"] and "called 2 times" in reasons["shared"] and reasons["last"] == ""
    assert not any(s.applied for s in sites)
    new, report = rewrite(Twice(), (1, 4, 32, 32), [("strided_to_spd", {"padding": "inner"})])
    assert [(s.location, s.applied) for s in report.sites] == [("first", False), ("shared", False), ("last", True)]
    assert report.ok and isinstance(new.get_submodule("last"), SpaceToDepthConv)


def test_at_limits_the_sites_and_rows_name_model_level_patterns():
    model = nn.Sequential(nn.Conv2d(3, 8, 7, stride=2, padding=3), nn.Conv2d(8, 8, 3, stride=2, padding=1))
    new, report = rewrite(model, (1, 3, 16, 16), [("strided_to_spd", {"at": ["0"], "order": "dcr"})])
    assert [s.location for s in report.sites] == ["0"] and report.sites[0].pattern == "Conv2d 7x7 s2"
    assert isinstance(new.get_submodule("1"), nn.Conv2d) and new.get_submodule("0").order == ("rh", "rw", "c")
    row = report.rows()[0]
    # the SPD form's 4x4 kernel on 12 channels holds the 7x7 kernel plus zero taps: more weights, more MACs
    assert row["macs_before"] == 8 * 3 * 49 * 64 and row["macs_after"] == 8 * 12 * 16 * 64
    assert (row["params_before"], row["params_after"]) == (8 * 3 * 49 + 8, 8 * 12 * 16 + 8)
    assert row["verdict"] == "equivalent" and row["exact"] is True
    assert "| rule | pattern |" in report.to_markdown() and "1 of 1 site(s)" in report.summary()


def test_a_registered_rule_is_used_by_name_and_a_per_call_rule_leaves_the_table_alone():
    good = RULES.get("strided_to_spd")
    mine = Rule("my_strided_to_spd", good.find, good.build, {"order": "dcr", "padding": "auto"}, inverse="spd_to_strided")
    model = integer_weights(nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1)))
    before = RULES.names()
    _, per_call = rewrite(model, (1, 2, 8, 8), [mine])
    assert RULES.names() == before and per_call.applied == 1 and per_call.ok
    RULES.register(mine.name, mine)
    try:
        new, by_name = rewrite(model, (1, 2, 8, 8), ["my_strided_to_spd"])
        assert by_name.rules == ("my_strided_to_spd",) and new[0].order == ("rh", "rw", "c") and by_name.ok
        assert inverse_rules(["my_strided_to_spd"], report=by_name) == (("spd_to_strided", {"at": ["0"]}),)
    finally:
        RULES.unregister("my_strided_to_spd")
    assert "my_strided_to_spd" not in RULES


def test_every_rule_names_its_inverse_and_the_inverse_takes_the_rewrite_back():
    assert {name: RULES.get(name).inverse for name in RULES.names()} == {
        "focus_to_conv": "conv_to_focus", "conv_to_focus": "focus_to_conv", "strided_to_spd": "spd_to_strided",
        "spd_to_strided": "strided_to_spd", "transposed_to_subpixel": "subpixel_to_transposed",
        "subpixel_to_transposed": "transposed_to_subpixel", "fold_stage": "unfold_stage", "unfold_stage": "fold_stage",
        "fold_bn": "", "to_pixel_shuffle": "from_pixel_shuffle", "from_pixel_shuffle": "to_pixel_shuffle",
    }
    assert all(RULES.get(RULES.get(name).inverse).inverse == name for name in RULES.names() if RULES.get(name).inverse)
    model = integer_weights(nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1),
                                          nn.Conv2d(2, 4, 3, stride=2, padding=1)))
    rules = [("strided_to_spd", {"at": ["0"], "order": "dcr"}), "transposed_to_subpixel"]
    new, report = rewrite(model, (1, 2, 8, 8), rules)
    inverse = inverse_rules(rules, report=report)
    assert inverse == (("subpixel_to_transposed", {"at": ["1"]}), ("spd_to_strided", {"at": ["0"]}))
    # without the report the options the inverse shares are kept (at), the others (order) dropped
    assert inverse_rules(rules) == ("subpixel_to_transposed", ("spd_to_strided", {"at": ["0"]}))
    back, again = rewrite(new, (1, 2, 8, 8), list(inverse))
    assert again.ok and [type(m) for m in back] == [type(m) for m in model]
    x = integer_tensor((1, 2, 8, 8))
    assert torch.equal(back(x), model(x))
    # a rule that rewrote nothing has nothing to undo
    _, none = rewrite(model, (1, 2, 8, 8), ["spd_to_strided"])
    assert inverse_rules(["spd_to_strided"], report=none) == ()


def test_lazy_exports_from_foldconv():
    assert foldconv.rewrite is rewrite and foldconv.find_sites is find_sites and foldconv.RewriteReport is RewriteReport
    with pytest.raises(AttributeError):
        foldconv.no_such_name  # noqa: B018


def test_verify_false_gives_no_verdicts():
    model = integer_weights(nn.Sequential(nn.ConvTranspose2d(2, 2, 2, stride=2)))
    new, report = rewrite(model, (1, 2, 3, 3), ["transposed_to_subpixel"], verify=False)
    assert report.verification is None and report.sites[0].verdict is None and report.applied == 1
    x = integer_tensor((1, 2, 3, 3))
    assert torch.equal(new(x), model(x)) and "not verified" in report.summary()
