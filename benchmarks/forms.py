"""Which equivalent form is fastest: each layer's verified forms timed in one run, as speedups over the original.

    python benchmarks/forms.py [--device cpu|cuda] [--batch 1] [--min-run-time 0.5] [--rounds 4] [--no-compile] [--only NAME]
                               [--threads 1]

Targets (issue 11, item 3): the motivating question's 256-channel 3x3 conv on 32x32 folded by r = 2, 4, 8, 16;
resnet18's 7x7 stride-2 stem against its SPD form (space-to-depth + 4x4 conv); a DCGAN ConvTranspose2d(k4, s2, p1)
against its sub-pixel form; ESPCN's conv + PixelShuffle against one ConvTranspose2d; channels_last and
torch.compile of each (compile is skipped, with its reason, where it fails). Every form is verified equivalent by
check_equivalence before it is timed (the "check" column: exact for all weights, or sampled in float64). The original
and each form are timed in interleaved rounds (original, form, original, form, ...; --rounds), so a load that comes
and goes hits both sides. A speedup is original time / form time, with the interval
[original q25 / form q75, original q75 / form q25] of the pooled runs; "inconclusive" marks an interval that holds
1.0. Only speedups are printed, never bare time ratios. The timing is the library's own
(:func:`foldconv.surgery.speed.benchmark_forms`, the feature measured here); the thread count (one by default)
and the load average before and after come from benchmarks/harness.py.
"""
from __future__ import annotations

import argparse
import sys

import torch
from harness import finish, start
from torch import nn

from foldconv._tables import markdown_table
from foldconv.surgery.speed import ROUNDS, benchmark_forms, machine_description


def targets(batch: int):
    """(name, module, input shape, r values) for every target; seeded weights."""
    torch.manual_seed(0)
    return [
        ("256-ch 3x3 conv, 32x32", nn.Conv2d(256, 256, 3, padding=1), (batch, 256, 32, 32), (2, 4, 8, 16)),
        ("resnet18 stem 7x7 s2", nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False), (batch, 3, 224, 224), ()),
        ("DCGAN ConvTranspose2d k4 s2 p1", nn.ConvTranspose2d(256, 128, 4, stride=2, padding=1, bias=False), (batch, 256, 16, 16), ()),
        # ESPCN x3's last layer; no bias: a transposed conv has one bias per output channel, not one per sub-pixel
        ("ESPCN conv + PixelShuffle(3)", nn.Sequential(nn.Conv2d(32, 3 * 9, 3, padding=1, bias=False), nn.PixelShuffle(3)), (batch, 32, 64, 64), ()),
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--min-run-time", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="interleaved rounds of original and form per form")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile form")
    parser.add_argument("--only", default=None, help="run only the targets whose name contains this text")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args(argv)
    args.block = args.min_run_time
    started = start(args, "benchmarks/forms.py: each layer's verified forms against the original",
                    f"benchmark_forms: {args.rounds} interleaved rounds of original and form, pooled quartile intervals")
    print(f"machine: {machine_description(args.device)}; device={args.device}, float32, batch {args.batch}, "
          f"min_run_time {args.min_run_time} s per form in {args.rounds} interleaved rounds")
    summary = []
    for name, module, shape, r_values in targets(args.batch):
        if args.only and args.only not in name:
            continue
        report = benchmark_forms(module, shape, device=args.device, r_values=r_values, compile=not args.no_compile and "auto",
                                 min_run_time=args.min_run_time, rounds=args.rounds)
        print(f"\n## {name}\n")
        print(report.table())
        for t in report.timings[1:]:
            summary.append({"target": name, "form": t.form, "verified": t.verified, "check": t.check, "speedup": t.describe() if t.timed else "",
                            "original ms": round(report.timings[0].median_s * 1e3, 3), "note": "" if t.timed else t.note[:80]})
    print("\n## Summary (speedup = original time / form time, [q25/q75, q75/q25] interval)\n")
    print(markdown_table(summary))
    finish(started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
