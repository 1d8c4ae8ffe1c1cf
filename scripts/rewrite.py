"""Rewrite real models into equivalent forms, verify them exactly, export them to ONNX and time the forms.

    python scripts/rewrite.py                                      # YOLOv5's Focus stem -> one 6x6 stride-2 conv
    python scripts/rewrite.py model=resnet18 rules=[strided_to_spd] timing=false
    python scripts/rewrite.py model=resnet18 'rules=[{fold_stage:{stage:layer1,r:2}}]'
    python scripts/rewrite.py model=all min_run_time=0.5 device=cuda
    python scripts/rewrite.py model=espcn rules=[subpixel_to_transposed]            # a real model, rules of your own
    python scripts/rewrite.py model._target_=mypkg.make_net rules=[strided_to_spd] input_shape=[1,3,64,64]

Models (random weights, nothing downloaded): any spelling of foldconv.models.resolve_model; the real models
yolov5_stem, tresnet_m, dcgan, espcn, resnet18 (foldconv.models) have their own rules and inverse rules
(foldconv/experiments/rewrite.py's REAL_MODELS). The config is
foldconv.experiments.rewrite.RewriteExperiment. Writes sites, models, onnx and timings (.csv, .md),
sites.png, timings.png, summary.md and index.md into the Hydra run dir. Exit status: 0 every rewrite
verified; 1 a rewrite, its round trip or an ONNX form was not verified (outputs written); 2 a malformed
override (one line on stderr, nothing written).
"""
from foldconv.experiments.cli import rewrite as main

if __name__ == "__main__":
    main()
