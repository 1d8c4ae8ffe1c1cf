"""How many configurations a minute the sweep decides with exact verdicts, against anchors timed in the same run.

    python benchmarks/sweep.py [--points 480] [--rounds 5] [--before-rev 76391c4 | none]

Timed with benchmarks/harness.py: routes, each a pass over the same points, in interleaved rounds on one torch
thread, every cache cleared at the start of each pass (a cold start):

- ``sweep``: :func:`foldconv.sweep.run_point` without error columns: prediction, exact observation, CSV row;
- ``sweep + errors``: the same with the float32 and bfloat16 error columns;
- ``plain``: :func:`foldconv.sweep.observe_fold_plainly`, the exact observation the plain way (each of two
  trials through the library's public functions, nothing cached or shared): the sweep's route before it was
  made fast, without the prediction and the row (so a ratio against it understates the speed-up);
- ``check_fold``: the general checker on an ``nn.Conv2d`` (its own module copies and draws);
- ``before: sweep`` and ``before: sweep + errors``: the sweep's route at ``--before-rev`` (76391c4: the route the
  fast one replaced, ``foldconv.experiments.sweep.run_point`` there), loaded as ``foldconv_before``; its observed
  verdicts are compared with this checkout's on every point.

Samples of the 2-D Cartesian grid (r 1-4, kernel 1-5, stride 1-3, padding 0-2, dilation 1-2, groups and
depthwise, every padding mode, three orders, two input orders, two folded strides; 76,032 points), spatial size
<= 16: ``strided`` takes every k-th point (no two share anything); ``runs`` takes runs of 24 consecutive
points spread over the grid (what a shard of the sweep runs: neighbours differ in their fold only).

Each line gives the median rate over the rounds with its interval; a ratio is the median of the per-round ratios
with its 95 % bootstrap interval, "inconclusive" when it holds 1.0. Goal: the sweep's exact route >= 3x the
route it replaced (``before: sweep``).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
import tempfile
from typing import Callable, Dict, List, Sequence

import torch
from harness import add_arguments, compare, export_revision, finish, goal, start

from foldconv import ConvSpec, FoldError, check_fold
from foldconv._tables import markdown_table
from foldconv.sweep import Grid, Point, forget, observe_fold_plainly, points, run_point

GRID = Grid(
    name="bench", dims=(2,), r=(1, 2, 3, 4), kernel=(1, 2, 3, 5), stride=(1, 2, 3), padding=(0, 1, 2), dilation=(1, 2),
    groups=(1, 2, 0), folded_channels=(1, 2), padding_modes=("zeros", "circular", "reflect", "replicate"),
    orders=("crd", "dcr", "focus"), input_orders=("same", "crd"), folded_strides=(0, 1), following=(), s2d_sizes=(), product=True,
    invalid=False,
)
RUN = 24


def samples(n: int) -> Dict[str, List[Point]]:
    everything = [p for p in points(GRID) if p.size <= 16]
    strided = everything[:: max(1, len(everything) // n)][:n]
    step = max(RUN, len(everything) // max(1, n // RUN))
    runs = [p for start in range(0, len(everything) - RUN + 1, step) for p in everything[start:start + RUN]][:n]
    return {"strided": strided, "runs": runs}


def check_fold_anchor(p: Point) -> None:
    spec = ConvSpec.make(p.dims, p.in_channels, p.out_channels, p.kernel, stride=p.stride, padding=p.padding, dilation=p.dilation,
                         groups=p.groups, padding_mode=p.padding_mode)
    try:
        check_fold(spec.to_module(dtype=torch.float64), p.r, p.order, input_size=(p.size,) * p.dims, trials=2, dtypes=())
    except FoldError:
        pass


def cold(route: Callable[[Point], object], pts: Sequence[Point]) -> Callable[[], object]:
    """A pass of ``route`` over ``pts`` from a cold start."""

    def run() -> List[object]:
        forget()
        return [route(p) for p in pts]

    return run


BEFORE = "76391c4"


def main(argv=None) -> int:
    parser = add_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]), rounds=5, block=0.5)
    parser.add_argument("--points", type=int, default=480)
    parser.add_argument("--before-rev", default=BEFORE, help="the git revision whose sweep route is timed alongside ('none': skip)")
    args = parser.parse_args(argv)
    started = start(args, f"benchmarks/sweep.py: exact verdicts of the sweep, this checkout against {args.before_rev}")
    rows, goals, notes = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        old = None
        if args.before_rev != "none":
            sys.path.insert(0, export_revision(args.before_rev, tmp))
            old = importlib.import_module("foldconv_before.experiments.sweep")
        for name, pts in samples(args.points).items():
            routes: Dict[str, Callable[[], object]] = {
                "sweep": cold(lambda p: run_point(p, ()), pts),
                "sweep + errors": cold(run_point, pts),
                "plain": cold(observe_fold_plainly, pts),
                "check_fold": cold(check_fold_anchor, pts),
            }
            if old is not None:
                olds = [old.Point(**dataclasses.asdict(p)) for p in pts]
                routes["before: sweep"] = cold(lambda p: old.run_point(p, ()), olds)
                routes["before: sweep + errors"] = cold(old.run_point, olds)
                new_rows = [run_point(p, ()) for p in pts]
                old_rows = [old.run_point(p, ()) for p in olds]
                same = sum(a["observed"] == b["observed"] and a["agree"] == b["agree"] for a, b in zip(new_rows, old_rows))
                notes.append(f"{name}: this checkout and {args.before_rev} observe the same verdict on {same} of {len(pts)} points")
            res = compare(routes, anchor="plain", rounds=args.rounds, block=args.block, warmup=1)
            for key in res.seconds:
                per_point = res.time(key).scaled(1 / len(pts))
                rate = f"{60 / per_point.median:,.0f} [{60 / per_point.high:,.0f}, {60 / per_point.low:,.0f}]"
                rows.append({"sample": f"{name} ({len(pts)} points)", "route": key, "configs/min": rate,
                             "speed-up vs plain": res.speedup(key).describe("x", 2)})
            for new, ref in (("sweep", "before: sweep"), ("sweep + errors", "before: sweep + errors")):
                if ref in res.seconds:
                    ratio = res.speedup(new, ref)
                    goals.append((f"sweep exact route ({new}), {name} sample: >= 3x {args.before_rev}", f"{ratio.describe()}: {goal(ratio, 3.0)}"))
            agree = sum(run_point(p, ())["agree"] for p in pts)
            notes.append(f"{name}: {agree} of {len(pts)} predictions agree with the exact observation")
    print("\n## Exact verdicts of the sweep\n\n" + markdown_table(rows))
    print("\n" + "\n".join(notes))
    if goals:
        print("\n## Goals\n\n" + markdown_table([{"goal": g, "measured": m} for g, m in goals]))
    finish(started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
