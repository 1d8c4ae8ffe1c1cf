"""Speed of foldconv's counter (meta tensors) against FlopCounterMode, measured in the same run.

    python benchmarks/count.py                 # ResNet-50 + the whole classification zoo (meta)
    python benchmarks/count.py --real-zoo      # also FlopCounterMode on real tensors for every zoo model
    python benchmarks/count.py --threads 2     # the goal's setting: 2 cores

Goals (issue #6): count() of ResNet-50 under 1 s; the whole torchvision classification zoo under 60 s on
2 cores. Anchors: FlopCounterMode around a real forward pass (random weights, batch 1, 224x224) and
FlopCounterMode on meta tensors. Every ratio is counter time / anchor time from this run. Model
construction is timed separately and not included in the counting times.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from foldconv._tables import markdown_table
from foldconv.analysis.counting import count
from foldconv.analysis.counting.zoo import classification_models, meta_model

SHAPE = (1, 3, 224, 224)


def seconds(fn, repeat: int = 1) -> tuple:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def flop_counter(model: torch.nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x)
    return fc.get_total_flops()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--real-zoo", action="store_true", help="FlopCounterMode on real tensors for every model")
    parser.add_argument("--models", nargs="*", default=None, help="zoo subset (default: all)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, threads {torch.get_num_threads()}")

    # ResNet-50: a real model (random weights), counted on meta; anchor: FlopCounterMode on a real forward.
    t_build, net = seconds(lambda: torchvision.models.resnet50().eval())
    x = torch.randn(SHAPE)
    t_first, _ = seconds(lambda: count(net, SHAPE))
    t_count, rep = seconds(lambda: count(net, SHAPE), args.repeat)
    t_real, real_flops = seconds(lambda: flop_counter(net, x), args.repeat)
    t_meta, meta_flops = seconds(lambda: flop_counter(meta_model("resnet50").eval(), torch.empty(SHAPE, device="meta")), args.repeat)
    rows = [
        {"measure": "count(resnet50) on meta, median", "seconds": t_count, "ratio_to_real_flop_counter": t_count / t_real},
        {"measure": "count(resnet50), first call", "seconds": t_first, "ratio_to_real_flop_counter": t_first / t_real},
        {"measure": "FlopCounterMode, real forward (anchor)", "seconds": t_real, "ratio_to_real_flop_counter": 1.0},
        {"measure": "FlopCounterMode, meta forward (+ meta build)", "seconds": t_meta, "ratio_to_real_flop_counter": t_meta / t_real},
        {"measure": "build resnet50 with random weights (not counted)", "seconds": t_build, "ratio_to_real_flop_counter": t_build / t_real},
    ]
    print("\n## ResNet-50, input", SHAPE)
    print(markdown_table(rows))
    same = 2 * rep.macs == real_flops == meta_flops
    print(f"MACs {rep.macs:,}; FlopCounterMode real/2 {real_flops // 2:,}; meta/2 {meta_flops // 2:,}; equal: {same}")
    goal_r50 = t_count < 1.0

    # The zoo: build on meta (timed apart), then count vs FlopCounterMode on meta (and on real tensors).
    names = args.models or classification_models()
    builds, counts, metas, reals, zoo_rows = 0.0, 0.0, 0.0, 0.0, []
    for name in names:
        tb, model = seconds(lambda: meta_model(name).eval())
        tc, rep = seconds(lambda: count(model, SHAPE))
        tm, mflops = seconds(lambda: flop_counter(model, torch.empty(SHAPE, device="meta")))
        builds, counts, metas = builds + tb, counts + tc, metas + tm
        row = {"model": name, "count_s": tc, "flop_counter_meta_s": tm, "macs": rep.macs, "meta_equal": 2 * rep.macs == mflops,
               "unsupported_ops": " ".join(op.op for op in rep.unsupported_ops)}
        if args.real_zoo:
            real_model = torchvision.models.get_model(name).eval()
            tr, rflops = seconds(lambda: flop_counter(real_model, torch.randn(SHAPE)))
            del real_model
            reals += tr
            row.update({"flop_counter_real_s": tr, "real_macs": rflops // 2, "real_equal": 2 * rep.macs == rflops})
        zoo_rows.append(row)
    print(f"\n## Zoo: {len(names)} models, input {SHAPE}")
    summary = [
        {"measure": "count(), all models", "seconds": counts, "ratio_to_meta_flop_counter": counts / metas},
        {"measure": "FlopCounterMode on meta, all models (anchor)", "seconds": metas, "ratio_to_meta_flop_counter": 1.0},
        {"measure": "meta construction, all models (not counted)", "seconds": builds, "ratio_to_meta_flop_counter": builds / metas},
    ]
    if args.real_zoo:
        summary.append({"measure": "FlopCounterMode on real tensors, all models", "seconds": reals, "ratio_to_meta_flop_counter": reals / metas})
    print(markdown_table(summary))
    slow = sorted(zoo_rows, key=lambda r: -r["count_s"])[:5]
    print("\nslowest to count:\n" + markdown_table(slow))
    differ = [r for r in zoo_rows if not r["meta_equal"] or (args.real_zoo and not r["real_equal"])]
    if differ:
        print("\nmodels where FlopCounterMode's count differs from count() (see paper_notes/counting.md):")
        print(markdown_table(differ))
    incomplete = [r for r in zoo_rows if r["unsupported_ops"]]
    if incomplete:
        print("\nmodels that ran ops without a cost rule (left out of their totals):")
        print(markdown_table(incomplete))
    goal_zoo = counts < 60.0
    print(f"\ngoals: resnet50 < 1 s: {goal_r50} ({t_count:.3f} s); zoo < 60 s: {goal_zoo} ({counts:.1f} s, "
          f"{counts + builds:.1f} s with construction)")
    return 0 if goal_r50 and goal_zoo and same and not incomplete else 1


if __name__ == "__main__":
    sys.exit(main())
