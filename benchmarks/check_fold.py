"""check_fold: exact verdicts per minute against the package before the fast route and same-run anchors.

    python benchmarks/check_fold.py                          # against 76391c4 (the checker before its fast route)
    python benchmarks/check_fold.py --before-rev none        # this checkout and the anchors only
    python benchmarks/check_fold.py --rounds 9 --threads 2

Timed with benchmarks/harness.py. Every route checks the same configurations once per call, in two groups: the sweep's regime
(1-2 folded channels, 2 outputs, maps of the kernel + 3; 1-d, 2-d and 3-d; strides, padding modes, dilation,
groups, orders crd/dcr/focus, r = 2..4), where a verdict's cost is overhead, and larger convs at check_fold's
default input size, where the convolutions dominate. Routes: ``check_fold`` with ``dtypes=()`` (the verdict
alone, as the sweep calls it) and with its defaults (float32 error statistics too), for this checkout and for the
package at ``--before-rev`` (loaded as ``foldconv_before``). Anchors: one float64 ``conv`` forward of each
configuration (the least a verdict can cost) and one ``fold_weight`` of its weight. A speed-up before / after is
taken round by round; goal: >= 10x with the same soundness (paper_notes/checker.md says why the plain-conv route
is sound). The first call in a fresh process is measured by benchmarks/first_call.py.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from typing import Callable, Dict, List, Tuple

import torch
from harness import ROOT, add_arguments, compare, export_revision, finish, goal, start

from foldconv._tables import markdown_table

BEFORE = "76391c4"  # the parent of the commit that gave check_fold its structural route

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


def routes_of(packages: List[str], group: str) -> Dict[str, Callable[[], object]]:
    """One callable per route: a pass over the group's configurations."""
    routes: Dict[str, Callable[[], object]] = {}
    for name in packages:
        cases = build(name, group)
        for label, k in (("check_fold(dtypes=())", 0), ("check_fold()", 1)):
            calls = [c[k] for c in cases]
            routes[f"{name}.{label}"] = lambda calls=calls: [call() for call in calls]
        if name == "foldconv":
            for label, k in (("anchor: float64 conv forward", 2), ("anchor: fold_weight", 3)):
                calls = [c[k] for c in cases]
                routes[label] = lambda calls=calls: [call() for call in calls]
    return routes


def main(argv=None) -> int:
    parser = add_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]), block=0.2)
    parser.add_argument("--before-rev", default=BEFORE, help="the git revision whose check_fold is timed alongside ('none': skip)")
    args = parser.parse_args(argv)
    started = start(args, f"benchmarks/check_fold.py: exact verdicts, this checkout against {args.before_rev}")
    sys.path.insert(0, ROOT)
    packages = ["foldconv"]
    goals = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.before_rev != "none":
            sys.path.insert(0, export_revision(args.before_rev, tmp))
            packages.append("foldconv_before")
        for group, configs in CONFIGS.items():
            res = compare(routes_of(packages, group), anchor="anchor: float64 conv forward", rounds=args.rounds, block=args.block)
            n = len(configs)
            rows = []
            for label in res.seconds:
                per = res.time(label).scaled(1e3 / n)
                rows.append({"route": label, "ms per verdict": per.describe("", 3), "verdicts per minute": f"{60e3 / per.median:,.0f}",
                             "time / conv anchor": res.slowdown(label).describe("x", 1)})
            print(f"\n## {group} configurations ({n}), one pass = {n} verdicts\n\n{markdown_table(rows)}")
            if "foldconv_before" in packages:
                speed = []
                for route in ("check_fold(dtypes=())", "check_fold()"):
                    ratio = res.speedup(f"foldconv.{route}", f"foldconv_before.{route}")
                    speed.append({"route": route, "speed-up after / before": ratio.describe("x", 1), "goal >= 10x": goal(ratio, 10.0)})
                    goals.append((f"{route}, {group} configurations: >= 10x {args.before_rev}",
                                  f"{ratio.describe('x', 1)}: {goal(ratio, 10.0)}"))
                print("\n" + markdown_table(speed))
    if goals:
        print("\n## Goals\n\n" + markdown_table([{"goal": g, "measured": m} for g, m in goals]))
    finish(started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
