"""A hunt for false exact verdicts: generated pairs that differ only where small integers cannot see it.

Three families, each crossed with where it happens (in the candidate itself, inside a ``derived()`` build of the
candidate's weights, next to a random op whose values are overwritten) and with its own parameters:

1. narrowing hidden in an argument: ``dtype=`` of ``sum``/``cumsum``, an ``out=`` buffer, ``copy_`` into a
   buffer, ``.to`` — in float16, bfloat16, float32 and integer dtypes;
2. reading the bits: a threshold ``|v| < 2**k`` computed from bit-cast views (``view(uint8 / int16 / int32)``),
   slicing, ``cat`` and ``index_select`` / ``gather`` / ``take``, and a float32 view of the low word;
3. computing out of sight: ``Tensor.apply_``, ``map_``, another thread, a disabled dispatch mode.

Every pair is checked to differ (on a witness input outside the draws) and must not be called "equivalent
(exact)". ``exact_range`` is chosen per pair so that every draw survives the candidate's trick: the integer
trials agree, and only the construction of the exact path can refuse the proof.
"""
from __future__ import annotations

import collections
import itertools
import threading
from dataclasses import dataclass
from typing import Callable, List

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils._python_dispatch import _disable_current_modes

from foldconv.check import check_equivalence, derived

pytestmark = pytest.mark.claim("EQ-7")

Fn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Pair:
    family: str
    name: str
    trick: Fn  # float64 -> float64, the identity on every draw, not the identity elsewhere
    exact_range: int
    witness: torch.Tensor  # an input where the trick is not the identity


# --- family 1: narrowing ------------------------------------------------------------------------------------

_NARROW = {  # dtype -> (largest exact_range it keeps, a witness it changes)
    torch.float16: (1024, 2049.0),
    torch.bfloat16: (128, 257.0),
    torch.float32: (1024, 0.1),
    torch.int16: (1024, 40000.5),
    torch.int32: (1024, 0.5),
    torch.int64: (1024, -0.5),
}


def _narrowing() -> List[Pair]:
    pairs = []
    for dtype, (bound, value) in _NARROW.items():
        witness = torch.full((1, 2, 3), value, dtype=torch.float64)
        tricks = {
            "sum(dtype=)": lambda x, d=dtype: x.unsqueeze(-1).sum(-1, dtype=d).double(),
            "cumsum(dtype=)": lambda x, d=dtype: x.unsqueeze(-1).cumsum(-1, dtype=d).squeeze(-1).double(),
            "copy_ into a buffer": lambda x, d=dtype: torch.empty(x.shape, dtype=d).copy_(x).double(),
            ".to(dtype)": lambda x, d=dtype: x.to(d).to(torch.float64),
        }
        if dtype.is_floating_point:
            tricks.update({
                "add(out=)": lambda x, d=dtype: torch.add(x, 0, out=torch.empty(x.shape, dtype=d)).double(),
                "mul(out=)": lambda x, d=dtype: torch.mul(x, 1, out=torch.empty(x.shape, dtype=d)).double(),
                "cat(out=)": lambda x, d=dtype: torch.cat([x], out=torch.empty(x.shape, dtype=d)).double(),
                "sum(out=)": lambda x, d=dtype: torch.sum(x.unsqueeze(-1), -1, out=torch.empty(x.shape, dtype=d)).double(),
            })
        for name, trick in tricks.items():
            pairs.append(Pair("narrowing", f"{name} {dtype}", trick, bound, witness))
    return pairs


# --- family 2: reading the bits -----------------------------------------------------------------------------

