"""check_fold: exact verdicts per minute and the first call's cost, against anchors timed in the same run.

    python benchmarks/check_fold.py                          # this checkout, anchors only
    python benchmarks/check_fold.py --before-rev 76391c4     # and the package at a git revision, interleaved
    python benchmarks/check_fold.py --rounds 9 --fresh 7     # more rounds, more fresh processes

Throughput: every route checks the same configurations once per round, in two groups: the sweep's regime
(1-2 folded channels, 2 outputs, maps of the kernel + 3; 1-d, 2-d and 3-d; strides, padding modes, dilation,
groups, orders crd/dcr/focus, r = 2..4), where a verdict's cost is overhead, and larger convs at check_fold's
default input size, where the convolutions dominate; the rounds interleave the routes (their
order rotates), torch runs on one thread, and each route's time per verdict is the median over the rounds,
with the interval from the smallest to the largest round. A ratio between two routes is taken round by
round (both measured under the same load) and is "inconclusive" when its interval holds 1.0. Routes:
``check_fold`` with ``dtypes=()`` (the verdict alone, as the sweep calls it) and with its defaults (float32
error statistics too), for this checkout and, with ``--before-rev``, for the package at that revision (loaded
as ``foldconv_before``). Anchors: one float64 ``conv`` forward of each configuration (the least a verdict can
cost) and one ``fold_weight`` of its weight.

First call: fresh processes (``--fresh``, alternating the packages) import torch and the package, then time
the first ``check_fold`` and the same call again; the first call's cost beyond the imports is the first time
(the goal: at most 50 ms), and first minus second is what only a first call pays. Anchor: the first ``conv2d``
call of a fresh process.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Tuple

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (dims, in_channels, out_channels, kernel, stride, padding, dilation, groups, padding_mode, r, order)
# The sweep's regime: G = 1 or 2 folded channels (in_channels = G * prod(r)), 2 outputs, maps of the effective
# kernel + 3 (foldconv/experiments/sweep/grid.py), every section's kind of conv.
SWEEP = [
    (2, 4, 2, 3, 1, 1, 1, 1, "zeros", 2, "crd"),
    (2, 8, 2, 3, 2, 1, 1, 1, "zeros", 2, "dcr"),
    (2, 4, 2, 1, 1, 0, 1, 1, "zeros", 2, "focus"),
    (2, 9, 2, 2, 1, 0, 1, 1, "zeros", 3, "crd"),
    (2, 32, 2, 3, 1, 1, 1, 1, "zeros", 4, "dcr"),
    (2, 8, 4, 3, 1, 2, 2, 2, "zeros", 2, "crd"),
    (2, 8, 8, 3, 1, 1, 1, 8, "zeros", 2, "dcr"),
    (2, 4, 2, 3, 1, 1, 1, 1, "circular", 2, "crd"),
    (2, 4, 2, 3, 2, 0, 1, 1, "reflect", 2, "dcr"),
    (1, 2, 2, 3, 1, 1, 1, 1, "zeros", 2, "crd"),
    (1, 6, 2, 3, 2, 1, 1, 1, "circular", 3, "dcr"),
    (3, 8, 2, 1, 1, 0, 1, 1, "zeros", 2, "crd"),
    (3, 8, 2, 2, 1, 0, 1, 1, "zeros", 2, "dcr"),
]
# Larger convs at check_fold's default input size (max(8, 2k) per axis): the convolutions themselves dominate.
LARGER = [
    (2, 16, 8, 3, 2, 1, 1, 1, "zeros", 2, "dcr"),
    (2, 32, 8, 3, 1, 1, 1, 1, "zeros", 4, "crd"),
    (2, 64, 8, 3, 2, 1, 1, 1, "zeros", 4, "dcr"),
    (2, 16, 16, 3, 1, 1, 1, 16, "zeros", 2, "crd"),
    (2, 8, 4, 5, 2, 0, 1, 1, "replicate", 2, "crd"),
    (3, 8, 8, 3, 2, 1, 1, 2, "zeros", 2, "crd"),
]
CONFIGS = {"sweep": SWEEP, "larger": LARGER}


def _size(group: str, dims: int, k: int, d: int) -> tuple:
    effective = d * (k - 1) + 1
    return (effective + 3,) * dims if group == "sweep" else (max(8, 2 * effective),) * dims


def build(package: str, group: str) -> List[Tuple[Callable[[], object], ...]]:
    """Per configuration: (verdict, defaults, conv anchor, fold_weight anchor) for ``package``'s check_fold."""
    pkg = importlib.import_module(package)
    torch.manual_seed(0)
    cases = []
    for dims, cin, cout, k, s, p, d, g, mode, r, order in CONFIGS[group]:
        conv = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)[dims - 1](cin, cout, k, s, p, d, g, padding_mode=mode)
        size = _size(group, dims, k, d)
        x = torch.randn((2, cin) + size, dtype=torch.float64)
        w = conv.weight.detach().double()
        pad = tuple(q for _ in range(dims) for q in (p, p)) if mode != "zeros" else None
        fn = (torch.nn.functional.conv1d, torch.nn.functional.conv2d, torch.nn.functional.conv3d)[dims - 1]

        def anchor(x=x, w=w, pad=pad, fn=fn, s=s, p=p, d=d, g=g, mode=mode):
            xin = torch.nn.functional.pad(x, pad, mode=mode) if pad else x
            return fn(xin, w, None, s, 0 if pad else p, d, g)

        cases.append((
            lambda conv=conv, r=r, order=order, size=size: pkg.check_fold(conv, r, order, input_size=size, dtypes=()),
            lambda conv=conv, r=r, order=order, size=size: pkg.check_fold(conv, r, order, input_size=size),
            anchor,
            lambda w=w, r=r, order=order, g=g, d=d: pkg.fold_weight(w, r, order, groups=g, dilation=d),
        ))
        assert bool(cases[-1][0]()), f"{package}: configuration {CONFIGS[group][len(cases) - 1]} not equivalent"
    return cases


