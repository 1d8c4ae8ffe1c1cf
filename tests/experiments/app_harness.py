"""Run a Hydra app of scripts/ in this process: compose its config with overrides and call its main.

Hydra's ``@hydra.main`` function called with a config runs the task directly, so a test sees the same exit
status and stderr as a command-line run without the ~2 s start of a fresh interpreter. ``run_dir`` (the
app's output directory) falls back to the working directory outside a Hydra run: tests chdir to tmp_path.
"""
from __future__ import annotations

import importlib.util
import sys
from types import ModuleType
from typing import Sequence, Tuple

from hydra import compose, initialize_config_dir

from foldconv.experiments.app import CONFIG_DIR
from helpers import ROOT

_MODULES: dict = {}


def app_module(name: str) -> ModuleType:
    """``scripts/<name>.py`` imported once (importing registers its structured config)."""
    if name not in _MODULES:
        spec = importlib.util.spec_from_file_location(f"_app_{name}", ROOT / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _MODULES[name] = module
    return _MODULES[name]


def run_in_process(name: str, overrides: Sequence[str], capsys) -> Tuple[int, str, str]:
    """Exit status, stdout and stderr of ``scripts/<name>.py overrides...`` (composition errors propagate)."""
    module = app_module(name)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name=name, overrides=list(overrides))
    capsys.readouterr()
    argv0, sys.argv[0] = sys.argv[0], str(ROOT / "scripts" / f"{name}.py")  # as `python scripts/<name>.py` runs it
    try:
        module.main(cfg)
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    finally:
        sys.argv[0] = argv0
    out, err = capsys.readouterr()
    return code, out, err
