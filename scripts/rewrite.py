"""Rewrite real models into equivalent forms, verify them exactly, export them to ONNX and time the forms.

    python scripts/rewrite.py                                      # YOLOv5's Focus stem -> one 6x6 stride-2 conv
    python scripts/rewrite.py model=resnet18 rules=[strided_to_spd] timing=false
    python scripts/rewrite.py model=resnet18 'rules=[{fold_stage:{stage:layer1,r:2}}]'
    python scripts/rewrite.py model=all min_run_time=0.5 device=cuda

Models (random weights, nothing downloaded): yolov5_stem, tresnet_m, dcgan, espcn, resnet18; each has its
own rules and inverse rules (foldconv/experiments/rewrite_models.py). The config is
foldconv.experiments.rewrite.RewriteExperiment. Writes sites, models, onnx and timings (.csv, .md),
sites.png, timings.png, summary.md and index.md into the Hydra run dir. Exit status: 0 every rewrite
verified; 1 a rewrite, its round trip or an ONNX form was not verified (outputs written); 2 a malformed
override (one line on stderr, nothing written).
"""
from foldconv.experiments.cli import rewrite as main

if __name__ == "__main__":
    main()
