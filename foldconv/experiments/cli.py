"""The Hydra apps, as installed commands: ``foldconv <command> [key=value ...]`` (or ``python -m foldconv``).

Each command is the same app as ``python scripts/<app>.py`` (those scripts import it from here) and reads the
configs packaged in ``foldconv/experiments/configs``, so it works from any directory once foldconv is installed:

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

Every app ends the same way (:func:`foldconv.experiments.app.finish`): exit 0 when every checked claim holds,
1 when one failed (outputs written), 2 for a malformed request (one line on stderr, nothing written).

Example:
    >>> sorted(COMMANDS)
    ['aggregate', 'count', 'fold', 'operators', 'rewrite', 'rf', 'shift', 'sweep', 'zoo']
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional

from .app import ClaimFailed, check_device, finish, hydra_app, instantiate, register, run_dir
from .counting import CountExperiment, run_count, run_summary
from .one_fold import OneFoldExperiment, run_one_fold
from .operators import OperatorsExperiment, run_operators
from .receptive_field import RFExperiment, run_receptive_field
from .rewrite import RewriteExperiment, run_rewrite, summary_text
from .shift import ShiftExperiment, run_shift
from .sweep import SweepConfig, run_sweep_app
from .sweep.main import AggregateConfig, run_aggregate_app
from .zoo.main import zoo

__all__ = ["COMMANDS", "fold_conv", "operators", "sweep", "aggregate", "count", "receptive_field", "shift", "rewrite", "zoo", "main"]

for _name, _schema in (("fold_conv", OneFoldExperiment), ("operators", OperatorsExperiment), ("sweep", SweepConfig),
                       ("aggregate", AggregateConfig), ("count", CountExperiment), ("receptive_field", RFExperiment),
                       ("shift", ShiftExperiment), ("rewrite", RewriteExperiment)):
    register(f"{_name}_schema", _schema)


def _fold_conv(cfg) -> str:
    experiment: OneFoldExperiment = instantiate(cfg)
    check_device(experiment.device)
    result = run_one_fold(experiment, run_dir())
    if result.plan is not None and not result.ok:
        raise ClaimFailed(f"the fold exists but the check says it is not equivalent: {result.report.summary()}")
    return f"{result.to_markdown()}\n\nwritten to {run_dir()}"


@hydra_app("fold_conv")
def fold_conv(cfg) -> None:
    finish(lambda: _fold_conv(cfg), name="fold_conv")


def _operators(cfg) -> str:
    experiment: OperatorsExperiment = instantiate(cfg)
    out = run_dir()
    result = run_operators(experiment.example, out, ladder=experiment.ladder, dpi=experiment.dpi)
    if not result.ok:
        raise ClaimFailed(", ".join(result.failed))
    return f"{result.markdown}\n\nwritten to {out}"


@hydra_app("operators")
def operators(cfg) -> None:
    finish(lambda: _operators(cfg), name="operators")


@hydra_app("sweep")
def sweep(cfg) -> None:
    finish(lambda: run_sweep_app(instantiate(cfg), run_dir()), name="sweep")


def _aggregate(cfg) -> str:
    from hydra.utils import to_absolute_path

    config: AggregateConfig = instantiate(cfg)
    return run_aggregate_app(config, run_dir(), Path(to_absolute_path(config.input)))


@hydra_app("aggregate")
def aggregate(cfg) -> None:
    finish(lambda: _aggregate(cfg), name="aggregate")


def _count(cfg) -> str:
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module="torchvision")
    experiment: CountExperiment = instantiate(cfg)
    out = run_dir()
    result = run_count(experiment, out)
    if not result.ok:
        raise ClaimFailed(f"{len(result.failed)} of {len(result.checks)} checks failed, see {out / 'checks.md'}")
    return run_summary(result, experiment, out)


@hydra_app("count")
def count(cfg) -> None:
    finish(lambda: _count(cfg), name="count")


def _receptive_field(cfg) -> str:
    experiment: RFExperiment = instantiate(cfg)
    return run_receptive_field(experiment, run_dir())


@hydra_app("receptive_field")
def receptive_field(cfg) -> None:
    finish(lambda: _receptive_field(cfg), name="receptive_field")


def _shift(cfg) -> str:
    experiment: ShiftExperiment = instantiate(cfg)
    return f"{run_shift(experiment, run_dir())}\n\nwritten to {run_dir()}"


@hydra_app("shift")
def shift(cfg) -> None:
    finish(lambda: _shift(cfg), name="shift")


def _rewrite(cfg) -> str:
    experiment: RewriteExperiment = instantiate(cfg)
    check_device(experiment.device)
    return f"{summary_text(run_rewrite(experiment, run_dir()))}\nwritten to {run_dir()}"


@hydra_app("rewrite")
def rewrite(cfg) -> None:
    finish(lambda: _rewrite(cfg), name="rewrite")


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
