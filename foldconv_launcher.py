"""The installed ``foldconv`` command: checks that ``import foldconv`` is this installation, then runs the CLI.

It lives outside the package on purpose: when a folder named ``foldconv`` on PYTHONPATH or in the working
directory shadows the installed package, nothing inside the package runs, and Python's own report is a traceback
ending in ``No module named 'foldconv.experiments'`` (or, with a complete copy, another version runs silently).
This module sits beside the package it was installed with, so it can tell which ``foldconv`` it should get.

Example:
    >>> shadowing() is None  # foldconv is imported from beside this file
    True
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

__all__ = ["main", "shadowing"]


def _origin(module: object) -> str:
    file = getattr(module, "__file__", None)
    if file:
        return str(Path(file).resolve().parent)
    return ", ".join(str(Path(p).resolve()) for p in getattr(module, "__path__", [])) or "?"


def shadowing() -> Optional[str]:
    """Why the ``foldconv`` that Python imports is not the one installed beside this file (None: it is)."""
    expected = Path(__file__).resolve().parent / "foldconv"
    try:
        import foldconv
    except Exception as err:  # noqa: BLE001 - whatever a shadowing folder's __init__ raises
        return f"'import foldconv' fails ({type(err).__name__}: {err})"
    found = _origin(foldconv)
    if expected.is_dir() and found != str(expected):
        return f"'import foldconv' finds {found}, not the installed package {expected}"
    try:
        import foldconv.experiments.cli  # noqa: F401
    except ImportError as err:
        return f"the foldconv found at {found} has no working foldconv.experiments ({type(err).__name__}: {err})"
    return None


def main() -> None:
    """``foldconv <command> ...``: exit 2 with one line when another folder named foldconv shadows the install."""
    try:
        problem = shadowing()  # imports foldconv and torch: seconds, during which Ctrl-C must not print a traceback
    except KeyboardInterrupt:
        print("interrupted while starting: nothing was run", file=sys.stderr)
        sys.exit(130)
    if problem is not None:
        print(f"foldconv: error: {problem}: a folder named foldconv on PYTHONPATH or in the working directory shadows "
              "the installed package; rename it, or run from another directory without it on PYTHONPATH", file=sys.stderr)
        sys.exit(2)
    from foldconv.experiments.cli import main as run

    run()


if __name__ == "__main__":
    main()
