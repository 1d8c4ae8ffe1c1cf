"""The Hydra apps, as installed commands: ``foldconv <command> [key=value ...]`` (or ``python -m foldconv``).

Each command is the same app as ``python scripts/<app>.py`` (those scripts import it from here) and reads the
configs of the top-level ``configs/``, shipped inside the package as ``foldconv/configs``, so it works from any directory once foldconv is installed:

=========== ================= ==========================================================================
command     config            what it does
=========== ================= ==========================================================================
fold        fold_conv.yaml    one fold, reported: is the conv over C^2 channels the big strided conv?
operators   operators.yaml    the dense operators of a conv and of its fold, side by side
sweep       sweep.yaml        the equivalence phase diagram over a grid (``grid=quick|full``)
aggregate   aggregate.yaml    merge a sweep multirun (``input=<multirun dir>``), checking it is complete
count       count.yaml        parameters, MACs, FLOPs and memory of models, per layer and in total
rf          receptive_field   receptive fields of a model, checked against gradients
shift       shift.yaml        shift equivariance and the inductive-bias question
rewrite     rewrite.yaml      real models rewritten into equivalent forms, verified, exported to ONNX, timed
zoo         zoo.yaml          every timm/torchvision model counted and traced: coverage figures (sharded, resumable)
=========== ================= ==========================================================================

Every app is the same skeleton (:func:`foldconv.experiments.app.app_command`): config -> run -> checks -> write;
exit 0 when every checked claim holds, 1 when one failed (outputs written, checks.md says which), 2 for a
malformed request (one line on stderr, nothing written).

Example:
    >>> sorted(COMMANDS)
    ['aggregate', 'count', 'fold', 'operators', 'rewrite', 'rf', 'shift', 'sweep', 'zoo']
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional

from .app import AppResult, app_command, register
from .counting import CountExperiment, count_app
from .one_fold import OneFoldExperiment, fold_app
from .operators import OperatorsExperiment, operators_app
from .receptive_field import RFExperiment, run_receptive_field
from .rewrite import RewriteExperiment, run_rewrite
from .shift import ShiftExperiment, run_shift
from .sweep import SweepConfig, run_sweep_app
from .sweep.main import AggregateConfig, run_aggregate_app
from .zoo.main import ZooExperiment, zoo_app

__all__ = ["COMMANDS", "fold_conv", "operators", "sweep", "aggregate", "count", "receptive_field", "shift", "rewrite", "zoo", "main"]

for _name, _schema in (("fold_conv", OneFoldExperiment), ("operators", OperatorsExperiment), ("sweep", SweepConfig),
                       ("aggregate", AggregateConfig), ("count", CountExperiment), ("receptive_field", RFExperiment),
                       ("shift", ShiftExperiment), ("rewrite", RewriteExperiment), ("zoo", ZooExperiment)):
    register(f"{_name}_schema", _schema)


def _sweep(config: SweepConfig, out: Path) -> AppResult:
    # the sweep writes its own index.md and raises ClaimFailed itself (files=None: the skeleton leaves its index alone)
    line = run_sweep_app(config, out)
    return AppResult("Equivalence sweep", line, files=None, text=line.rsplit("; outputs in ", 1)[0])


def _aggregate(config: AggregateConfig, out: Path) -> AppResult:
    from hydra.utils import to_absolute_path

    line = run_aggregate_app(config, out, Path(to_absolute_path(config.input)))
    return AppResult("Aggregated sweep", line, files=None, text=line.rsplit("; outputs in ", 1)[0])


fold_conv = app_command("fold_conv", fold_app)
operators = app_command("operators", operators_app)
sweep = app_command("sweep", _sweep)
aggregate = app_command("aggregate", _aggregate)
count = app_command("count", count_app)
receptive_field = app_command("receptive_field", run_receptive_field)
shift = app_command("shift", run_shift)
rewrite = app_command("rewrite", run_rewrite)
zoo = app_command("zoo", zoo_app)


#: ``foldconv <command>`` -> the app it runs.
COMMANDS: Dict[str, Callable[..., None]] = {
    "fold": fold_conv, "operators": operators, "sweep": sweep, "aggregate": aggregate,
    "count": count, "rf": receptive_field, "shift": shift, "rewrite": rewrite, "zoo": zoo,
}

_USAGE = """usage: foldconv <command> [key=value ...] [--help] [-m]

commands (each is a Hydra app; `foldconv <command> --help` lists its options and their defaults):
  fold       one fold, reported: is the conv over C^2 channels the big strided conv?  (fold.r=2x4 conv.in_channels=32)
  operators  the dense operators of a conv and of its fold, side by side              (example.r=2x1)
  sweep      the equivalence phase diagram over a grid                                (grid=quick|full fold.r=2)
  aggregate  merge a sweep multirun, checking it is complete                          (input=multirun/<dir>)
  count      parameters, MACs, FLOPs and memory of a model                            (model=resnet18)
  rf         receptive fields of a model, checked against gradients                   (model=vgg16)
  shift      shift equivariance of models and D2L's ladder                            (model=resnet18)
  rewrite    real models rewritten into equivalent forms, verified, timed             (model=yolov5_stem|all)
  zoo        every model of a zoo counted and traced, coverage figures                (zoo=timm 'names=[resnet*]')
"""


def main(argv: Optional[List[str]] = None) -> None:
    """``foldconv <command> [overrides...]``: run the command's app with the remaining arguments."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_USAGE, end="")
        sys.exit(0 if args else 2)
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(command, list(COMMANDS), n=2)
        hint = f"; did you mean {' or '.join(close)}?" if close else f"; one of {', '.join(COMMANDS)}"
        print(f"foldconv: error: command={command!r}: is not a foldconv command{hint}", file=sys.stderr)
        sys.exit(2)
    sys.argv = [f"foldconv {command}", *rest]  # Hydra reads its overrides from sys.argv
    COMMANDS[command]()
