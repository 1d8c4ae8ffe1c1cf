"""Every model of a zoo counted and traced, with coverage figures.

    python scripts/zoo.py zoo=timm 'names=[resnet*,convnext*]'      # a name filter
    python scripts/zoo.py -m shard.count=4 'shard.index=range(4)' hydra/launcher=parallel   # joblib, 4 shards
    python scripts/zoo.py merge=multirun/<dir>                      # merge the shards (refuses missing ones)
    python scripts/zoo.py zoo=torchvision check_size=64 check_max_macs=10000000000   # RF checked at 64 px, published figures

The config is foldconv.experiments.zoo.main.ZooExperiment. A killed run resumes with the same command and
hydra.run.dir. Exit status: 0 every affordable gradient check agrees with the analytic receptive field,
1 one disagrees (outputs written), 2 a malformed request or an incomplete multirun (one line).
"""
from foldconv.experiments.cli import zoo as main

if __name__ == "__main__":
    main()
