"""Count parameters, MACs, FLOPs and memory of models, per layer and in total, on meta tensors.

    python scripts/count.py                                   # ResNet-50 + the motivating question's 256-channel conv
    python scripts/count.py models='[resnet18,vit_b_16]' input_shape='[1,3,224,224]'
    python scripts/count.py models='[zoo]' published=true plot=false   # all 80 classification models
    python scripts/count.py models='[]' +targets.mine.model._target_=torchvision.models.alexnet
    python scripts/count.py models='[resnet18]' +expect.resnet18.params=11689512   # exit 1 if it differs
    python scripts/count.py models='[resnet18]' '~targets' '~expect'   # drop the default target and expectations

Hydra MERGES a mapping given on the command line into the default one, so `targets={}` or `expect={}`
changes nothing; `~targets` / `~expect` clear them (`model=...` alone also replaces models and targets).

The config is foldconv.experiments.counting.CountExperiment. Writes per model
<label>_{layers,module,type,op,total,dense,fold,fold_detail,fold_model}.{csv,md} and <label>_layers.png, plus
comparison.{csv,md,png}, d2l_dense.{csv,md} and, last, checks.{csv,md} into the Hydra run dir. Exit status:
0 every check holds; 1 a check failed (parameters != sum(numel), an op without a cost rule, MACs !=
FlopCounterMode/2, a published or expected figure differs, a cost-neutral fold changes parameters or MACs);
2 a malformed override (one line on stderr, nothing written).
"""
from foldconv.experiments.cli import count as main

if __name__ == "__main__":
    main()
