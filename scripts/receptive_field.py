"""Receptive fields of a model (torchvision name or any ``_target_``), optionally of a conv and its fold.

    python scripts/receptive_field.py                                   # resnet18 at 224, check + ERF
    python scripts/receptive_field.py model=vgg16 check_size=96
    python scripts/receptive_field.py model._target_=torch.nn.Conv2d +model.in_channels=3 ...
    python scripts/receptive_field.py fold.r=16                         # the seed's 48x48 vs 3x3 table
    python scripts/receptive_field.py zoo=true check=false              # every classification model

Writes into the Hydra run dir: layers.{csv,md} (per node: RF, jump, effective padding, alignment),
rf_jump.png (RF size and jump per layer), erf.png (Luo et al.'s ERF with the analytic box),
check.{csv,md} (analytic vs gradient-support boxes), fold.{csv,md}, zoo.{csv,md}.
Exits 1 when a checked claim fails (analytic != empirical, fold inconsistent, zoo disagreement).
"""
from __future__ import annotations

import sys
import time
from fractions import Fraction
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import hydra
import torch
import torchvision
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from foldconv.analysis.counting.zoo import meta_model
from foldconv.analysis.receptive_field import UnsupportedOpError, receptive_field
from foldconv.analysis.receptive_field.empirical import check_receptive_field, effective_receptive_field
from foldconv.analysis.receptive_field.fold import folded_receptive_field
from foldconv.experiments.io import figure, save_figure, write_table


@dataclass
class FoldConfig:
    r: int = 0  # 0: no fold table; else fold a conv with this factor (the seed: 16)
    in_channels: int = 256
    out_channels: int = 8
    kernel_size: int = 3
    stride: int = 1
    padding: int = 1
    order: str = "crd"
    input_size: List[int] = field(default_factory=lambda: [4, 4])


@dataclass
class RFConfig:
    model: Any = "resnet18"  # a torchvision classification model name, or a node with _target_
    input_size: List[int] = field(default_factory=lambda: [224, 224])
    channels: int = 3
    check: bool = True  # compare analytic boxes with gradient supports (exit 1 on a mismatch)
    check_size: Optional[int] = 64  # input size for the empirical check and the ERF (None: input_size)
    check_nodes: int = 6
    erf_samples: int = 8
    fold: FoldConfig = field(default_factory=FoldConfig)
    zoo: bool = False  # analyse every torchvision classification model (and check them when check=true)
    zoo_check_max_params: float = 1.0e8  # skip the float64 gradient check of bigger models (memory)
    seed: int = 0


ConfigStore.instance().store(name="receptive_field_schema", node=RFConfig)


def _build(node: Any) -> torch.nn.Module:
    if isinstance(node, str):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return torchvision.models.get_model(node, weights=None)
    return hydra.utils.instantiate(node)


def _label(node: Any) -> str:
    return node if isinstance(node, str) else str(node.get("_target_", "model")).split(".")[-1]


def _plots(report, erf, box, out: Path, target: Optional[str] = None) -> None:
    rows = report.rows()
    names = [r["node"] for r in rows]
    fig, (ax1, ax2) = figure(2, 1, figsize=(max(8, len(rows) * 0.08), 6), sharex=True)
    ax1.plot(range(len(rows)), [r[k] for r in rows for k in [next(c for c in r if c.startswith("rf_"))]], marker=".")
    ax1.set_ylabel("RF size (input px)")
    ax1.set_yscale("log")
    ax2.plot(range(len(rows)), [float(Fraction(str(r[next(c for c in r if c.startswith("jump_"))]))) for r in rows], marker=".")
    ax2.set_ylabel("jump (input px)")
    ax2.set_yscale("log")
    ax2.set_xlabel("node (topological order)")
    ax1.set_title(f"{report.model_name}: receptive field per node")
    if len(names) <= 60:
        ax2.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    save_figure(fig, out / "rf_jump.png")
    if erf is not None and erf.ndim == 2:
        fig, ax = figure(figsize=(5, 5))
        ax.imshow(erf / max(erf.max(), 1e-300), cmap="viridis")
        if box is not None:
            from matplotlib.patches import Rectangle

            (h0, h1), (w0, w1) = box
            ax.add_patch(Rectangle((w0 - 0.5, h0 - 0.5), w1 - w0 + 1, h1 - h0 + 1, fill=False, color="red", lw=1.5, label="analytic RF"))
            ax.legend(loc="upper right", fontsize=7)
        ax.set_title(f"ERF (Luo et al.) of the centre unit of {target}", fontsize=9)
        save_figure(fig, out / "erf.png")


