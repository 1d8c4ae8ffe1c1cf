"""rewrite() never returns a model that computes another function or trains differently without saying so.

Every rule is run on a small model whose main layer is plain, frozen, shared with a twin (tied), weight-normed,
spectral-normed, hooked or a subclass with its own forward. The returned model must compute the original's
function (always); a hooked or subclassed site must not be applied, its row naming why; frozen, tied and
parametrised weights must come back as they were (a parametrisation of the very same parameter); and the report's
training verdict must agree with what one real SGD step of both models does.
"""
from __future__ import annotations

import copy
from typing import Callable, Dict, Tuple

import pytest
import timm.layers
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parametrizations, parametrize

from foldconv import Verdict
from foldconv.equivalences import strided_to_spd, subpixel_to_transposed
from foldconv.surgery import RULES, Rule, check_model, rewrite
from foldconv.surgery.hazards import module_hazard
from foldconv.surgery.params import check_training, tensor_maps
from helpers import examples, integer_tensor, integer_weights

VARIANTS = ("plain", "frozen", "tied", "weight_norm", "spectral_norm", "hooked", "subclassed")


def _stage():
    return nn.Sequential(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.Conv2d(4, 4, 1)))


# rule -> (model builder, input shape, path of the layer the variant changes, options)
CASES: Dict[str, Tuple[Callable[[], nn.Module], Tuple[int, ...], str, dict]] = {
    "strided_to_spd": (lambda: nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1)), (1, 2, 8, 8), "0", {}),
    "conv_to_focus": (lambda: nn.Sequential(nn.Conv2d(2, 4, 4, stride=2, padding=1)), (1, 2, 8, 8), "0", {}),
    "spd_to_strided": (lambda: nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(8, 4, 3, padding=1)), (1, 2, 8, 8), "1", {}),
    "focus_to_conv": (lambda: nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(8, 4, 3, padding=1)), (1, 2, 8, 8), "1", {}),
    "transposed_to_subpixel": (lambda: nn.Sequential(nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1)), (1, 4, 4, 4), "0", {}),
    "subpixel_to_transposed": (lambda: nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.PixelShuffle(2)), (1, 2, 4, 4), "0", {}),
    "fold_stage": (_stage, (1, 4, 4, 4), "0.0", {"stage": "0", "r": 2}),
    "fold_bn": (lambda: nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4)).eval(), (1, 2, 6, 6), "0", {}),
}


class _Doubled:
    """Mixed into a layer's class: the same layer, computing twice its output."""

    def forward(self, x):
        return 2 * super().forward(x)


class Twinned(nn.Module):
    """A model beside a second layer holding the same parameter as one of its layers (a tied decoder, unused here)."""

    def __init__(self, net: nn.Module, twin: nn.Module):
        super().__init__()
        self.net = net
        self.twin = twin

    def forward(self, x):
        return self.net(x)


def _variant(model: nn.Module, path: str, variant: str) -> nn.Module:
    """``model`` with the layer at ``path`` changed as ``variant`` says."""
    owner, _, name = path.rpartition(".")
    parent = model.get_submodule(owner)
    layer = model.get_submodule(path)
    if variant == "frozen":
        layer.weight.requires_grad_(False)
    elif variant == "tied":
        twin = copy.deepcopy(layer)
        twin.weight, twin.bias = layer.weight, layer.bias
        return Twinned(model, twin)
    elif variant in ("weight_norm", "spectral_norm"):
        setattr(parent, name, getattr(parametrizations, variant)(layer))
    elif variant == "hooked":
        layer.register_forward_hook(lambda module, inputs, output: output * 3)
    elif variant == "subclassed":
        layer.__class__ = type(f"Doubled{type(layer).__name__}", (_Doubled, type(layer)), {})
    return model


def _case(rule: str, variant: str, seed: int = 0) -> Tuple[nn.Module, Tuple[int, ...], str, dict]:
    make, shape, path, options = CASES[rule]
    torch.manual_seed(seed)
    model = _variant(integer_weights(make(), seed), path, variant)
    if isinstance(model, Twinned):
        path, options = f"net.{path}", {k: f"net.{v}" if k == "stage" else v for k, v in options.items()}
    return model, shape, path, options


def _same_function(a: nn.Module, b: nn.Module, shape, seed: int = 1) -> bool:
    x = integer_tensor(shape, seed=seed)
    a, b = copy.deepcopy(a).double().eval(), copy.deepcopy(b).double().eval()
    with torch.no_grad():
        ya, yb = a(x), b(x)
    return ya.shape == yb.shape and torch.allclose(ya, yb, rtol=1e-9, atol=1e-9 * float(ya.abs().max()))


