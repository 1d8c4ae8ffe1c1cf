"""Same function, different speed: a conv over C^2 channels vs its folds, timed in one run.

    python benchmarks/fold_speed.py [--channels 256] [--out 256] [--size 14] [--k 3] [--device cpu] [--dtype float32]

For every r with r^2 dividing the channel count, the fold_conv form (kernel r*K, stride r, G = C/r^2 channels)
is timed on the pre-folded input and with depth_to_space included, as a ratio to the original conv measured
in the same run (r = 1 is the original itself). Parameters and MACs are equal in every row; only the
data layout the kernel sees changes.
"""
from __future__ import annotations

import argparse
import sys

import torch

from foldconv import ConvSpec, depth_to_space, fold_conv
from foldconv._tables import markdown_table
from foldconv.experiments.one_fold import parse_dtype
from foldconv.experiments.timing import time_call


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--out", type=int, default=256)
    parser.add_argument("--size", type=int, default=14)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--min-run-time", type=float, default=0.5)
    args = parser.parse_args(argv)
    dtype = parse_dtype(args.dtype)
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(args.channels, args.out, args.k, padding=args.k // 2).to(args.device, dtype).eval()
    x = torch.randn(args.batch, args.channels, args.size, args.size, device=args.device, dtype=dtype)
    rows, anchor = [], None
    with torch.no_grad():
        reference = conv(x)
        for r in [r for r in (1, 2, 4, 8, 16, 32) if args.channels % (r * r) == 0]:
            big = fold_conv(conv, r)
            xf = depth_to_space(x, r)
            err = float((big(xf) - reference).abs().max() / reference.abs().max())
            t_conv = time_call(lambda: big(xf), f"r={r}", min_run_time=args.min_run_time)
            t_all = time_call(lambda: big(depth_to_space(x, r)), f"r={r}+d2s", min_run_time=args.min_run_time)
            anchor = anchor or t_conv
            spec = ConvSpec.from_module(big)
            rows.append({
                "r": r, "folded conv": spec.describe(), "input": (args.batch, spec.in_channels, args.size * r, args.size * r),
                "params": spec.params, "MACs": spec.macs((args.size * r,) * 2) * args.batch,
                "ms": round(t_conv.median_ms, 3), "ms with depth_to_space": round(t_all.median_ms, 3),
                "x original": round(t_conv.median / anchor.median, 2), "max rel err": err,
            })
    print(f"device={args.device} dtype={args.dtype} threads={torch.get_num_threads()} torch {torch.__version__}")
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