def _zoo(cfg: RFConfig, out: Path) -> bool:
    rows, ok = [], True
    for name in torchvision.models.list_models(module=torchvision.models):
        row: Dict[str, Any] = {"model": name}
        size = 299 if name == "inception_v3" else cfg.input_size[0]
        try:
            meta = meta_model(name)
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rep = receptive_field(meta, (1, cfg.channels, size, size))
            row.update(traced=True, seconds=round(time.perf_counter() - t0, 3), nodes=len(rep.nodes),
                       rf=rep.output.rf[0], exact=rep.output.exact, warnings=len(rep.warnings))
        except UnsupportedOpError as exc:
            row.update(traced=False, reason=str(exc)[:160])
            rows.append(row)
            continue
        params = sum(p.numel() for p in meta.parameters())
        if cfg.check and params <= cfg.zoo_check_max_params and not name.startswith("vit"):
            try:
                torch.manual_seed(cfg.seed)
                real = _build(name)
                n = cfg.check_size or size
                chk = check_receptive_field(real, (1, cfg.channels, n, n), max_nodes=cfg.check_nodes, seed=cfg.seed)
                row.update(check_size=n, checked=len(chk.rows), agree=chk.ok)
                ok &= chk.ok
            except Exception as exc:  # an input too small for the model, say: report, do not hide
                row.update(check_size=cfg.check_size, agree=None, reason=f"check skipped: {type(exc).__name__}: {str(exc)[:120]}")
        else:
            row.update(agree=None, reason="check skipped: " + ("ViT needs 224 px (float64 too slow)" if name.startswith("vit") else f"{params / 1e6:.0f}M params" if cfg.check else "check=false"))
        rows.append(row)
        print(row, flush=True)
    write_table(rows, out / "zoo", "Receptive fields of the torchvision classification zoo")
    return ok


@hydra.main(version_base="1.3", config_path="../configs", config_name="receptive_field")
def main(cfg: RFConfig) -> None:
    out = Path(HydraConfig.get().runtime.output_dir)
    ok = True
    if cfg.fold.r:
        f = cfg.fold
        conv = torch.nn.Conv2d(f.in_channels, f.out_channels, f.kernel_size, f.stride, f.padding)
        table = folded_receptive_field(conv, f.r, f.order, tuple(f.input_size))
        write_table(table.rows, out / "fold", f"Receptive field of a conv and of its fold (r={f.r})")
        print(f"fold r={f.r}: consistent={table.consistent}")
        ok &= table.consistent
    if cfg.zoo:
        ok &= _zoo(cfg, out)
    elif cfg.model is not None:
        node = OmegaConf.to_container(cfg.model, resolve=True) if not isinstance(cfg.model, str) else cfg.model
        torch.manual_seed(cfg.seed)
        model = _build(node)
        shape = (1, cfg.channels, *cfg.input_size)
        report = receptive_field(model, shape)
        write_table(report.rows(), out / "layers", f"Receptive fields of {_label(node)} at {tuple(cfg.input_size)}")
        o = report.output
        print(f"{_label(node)}: output RF {o.rf}, jump {tuple(str(j) for j in o.jump)}, padding {o.padding}; {len(report.nodes)} nodes")
        erf = box = target = None
        if cfg.check:
            n = cfg.check_size or cfg.input_size[0]
            small = (1, cfg.channels, *([n] * len(cfg.input_size)))
            chk = check_receptive_field(model, small, max_nodes=cfg.check_nodes, seed=cfg.seed)
            write_table([{k: v for k, v in r.items()} for r in chk.rows], out / "check", f"Analytic vs empirical boxes at {small[2:]}")
            print(f"check at {small[2:]}: {len(chk.rows)} boxes, agree={chk.ok}")
            ok &= chk.ok
            rep_small = receptive_field(model, small)
            # ERF of the last node that is still spatial (the output of a classifier is global)
            # the deepest node whose field still fits well inside the check input, so the box is visible
            spatial = [name for name, nd in rep_small.nodes.items()
                       if nd.exact and nd.aligned and not any(a.constant for a in nd.axes) and max(nd.rf) <= n // 2]
            target = spatial[-1] if spatial else None
            if target is not None and len(cfg.input_size) == 2:
                erf = effective_receptive_field(model, small, node=target, samples=cfg.erf_samples, seed=cfg.seed, report=rep_small)
                box = rep_small.box(target)
        _plots(report, erf, box, out, target if cfg.check else None)
    print(f"outputs in {out}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
