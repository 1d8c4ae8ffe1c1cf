"""Speed of foldconv's counter (meta tensors) against FlopCounterMode and the peer tools, measured in the same run.

    python benchmarks/count.py                 # ResNet-50 + the whole classification zoo (meta)
    python benchmarks/count.py --real-zoo      # also FlopCounterMode on real tensors for every zoo model
    python benchmarks/count.py --threads 2     # the goal's setting: 2 cores
    python benchmarks/count.py --peers         # side by side with fvcore, ptflops, thop, torchinfo, calflops,
                                               # torchscan, torchprofile (those installed: the `bench` extra)
    python benchmarks/count.py --peers --models mobilenet_v3_large resnet50 --repeat 3
    python benchmarks/count.py --startup       # the first count() in fresh processes, beyond the imports
    python benchmarks/count.py --rnn           # a 2-layer bidirectional LSTM + GRU vs FlopCounterMode
    python benchmarks/count.py --warm deeplabv3_mobilenet_v3_large   # warm count vs FlopCounterMode (+ peers)

Goals: the first count() in a fresh process costs at most 50 ms beyond the imports, with torch._dynamo never
imported; the LSTM + GRU within 5x of FlopCounterMode's time; deeplabv3_mobilenet_v3_large warm no slower
than the fastest peer.

Peers (issue 12): each tool gets the same real model (random weights, eval mode) and a real input of batch 1
at 224x224, under ``torch.no_grad()``; every tool runs once per round, the rounds interleave the tools (so
a change of machine load hits them alike), and each time is the median over the rounds. ``count`` is timed
twice: with its meta-result cache as a long-running process has it (``count``) and with the cache
emptied before every call (``count_cold``). A missing or broken peer is skipped and the run says which
ran. Model construction is not timed.

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
from foldconv.models import classification_models, meta_model

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


def _peers() -> dict:
    """``{name: fn(model, x) -> MACs}`` for every peer that imports; prints why the others are skipped."""
    import contextlib
    import copy
    import io

    def quiet(fn):
        def run(model, x):
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), torch.no_grad():
                return fn(model, x)
        return run

    def fvcore(model, x):
        from fvcore.nn import FlopCountAnalysis

        return FlopCountAnalysis(model, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False).total()

    def ptflops(model, x):
        from ptflops import get_model_complexity_info

        return get_model_complexity_info(model, tuple(x.shape[1:]), as_strings=False, print_per_layer_stat=False, verbose=False)[0]

    def thop(model, x):  # thop leaves total_ops/total_params buffers behind: it gets a copy
        from thop import profile

        return profile(copy.deepcopy(model), inputs=(x,), verbose=False)[0]

    def torchinfo(model, x):
        from torchinfo import summary

        return summary(model, input_size=tuple(x.shape), verbose=0).total_mult_adds

    def calflops(model, x):
        from calflops import calculate_flops

        return calculate_flops(model=model, input_shape=tuple(x.shape), output_as_string=False, print_results=False,
                               print_detailed=False)[1]

    def torchscan(model, x):
        import torchscan as ts

        return ts.crawl_module(model, tuple(x.shape[1:]))["totals"]["macs"]["value"]

    def torchprofile(model, x):
        from torchprofile import profile_macs

        return profile_macs(model, x)

    found = {}
    probe, px = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)).eval(), torch.randn(1, 3, 8, 8)
    for fn in (fvcore, ptflops, thop, torchinfo, calflops, torchscan, torchprofile):
        try:
            quiet(fn)(probe, px)
            found[fn.__name__] = quiet(fn)
        except Exception as exc:  # not installed, or broken on this torch
            print(f"skipped {fn.__name__}: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}")
    print("peers that ran:", ", ".join(found) or "none")
    return found


def peers_benchmark(names, repeat: int) -> int:
    """count() against each installed peer, model by model, interleaved rounds, medians."""
    from foldconv.analysis.counting import meta_cache

    peers = {"flop_counter": lambda model, x: flop_counter(model, x) // 2, **_peers()}  # torch's own, always there

    def count_cold(model, x):
        meta_cache.clear()
        return count(model, tuple(x.shape)).macs

    tools = {"count": lambda model, x: count(model, tuple(x.shape)).macs, "count_cold": count_cold, **peers}
    rows = []
    for name in names:
        model = torchvision.models.get_model(name).eval()
        x = torch.randn(SHAPE)
        times = {tool: [] for tool in tools}
        macs = {}
        for tool, fn in tools.items():  # warm-up round (first calls import and compile), not timed
            try:
                macs[tool] = int(fn(model, x))
            except Exception as exc:
                macs[tool] = f"failed: {type(exc).__name__}"
        for _ in range(repeat):
            for tool, fn in tools.items():
                if isinstance(macs[tool], int):
                    start = time.perf_counter()
                    fn(model, x)
                    times[tool].append(time.perf_counter() - start)
        with torch.no_grad():
            t_forward, _ = seconds(lambda m=model, xx=x: m(xx), repeat)
        med = {tool: statistics.median(t) for tool, t in times.items() if t}
        fastest = min((t, tool) for tool, t in med.items() if tool in peers) if peers else (float("nan"), "-")
        row = {"model": name, "forward_s": round(t_forward, 4)}
        row.update({f"{tool}_s": round(t, 4) for tool, t in med.items()})
        row.update({"fastest_peer": fastest[1], "count/fastest": round(med["count"] / fastest[0], 2),
                    "count_cold/fastest": round(med["count_cold"] / fastest[0], 2), "macs": macs["count"]})
        row.update({f"{tool}_macs": m for tool, m in macs.items() if tool in peers})
        rows.append(row)
        print(f"{name}: count {med['count']:.4f} s, cold {med['count_cold']:.4f} s, fastest peer {fastest[1]} {fastest[0]:.4f} s",
              flush=True)
        del model
    print(f"\n## count() and its peers, input {SHAPE}, median of {repeat} interleaved rounds")
    print(markdown_table(rows))
    slower = [r["model"] for r in rows if r["count/fastest"] > 1]
    slower_cold = [r["model"] for r in rows if r["count_cold/fastest"] > 1]
    print(f"\ncount (warm cache) slower than the fastest peer on {len(slower)} of {len(rows)} models: {slower}")
    print(f"count (cold cache) slower than the fastest peer on {len(slower_cold)} of {len(rows)} models: {slower_cold}")
    return 0 if not slower else 1


_STARTUP = """
import sys, time
start = time.perf_counter()
import torch
from torch import nn
from foldconv.analysis.counting import count
net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3),
                    nn.BatchNorm2d(64), nn.Hardswish(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 128),
                    nn.LayerNorm(128), nn.GELU(), nn.Linear(128, 10))