def _below(bits: int) -> torch.Tensor:
    """1.0 for the top 16 bits of a float64 of magnitude below 2**bits (biased exponent < 1023 + bits), else 0."""
    top = torch.arange(65536)
    return (((top // 16) % 2048) < 1023 + bits).double()


def _top16(x: torch.Tensor, how: str) -> torch.Tensor:
    """The top 16 bits of each float64 as an int64 index, read through a bit-cast view of another dtype."""
    flat = x.reshape(-1)
    n = flat.shape[0]
    if how == "uint8":
        top = flat.view(torch.uint8).reshape(n, 8)[:, 6:8]
        return torch.cat([top, torch.zeros(n, 6, dtype=torch.uint8)], 1).reshape(-1).view(torch.int64)
    if how == "int16":
        top = flat.view(torch.int16).reshape(n, 4)[:, 3:4]
        return torch.cat([top, torch.zeros(n, 3, dtype=torch.int16)], 1).reshape(-1).view(torch.int64) % 65536
    top = flat.view(torch.int32).reshape(n, 2)[:, 1:2]  # sign, exponent and 20 mantissa bits
    word = torch.cat([top, torch.zeros(n, 1, dtype=torch.int32)], 1).reshape(-1).view(torch.int64)
    return (word % 2**32) // 2**16


def _bit_threshold(bits: int, how: str, pick: str) -> Fn:
    table = _below(bits)

    def trick(x: torch.Tensor) -> torch.Tensor:
        index = _top16(x, how)
        if pick == "index_select":
            mask = torch.index_select(table, 0, index)
        elif pick == "gather":
            mask = torch.gather(table, 0, index)
        else:
            mask = torch.take(table, index)
        return x * mask.reshape(x.shape)

    return trick


def _low_word(x: torch.Tensor) -> torch.Tensor:
    """x + 0 * (the low 32 bits of x read as float32): zero for small integers, NaN or Inf for some reals."""
    low = x.reshape(-1).view(torch.float32).reshape(-1, 2)[:, 0].reshape(x.shape)
    return x + low.double() * 0


def _bits() -> List[Pair]:
    pairs = []
    for bits, how, pick in itertools.product((11, 12, 13), ("uint8", "int16", "int32"), ("index_select", "gather", "take")):
        witness = torch.tensor([[[1.0, 2.0**bits, -(2.0**bits) - 3]]], dtype=torch.float64)
        pairs.append(Pair("bits", f"|v| < 2**{bits} via view({how}) and {pick}", _bit_threshold(bits, how, pick), 1024, witness))
    nan_low = torch.tensor([0x4000000000000000 | 0x7FC00000], dtype=torch.int64).view(torch.float64).reshape(1, 1, 1)
    pairs.append(Pair("bits", "low word as float32", _low_word, 1024, nan_low))
    return pairs


# --- family 3: out of sight ---------------------------------------------------------------------------------

def _keep(limit: float) -> Callable[[float], float]:
    return lambda v: v if abs(v) < limit else 0.0


def _threshold(x: torch.Tensor, limit: float) -> torch.Tensor:
    return torch.where(x.abs() < limit, x, torch.zeros_like(x))


def _unseen(how: str, limit: float) -> Fn:
    def apply(x):
        y = x.clone()
        y.apply_(_keep(limit))
        return y

    def map_(x):
        y = x.clone()
        y.map_(x, lambda a, b: _keep(limit)(b))
        return y

    def thread(x):
        out = {}
        worker = threading.Thread(target=lambda: out.update(y=_threshold(x, limit)))
        worker.start()
        worker.join()
        return out["y"]

    def modes_off(x):
        with _disable_current_modes():
            y = _threshold(x, limit)
        return y + 0

    return {"apply_": apply, "map_": map_, "thread": thread, "modes off": modes_off}[how]


def _out_of_sight() -> List[Pair]:
    pairs = []
    for how, limit in itertools.product(("apply_", "map_", "thread", "modes off"), (1500.0, 2048.0, 4096.0)):
        witness = torch.tensor([[[1.0, limit + 1.0]]], dtype=torch.float64)
        pairs.append(Pair("out of sight", f"{how} below {limit:g}", _unseen(how, limit), 1024, witness))
    return pairs


# --- where it happens ---------------------------------------------------------------------------------------

def _with_noise(trick: Fn) -> Fn:
    """The trick next to a random op (overwritten before use), as a user might leave an initialiser."""
    def f(x):
        noise = torch.empty_like(x).normal_()
        noise.zero_()
        return trick(x) + noise
    return f


def _build(trick: Fn) -> Callable[[nn.Module], nn.Module]:
    def build(m: nn.Conv1d) -> nn.Module:
        c = nn.Conv1d(m.in_channels, m.out_channels, m.kernel_size[0]).double()
        with torch.no_grad():
            c.weight.copy_(trick(m.weight.detach()))
            c.bias.copy_(m.bias)
        return c
    return build


def hunt(pairs: List[Pair], trials: int = 2) -> collections.Counter:
    """Check every pair in three places; returns counts per (family, outcome). A false exact is 'FALSE EXACT'."""
    counts: collections.Counter = collections.Counter()
    for pair in pairs:
        x = pair.witness
        assert not torch.equal(torch.nan_to_num(pair.trick(x), 7.0), x), pair.name  # the trick is not the identity
        for where in ("candidate", "next to a random op", "derived build"):
            if where == "derived build":
                conv = nn.Conv1d(2, 2, 1)
                report = check_equivalence(conv, derived(_build(pair.trick)), (1, 2, 3), dtypes=(), trials=trials,
                                           exact_range=pair.exact_range)
            else:
                candidate = pair.trick if where == "candidate" else _with_noise(pair.trick)
                report = check_equivalence(lambda t: t, candidate, tuple(x.shape[:-1]) + (4,), dtypes=(), trials=trials,
                                           exact_range=pair.exact_range)
            outcome = "FALSE EXACT" if (report.exact and report.ok) else ("sampled" if not report.exact else "exact, not equivalent")
            counts[(pair.family, outcome)] += 1
            if outcome == "FALSE EXACT":
                counts[("false exact", f"{pair.name} in the {where}")] += 1
    return counts


ALL = _narrowing() + _bits() + _out_of_sight()


def test_the_hunt_has_at_least_a_hundred_differing_pairs_per_run():
    families = collections.Counter(p.family for p in ALL)
    assert sum(families.values()) * 3 >= 100 and all(n * 3 >= 30 for n in families.values()), families


def test_hunt_fast_tier():
    counts = hunt(ALL[::6])  # every family, every place; the slow tier runs every pair
    assert not [k for k in counts if k[1] == "FALSE EXACT" or k[0] == "false exact"], counts


@pytest.mark.slow
def test_hunt_every_pair_in_every_place():
    counts = hunt(ALL)
    false = {k: n for k, n in counts.items() if k[0] == "false exact"}
    assert not false, false
    assert sum(counts.values()) >= 100, counts


def test_the_hunt_can_fail(monkeypatch):
    """A checker that trusted the integer trials alone would be caught: every pair it calls exact is counted."""
    import sys

    from foldconv.check import EquivalenceReport, Verdict

    trusting = lambda *args, **kwargs: EquivalenceReport(Verdict.EQUIVALENT, True, (1,), (1,))  # noqa: E731
    monkeypatch.setattr(sys.modules[__name__], "check_equivalence", trusting)
    counts = hunt(ALL[:2])
    assert sum(n for k, n in counts.items() if k[0] == "false exact") == 6, counts


# --- a fresh hunt: new parameters, shapes and places on every run ----------------------------------------------

_FAMILIES = ("narrowing", "bits", "out of sight")


@st.composite
def _fresh_pair(draw) -> tuple:
    """A differing pair drawn afresh: a family member with drawn parameters, an input shape and a place."""
    family = draw(st.sampled_from(_FAMILIES))
    if family == "narrowing":
        dtype = draw(st.sampled_from(sorted(_NARROW, key=str)))
        bound, value = _NARROW[dtype]
        members = [p for p in _narrowing() if p.name.endswith(str(dtype))]
        pair = draw(st.sampled_from(members))
        exact_range = draw(st.integers(2, bound))
    elif family == "bits":
        bits = draw(st.integers(11, 16))
        how = draw(st.sampled_from(("uint8", "int16", "int32")))
        pick = draw(st.sampled_from(("index_select", "gather", "take")))
        value = float(draw(st.sampled_from((2.0**bits, -(2.0**bits) - 3, 2.0**bits + 0.5))))
        pair = Pair("bits", f"|v| < 2**{bits} via view({how}) and {pick}", _bit_threshold(bits, how, pick), 1024,
                    torch.tensor([[[value]]], dtype=torch.float64))
        exact_range = draw(st.integers(2, 1024))
    else:
        how = draw(st.sampled_from(("apply_", "map_", "thread", "modes off")))
        limit = float(draw(st.integers(1100, 10**6)))
        pair = Pair("out of sight", f"{how} below {limit:g}", _unseen(how, limit), 1024,
                    torch.tensor([[[limit + 1.0]]], dtype=torch.float64))
        exact_range = draw(st.integers(2, 1024))
    channels, length = draw(st.integers(1, 3)), draw(st.integers(1, 6))
    where = draw(st.sampled_from(("candidate", "next to a random op", "derived build")))
    return pair, exact_range, (1, channels, length), where


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(_fresh_pair())
def test_a_fresh_hunt_finds_no_false_exact_verdict(drawn):
    pair, exact_range, shape, where = drawn
    assert not torch.equal(torch.nan_to_num(pair.trick(pair.witness), 7.0), pair.witness), pair.name
    if where == "derived build":
        conv = nn.Conv1d(shape[1], shape[1], 1)
        report = check_equivalence(conv, derived(_build(pair.trick)), shape, dtypes=(), trials=2, exact_range=exact_range)
    else:
        candidate = pair.trick if where == "candidate" else _with_noise(pair.trick)
        report = check_equivalence(lambda t: t, candidate, shape, dtypes=(), trials=2, exact_range=exact_range)
    assert not (report.exact and report.ok), f"false exact verdict: {pair.name} in the {where}: {report.summary()}"
