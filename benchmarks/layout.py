"""Layout ops against the anchors they must match: torch's pixel_shuffle/unshuffle, a raw reshape/permute, a build.

    python benchmarks/layout.py [--mb 32] [--r 2 4 8 16] [--device cpu] [--threads 1] [--rounds 7] [--block 0.05]

Goals (ratios against anchors timed in the same run, benchmarks/harness.py):

- large tensors (``--mb`` MiB of float32, unpacked map ``(1, G, 512, 512)``): every order of depth_to_space
  (6 permutations of ``c rh rw``) at least as fast as ``pixel_shuffle``, every order of space_to_depth at least as
  fast as ``pixel_unshuffle`` (speedup >= 1). ``clone`` of the same bytes is shown as the copy's floor;
- tiny tensors (the sweep's regime, ``(2, 2 r^2, 5, 5)``): each order within 2x of the raw
  ``reshape/permute/reshape`` of that order written out by hand (speedup >= 0.5);
- fold_conv builds without a wasted initialisation: its time against building the folded ``nn.Conv2d`` with
  torch's random initialisation and then loading the folded weight (what a build that initialises costs at
  least; speedup > 1) and against ``fold_weight`` alone (the work a build cannot avoid).

Before timing, every op is checked against its anchor (equal tensors), so that each ratio compares the same work.
"""
from __future__ import annotations

import argparse
import itertools
import sys

import torch
import torch.nn.functional as F
from harness import add_arguments, compare, finish, goal, start, tally

from foldconv import depth_to_space, fold_conv, fold_weight, space_to_depth
from foldconv._tables import markdown_table
from foldconv.layout import order_string

ORDERS = [" ".join(p) for p in itertools.permutations(("c", "rh", "rw"))]
ALIASES = {order_string(a): a for a in ("crd", "dcr", "focus")}


def name(order: str) -> str:
    return f"{order} ({ALIASES[order]})" if order in ALIASES else order