def _one_step(model: nn.Module, shape) -> nn.Module:
    """``model`` after one SGD step (lr 1/8) on an integer loss, eval mode, float64."""
    model = copy.deepcopy(model).double().eval()
    params = [p for p in model.parameters() if p.requires_grad]
    if params:
        optimiser = torch.optim.SGD(params, lr=0.125)
        loss = (model(integer_tensor(shape, seed=5)) * 1.0).square().sum()
        loss.backward()
        optimiser.step()
    return model


def _params(model: nn.Module) -> Tuple[int, int]:
    ps = list(model.parameters())
    return sum(p.numel() for p in ps), sum(p.numel() for p in ps if p.requires_grad)


def _matrix():
    """Every rule x every variant; the fast tier runs each rule once and each variant at least once (a diagonal),
    the whole matrix runs with the slow tier."""
    cases = []
    for i, rule in enumerate(sorted(CASES)):
        for j, variant in enumerate(VARIANTS):
            fast = j == i % len(VARIANTS) or (i >= len(VARIANTS) and j == (i + 3) % len(VARIANTS))
            cases.append(pytest.param(rule, variant, marks=() if fast else pytest.mark.slow, id=f"{rule}-{variant}"))
    return cases


@pytest.mark.claim("SURGERY-12")
@pytest.mark.claim("SURGERY-13")
@pytest.mark.parametrize("rule,variant", _matrix())
def test_every_rule_on_every_kind_of_layer_returns_the_same_function_and_says_how_it_trains(rule, variant):
    model, shape, path, options = _case(rule, variant)
    new, report = rewrite(model, shape, [(rule, options)])
    assert _same_function(model, new, shape), report.summary()
    site = report.sites[0]
    if variant in ("hooked", "subclassed"):
        assert not site.applied and report.applied == 0
        assert ("hook" in site.reason) if variant == "hooked" else ("overrides forward" in site.reason), site.reason
        return
    if rule == "fold_bn" and variant in ("tied", "weight_norm", "spectral_norm"):
        # a folded BatchNorm scales the weight: no copy of it, so it cannot stay shared or parametrised
        assert not site.applied and "the rewrite cannot keep it" in site.reason and report.ok, site.reason
        return
    assert site.applied, site.reason
    assert report.ok and report.training is not None
    if variant == "frozen":  # nothing frozen comes back trainable
        assert _params(new)[0] - _params(new)[1] >= _params(model)[0] - _params(model)[1], (_params(model), _params(new))
    if variant == "tied":  # nothing shared is untied: the twin's parameters are the rewritten layer's
        assert _params(new) == _params(model), (_params(model), _params(new))
        assert sum(1 for p in new.parameters() if p is new.twin.weight) == 1
    if variant in ("weight_norm", "spectral_norm"):  # the parametrisation is kept, on the very same parameters
        kinds = [type(step).__name__ for m in new.modules() if parametrize.is_parametrized(m, "weight") for step in m.parametrizations.weight]
        assert kinds[0] in ("_WeightNorm", "_SpectralNorm") and kinds[-1] == "Gathered", kinds
        assert {n.rsplit(".", 1)[-1] for n, _ in new.named_parameters()} >= (
            {"original0", "original1"} if variant == "weight_norm" else {"original"})
    # the report's training verdict is what one real SGD step of both models does
    stepped_old, stepped_new = _one_step(model, shape), _one_step(new, shape)
    assert _same_function(stepped_old, stepped_new, shape) == report.training.same, report.training
    if site.trains_same is not None:
        assert site.trains_same == report.training.same, (site.training, report.training)


@pytest.mark.claim("SURGERY-12")
def test_timm_conv_and_norm_subclasses_with_their_own_forward_are_never_rewritten():
    std = nn.Sequential(timm.layers.StdConv2d(3, 8, 3, stride=2, padding=1))
    scaled = nn.Sequential(timm.layers.ScaledStdConv2d(3, 8, 3, stride=2, padding=1))
    same = nn.Sequential(timm.layers.Conv2dSame(3, 8, 3, stride=2))
    act = nn.Sequential(nn.Conv2d(3, 8, 3), timm.layers.BatchNormAct2d(8)).eval()
    for model, rule, name in ((std, "strided_to_spd", "StdConv2d"), (scaled, "conv_to_focus", "ScaledStdConv2d"),
                              (same, "strided_to_spd", "Conv2dSame"), (act, "fold_bn", "BatchNormAct2d")):
        new, report = rewrite(model, (1, 3, 9, 9), [rule])
        # (torch.fx traces through timm's BatchNormAct2d, so that one is no site at all; read as a layer, it is refused)
        assert report.applied == 0 and all(f"subclass {name} overrides forward" in s.reason for s in report.sites), report.sites
        assert _same_function(model, new, (1, 3, 9, 9))
    assert module_hazard("1", act[1]) == "BatchNorm2d subclass BatchNormAct2d overrides forward (at 1)"


