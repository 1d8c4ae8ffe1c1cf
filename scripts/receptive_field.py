"""Receptive fields of a model (torchvision name or any ``_target_``), checked against gradients, and the
fold table of the motivating question (a 3x3 conv over 256 channels folded by r=16: 48x48 on the folded map,
3x3 input pixels).

    python scripts/receptive_field.py                              # resnet18 at 224, check + ERF at 64, fold r=16
    python scripts/receptive_field.py model=vgg16 check_size=96
    python scripts/receptive_field.py model._target_=torch.nn.Conv2d +model.in_channels=3 +model.out_channels=8 +model.kernel_size=5
    python scripts/receptive_field.py fold.r=2x1 fold.conv.in_channels=8
    python scripts/receptive_field.py zoo=true fold.r=0                # every torchvision classification model

The config is foldconv.experiments.receptive_field.RFExperiment (fold: FoldTable). Writes into the Hydra run
dir: fold.{csv,md}, layers.{csv,md}, rf_jump.png, check.{csv,md}, erf.png (or zoo.{csv,md} with zoo=true).
Exit status: 0 every check holds; 1 a check failed (outputs written); 2 a malformed override (one line on
stderr, nothing written).
"""
from foldconv.experiments.cli import receptive_field as main

if __name__ == "__main__":
    main()
