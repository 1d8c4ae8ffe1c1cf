"""Count parameters, MACs, FLOPs and memory of models, per layer and in total, on meta tensors.

    python scripts/count.py                                   # ResNet-50 + the seed's 256-channel 3x3 conv
    python scripts/count.py models='[resnet18,vit_b_16]' input_size='[3,224,224]'
    python scripts/count.py models='[zoo]' published=true plot_layers=false   # all 80 classification models
    python scripts/count.py models='[]' +targets.mine.model._target_=torchvision.models.alexnet
    python scripts/count.py models='[resnet18]' +expect.resnet18.params=11689512   # exit 1 if it differs

Writes per model <label>_{layers,module,type,op,total,dense,fold,fold_detail,fold_model}.{csv,md} and
<label>_layers.png, plus comparison.{csv,md,png}, checks.{csv,md} and d2l_dense.{csv,md} into the Hydra
run dir. Exits 1 when a check fails (parameters != sum(numel), MACs != FlopCounterMode/2, a published or
expected figure differs, a cost-neutral fold changes parameters or MACs).
"""
from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import hydra
import torch
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import MISSING, OmegaConf

from foldconv.experiments.counting import CountJob, run_count_jobs
from foldconv.analysis.counting.zoo import classification_models, meta_model, published_figures
from foldconv._tables import markdown_table


@dataclass
class TargetConfig:
    model: Any = MISSING  # a node with _target_, e.g. {_target_: torch.nn.Conv2d, in_channels: 256, ...}
    input_size: Optional[List[int]] = None  # per-sample input shape; default: the top-level input_size


@dataclass
class CountConfig:
    models: List[str] = field(default_factory=lambda: ["resnet50"])  # torchvision names; "zoo" = all 80
    targets: Dict[str, TargetConfig] = field(default_factory=dict)
    input_size: List[int] = field(default_factory=lambda: [3, 224, 224])
    batch_size: int = 1
    published: bool = False  # torchvision models at their weights' crop size, checked against published figures
    expect: Dict[str, Dict[str, int]] = field(default_factory=dict)  # label -> {params: ..., macs: ...}
    fold_r: List[int] = field(default_factory=lambda: [2, 4, 8, 16])
    fold_order: str = "crd"
    fold_compare_r: Optional[int] = 2
    check_flop_counter: bool = True
    plot: bool = True
    d2l_table: bool = True


ConfigStore.instance().store(name="count_schema", node=CountConfig)


def _build_target(node: Any) -> torch.nn.Module:
    try:
        with torch.device("meta"):
            return hydra.utils.instantiate(node)
    except (NotImplementedError, RuntimeError):
        return hydra.utils.instantiate(node)


@hydra.main(version_base="1.3", config_path="../configs", config_name="count")
def main(cfg: CountConfig) -> int:
    out = Path(HydraConfig.get().runtime.output_dir)
    warnings.filterwarnings("ignore", category=FutureWarning, module="torchvision")
    names = [n for name in cfg.models for n in (classification_models() if name == "zoo" else [name])]
    jobs = []
    for name in names:
        figures = published_figures(name) if cfg.published else None
        model = meta_model(name, **(figures["kwargs"] if figures else {}))
        shape = figures["input_shape"] if figures else (cfg.batch_size, *cfg.input_size)
        jobs.append(CountJob(name, model, tuple(shape), figures, dict(cfg.expect.get(name, {}))))
    for label, target in cfg.targets.items():
        size = target.input_size if target.input_size is not None else cfg.input_size
        model = _build_target(OmegaConf.to_container(target.model, resolve=True))
        jobs.append(CountJob(label, model, (cfg.batch_size, *size), None, dict(cfg.expect.get(label, {}))))
    unused = sorted(set(cfg.expect) - {job.label for job in jobs})
    if unused:  # the defaults carry expectations for models a run may leave out
        print(f"note: no counted model for expect entries {unused}")
    checks = run_count_jobs(
        jobs, out, list(cfg.fold_r), cfg.fold_order, cfg.fold_compare_r, cfg.check_flop_counter, cfg.plot, cfg.d2l_table
    )
    reports = [job.label for job in jobs]
    print(markdown_table([c for c in checks if not c["ok"]] or [{"checks": f"all {len(checks)} passed", "models": len(reports)}]))
    print((out / "comparison.md").read_text())
    print(f"written to {out}")
    if not all(c["ok"] for c in checks):
        print("CLAIM FAILED: see checks.md", file=sys.stderr)
        sys.exit(1)
    return 0


if __name__ == "__main__":
    main()