@pytest.mark.claim("SURGERY-12")
def test_hooks_anywhere_that_the_rewrite_would_skip_keep_the_site():
    torch.manual_seed(0)
    # a pre-hook, a backward hook (training would differ), a hook registered for every module
    pre = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1))
    pre[0].register_forward_pre_hook(lambda module, args: (args[0] + 1,))
    back = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1))
    back[0].register_full_backward_hook(lambda module, gin, gout: None)
    for model, words in ((pre, "forward pre-hook on 0"), (back, "backward hook on 0")):
        _, report = rewrite(model, (1, 2, 8, 8), ["strided_to_spd"])
        assert report.applied == 0 and words in report.sites[0].reason
    handle = torch.nn.modules.module.register_module_forward_hook(lambda module, inputs, output: None)
    try:
        _, report = rewrite(nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1)), (1, 2, 8, 8), ["strided_to_spd"])
    finally:
        handle.remove()
    assert report.applied == 0 and "register_module_forward_hook" in report.sites[0].reason
    # a hook on a container the traced graph runs inline: a GraphModule result would not call it
    class Focus(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(8, 4, 3, padding=1)

        def forward(self, x):
            return self.conv(torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1))

    stem = Focus()
    stem.register_forward_hook(lambda module, inputs, output: output * 2)
    new, report = rewrite(stem, (1, 2, 8, 8), ["focus_to_conv"])
    assert report.applied == 0 and "runs inline" in report.sites[0].reason
    assert _same_function(stem, new, (1, 2, 8, 8))


class TiedDecoder(nn.Module):
    """An autoencoder whose decoder reuses the encoder's weight directly (F.conv_transpose2d on enc.weight)."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(2, 4, 2, stride=2)

    def forward(self, x):
        return torch.nn.functional.conv_transpose2d(self.enc(x), self.enc.weight, stride=2)


@pytest.mark.claim("SURGERY-12")
def test_a_layer_whose_weight_the_model_reads_directly_is_not_replaced():
    model = integer_weights(TiedDecoder())
    new, report = rewrite(model, (1, 2, 8, 8), ["strided_to_spd"])
    assert report.applied == 0 and "reads enc.weight directly" in report.sites[0].reason and report.ok
    assert _same_function(model, new, (1, 2, 8, 8))


class ByType(nn.Module):
    """Untraceable (a branch on a value), and a forward that asks for its layer's class: what no site check sees."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, stride=2, padding=1)

    def forward(self, x):
        if bool(x.sum() > 1e9):
            x = -x
        y = self.conv(x)
        return 2 * y if isinstance(self.conv, nn.Conv2d) else y


@pytest.mark.claim("SURGERY-7")
def test_a_whole_model_found_different_is_withdrawn_and_the_original_returned():
    model = integer_weights(ByType())
    new, report = rewrite(model, (1, 2, 8, 8), ["strided_to_spd"])
    assert report.sites[0].verdict is Verdict.EQUIVALENT and report.sites[0].exact  # the site alone is right
    assert report.verification.verdict is Verdict.NOT_EQUIVALENT  # sampled: the branch on a value is no polynomial
    assert report.withdrawn and not report.ok and report.applied == 0
    assert "withdrawn" in report.sites[0].reason and "WITHDRAWN" in report.summary()
    assert isinstance(new.conv, nn.Conv2d) and _same_function(model, new, (1, 2, 8, 8))
    # a rewritten model that cannot run at all is withdrawn too, with the error quoted
    class ReadsStride(ByType):
        def forward(self, x):
            if bool(x.sum() > 1e9):
                x = -x
            return self.conv(x)[..., :: self.conv.stride[0]]

    new, report = rewrite(integer_weights(ReadsStride()), (1, 2, 8, 8), ["strided_to_spd"])
    assert "could not be checked" in report.withdrawn and "stride" in report.withdrawn and isinstance(new.conv, nn.Conv2d)


