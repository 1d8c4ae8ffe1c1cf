"""How long count() takes over the whole timm zoo (issue 12, item 4: under 15 minutes on this 2-core machine).

    python benchmarks/zoo.py                       # every timm model at its default input size, meta tensors
    python benchmarks/zoo.py --models 'resnet*'    # a subset (fnmatch patterns)
    python benchmarks/zoo.py --threads 2 --csv zoo_times.csv   # default: 1 thread
    python benchmarks/zoo.py --sample 200          # a uniform sample (the zoo app's order), whole-zoo time extrapolated

Each model is built on meta (timed separately: construction is not counting) and counted once with
count() at its pretrained_cfg input size; a model whose meta build fails is skipped and listed (the zoo app
measures those on CPU). A per-model time limit stops a model that hangs. Each model is counted once (a whole-zoo
time, not a comparison: no rounds); the machine, thread count and load average before and after come from
benchmarks/harness.py, since on a shared machine the figure depends on them.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

from harness import add_arguments, finish, start

from foldconv._tables import markdown_table
from foldconv.analysis.counting import count
from foldconv.errors import first_line
from foldconv.experiments.io import write_csv
from foldconv.experiments.zoo.measure import StageTimeout, build_zoo_model, time_limit
from foldconv.experiments.zoo.run import _scrambled
from foldconv.models import zoo_models

GOAL_S = 15 * 60


def main(argv=None) -> int:
    parser = add_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))  # --rounds/--block unused
    parser.add_argument("--models", nargs="*", default=(), help="fnmatch patterns (default: every timm model)")
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds per model (build + count)")
    parser.add_argument("--csv", default=None, help="write one row per model here")
    parser.add_argument("--sample", type=int, default=None, help="measure this many models (a fixed pseudo-random sample) and extrapolate")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    import timm

    started = start(args, f"benchmarks/zoo.py: count() over the timm zoo (timm {timm.__version__})",
                    "each model built on meta and counted once")

    names = zoo_models("timm", args.models)
    whole = len(names)
    if args.sample:
        names = sorted(sorted(names, key=_scrambled)[: args.sample])
    print(f"{len(names)} models", flush=True)
    rows, began = [], time.perf_counter()
    for k, name in enumerate(names, 1):
        row = {"model": name, "build_s": None, "count_s": None, "status": ""}
        try:
            with time_limit(args.time_limit):
                t0 = time.perf_counter()
                built = build_zoo_model("timm", name, cpu_fallback=False)
                t1 = time.perf_counter()
                count(built.model, built.input_shape, name=name)
                t2 = time.perf_counter()
            row.update(build_s=round(t1 - t0, 4), count_s=round(t2 - t1, 4), status="ok")
        except StageTimeout as exc:
            row["status"] = str(exc)
        except Exception as exc:  # one model's failure is a row
            row["status"] = first_line(exc, with_type=True, limit=160)
        rows.append(row)
        if k % 100 == 0:
            print(f"{k} models, {time.perf_counter() - began:.0f} s", flush=True)
    wall = time.perf_counter() - began
    counted = [r for r in rows if r["status"] == "ok"]
    count_s = sum(r["count_s"] for r in counted)
    build_s = sum(r["build_s"] for r in counted)
    slowest = sorted(counted, key=lambda r: -r["count_s"])[:10]
    print(markdown_table([
        {"figure": "models counted", "value": f"{len(counted)} of {len(rows)}"},
        {"figure": "count() time, all counted models", "value": f"{count_s:.1f} s ({count_s / 60:.1f} min; goal < {GOAL_S // 60} min)"},
        {"figure": "build on meta (not counting)", "value": f"{build_s:.1f} s"},
        *([{"figure": f"whole zoo ({whole} models), extrapolated from the sample", "value": f"{count_s * whole / max(len(counted), 1) / 60:.1f} min of count()"}]
          if len(names) < whole else []),
        {"figure": "wall time of this run (with failures, timeouts)", "value": f"{wall:.1f} s"},
    ]))
    print("\nslowest count():\n" + markdown_table([{"model": r["model"], "count s": r["count_s"]} for r in slowest]))
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        print(f"\n{len(failed)} not counted:\n" + markdown_table(failed[:30]))
    if args.csv:
        write_csv(rows, args.csv)
    finish(started)
    return 0 if count_s * whole / max(len(counted), 1) < GOAL_S else 1


if __name__ == "__main__":
    sys.exit(main())
