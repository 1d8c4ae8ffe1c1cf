"""Dense operators of a conv and of its folded form, side by side, and the family of equivalences checked.

    python scripts/operators.py                                  # 4-channel 3x3 conv, r=2, on 4x4
    python scripts/operators.py example.r=3 example.stride=2 example.order=focus
    python scripts/operators.py -m example.order=crd,dcr,focus

Writes into the Hydra run dir: operators.png (original matrix | folded matrix | column permutation),
checks.{csv,md}, shifts.{csv,md}, parameters.{csv,md}. Exits 1 when a checked claim fails.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig

from foldconv.experiments.operators import OperatorsExample, run_operators


@dataclass
class ExampleConfig:
    groups_after_fold: int = 1
    r: int = 2
    out_channels: int = 1
    kernel_size: int = 3
    stride: int = 1
    padding: int = 1
    size: List[int] = field(default_factory=lambda: [4, 4])
    order: str = "crd"


@dataclass
class LadderConfig:
    height: int = 1000
    width: int = 1000
    hidden: int = 1000
    delta: int = 10


@dataclass
class OperatorsConfig:
    example: ExampleConfig = field(default_factory=ExampleConfig)
    ladder: LadderConfig = field(default_factory=LadderConfig)
    seed: int = 0
    weight_range: int = 3
    # Corrupt one weight of the folded conv: every check that compares the two forms must then fail.
    mutate_folded: bool = False
    dpi: int = 120


ConfigStore.instance().store(name="operators_schema", node=OperatorsConfig)


@hydra.main(version_base="1.3", config_path="../configs", config_name="operators")
def main(cfg: OperatorsConfig) -> None:
    out = Path(HydraConfig.get().runtime.output_dir)
    e = cfg.example
    example = OperatorsExample(
        e.groups_after_fold, e.r, e.out_channels, e.kernel_size, e.stride, e.padding, tuple(e.size), e.order,
        cfg.seed, cfg.weight_range, cfg.mutate_folded,
    )
    ladder = (cfg.ladder.height, cfg.ladder.width, cfg.ladder.hidden, cfg.ladder.delta)
    result = run_operators(example, out, ladder=ladder, dpi=cfg.dpi)
    print(result.markdown)
    print(f"\nwritten to {out}")
    if not result.ok:
        print("CLAIM FAILED: " + ", ".join(result.failed), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
