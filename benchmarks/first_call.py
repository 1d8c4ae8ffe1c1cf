"""The first check_fold, check_equivalence and count() in a fresh process: their cost beyond the imports.

    python benchmarks/first_call.py [--fresh 7] [--threads 1]

Each case runs in its own fresh Python process (``--fresh`` processes per case, the cases interleaved, their
order rotating), which imports torch and foldconv, then times the first call and the same call again; it also
reports whether the call imported ``torch._dynamo`` (recent torch wraps every TorchDispatchMode handler in
``torch._disable_dynamo``, whose first call imports it: about a second) or sympy (torch's Python meta kernels
import it through ``torch._check``). Anchor: the first ``conv2d`` of a fresh process after the same imports.
Goals: the first check_fold and count() of two convs cost <= 50 ms beyond the imports; the first count() of a
2-layer bidirectional LSTM + GRU, a MultiheadAttention and a bilinear upsampling <= 300 ms (the first call's time,
median over the processes with its 95 % bootstrap interval). ``OMP_NUM_THREADS`` is ``--threads`` in every child.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from harness import ROOT, Interval, add_arguments, finish, interval, start

from foldconv._tables import markdown_table

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
from torch import nn
import foldconv
from foldconv.analysis.counting import count
from foldconv.check import check_equivalence
t1 = time.perf_counter()
torch.manual_seed(0)
conv = nn.Conv2d(8, 4, 3, padding=1)
hooked = nn.Conv2d(8, 4, 3, padding=1)
hooked.register_forward_hook(lambda m, i, o: o)  # not a plain conv: check_fold takes the captured route
net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, stride=2))
x, w = torch.randn(1, 4, 8, 8), torch.randn(4, 4, 3, 3)
class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.mha = nn.MultiheadAttention(64, 4, batch_first=True)
    def forward(self, x):
        return self.mha(x, x, x)[0]
class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(64, 128, 2, bidirectional=True, batch_first=True)
        self.gru = nn.GRU(256, 128, 2, bidirectional=True, batch_first=True)
    def forward(self, x):
        return self.gru(self.lstm(x)[0])[0]
rnn, mha, up = Recurrent(), Attention(), nn.Upsample(scale_factor=2, mode="bilinear")
calls = {
    "check_fold (plain conv)": lambda: foldconv.check_fold(conv, 2),
    "check_fold(dtypes=()) (plain conv)": lambda: foldconv.check_fold(conv, 2, dtypes=()),
    "check_fold (hooked conv: captured route)": lambda: foldconv.check_fold(hooked, 2),
    "check_equivalence (conv vs itself)": lambda: check_equivalence(conv, conv, (1, 8, 8, 8)),
    "count (two convs)": lambda: count(net, (1, 3, 16, 16)),
    "count (LSTM + GRU)": lambda: count(rnn, (4, 50, 64)),
    "count (MultiheadAttention)": lambda: count(mha, (2, 50, 64)),
    "count (bilinear upsampling)": lambda: count(up, (1, 16, 32, 32)),
    "anchor: conv2d": lambda: torch.nn.functional.conv2d(x, w),
}
call = calls[sys.argv[1]]
a = time.perf_counter(); call(); b = time.perf_counter(); call(); c = time.perf_counter()
print(json.dumps({"import": t1 - t0, "first": b - a, "again": c - b, "dynamo": "torch._dynamo" in sys.modules,
                  "sympy": "sympy" in sys.modules, "threads": torch.get_num_threads()}))
"""
CASES = ["check_fold (plain conv)", "check_fold(dtypes=()) (plain conv)", "check_fold (hooked conv: captured route)",
         "check_equivalence (conv vs itself)", "count (two convs)", "count (LSTM + GRU)", "count (MultiheadAttention)",
         "count (bilinear upsampling)", "anchor: conv2d"]
GOALS = {"check_fold (plain conv)": 50.0, "count (two convs)": 50.0, "count (LSTM + GRU)": 300.0,
         "count (MultiheadAttention)": 300.0, "count (bilinear upsampling)": 300.0}  # ms beyond the imports


def verdict(ms: Interval, goal: float) -> str:
    if ms.high <= goal:
        return "met"
    if ms.low > goal:
        return "missed"
    return "within noise"


def main(argv=None) -> int:
    parser = add_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))  # --rounds/--block unused
    parser.add_argument("--fresh", type=int, default=7, help="fresh processes per case")
    args = parser.parse_args(argv)
    started = start(args, "benchmarks/first_call.py: the first call in a fresh process",
                    f"{args.fresh} fresh processes per call, the calls interleaved; medians with 95 % bootstrap intervals")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    runs = {case: [] for case in CASES}
    for i in range(args.fresh):
        for case in CASES[i % len(CASES):] + CASES[: i % len(CASES)]:
            out = subprocess.run([sys.executable, "-c", CHILD, case], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
            runs[case].append(json.loads(out.stdout.strip().splitlines()[-1]))
    rows, goals = [], []
    for case, results in runs.items():
        first = interval([r["first"] * 1e3 for r in results])
        rows.append({"call": case, "first ms": first.describe("", 1),
                     "again ms": interval([r["again"] * 1e3 for r in results]).describe("", 2),
                     "first - again ms": interval([(r["first"] - r["again"]) * 1e3 for r in results]).describe("", 1),
                     "import s": interval([r["import"] for r in results]).describe("", 2),
                     "imported torch._dynamo": f"{sum(r['dynamo'] for r in results)}/{len(results)}",
                     "imported sympy": f"{sum(r['sympy'] for r in results)}/{len(results)}",
                     "goal": f"<= {GOALS[case]:.0f} ms: {verdict(first, GOALS[case])}" if case in GOALS else ""})
        if case in GOALS:
            goals.append({"goal": f"first {case} <= {GOALS[case]:.0f} ms beyond the imports",
                          "measured": f"{first.describe('', 1)} ms: {verdict(first, GOALS[case])}"})
    print(f"\n## First calls ({args.fresh} fresh processes per call, OMP_NUM_THREADS={args.threads})\n\n{markdown_table(rows)}")
    print("\n## Goals\n\n" + markdown_table(goals))
    finish(started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