@pytest.mark.claim("SURGERY-13")
def test_weights_shared_by_two_rewritten_convs_stay_shared():
    a = nn.Conv2d(4, 4, 3, stride=2, padding=1)
    b = nn.Conv2d(4, 4, 3, stride=2, padding=1)
    b.weight = a.weight
    model = integer_weights(nn.Sequential(a, nn.ReLU(), b))
    new, report = rewrite(model, (1, 4, 16, 16), ["strided_to_spd"])
    assert report.applied == 2 and report.ok
    assert _params(new) == _params(model) == (4 * 4 * 9 + 8, 4 * 4 * 9 + 8)
    originals = [new[i].conv.parametrizations.weight.original for i in (0, 2)]
    assert originals[0] is originals[1]
    assert report.training.same and report.training.parameters == (152, 152)
    assert _same_function(_one_step(model, (1, 4, 16, 16)), _one_step(new, (1, 4, 16, 16)), (1, 4, 16, 16))


@pytest.mark.claim("SURGERY-13")
def test_keep_parameters_makes_every_copy_a_parametrisation_and_trains_the_same():
    model = integer_weights(nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1)))
    plain, report = rewrite(model, (1, 2, 8, 8), ["strided_to_spd"])
    assert not report.training.same and "structural zero" in report.sites[0].training
    assert "0.conv.weight" in report.training.differing
    kept, again = rewrite(model, (1, 2, 8, 8), ["strided_to_spd"], keep_parameters=True)
    assert again.training.same and again.sites[0].trains_same and _params(kept) == _params(model)
    assert _same_function(_one_step(model, (1, 2, 8, 8)), _one_step(kept, (1, 2, 8, 8)), (1, 2, 8, 8))
    assert not _same_function(_one_step(model, (1, 2, 8, 8)), _one_step(plain, (1, 2, 8, 8)), (1, 2, 8, 8))
    # a rule whose new weight is no copy cannot keep them: the site is refused, with the reason
    bn = integer_weights(nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4))).eval()
    _, refused = rewrite(bn, (1, 2, 6, 6), ["fold_bn"], keep_parameters=True)
    assert refused.applied == 0 and "keep_parameters=True" in refused.sites[0].reason


def test_tensor_maps_reads_copies_and_refuses_everything_else():
    conv = nn.Conv2d(2, 3, 3, stride=2, bias=False)
    maps, problem = tensor_maps(nn.Sequential(conv), lambda ref: strided_to_spd(ref[0]))
    # the 3x3 kernel padded to 4x4 (7 zero taps per 16) on 2*4 channels, as space-to-depth by 2
    assert problem == "" and maps[0].source == "0.weight" and maps[0].zeros == 3 * 2 * 7

    def summed(ref):  # each new tap the sum of a kernel: a linear map, but no copy
        new = nn.Conv2d(2, 3, 1, bias=False).double()
        new.weight = nn.Parameter(ref[0].weight.detach().sum((2, 3), keepdim=True))
        return new

    def scaled(ref):  # a copy times another tensor's entries
        new = copy.deepcopy(ref[0])
        new.weight = nn.Parameter(ref[0].weight.detach() * ref[1].weight.detach().reshape(-1, 1, 1, 1))
        return new

    assert "not a copy" in tensor_maps(nn.Sequential(conv), summed)[0][0].problem
    assert "not a copy" in tensor_maps(nn.Sequential(conv, nn.BatchNorm2d(3)), scaled)[0][0].problem
    # a build that refuses other weights holds for some weights only
    _, refused = tensor_maps(nn.Sequential(nn.Conv2d(2, 8, 3)), lambda ref: subpixel_to_transposed(ref[0], 2))
    assert refused.startswith("the rewrite holds only for some weights") and "varies over sub-pixels" in refused


def test_check_training_finds_a_changed_gradient_map():
    # a build that scales the weight by 2 and the output by 1/2: same function, twice the gradient
    class Half(nn.Module):
        def __init__(self, conv):
            super().__init__()
            self.conv = conv

        def forward(self, x):
            return self.conv(x) * 0.5

    def scaled(ref):
        conv = copy.deepcopy(ref[0])
        with torch.no_grad():
            conv.weight.mul_(2)
            conv.bias.mul_(2)
        return Half(conv)

    model = nn.Sequential(nn.Conv2d(2, 2, 3))
    report, _ = check_model(model, scaled, (1, 2, 5, 5))
    assert report.ok
    assert not check_training(model, scaled, (1, 2, 5, 5)).same
    assert check_training(model, copy.deepcopy, (1, 2, 5, 5)).same


# --- the hunt: random models with a hazard in a random place, under every rule ------------------------------------

HAZARDS = ("forward_hook", "pre_hook", "forward_override", "conv_forward_override", "backward_hook")


