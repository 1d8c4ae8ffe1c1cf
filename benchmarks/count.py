"""Speed of foldconv's counter (meta tensors) against FlopCounterMode and the peer tools, measured in the same run.

    python benchmarks/count.py                 # ResNet-50 + the whole classification zoo (meta)
    python benchmarks/count.py --real-zoo      # also FlopCounterMode on real tensors for every zoo model
    python benchmarks/count.py --threads 2     # the goal's setting: 2 cores (default: 1 thread)
    python benchmarks/count.py --peers         # side by side with fvcore, ptflops, thop, torchinfo, calflops,
                                               # torchscan, torchprofile (those installed: the `bench` extra)
    python benchmarks/count.py --peers --models mobilenet_v3_large resnet50 --rounds 3
    python benchmarks/count.py --rnn           # a 2-layer bidirectional LSTM + GRU vs FlopCounterMode and the peers
    python benchmarks/count.py --warm deeplabv3_mobilenet_v3_large   # warm count vs FlopCounterMode (+ peers)
    (the first count() in a fresh process: benchmarks/first_call.py)

Timed with benchmarks/harness.py (interleaved rounds, warmed cases, medians with 95 % bootstrap intervals).

Peers: each tool gets the same real model (random weights, eval mode) and a real input of batch 1 at 224x224,
under ``torch.no_grad()``, all in the same interleaved rounds. ``count`` is timed twice: with its meta-result
cache as a long-running process has it (``count``) and with the cache emptied before every call
(``count_cold``). A missing or broken peer is skipped and the run says which ran. Model construction is not timed.

Goals: count() of ResNet-50 under 1 s; the whole torchvision classification zoo under 60 s on 2 cores. Anchors:
FlopCounterMode around a real forward pass (random weights, batch 1, 224x224) and FlopCounterMode on meta
tensors, timed in the same rounds for ResNet-50 (the zoo is one pass per model: each model is counted once).
Model construction is timed separately and not included in the counting times. The first count() in a fresh
process is measured by benchmarks/first_call.py.
"""
from __future__ import annotations

import argparse
import inspect
import statistics
import sys
import time
import warnings

import torch
import torchvision
from harness import add_arguments, compare, finish, start
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

        return get_model_complexity_info(model, tuple(x.shape[1:]), input_constructor=lambda _: {"x": x}, as_strings=False,
                                         print_per_layer_stat=False, verbose=False)[0]

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


def peers_benchmark(names, args) -> int:
    """count() against each installed peer, model by model, in interleaved rounds."""
    from foldconv.analysis.counting import meta_cache

    peers = _peers()

    def count_cold(model, x):
        meta_cache.clear()
        return count(model, tuple(x.shape)).macs

    tools = {"count": lambda model, x: count(model, tuple(x.shape)).macs, "count_cold": count_cold, **peers}
    rows = []
    for name in names:
        builder = torchvision.models.get_model_builder(name)  # random weights, nothing downloaded (a backbone too)
        backbone = {"weights_backbone": None} if "weights_backbone" in inspect.signature(builder).parameters else {}
        model = builder(weights=None, **backbone).eval()
        x = torch.randn(SHAPE)
        macs = {}
        for tool, fn in tools.items():
            try:
                macs[tool] = int(fn(model, x))
            except Exception as exc:  # a peer that fails on this model is a cell, not the end of the run
                macs[tool] = f"failed: {type(exc).__name__}"
        cases = {tool: (lambda fn=fn, model=model, x=x: fn(model, x)) for tool, fn in tools.items() if isinstance(macs[tool], int)}

        def forward(model=model, x=x):
            with torch.no_grad():
                return model(x)

        cases["forward (anchor)"] = forward
        res = compare(cases, anchor="forward (anchor)", rounds=args.rounds, block=args.block, warmup=1)
        ran = [tool for tool in peers if tool in cases]
        fastest = min(ran, key=lambda tool: res.time(tool).median) if ran else None
        row = {"model": name, "forward ms": res.time("forward (anchor)").scaled(1e3).describe("", 1)}
        row.update({f"{tool} ms": res.time(tool).scaled(1e3).describe("", 1) for tool in cases if tool != "forward (anchor)"})
        # every peer runs the model's forward on real tensors: faster than the forward is faster than any peer
        row["count speed-up vs forward"] = res.speedup("count").describe()
        if fastest:
            row.update({"fastest peer": fastest, "count speed-up vs fastest": res.speedup("count", fastest).describe(),
                        "count_cold speed-up vs fastest": res.speedup("count_cold", fastest).describe()})
        row.update({"macs": macs["count"], **{f"{tool} macs": m for tool, m in macs.items() if tool in peers}})
        rows.append(row)
        print(f"{name}: count {row['count ms']} ms, fastest peer {fastest}", flush=True)
        del model
    print(f"\n## count() and its peers, input {SHAPE}, {args.rounds} interleaved rounds")
    print(markdown_table(rows))
    slower = [r["model"] for r in rows if "count speed-up vs fastest" in r and r["count speed-up vs fastest"].split("x")[0] < "1"]
    print(f"\ncount (warm cache) slower than the fastest peer (median) on {len(slower)} of {len(rows)} models: {slower}")
    return 0


