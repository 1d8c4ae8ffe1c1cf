"""Mutation test of the checker: every function-changing mutant is caught, no true equivalence is rejected.

Each case is a small conv and its fold (random dims, r, channel order, channels, kernel, stride, padding,
map size), drawn from a seeded generator. The *true* pair is the conv and ``fold_weight`` of it on
``depth_to_space(x)``; each *mutant* changes one thing that changes the function: one folded weight entry or
the bias entry (by a non-zero integer), two folded weights with different values swapped (a wrong index),
the input folded with a channel order whose channel map differs, or the folded stride or padding off by
one. The sizes are chosen so every folded weight is read (``P <= S`` and at least two outputs per axis), so
no mutant is an equivalent one. Verdicts come from the integer-exact kernel of :mod:`foldconv.check.exact`
(the one ``check_equivalence`` and the sweep use); a sample also goes through ``check_equivalence``.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Dict, Iterator, List, Tuple

import pytest
import torch
import torch.nn.functional as F

from foldconv import Verdict, check_equivalence, depth_to_space, fold_channel_map, fold_weight
from foldconv.check.exact import combine, compare, integers

CONV = {1: F.conv1d, 2: F.conv2d}
ORDERS = ("crd", "dcr", "focus")
KINDS = ("weight", "bias", "swap", "order", "stride", "padding")


@dataclass(frozen=True)
class Case:
    dims: int
    r: Tuple[int, ...]
    order: str
    G: int
    out: int
    k: int
    s: int
    p: int
    n: int

    @property
    def cin(self) -> int:
        return self.G * int(torch.tensor(self.r).prod())


def cases(count: int, seed: int) -> Iterator[Case]:
    gen = torch.Generator().manual_seed(seed)

    def pick(options):
        return options[int(torch.randint(len(options), (1,), generator=gen))]

    for _ in range(count):
        dims = pick((1, 2))
        r = (pick((2, 3, 4)),) if dims == 1 else pick(((2, 2), (3, 3), (2, 1), (1, 2), (2, 3)))
        k, s = pick((1, 2, 3)), pick((1, 2))
        p = pick(tuple(range(s + 1)))  # P <= S: the first output row past the padding reads every kernel row
        yield Case(dims, r, pick(ORDERS), pick((1, 2)), pick((1, 2)), k, s, p, n=k + s + pick((0, 1, 2)))


def _scaled(values: Tuple[int, ...], c: Case) -> Tuple[int, ...]:
    return tuple(f * v for f, v in zip(c.r, values))


def folded_conv(c: Case, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, *, x_order: str, stride, padding) -> torch.Tensor:
    return CONV[c.dims](depth_to_space(x, c.r, x_order, dims=c.dims), weight, bias, stride, padding)


def _mutant(kind: str, c: Case, w: torch.Tensor, fw: torch.Tensor, b: torch.Tensor, gen: torch.Generator):
    """(weight, bias, x_order, stride, padding) of a mutant, or None where ``kind`` cannot change this case."""
    stride, padding = _scaled((c.s,) * c.dims, c), _scaled((c.p,) * c.dims, c)
    weight, bias, x_order = fw.clone(), b.clone(), c.order
    delta = int(torch.randint(1, 4, (1,), generator=gen)) * (1 if bool(torch.randint(2, (1,), generator=gen)) else -1)
    flat = weight.view(-1)
    if kind == "weight":
        flat[int(torch.randint(flat.numel(), (1,), generator=gen))] += delta
    elif kind == "bias":
        bias[int(torch.randint(bias.numel(), (1,), generator=gen))] += delta
    elif kind == "swap":
        i = int(torch.randint(flat.numel(), (1,), generator=gen))
        others = torch.nonzero(flat != flat[i]).flatten()
        if not len(others):
            return None
        j = int(others[int(torch.randint(len(others), (1,), generator=gen))])
        flat[i], flat[j] = flat[j].clone(), flat[i].clone()
    elif kind == "order":
        same = fold_channel_map(c.cin, c.r, c.order, dims=c.dims)
        wrong = [o for o in ORDERS if not torch.equal(fold_channel_map(c.cin, c.r, o, dims=c.dims), same)]
        if not wrong:
            return None
        x_order = wrong[int(torch.randint(len(wrong), (1,), generator=gen))]
    elif kind == "stride":
        axis = int(torch.randint(c.dims, (1,), generator=gen))
        stride = tuple(v + 1 if a == axis else v for a, v in enumerate(stride))
    else:
        axis = int(torch.randint(c.dims, (1,), generator=gen))
        padding = tuple(v + 1 if a == axis else v for a, v in enumerate(padding))
    return weight, bias, x_order, stride, padding


def run_cases(count: int, seed: int, trials: int = 2) -> Tuple[int, int, Dict[str, int], List]:
    """(true equivalences, mutants, mutants per kind, failures): each case gives one of each."""
    failures: List = []
    kinds: Dict[str, int] = collections.Counter()
    true_count = mutants = 0
    for index, c in enumerate(cases(count, seed)):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + index)
        w = integers((c.out, c.cin) + (c.k,) * c.dims, gen)
        b = integers((c.out,), gen)
        fw = fold_weight(w, c.r, c.order).weight
        mutant = None
        for kind in KINDS[index % len(KINDS):] + KINDS[: index % len(KINDS)]:
            mutant = _mutant(kind, c, w, fw, b, gen)
            if mutant is not None:
                break
        stride, padding = _scaled((c.s,) * c.dims, c), _scaled((c.p,) * c.dims, c)
        true_verdicts, mutant_verdicts = [], []
        for _ in range(trials):
            x = integers((2, c.cin) + (c.n,) * c.dims, gen)
            ref = CONV[c.dims](x, w, b, c.s, c.p)
            true_verdicts.append(compare(ref, folded_conv(c, x, fw, b, x_order=c.order, stride=stride, padding=padding)))
            weight, bias, x_order, m_stride, m_padding = mutant
            mutant_verdicts.append(compare(ref, folded_conv(c, x, weight, bias, x_order=x_order, stride=m_stride, padding=m_padding)))
        true_count += 1
        mutants += 1
        kinds[kind] += 1
        if combine(true_verdicts) is not Verdict.EQUIVALENT:
            failures.append(("false alarm", c, combine(true_verdicts)))
        if combine(mutant_verdicts) is Verdict.EQUIVALENT:
            failures.append(("missed", kind, c))
    return true_count, mutants, dict(kinds), failures


def end_to_end(count: int, seed: int) -> List:
    """The same mutants of kind weight/bias/swap, as modules, through check_equivalence itself."""
    failures = []
    for index, c in enumerate(cases(count, seed)):
        gen = torch.Generator().manual_seed(seed + index)
        conv = (torch.nn.Conv1d if c.dims == 1 else torch.nn.Conv2d)(c.cin, c.out, c.k, stride=c.s, padding=c.p).double()
        with torch.no_grad():
            conv.weight.copy_(integers(conv.weight.shape, gen, 7))
            conv.bias.copy_(integers(conv.bias.shape, gen, 7))
        fw = fold_weight(conv.weight, c.r, c.order).weight
        kind = ("weight", "bias", "swap")[index % 3]
        mutant = _mutant(kind, c, conv.weight, fw, conv.bias.detach(), gen) or _mutant("weight", c, conv.weight, fw, conv.bias.detach(), gen)
        weight, bias, x_order, stride, padding = mutant
        big = lambda z, weight=weight, bias=bias, stride=stride, padding=padding: CONV[c.dims](z, weight, bias, stride, padding)  # noqa: E731
        to_folded = lambda z, c=c: depth_to_space(z, c.r, c.order, dims=c.dims)  # noqa: E731
        report = check_equivalence(conv, big, (2, c.cin) + (c.n,) * c.dims, input_transform=to_folded, dtypes=(), trials=2)
        if report.verdict is Verdict.EQUIVALENT or not report.exact:
            failures.append((kind, c, report.summary()))
        good = lambda z, fw=fw, c=c: CONV[c.dims](z, fw, conv.bias, _scaled((c.s,) * c.dims, c), _scaled((c.p,) * c.dims, c))  # noqa: E731
        report = check_equivalence(conv, good, (2, c.cin) + (c.n,) * c.dims, input_transform=to_folded, dtypes=(), trials=2)
        if not (report.ok and report.exact):
            failures.append(("false alarm", c, report.summary()))
    return failures


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convs: thread start-up costs more than it saves, and a busy machine makes it far worse."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.claim("EQ-5")
def test_mutants_are_caught_and_true_equivalences_pass_fast_tier():
    true_count, mutants, kinds, failures = run_cases(240, seed=1)
    assert not failures, failures[:5]
    assert true_count == mutants == 240 and set(kinds) == set(KINDS), kinds
    assert not end_to_end(30, seed=2)


@pytest.mark.slow
@pytest.mark.claim("EQ-5")
def test_ten_thousand_mutants_and_ten_thousand_true_equivalences():
    true_count, mutants, kinds, failures = run_cases(10_200, seed=7)
    assert not failures, failures[:5]
    assert true_count >= 10_000 and mutants >= 10_000
    assert all(kinds[k] >= 1_000 for k in KINDS), kinds
    assert not end_to_end(300, seed=8)


def test_the_mutation_harness_can_fail(monkeypatch):
    """A kernel that always said "equivalent" would miss every mutant; one that never did, every true pair."""
    import sys

    module = sys.modules[__name__]
    monkeypatch.setattr(module, "compare", lambda a, b: Verdict.EQUIVALENT)
    assert len(run_cases(12, seed=3)[3]) == 12
    monkeypatch.setattr(module, "compare", lambda a, b: Verdict.NOT_EQUIVALENT)
    assert len(run_cases(12, seed=3)[3]) == 12
