"""Dense operators of a conv and of its folded form, side by side, and the family of equivalences checked.

    python scripts/operators.py                                  # 4-channel 3x3 conv, r=2, on 4x4
    python scripts/operators.py example.r=3 example.stride=2 example.order=focus
    python scripts/operators.py example.r=2x1 example.kernel_size=[3,1] example.padding=[1,0]
    python scripts/operators.py -m example.order=crd,dcr,focus

The config is foldconv.experiments.operators.OperatorsExperiment (example: OperatorsExample, ladder,
dpi). Writes into the Hydra run dir: operators.png (original matrix | folded matrix | column permutation),
checks.{csv,md}, shifts.{csv,md}, parameters.{csv,md}. Exit status: 0 all checks hold, 1 a check failed
(outputs written), 2 a malformed override (one line on stderr, nothing written).
"""
from foldconv.experiments.cli import operators as main

if __name__ == "__main__":
    main()
