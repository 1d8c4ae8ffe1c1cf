"""Time of the analytic receptive-field analysis: ResNet-50 and the whole torchvision classification zoo,
against the empirical measurement (one forward + backward of one unit) measured in the same run.

    python benchmarks/receptive_field.py            # ResNet-50 + zoo
    python benchmarks/receptive_field.py --quick    # ResNet-50 only

Goals (issue #5): ResNet-50 analysed in under 1 s, and faster than measuring it empirically.
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import torchvision

from foldconv.analysis.receptive_field import UnsupportedOpError, empirical_boxes, receptive_field
from foldconv.models import classification_models, meta_model


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    shape = (1, 3, 224, 224)
    model = torchvision.models.resnet50(weights=None)
    analytic, analytic_med = best_of(lambda: receptive_field(model, shape), args.repeats)
    report = receptive_field(model, shape)
    centre = report.center("layer3_5_relu_2")
    # the empirical anchor: one output unit's gradient support at the same input size (float64, positive
    # weights, max-pool -> avg-pool), i.e. one forward and one backward of ResNet-50
    empirical, empirical_med = best_of(lambda: empirical_boxes(model, shape, [("layer3_5_relu_2", centre)], report=report), max(2, args.repeats // 2))
    print(f"ResNet-50 at 224x224 ({len(report.nodes)} nodes): analytic {analytic * 1e3:.1f} ms (median {analytic_med * 1e3:.1f}), "
          f"empirical one-unit support {empirical * 1e3:.1f} ms (median {empirical_med * 1e3:.1f}); "
          f"empirical / analytic = {empirical / analytic:.1f}x; goal < 1 s: {'met' if analytic < 1 else 'MISSED'}")
    if args.quick:
        return
    total, traced, skipped = 0.0, 0, []
    for name in classification_models():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = meta_model(name)  # shapes only: no weights, no init time
            size = 299 if name == "inception_v3" else 224
            try:
                t, _ = best_of(lambda: receptive_field(m, (1, 3, size, size)), 1)
                total += t
                traced += 1
            except UnsupportedOpError as exc:
                skipped.append((name, str(exc)[:90]))
    print(f"zoo: {traced} models analysed in {total:.2f} s total ({total / max(traced, 1) * 1e3:.0f} ms per model); "
          f"{len(skipped)} without a full analytic result:")
    for name, why in skipped:
        print(f"  {name}: {why}")


if __name__ == "__main__":
    main()