imported = time.perf_counter()
count(net, (1, 3, 64, 64))
first = time.perf_counter()
count(net, (1, 3, 64, 64))
second = time.perf_counter()
print(imported - start, first - imported, second - first, "torch._dynamo" in sys.modules)
"""


def startup_benchmark(repeat: int) -> int:
    """The first count() in ``repeat`` fresh processes (a small CNN with BN, LayerNorm, GELU, Linear): its time
    beyond the imports and the second call's, and whether torch._dynamo was imported."""
    import subprocess

    rows = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", _STARTUP], capture_output=True, text=True, check=True).stdout.split()
        rows.append({"imports_s": float(out[0]), "first_count_s": float(out[1]), "second_count_s": float(out[2]),
                     "torch._dynamo imported": out[3] == "True"})
    print(markdown_table(rows))
    first = statistics.median(r["first_count_s"] for r in rows)
    dynamo = any(r["torch._dynamo imported"] for r in rows)
    print(f"\ngoal: first count <= 0.05 s beyond the imports: {first <= 0.05} (median {first:.3f} s); torch._dynamo imported: {dynamo}")
    return 0 if first <= 0.05 and not dynamo else 1


class _Recurrent(torch.nn.Module):
    """A 2-layer bidirectional LSTM feeding a 2-layer bidirectional GRU."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(64, 128, 2, bidirectional=True, batch_first=True)
        self.gru = torch.nn.GRU(256, 128, 2, bidirectional=True, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(self.lstm(x)[0])[0]


def rnn_benchmark(repeat: int) -> int:
    """count() of the LSTM + GRU (batch 4, 50 steps) against FlopCounterMode on real and on meta tensors,
    interleaved rounds, medians. (FlopCounterMode on a real CPU forward sees one fused kernel per LSTM and no
    matmul: its MACs are shown, not compared.)"""
    model, shape = _Recurrent().eval(), (4, 50, 64)
    x = torch.randn(shape)
    with torch.device("meta"):
        meta = _Recurrent().eval()
    xm = torch.empty(shape, device="meta")
    tools = {
        "count": lambda: count(model, shape).macs,
        "flop_counter_real": lambda: flop_counter(model, x) // 2,
        "flop_counter_meta": lambda: flop_counter(meta, xm) // 2,
    }
    macs = {name: fn() for name, fn in tools.items()}  # warm-up
    times = {name: [] for name in tools}
    for _ in range(repeat):
        for name, fn in tools.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(t) for name, t in times.items()}
    fastest = min(med["flop_counter_real"], med["flop_counter_meta"])
    print(markdown_table([{"tool": n, "median_s": round(t, 4), "macs": macs[n], "ratio_to_fastest_flop_counter": round(t / fastest, 2)}
                          for n, t in med.items()]))
    ok = med["count"] <= 5 * fastest and macs["count"] == macs["flop_counter_meta"]
    print(f"\ngoal: count within 5x of FlopCounterMode: {med['count'] <= 5 * fastest}; MACs equal on meta: "
          f"{macs['count'] == macs['flop_counter_meta']}")
    return 0 if ok else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--real-zoo", action="store_true", help="FlopCounterMode on real tensors for every model")
    parser.add_argument("--models", nargs="*", default=None, help="zoo subset (default: all)")
    parser.add_argument("--peers", action="store_true", help="side by side with the installed peer tools (only that)")
    parser.add_argument("--startup", action="store_true", help="the first count() in fresh processes (only that)")
    parser.add_argument("--rnn", action="store_true", help="a 2-layer bidirectional LSTM + GRU vs FlopCounterMode (only that)")
    parser.add_argument("--warm", nargs="*", default=None, help="warm count vs FlopCounterMode and the peers on these models")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, threads {torch.get_num_threads()}")
    if args.startup:
        return startup_benchmark(args.repeat)
    if args.rnn:
        return rnn_benchmark(args.repeat)
    if args.warm is not None:
        return peers_benchmark(args.warm or ["deeplabv3_mobilenet_v3_large"], args.repeat)
    if args.peers:
        return peers_benchmark(args.models or classification_models(), args.repeat)

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
