"""How many configurations a minute the sweep decides with exact verdicts, against anchors timed in the same run.

    python benchmarks/sweep.py [--points 1500] [--rounds 5] [--anchor-points 100]

Routes, each timed over the same points in every round, the rounds interleaved (route order rotates), on one
torch thread, every cache cleared before each timing (a cold start):

- ``sweep``: :func:`foldconv.sweep.run_point` without error columns: prediction, exact observation, CSV row;
- ``sweep + errors``: the same with the float32 and bfloat16 error columns;
- ``plain``: :func:`foldconv.sweep.observe_fold_plainly`, the exact observation the plain way (each of two
  trials through the library's public functions, nothing cached or shared): the sweep's route before it was
  made fast, without the prediction and the row (so a ratio against it understates the speed-up);
- ``check_fold``: the general checker on an ``nn.Conv2d`` (its own module copies and draws), on the first
  ``--anchor-points`` points.

Samples of the 2-D Cartesian grid (r 1-4, kernel 1-5, stride 1-3, padding 0-2, dilation 1-2, groups and
depthwise, every padding mode, three orders, two input orders, two folded strides; 76,032 points), spatial size
<= 16: ``strided`` takes every k-th point (no two share anything); ``runs`` takes runs of 24 consecutive
points spread over the grid (what a shard of the sweep runs: neighbours differ in their fold only).

Each line gives the median rate over the rounds with its range; a ratio is the median of the per-round ratios
with their range, "inconclusive" when the range holds 1.0. Goal: the sweep's exact route >= 3x the route it
replaced.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable, Dict, List, Sequence

import torch

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


def timed(route: Callable[[Point], object], pts: Sequence[Point]) -> float:
    """Configurations a minute of ``route`` over ``pts``, from a cold start."""
    forget()
    start = time.perf_counter()
    for p in pts:
        route(p)
    return len(pts) / (time.perf_counter() - start) * 60


def interval(values: Sequence[float]) -> str:
    return f"{statistics.median(values):,.0f} [{min(values):,.0f}, {max(values):,.0f}]"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--anchor-points", type=int, default=100)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows, verdicts = [], []
    for name, pts in samples(args.points).items():
        routes: Dict[str, Callable[[], float]] = {
            "sweep": lambda: timed(lambda p: run_point(p, ()), pts),
            "sweep + errors": lambda: timed(lambda p: run_point(p), pts),
            "plain": lambda: timed(observe_fold_plainly, pts),
            "check_fold": lambda: timed(check_fold_anchor, pts[: args.anchor_points]),
        }
        for route in routes.values():  # warm-up: imports, first calls
            forget()
            route()
        rates: Dict[str, List[float]] = {k: [] for k in routes}
        for i in range(args.rounds):
            order = list(routes)[i % len(routes):] + list(routes)[: i % len(routes)]
            for key in order:
                rates[key].append(routes[key]())
        agree = sum(run_point(p, ())["agree"] for p in pts)
        for key, values in rates.items():
            rows.append({"sample": f"{name} ({len(pts)} points)", "route": key, "configs/min (median [min, max])": interval(values)})
        for key in ("plain", "check_fold"):
            ratios = [a / b for a, b in zip(rates["sweep"], rates[key])]
            verdict = "inconclusive" if min(ratios) <= 1.0 <= max(ratios) else f"{statistics.median(ratios):.1f}x"
            verdicts.append(f"{name}: sweep / {key} = {statistics.median(ratios):.2f} [{min(ratios):.2f}, {max(ratios):.2f}] -> {verdict}")
        verdicts.append(f"{name}: {agree} of {len(pts)} predictions agree with the exact observation")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread, {args.rounds} interleaved rounds, caches cleared before each timing")
    print(markdown_table(rows))
    print("\n".join(verdicts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