def _hazard(layer: nn.Module, kind: str, factor: int) -> None:
    if kind == "forward_hook":
        layer.register_forward_hook(lambda module, inputs, output: output * factor)
    elif kind == "pre_hook":
        layer.register_forward_pre_hook(lambda module, args: (args[0] * factor,))
    elif kind == "backward_hook":
        layer.register_full_backward_hook(lambda module, gin, gout: tuple(None if g is None else g * factor for g in gin))
    elif kind == "forward_override":
        base = type(layer)
        layer.__class__ = type("Scaled", (base,), {"forward": lambda self, x: factor * base.forward(self, x)})
    elif kind == "conv_forward_override" and hasattr(layer, "_conv_forward"):
        base = type(layer)
        layer.__class__ = type("Shifted", (base,), {"_conv_forward": lambda self, x, w, b: base._conv_forward(self, x, w * factor, b)})
    else:
        layer.register_forward_hook(lambda module, inputs, output: output + factor)


@pytest.mark.claim("SURGERY-12")
@settings(max_examples=examples(25))
@given(rule=st.sampled_from(sorted(CASES)), kind=st.sampled_from(HAZARDS), factor=st.integers(2, 5), seed=st.integers(0, 10**6))
def test_hunt_no_hazard_ever_reaches_a_returned_model(rule, kind, factor, seed):
    model, shape, path, options = _case(rule, "plain", seed)
    _hazard(model.get_submodule(path), kind, factor)
    new, report = rewrite(model, shape, [(rule, options)])
    assert report.applied == 0 and module_hazard(path, model.get_submodule(path)), report.sites[0].reason
    assert _same_function(model, new, shape)
    if kind == "backward_hook":  # the gradient reaches the hook in the returned model too
        x = integer_tensor(shape).requires_grad_(True)
        y = new.double()(x).sum()
        y.backward()
        assert x.grad is not None


def test_a_rule_of_this_call_with_a_build_that_ignores_the_hook_is_still_caught_by_its_check():
    # a rule that finds hooked convs (its own finder) and builds from their weights: the construction check is not
    # the rule's to skip, and the site check would catch what it missed
    good = RULES.get("strided_to_spd")
    mine = Rule("spd_anyway", good.find, good.build, {"order": "crd", "padding": "auto"})
    model = integer_weights(nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1)))
    model[0].register_forward_hook(lambda module, inputs, output: output + 1)
    new, report = rewrite(model, (1, 2, 8, 8), [mine])
    assert report.applied == 0 and _same_function(model, new, (1, 2, 8, 8))


@pytest.mark.claim("SURGERY-12")
def test_a_stage_fold_keeps_a_hooked_or_subclassed_layer_as_it_is():
    from foldconv.surgery import fold_model

    for variant in ("hooked", "subclassed"):
        model = integer_weights(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1)))
        _variant(model, "2", variant)
        folded, report = fold_model(model, 2, input_shape=(1, 4, 4, 4))
        layers = {layer.name: layer for layer in report.layers}
        assert layers["0"].action == "folded", report.layers
        if variant == "hooked":  # a leaf with a hook: kept whole, with it
            assert layers["2"].action == "kept" and "forward hook on 2" in layers["2"].reason
        else:  # fx traces a subclass through: its own forward is what runs, its conv2d call kept
            assert "2" not in layers and layers["conv2d"].action == "kept"
        assert _same_function(model, folded, (1, 4, 4, 4))


def test_a_stage_fold_that_folds_no_layer_is_not_applied():
    # 6 channels cannot fill blocks of 4: fold_stage would only merge BatchNorms and add layout ops
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())).eval()
    new, report = rewrite(net, (1, 3, 8, 8), [("fold_stage", {"stage": "1", "r": 2})])
    (site,) = [s for s in report.sites if s.location == "1"]
    assert not site.applied and "folds no layer of stage '1'" in site.reason and "multiple of prod(r)=4" in site.reason, site.reason
    assert report.ok and isinstance(new[1], nn.Sequential) and isinstance(new[1][1], nn.BatchNorm2d)


@pytest.mark.slow  # a whole torchvision model checked site by site: tens of seconds; `make test` runs it
def test_a_model_saturated_by_integer_weights_is_not_called_trains_the_same():
    """MobileNetV2 on integer weights: ReLU6 clamps every unit below the head, so the rewritten stem's gradient is
    zero on both sides and zero equals zero. The check must not call that training the same: the padded 3x3 -> 4x4
    kernel's zero taps do get gradients on the model's own weights."""
    import torchvision

    torch.manual_seed(0)
    _, report = rewrite(torchvision.models.mobilenet_v2(), (1, 3, 32, 32), rules=["strided_to_spd"])
    assert not any(site.trains_same for site in report.sites)
    assert not report.training.same and "trains DIFFERENTLY" in report.training.describe(), report.training.describe()
