"""Shift equivariance and the inductive-bias question: analytic periods, measured equivariance and consistency
of any models (torchvision, antialiased-cnns' <name>_blur, timm:<name>, _target_) on scikit-image's sample images, and D2L's ladder
(fully connected, locally connected, conv, folded conv) trained on scikit-learn's digits at 32x32.

    python scripts/shift.py                                     # resnet18 (+BlurPool, +space-to-depth rewrites), ladder
    python scripts/shift.py models=[mobilenet_v2,mobilenet_v2+spd,mobilenet_v2_blur,timm:resnet18d] crop=128
    python scripts/shift.py ladder.epochs=10 ladder.enabled=true models=[]

The config is foldconv.experiments.shift.ShiftExperiment (ladder: LadderConfig). Writes periods, equivariance,
consistency and ladder tables (.csv, .md), three PNGs and summary.md into the Hydra run dir. Exit status: 0
every check holds; 1 a rewrite gave different numbers or the folded rung drifted (outputs written); 2 a
malformed override (one line on stderr, nothing written). Nothing is downloaded; weights are random (seeded).
"""
from foldconv.experiments.cli import shift as main

if __name__ == "__main__":
    main()
