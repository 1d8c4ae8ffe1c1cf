"""Time of the analytic receptive-field analysis: ResNet-50 and the whole torchvision classification zoo,
against the empirical measurement (one forward + backward of one unit) measured in the same run.

    python benchmarks/receptive_field.py            # ResNet-50 + zoo
    python benchmarks/receptive_field.py --quick    # ResNet-50 only

ResNet-50's analysis and its empirical anchor are timed with benchmarks/harness.py (interleaved rounds, one
thread, medians with 95 % bootstrap intervals); the zoo is one pass per model.
Goals: ResNet-50 analysed in under 1 s, and faster than measuring it empirically.
"""
from __future__ import annotations

import argparse
import time
import warnings

import torchvision
from harness import add_arguments, compare, finish, start

from foldconv.analysis.receptive_field import UnsupportedOpError, empirical_boxes, receptive_field
from foldconv.models import classification_models, meta_model


def once(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    parser = add_arguments(argparse.ArgumentParser(), rounds=5, block=0.5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    started = start(args, "benchmarks/receptive_field.py: analytic receptive fields against the empirical measurement")
    shape = (1, 3, 224, 224)
    model = torchvision.models.resnet50(weights=None)
    report = receptive_field(model, shape)
    centre = report.center("layer3_5_relu_2")
    # the empirical anchor: one output unit's gradient support at the same input size (float64, positive
    # weights, max-pool -> avg-pool), i.e. one forward and one backward of ResNet-50
    res = compare({"analytic": lambda: receptive_field(model, shape),
                   "empirical (anchor)": lambda: empirical_boxes(model, shape, [("layer3_5_relu_2", centre)], report=report)},
                  anchor="empirical (anchor)", rounds=args.rounds, block=args.block, warmup=1)
    analytic = res.time("analytic")
    print(f"ResNet-50 at 224x224 ({len(report.nodes)} nodes): analytic {analytic.scaled(1e3).describe(' ms', 1)}, "
          f"empirical one-unit support {res.time('empirical (anchor)').scaled(1e3).describe(' ms', 1)}; "
          f"analytic speed-up vs empirical {res.speedup('analytic').describe()}; goal < 1 s: {'met' if analytic.high < 1 else 'MISSED'}")
    if args.quick:
        finish(started)
        return
    total, traced, skipped = 0.0, 0, []
    for name in classification_models():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = meta_model(name)  # shapes only: no weights, no init time
            size = 299 if name == "inception_v3" else 224
            try:
                t = once(lambda: receptive_field(m, (1, 3, size, size)))
                total += t
                traced += 1
            except UnsupportedOpError as exc:
                skipped.append((name, str(exc)[:90]))
    print(f"zoo: {traced} models analysed in {total:.2f} s total ({total / max(traced, 1) * 1e3:.0f} ms per model); "
          f"{len(skipped)} without a full analytic result:")
    for name, why in skipped:
        print(f"  {name}: {why}")
    finish(started)


if __name__ == "__main__":
    main()