class _Recurrent(torch.nn.Module):
    """A 2-layer bidirectional LSTM feeding a 2-layer bidirectional GRU."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(64, 128, 2, bidirectional=True, batch_first=True)
        self.gru = torch.nn.GRU(256, 128, 2, bidirectional=True, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(self.lstm(x)[0])[0]


def rnn_benchmark(args) -> int:
    """count() of the LSTM + GRU (batch 4, 50 steps) against the installed peers and FlopCounterMode on real and on
    meta tensors, in interleaved rounds, with the real forward as the anchor (every peer runs it: a lower bound of
    their times). (FlopCounterMode on a real CPU forward sees one fused kernel per LSTM: its MACs are shown, not
    compared.) Goal: count within 5x of the fastest of the others, MACs equal to FlopCounterMode's on meta."""
    model, shape = _Recurrent().eval(), (4, 50, 64)
    x = torch.randn(shape)
    with torch.device("meta"):
        meta = _Recurrent().eval()
    xm = torch.empty(shape, device="meta")

    def forward():
        with torch.no_grad():
            return model(x)

    cases = {"count": lambda: count(model, shape), "forward (anchor)": forward,
             "FlopCounterMode, real": lambda: flop_counter(model, x), "FlopCounterMode, meta": lambda: flop_counter(meta, xm)}
    macs = {"count": count(model, shape).macs, "forward (anchor)": "", "FlopCounterMode, real": flop_counter(model, x) // 2,
            "FlopCounterMode, meta": flop_counter(meta, xm) // 2}
    for tool, fn in _peers().items():
        try:
            macs[tool] = int(fn(model, x))
            cases[tool] = lambda fn=fn: fn(model, x)
        except Exception as exc:  # a peer that fails on this model is a row, not the end of the run
            print(f"{tool} failed on the LSTM + GRU: {type(exc).__name__}")
    res = compare(cases, anchor="forward (anchor)", rounds=args.rounds, block=args.block, warmup=1)
    others = [n for n in cases if n not in ("count", "forward (anchor)")]
    fastest = min(others, key=lambda n: res.time(n).median)
    print("\n## A 2-layer bidirectional LSTM + GRU, input", shape)
    print(markdown_table([{"tool": n, "ms": res.time(n).scaled(1e3).describe("", 1), "speed-up vs forward":
                           res.speedup(n).describe(), "count speed-up vs it": res.speedup("count", n).describe() if n != "count" else "",
                           "macs": macs[n]} for n in cases]))
    within = res.time("count").median <= 5 * res.time(fastest).median
    print(f"\ngoal: count within 5x of the fastest other tool ({fastest}; medians): {within} "
          f"({res.time('count').median / res.time(fastest).median:.2f}x); count / forward: "
          f"{res.time('count').median / res.time('forward (anchor)').median:.2f}x; MACs equal to FlopCounterMode on meta: "
          f"{macs['count'] == macs['FlopCounterMode, meta']}")
    return 0


def main(argv=None) -> int:
    parser = add_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]), rounds=5, block=0.2)
    parser.add_argument("--real-zoo", action="store_true", help="FlopCounterMode on real tensors for every model")
    parser.add_argument("--models", nargs="*", default=None, help="zoo subset (default: all)")
    parser.add_argument("--peers", action="store_true", help="side by side with the installed peer tools (only that)")
    parser.add_argument("--rnn", action="store_true", help="a 2-layer bidirectional LSTM + GRU vs FlopCounterMode (only that)")
    parser.add_argument("--warm", nargs="*", default=None, help="warm count vs FlopCounterMode and the peers on these models")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    started = start(args, f"benchmarks/count.py: count() against FlopCounterMode (torchvision {torchvision.__version__})")
    torch.manual_seed(0)
    if args.peers or args.warm is not None:
        names = (args.warm or ["deeplabv3_mobilenet_v3_large"]) if args.warm is not None else (args.models or classification_models())
        code = peers_benchmark(names, args)
        finish(started)
        return code
    if args.rnn:
        code = rnn_benchmark(args)
        finish(started)
        return code

    # ResNet-50: a real model (random weights), counted on meta; anchor: FlopCounterMode on a real forward.
    t_build, net = seconds(lambda: torchvision.models.resnet50().eval())
    meta_net = meta_model("resnet50").eval()
    x = torch.randn(SHAPE)
    t_first, rep = seconds(lambda: count(net, SHAPE))
    real_flops = flop_counter(net, x)
    meta_flops = flop_counter(meta_net, torch.empty(SHAPE, device="meta"))
    res = compare({"count(resnet50) on meta": lambda: count(net, SHAPE),
                   "FlopCounterMode, real forward (anchor)": lambda: flop_counter(net, x),
                   "FlopCounterMode, meta forward": lambda: flop_counter(meta_net, torch.empty(SHAPE, device="meta"))},
                  anchor="FlopCounterMode, real forward (anchor)", rounds=args.rounds, block=args.block, warmup=1)
    rows = [{"measure": label, "ms": res.time(label).scaled(1e3).describe("", 1), "speed-up vs real FlopCounterMode": res.speedup(label).describe()}
            for label in res.seconds]
    rows.append({"measure": "count(resnet50), first call in this process (one call)", "ms": f"{t_first * 1e3:.1f}"})
    rows.append({"measure": "build resnet50 with random weights (not counted, one call)", "ms": f"{t_build * 1e3:.1f}"})
    print("\n## ResNet-50, input", SHAPE)
    print(markdown_table(rows))
    same = 2 * rep.macs == real_flops == meta_flops
    print(f"MACs {rep.macs:,}; FlopCounterMode real/2 {real_flops // 2:,}; meta/2 {meta_flops // 2:,}; equal: {same}")
    t_count = res.time("count(resnet50) on meta")
    goal_r50 = t_count.high < 1.0

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
    print(f"\ngoals: resnet50 < 1 s: {goal_r50} ({t_count.describe(' s', 3)}); zoo < 60 s: {goal_zoo} ({counts:.1f} s, "
          f"{counts + builds:.1f} s with construction)")
    finish(started)
    return 0 if goal_r50 and goal_zoo and same and not incomplete else 1


if __name__ == "__main__":
    sys.exit(main())