def one_pass(calls: List[Callable[[], object]]) -> float:
    start = time.perf_counter()
    for call in calls:
        call()
    return (time.perf_counter() - start) / len(calls)


def interval(values: List[float]) -> Tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def throughput(routes: Dict[str, List[Callable[[], object]]], rounds: int) -> Dict[str, List[float]]:
    """Seconds per call, per route and round; the routes' order rotates from round to round."""
    names = list(routes)
    for name in names:  # warm every route (caches, first calls) before measuring
        one_pass(routes[name])
    times: Dict[str, List[float]] = {name: [] for name in names}
    for i in range(rounds):
        for name in names[i % len(names):] + names[: i % len(names)]:
            times[name].append(one_pass(routes[name]))
    return times


FIRST_CALL = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[2])
pkg = __import__(sys.argv[1])
t1 = time.perf_counter()
conv = torch.nn.Conv2d(8, 4, 3, padding=1)
a = time.perf_counter(); pkg.check_fold(conv, 2, dtypes=()); b = time.perf_counter()
pkg.check_fold(conv, 2, dtypes=()); c = time.perf_counter()
x, w = torch.randn(1, 4, 8, 8), torch.randn(4, 4, 3, 3)
d = time.perf_counter(); torch.nn.functional.conv2d(x, w); e = time.perf_counter()
print(json.dumps({"import": t1 - t0, "first": b - a, "second": c - b, "conv_first": e - d,
                  "dynamo": "torch._dynamo" in sys.modules}))
"""


def first_calls(packages: Dict[str, str], fresh: int) -> Dict[str, List[dict]]:
    results: Dict[str, List[dict]] = {name: [] for name in packages}
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for i in range(fresh):
        for name, path in (list(packages.items()) if i % 2 == 0 else list(packages.items())[::-1]):
            out = subprocess.run([sys.executable, "-c", FIRST_CALL, name, path], capture_output=True, text=True, env=env, check=True)
            results[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    return results


def export(rev: str, into: str) -> str:
    """The package at git revision ``rev`` as ``foldconv_before`` under ``into``."""
    archive = subprocess.run(["git", "-C", ROOT, "archive", rev, "foldconv"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    os.rename(os.path.join(into, "foldconv"), os.path.join(into, "foldconv_before"))
    return into


def table(times: Dict[str, List[float]], before: bool) -> None:
    print("| route | ms per verdict (median [min, max]) | verdicts per minute | x conv anchor |")
    print("|---|---|---|---|")
    conv = times["anchor: float64 conv forward"]
    for name, values in times.items():
        med, lo, hi = interval(values)
        ratio = interval([v / c for v, c in zip(values, conv)])
        print(f"| {name} | {med * 1e3:.3f} [{lo * 1e3:.3f}, {hi * 1e3:.3f}] | {60 / med:,.0f} | {ratio[0]:.1f} [{ratio[1]:.1f}, {ratio[2]:.1f}] |")
    if before:
        print("\n| speed-up, before / after (round by round) | median [min, max] | |")
        print("|---|---|---|")
        for route in ("check_fold(dtypes=())", "check_fold()"):
            ratio = interval([b / a for b, a in zip(times[f"foldconv_before.{route}"], times[f"foldconv.{route}"])])
            verdict = "inconclusive" if ratio[1] <= 1.0 <= ratio[2] else ("faster" if ratio[0] > 1 else "slower")
            print(f"| {route} | {ratio[0]:.1f}x [{ratio[1]:.1f}, {ratio[2]:.1f}] | {verdict} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before-rev", default=None, help="a git revision whose check_fold is timed alongside")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--fresh", type=int, default=5, help="fresh processes per package for the first call")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    sys.path.insert(0, ROOT)
    packages = {"foldconv": ROOT}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.before_rev:
            packages["foldconv_before"] = export(args.before_rev, tmp)
            sys.path.insert(0, tmp)
        for group in CONFIGS:
            routes: Dict[str, List[Callable[[], object]]] = {}
            for name in packages:
                cases = build(name, group)
                routes[f"{name}.check_fold(dtypes=())"] = [c[0] for c in cases]
                routes[f"{name}.check_fold()"] = [c[1] for c in cases]
                if name == "foldconv":
                    routes["anchor: float64 conv forward"] = [c[2] for c in cases]
                    routes["anchor: fold_weight"] = [c[3] for c in cases]
            results[group] = throughput(routes, args.rounds)
        firsts = first_calls(packages, args.fresh)
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}, {args.rounds} interleaved rounds")
    for group, times in results.items():
        print(f"\n{group} configurations ({len(CONFIGS[group])}):\n")
        table(times, bool(args.before_rev))
    print("\n| package | import s | first check_fold ms (goal <= 50) | the same call again ms | first - again ms | "
          "first conv2d ms (anchor) | torch._dynamo imported |")
    print("|---|---|---|---|---|---|---|")
    for name, runs in firsts.items():
        med = {key: statistics.median(r[key] for r in runs) for key in ("import", "first", "second", "conv_first")}
        extra = statistics.median(r["first"] - r["second"] for r in runs)
        dynamo = sum(r["dynamo"] for r in runs)
        print(f"| {name} | {med['import']:.2f} | {med['first'] * 1e3:.1f} | {med['second'] * 1e3:.1f} | {extra * 1e3:.1f} | "
              f"{med['conv_first'] * 1e3:.2f} | {dynamo}/{len(runs)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
