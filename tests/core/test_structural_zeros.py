"""Training a folded conv (FOLD-12): what fold_conv copies, and the structural zeros of expanded weights."""
from __future__ import annotations

import pytest
import torch

from foldconv import ConvSpec, FoldSpec, depth_to_space, fold_conv, plan_fold, unfold_weight
from foldconv.fold import mask_structural_zeros, structural_zero_mask


def test_fold_conv_copies_requires_grad_of_weight_and_bias():
    """Issue 10.7: weight.requires_grad was copied, bias.requires_grad was not."""
    for weight_grad, bias_grad in [(True, False), (False, True), (False, False), (True, True)]:
        conv = torch.nn.Conv2d(4, 2, 3)
        conv.weight.requires_grad_(weight_grad)
        conv.bias.requires_grad_(bias_grad)
        big = fold_conv(conv, 2)
        assert (big.weight.requires_grad, big.bias.requires_grad) == (weight_grad, bias_grad)


CASES = [
    (torch.nn.Conv2d(4, 4, 3, groups=4, dilation=2, padding=2), FoldSpec.make(2)),  # groups 4 -> 1, dilation
    (torch.nn.Conv2d(8, 8, 3, groups=8, padding=1), FoldSpec.make(2)),  # groups 8 -> 2
    (torch.nn.Conv2d(8, 4, 3, groups=2, padding=1), FoldSpec.make(2, "dcr")),  # groups 2 -> 1 (order)
    (torch.nn.Conv1d(2, 2, 3, dilation=3), FoldSpec.make(2)),  # dilation only
]


def _train(big: torch.nn.Module, plan, steps: int = 3) -> None:
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.SGD(big.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    size = tuple(8 * r for r in plan.fold.r)
    for _ in range(steps):
        x = torch.randn((2, plan.result.in_channels) + size, generator=gen)
        opt.zero_grad()
        big(x).square().mean().backward()
        opt.step()


def _refold(big: torch.nn.Module, plan) -> torch.nn.Module:
    """A conv of the source spec read off a folded weight (its taps and its own groups), folded again."""
    source = plan.source
    dense = unfold_weight(big.weight.detach(), plan.fold, groups=big.groups).weight  # (O, C/g', *Ke)
    merged = source.groups // big.groups
    blocks = dense.reshape(big.groups, merged, source.out_channels // source.groups, merged, -1, *dense.shape[2:])
    own = torch.stack([blocks[:, m, :, m] for m in range(merged)], 1)  # each group's block on the diagonal
    weight = own.reshape((source.out_channels, source.in_channels // source.groups) + tuple(dense.shape[2:]))
    weight = weight[(slice(None), slice(None)) + tuple(slice(None, None, d) for d in source.dilation)]
    conv = source.to_module()
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.copy_(big.bias)
    return fold_conv(conv, plan.fold)


@pytest.mark.claim("FOLD-12")
@pytest.mark.parametrize("conv,fold", CASES)
def test_structural_zeros_are_trained_unless_masked(conv, fold):
    plan = plan_fold(ConvSpec.from_module(conv), fold)
    mask = structural_zero_mask(plan)
    assert mask.any() and mask.float().mean().item() == pytest.approx(1 - plan.kernel_density)
    # Unmasked: the zeros get gradients, and one step leaves the source's function class.
    free = fold_conv(conv, fold)
    assert bool(free.weight[mask].eq(0).all())
    x = torch.randn((1, plan.result.in_channels) + tuple(8 * r for r in plan.fold.r))
    free(x).square().sum().backward()
    assert bool(free.weight.grad[mask].ne(0).any())
    _train(free, plan)
    assert bool(free.weight.detach()[mask].ne(0).any())
    assert not torch.equal(_refold(free, plan).weight, free.weight.detach())
    # Masked: the zeros stay zero under SGD with momentum and weight decay, and the trained folded conv is
    # exactly the fold of a conv of the source spec.
    masked = fold_conv(conv, fold)
    handle = mask_structural_zeros(masked, plan)
    _train(masked, plan)
    assert bool(masked.weight.detach()[mask].eq(0).all())
    assert not torch.equal(masked.weight.detach(), fold_conv(conv, fold).weight)  # it did train
    assert torch.equal(_refold(masked, plan).weight, masked.weight.detach())
    handle.remove()
    masked(x).square().sum().backward()
    assert bool(masked.weight.grad[mask].ne(0).any())


@pytest.mark.claim("FOLD-12")
def test_mask_of_an_undilated_aligned_fold_is_empty():
    plan = plan_fold(ConvSpec.make(2, 8, 4, 3, groups=2, padding=1), 2)
    assert plan.kernel_density == 1.0 and not structural_zero_mask(plan).any()
    conv = plan.source.to_module()
    big = fold_conv(conv, 2)
    weight = depth_to_space(conv.weight.detach(), 2)
    assert torch.equal(big.weight.detach(), weight)