def raw_d2s(x: torch.Tensor, r: int, order: str):
    """depth_to_space of ``order`` written out as one reshape / permute / reshape (sizes fixed in advance)."""
    names = order.split()
    n, c, h, w = x.shape
    sizes = {"c": c // (r * r), "rh": r, "rw": r}
    view = (n, *(sizes[k] for k in names), h, w)
    perm = (0, 1 + names.index("c"), 4, 1 + names.index("rh"), 5, 1 + names.index("rw"))
    out = (n, sizes["c"], h * r, w * r)
    return lambda: x.reshape(view).permute(perm).reshape(out)


def raw_s2d(y: torch.Tensor, r: int, order: str):
    names = order.split()
    n, g, hr, wr = y.shape
    view = (n, g, hr // r, r, wr // r, r)
    at = {"c": 1, "rh": 3, "rw": 5}
    perm = (0, *(at[k] for k in names), 2, 4)
    out = (n, g * r * r, hr // r, wr // r)
    return lambda: y.reshape(view).permute(perm).reshape(out)


def same(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if not torch.equal(a, b):
        sys.exit(f"{what}: the op and its anchor differ, the timings would compare different work")


def large(args, rows: list, goals: list) -> None:
    size = 512
    for r in args.r:
        g = max(1, int(args.mb * 2**20 / 4 / size**2))
        y = torch.randn(1, g, size, size, device=args.device)
        x = F.pixel_unshuffle(y, r)
        cases = {"pixel_shuffle": lambda x=x, r=r: F.pixel_shuffle(x, r), "pixel_unshuffle": lambda y=y, r=r: F.pixel_unshuffle(y, r),
                 "clone": lambda x=x: x.clone()}
        for order in ORDERS:
            same(depth_to_space(x, r, order), raw_d2s(x, r, order)(), f"depth_to_space {order}")
            same(space_to_depth(y, r, order), raw_s2d(y, r, order)(), f"space_to_depth {order}")
            cases[f"d2s {order}"] = lambda x=x, r=r, order=order: depth_to_space(x, r, order)
            cases[f"s2d {order}"] = lambda y=y, r=r, order=order: space_to_depth(y, r, order)
        same(depth_to_space(x, r), F.pixel_shuffle(x, r), "depth_to_space crd vs pixel_shuffle")
        res = compare(cases, anchor="pixel_shuffle", rounds=args.rounds, block=args.block)
        for op, anchor in (("d2s", "pixel_shuffle"), ("s2d", "pixel_unshuffle")):
            for order in ORDERS:
                label = f"{op} {order}"
                ratio = res.speedup(label, anchor)
                rows.append({"r": r, "op": f"{'depth_to_space' if op == 'd2s' else 'space_to_depth'} {name(order)}",
                             "ms": res.time(label).scaled(1e3).describe("", 2), "speedup vs torch": ratio.describe(),
                             "vs clone": res.speedup(label, "clone").describe(), "goal >= 1": goal(ratio, 1.0)})
        rows.append({"r": r, "op": "anchors: pixel_shuffle / pixel_unshuffle / clone ms",
                     "ms": " / ".join(res.time(k).scaled(1e3).describe("", 2) for k in ("pixel_shuffle", "pixel_unshuffle", "clone"))})
    verdicts = [row["goal >= 1"] for row in rows if "goal >= 1" in row]
    goals.append((f"layout, large ({args.mb:g} MiB, r = {', '.join(map(str, args.r))}): every order >= pixel_shuffle/unshuffle",
                  tally(verdicts)))


def tiny(args, rows: list, goals: list) -> None:
    verdicts = []
    for r in (2, 3):
        x = torch.randn(2, 2 * r * r, 5, 5, device=args.device)
        y = F.pixel_shuffle(x, r)
        cases = {}
        for order in ORDERS:
            for op, fn, raw, t in (("d2s", depth_to_space, raw_d2s, x), ("s2d", space_to_depth, raw_s2d, y)):
                same(fn(t, r, order), raw(t, r, order)(), f"{op} {order} (tiny)")
                cases[f"{op} {order}"] = lambda fn=fn, t=t, r=r, order=order: fn(t, r, order)
                cases[f"raw {op} {order}"] = raw(t, r, order)
        res = compare(cases, anchor=f"raw d2s {ORDERS[0]}", rounds=args.rounds, block=args.block)
        for op in ("d2s", "s2d"):
            for order in ORDERS:
                ratio = res.speedup(f"{op} {order}", f"raw {op} {order}")
                verdicts.append(goal(ratio, 0.5))
                rows.append({"r": r, "op": f"{'depth_to_space' if op == 'd2s' else 'space_to_depth'} {name(order)}",
                             "us": res.time(f"{op} {order}").scaled(1e6).describe("", 1),
                             "raw us": res.time(f"raw {op} {order}").scaled(1e6).describe("", 1),
                             "speedup vs raw": ratio.describe(), "goal >= 0.5": goal(ratio, 0.5)})
    goals.append(("layout, tiny ((2, 2 r^2, 5, 5), r = 2, 3): every order within 2x of a raw reshape/permute", tally(verdicts)))


def build(args, rows: list, goals: list) -> None:
    torch.manual_seed(0)
    for cin, cout, k, r in ((256, 256, 3, 16), (64, 64, 3, 4)):
        conv = torch.nn.Conv2d(cin, cout, k, padding=k // 2)
        big = fold_conv(conv, r)
        shape = dict(in_channels=big.in_channels, out_channels=big.out_channels, kernel_size=big.kernel_size,
                     stride=big.stride, padding=big.padding)
        weight, bias = conv.weight.detach(), conv.bias.detach()

        def overwrite(shape=shape, weight=weight, r=r, bias=bias):
            # what a build that initialises and then loads the folded weight costs at least
            module = torch.nn.Conv2d(**shape)
            with torch.no_grad():
                module.weight.copy_(fold_weight(weight, r).weight)
                module.bias.copy_(bias)
            return module

        cases = {"fold_conv": lambda conv=conv, r=r: fold_conv(conv, r), "initialise, then overwrite": overwrite,
                 "fold_weight": lambda weight=weight, r=r: fold_weight(weight, r)}
        res = compare(cases, anchor="initialise, then overwrite", rounds=args.rounds, block=args.block)
        ratio = res.speedup("fold_conv")
        rows.append({"conv": f"Conv2d({cin}, {cout}, {k}) r={r} -> weight {tuple(big.weight.shape)}",
                     "fold_conv ms": res.time("fold_conv").scaled(1e3).describe("", 3),
                     "initialise, then overwrite ms": res.time("initialise, then overwrite").scaled(1e3).describe("", 3),
                     "fold_weight ms": res.time("fold_weight").scaled(1e3).describe("", 3),
                     "fold_conv speedup vs initialise-then-overwrite": ratio.describe(),
                     "fold_conv / fold_weight": res.slowdown("fold_conv", "fold_weight").describe()})
        goals.append((f"fold_conv builds without a wasted init ({cin}->{cout}, k{k}, r={r}): faster than initialise-then-overwrite",
                      f"{ratio.describe()}: {goal(ratio, 1.0)}"))


def main(argv=None) -> int:
    parser = add_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--mb", type=float, default=32.0, help="size of the large tensors in MiB (float32)")
    parser.add_argument("--r", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--device", default="cpu", help="the layout ops' device (fold_conv builds on the CPU)")
    args = parser.parse_args(argv)
    started = start(args, f"benchmarks/layout.py: depth_to_space/space_to_depth on {args.device} and fold_conv against same-run anchors")
    goals: list = []
    for title, section in (("Large tensors", large), ("Tiny tensors (the sweep's regime)", tiny), ("fold_conv build", build)):
        rows: list = []
        section(args, rows, goals)
        print(f"\n## {title}\n\n{markdown_table(rows)}", flush=True)
    print("\n## Goals\n\n" + markdown_table([{"goal": g, "measured": m} for g, m in goals]))
    finish(started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
