"""One fold, reported: is the conv over C^2 channels the big strided conv on the pixel-shuffled map?

    python scripts/fold_conv.py                      # the seed: 256ch 3x3 -> r=16 -> 48x48 stride 16
    python scripts/fold_conv.py conv.padding_mode=reflect fold.r=2
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig

from foldconv import ConvSpec, FoldSpec
from foldconv.experiments.one_fold import parse_dtype, run_one_fold
from foldconv.experiments.io import write_markdown, write_table


@dataclass
class ConvConfig:
    dims: int = 2
    in_channels: int = 256
    out_channels: int = 256
    kernel_size: int = 3
    stride: int = 1
    padding: int = 1
    dilation: int = 1
    groups: int = 1
    bias: bool = True
    padding_mode: str = "zeros"


@dataclass
class FoldConfig:
    r: int = 16
    order: str = "crd"


@dataclass
class FoldConvConfig:
    conv: ConvConfig = field(default_factory=ConvConfig)
    fold: FoldConfig = field(default_factory=FoldConfig)
    input_size: List[int] = field(default_factory=lambda: [14, 14])
    batch: int = 1
    dtypes: List[str] = field(default_factory=lambda: ["float32", "bfloat16"])
    trials: int = 3
    seed: int = 0
    timing: bool = True
    min_run_time: float = 0.3
    device: str = "cpu"


ConfigStore.instance().store(name="fold_conv_schema", node=FoldConvConfig)


@hydra.main(version_base="1.3", config_path="../configs", config_name="fold_conv")
def main(cfg: FoldConvConfig) -> int:
    out = Path(HydraConfig.get().runtime.output_dir)
    c = cfg.conv
    spec = ConvSpec.make(c.dims, c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, c.dilation, c.groups, c.bias, c.padding_mode)
    fold = FoldSpec.make(cfg.fold.r, cfg.fold.order, c.dims)
    result = run_one_fold(
        spec, fold, list(cfg.input_size), cfg.batch, [parse_dtype(d) for d in cfg.dtypes], cfg.trials, cfg.seed,
        cfg.timing, cfg.min_run_time, cfg.device,
    )
    text = result.to_markdown()
    write_markdown(text, out / "report.md")
    write_table(result.counts(), out / "counts", title="Parameters and MACs")
    print(text)
    print(f"\nwritten to {out}")
    if result.plan is not None and not result.ok:
        print("CLAIM FAILED: the fold exists but the check says it is not equivalent", file=sys.stderr)
        sys.exit(1)
    return 0


if __name__ == "__main__":
    main()
