"""Receptive fields of a model (any spelling: a torchvision name, timm:<name>, a registered architecture, a
``_target_``), checked against gradients, and the fold table of the motivating question (a 3x3 conv over 256
channels folded by r=16: 48x48 on the folded map, 3x3 input pixels).

    python scripts/receptive_field.py                              # resnet18 at 224, check + ERF at 512 (from layer4's rf), fold r=16
    python scripts/receptive_field.py model=vgg16 input_shape=[1,3,96,96] check_size=64
    python scripts/receptive_field.py model._target_=torch.nn.Conv2d +model.in_channels=3 +model.out_channels=8 +model.kernel_size=5
    python scripts/receptive_field.py fold.r=2x1 fold.conv.in_channels=8
    foldconv zoo zoo=torchvision check_size=64                      # every torchvision classification model (the zoo app)

The config is foldconv.experiments.receptive_field.RFExperiment (fold: FoldTable). Writes into the Hydra run
dir: fold.{csv,md}, layers.{csv,md}, rf_jump.png, check.{csv,md}, erf.png, checks.{csv,md}, summary.md, index.md.
Exit status: 0 every check holds; 1 a check failed (outputs written); 2 a malformed override (one line on
stderr, nothing written).
"""
from foldconv.experiments.cli import receptive_field as main

if __name__ == "__main__":
    main()
