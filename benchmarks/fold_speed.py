"""Same function, different speed: a conv over C^2 channels vs its folds, timed in one run.

    python benchmarks/fold_speed.py [--channels 256] [--out 256] [--size 14] [--k 3] [--dtype float32] [--device cpu] [--threads 1]

For every r with r^2 dividing the channel count, the fold_conv form (kernel r*K, stride r, G = C/r^2 channels)
is timed on the pre-folded input and with depth_to_space included, against the original conv, all in the same
interleaved rounds (benchmarks/harness.py); a speed-up > 1 means the folded form is faster. Parameters and MACs
are equal in every row; only the data layout the kernel sees changes. CPU only (the harness times without
synchronising a GPU).
"""
from __future__ import annotations

import argparse
import sys

import torch
from harness import add_arguments, compare, finish, start

from foldconv import ConvSpec, depth_to_space, fold_conv
from foldconv._tables import markdown_table


def main(argv=None) -> int:
    parser = add_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]), block=0.1)
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--out", type=int, default=256)
    parser.add_argument("--size", type=int, default=14)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64", "bfloat16"))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    started = start(args, "benchmarks/fold_speed.py: a conv over C^2 channels against its folds")
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(args.channels, args.out, args.k, padding=args.k // 2).to(args.device, dtype).eval()
    x = torch.randn(args.batch, args.channels, args.size, args.size, dtype=dtype, device=args.device)
    cases, facts = {"original": lambda: conv(x)}, {}
    with torch.no_grad():
        reference = conv(x)
        for r in [r for r in (2, 4, 8, 16, 32) if args.channels % (r * r) == 0]:
            big = fold_conv(conv, r)
            xf = depth_to_space(x, r)
            err = float((big(xf) - reference).abs().max() / reference.abs().max())
            cases[f"r={r}"] = lambda big=big, xf=xf: big(xf)
            cases[f"r={r} + depth_to_space"] = lambda big=big, r=r: big(depth_to_space(x, r))
            facts[r] = (ConvSpec.from_module(big), err)
        res = compare(cases, anchor="original", rounds=args.rounds, block=args.block)
    spec = ConvSpec.from_module(conv)
    rows = [{"r": 1, "conv": spec.describe(), "input": tuple(x.shape), "params": spec.params,
             "MACs": spec.macs((args.size,) * 2) * args.batch, "ms": res.time("original").scaled(1e3).describe("", 3)}]
    for r, (big, err) in facts.items():
        rows.append({"r": r, "conv": big.describe(), "input": (args.batch, big.in_channels, args.size * r, args.size * r),
                     "params": big.params, "MACs": big.macs((args.size * r,) * 2) * args.batch,
                     "ms": res.time(f"r={r}").scaled(1e3).describe("", 3), "speed-up vs original": res.speedup(f"r={r}").describe(),
                     "ms with depth_to_space": res.time(f"r={r} + depth_to_space").scaled(1e3).describe("", 3),
                     "speed-up with depth_to_space": res.speedup(f"r={r} + depth_to_space").describe(), "max rel err": f"{err:.1e}"})
    print(f"\n## {args.device}, {args.dtype}, batch {args.batch}\n\n{markdown_table(rows)}")
    finish(started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
