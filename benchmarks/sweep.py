"""How many configurations per minute the sweep verifies with exact verdicts (prediction + exact check).

    python benchmarks/sweep.py [--points 3000] [--jobs 2]

Points: a deterministic sample of the 2-D Cartesian grid (r 1-4, kernel 1-5, stride 1-3, padding 0-2,
dilation 1-2, groups/depthwise, all padding modes, orders and input orders, folded strides), spatial size
<= 16. Anchor, measured in the same run: the general-purpose route, ``check_fold`` on an nn.Conv2d (module
copies, derived weights), for a subset of the same points. Goal: >= 10,000 configurations per minute on
2 CPU cores.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
from joblib import Parallel, delayed

from foldconv import ConvSpec, FoldError, check_fold
from foldconv._tables import markdown_table
from foldconv.experiments.sweep import Grid, points, run_sweep

GRID = Grid(
    name="bench", dims=(2,), r=(1, 2, 3, 4), kernel=(1, 2, 3, 5), stride=(1, 2, 3), padding=(0, 1, 2), dilation=(1, 2),
    groups=(1, 2, 0), folded_channels=(1, 2), padding_modes=("zeros", "circular", "reflect", "replicate"),
    orders=("crd", "dcr", "focus"), input_orders=("same", "crd"), folded_strides=(0, 1), following=(), s2d_sizes=(), product=True,
    invalid=False,
)


def _chunk(pts, dtypes):
    return run_sweep(pts, dtypes)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=3000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--anchor-points", type=int, default=150)
    args = parser.parse_args(argv)
    everything = points(GRID)
    step = max(1, len(everything) // args.points)
    sample = [p for p in everything[::step] if p.size <= 16][: args.points]
    print(f"grid: {len(everything)} 2-D configurations; sample: {len(sample)} (max spatial size {max(p.size for p in sample)})")
    rows, results = [], {}
    for label, dtypes, jobs in (("exact verdict only, 1 process", (), 1), ("exact + float32/bfloat16 errors, 1 process", (torch.float32, torch.bfloat16), 1),
                                (f"exact verdict only, {args.jobs} processes", (), args.jobs)):
        start = time.perf_counter()
        if jobs == 1:
            out = run_sweep(sample, dtypes)
        else:
            chunks = [sample[i::jobs] for i in range(jobs)]
            out = [r for part in Parallel(n_jobs=jobs)(delayed(_chunk)(c, dtypes) for c in chunks) for r in part]
        seconds = time.perf_counter() - start
        agree = sum(r["agree"] for r in out)
        results[label] = len(out) / seconds * 60
        rows.append({"route": label, "configs": len(out), "seconds": round(seconds, 2), "configs/min": round(results[label]), "agree": agree})
    anchor_pts = sample[:: max(1, len(sample) // args.anchor_points)][: args.anchor_points]
    torch.set_num_threads(1)
    start, done = time.perf_counter(), 0
    for p in anchor_pts:
        spec = ConvSpec.make(p.dims, p.in_channels, p.out_channels, p.kernel, stride=p.stride, padding=p.padding, dilation=p.dilation, groups=p.groups, padding_mode=p.padding_mode)
        try:
            check_fold(spec.to_module(dtype=torch.float64), p.r, p.order, input_size=(p.size, p.size), trials=2, dtypes=())
        except FoldError:
            pass
        done += 1
    anchor = done / (time.perf_counter() - start) * 60
    rows.append({"route": "anchor: check_fold on nn.Conv2d, 1 process", "configs": done, "seconds": round(done / anchor * 60, 2), "configs/min": round(anchor), "agree": None})
    print(markdown_table(rows))
    best = max(results.values())
    for label, rate in results.items():
        print(f"{label}: {rate / anchor:.1f}x the anchor")
    print(f"\ngoal: >= 10,000 exact verdicts per minute on 2 cores; measured {best:,.0f}/min -> {'met' if best >= 10_000 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
