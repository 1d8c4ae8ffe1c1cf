"""Throughput of foldconv's depth_to_space / space_to_depth against torch's pixel_shuffle and clone.

    python benchmarks/layout.py [--mb 128] [--r 2] [--device cpu]

Every figure is a ratio against anchors measured in the same run: torch.nn.functional.pixel_shuffle /
pixel_unshuffle (the goal is >= 0.95x) and tensor.clone() (a plain copy of the same bytes). GB/s counts one
read and one write of the tensor.
"""
from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from foldconv import depth_to_space, space_to_depth
from foldconv._tables import markdown_table
from foldconv.experiments.timing import time_call


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=128.0, help="tensor size in MB (float32)")
    parser.add_argument("--r", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--min-run-time", type=float, default=1.0)
    args = parser.parse_args(argv)
    r = args.r
    batch, h, w = 8, 64, 64
    channels = max(r * r, int(args.mb * 2**20 / 4 / (batch * h * w)) // (r * r) * (r * r))
    x = torch.randn(batch, channels, h, w, device=args.device)
    y = F.pixel_shuffle(x, r)
    nbytes = x.numel() * x.element_size()
    if not (torch.equal(depth_to_space(x, r), y) and torch.equal(space_to_depth(y, r), x)):
        sys.exit("depth_to_space/space_to_depth (crd) differ from pixel_shuffle/pixel_unshuffle: timings would compare different work")
    cases = {
        "clone": lambda: x.clone(),
        "pixel_shuffle": lambda: F.pixel_shuffle(x, r),
        "depth_to_space crd": lambda: depth_to_space(x, r, "crd"),
        "depth_to_space dcr": lambda: depth_to_space(x, r, "dcr"),
        "pixel_unshuffle": lambda: F.pixel_unshuffle(y, r),
        "space_to_depth crd": lambda: space_to_depth(y, r, "crd"),
        "space_to_depth focus": lambda: space_to_depth(y, r, "focus"),
    }
    timings = {name: time_call(fn, name, min_run_time=args.min_run_time) for name, fn in cases.items()}
    rows = []
    for name, t in timings.items():
        anchor = "pixel_unshuffle" if name.startswith("space_to_depth") else "pixel_shuffle"
        rows.append(
            {
                "op": name,
                "median ms": round(t.median_ms, 2),
                "GB/s": round(2 * nbytes / t.median / 1e9, 2),
                "throughput vs torch": round(timings[anchor].median / t.median, 3) if name not in ("clone",) else None,
                "throughput vs clone": round(timings["clone"].median / t.median, 3),
            }
        )
    print(f"tensor {tuple(x.shape)} float32 = {nbytes / 2**20:.0f} MiB, r={r}, device={args.device}, threads={torch.get_num_threads()}, torch {torch.__version__}")
    print(markdown_table(rows))
    worst = min(row["throughput vs torch"] for row in rows if row["op"].endswith("crd"))
    print(f"\ngoal: depth_to_space/space_to_depth (crd) >= 0.95x torch; worst measured {worst:.3f}x -> {'met' if worst >= 0.95 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
