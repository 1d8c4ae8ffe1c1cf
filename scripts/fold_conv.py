"""One fold, reported: is the conv over C^2 channels the big strided conv on the pixel-shuffled map?

    python scripts/fold_conv.py                      # the motivating question: 256ch 3x3 -> r=16 -> 48x48 stride 16
    python scripts/fold_conv.py conv.padding_mode=reflect fold.r=2
    python scripts/fold_conv.py conv.in_channels=32 fold.r=2x4 input_size=[6,5] timing=false

The config is foldconv.experiments.one_fold.OneFoldExperiment: conv is a ConvSpec, fold a FoldSpec
(r: 16, "2x4" or [2, 4]). Writes report.md, costs.{csv,md}, speed.{csv,md} and kernel.png into the Hydra run dir. Exit status: 0 the fold
is equivalent or impossible (the report says why), 1 it exists but the check says it is not equivalent
(outputs written), 2 a malformed override (one line on stderr, nothing written).
"""
from foldconv.experiments.cli import fold_conv as main

if __name__ == "__main__":
    main()
