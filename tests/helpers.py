"""Helpers shared by the tests (``from helpers import ...``: tests/ is on sys.path through pyproject's pytest pythonpath).

Exact verdicts need integer-valued float64 data: sums and products of small integers are exact in float64, so
``torch.equal`` decides equivalence without tolerances (paper_notes/claims.md, "Exact").
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import pytest
import torch
from torch import nn

from foldconv.errors import FoldError

ROOT = Path(__file__).resolve().parents[1]

#: ``make check`` (the fast tier) sets ``HYPOTHESIS_PROFILE=fast``; ``make test`` and CI run the full profile.
FAST_TIER = os.environ.get("HYPOTHESIS_PROFILE") == "fast"


def examples(n: int) -> int:
    """How many hypothesis examples a property test draws: ``n`` in the whole suite, a quarter (at least 5) in
    the fast tier, whose job is to catch a broken property in seconds while ``make test`` searches the space.

    >>> examples(40) in (40, 10)
    True
    """
    return max(5, n // 4) if FAST_TIER else n


def slow_case(*values: Any) -> Any:
    """A ``pytest.param`` of ``values`` marked ``slow``: the case runs in ``make test`` and is left out of the fast
    tier, which keeps one or two cases of the same parametrised test.

    >>> case = slow_case("densenet121", 64)
    >>> case.marks[0].name, case.id
    ('slow', 'densenet121')
    """
    return pytest.param(*values, marks=pytest.mark.slow, id=str(values[0]))


def integer_weights(module: nn.Module, seed: int = 0, bound: int = 7) -> nn.Module:
    """``module`` in float64 with every parameter drawn from the integers in [-bound, bound] (seeded); returns it.

    >>> conv = integer_weights(nn.Conv2d(2, 3, 3))
    >>> conv.weight.dtype, bool((conv.weight == conv.weight.round()).all()), int(conv.weight.abs().max()) <= 7
    (torch.float64, True, True)
    """
    gen = torch.Generator().manual_seed(seed)
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randint(-bound, bound + 1, p.shape, generator=gen))
    return module


def integer_conv(*args, seed: int = 0, bound: int = 7, cls: type = nn.Conv2d, **kwargs) -> nn.Module:
    """``cls(*args, **kwargs)`` (an ``nn.Conv2d`` unless told) with integer-valued float64 parameters.

    >>> integer_conv(4, 2, 3, padding=1, seed=1).weight.shape
    torch.Size([2, 4, 3, 3])
    """
    return integer_weights(cls(*args, **kwargs), seed, bound)


def integer_tensor(shape: Sequence[int], *, seed: int = 0, bound: int = 9) -> torch.Tensor:
    """A float64 tensor of ``shape`` with integer values in [-bound, bound] (seeded).

    >>> x = integer_tensor((1, 4, 3, 3))
    >>> x.dtype, bool((x == x.round()).all()), torch.equal(x, integer_tensor((1, 4, 3, 3)))
    (torch.float64, True, True)
    """
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(-bound, bound + 1, tuple(shape), generator=gen).double()


def run_script(name: str, *args: str, run_dir: Optional[Path] = None, cwd: Optional[Path] = None,
               timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``scripts/<name>.py`` with Hydra overrides ``args`` in a fresh interpreter; output captured as text.

    With ``run_dir`` the app writes there (``hydra.run.dir``) and, when that folder exists already, runs in it,
    so parallel test workers never share a directory. Tests that call it are marked ``app`` (tests/conftest.py).
    """
    head = [f"hydra.run.dir={run_dir}"] if run_dir is not None else []
    if cwd is None:
        cwd = run_dir if run_dir is not None and Path(run_dir).is_dir() else ROOT
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / f"{name}.py"), *head, *args],
        capture_output=True, text=True, cwd=cwd, timeout=timeout,
    )


def raises_fold_error(param: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> FoldError:
    """The catalogue's one assertion: ``call(*args, **kwargs)`` raises a FoldError (a ValueError) whose
    ``param`` is ``param``, that states a rule, and whose message shows ``<param>=<value>``."""
    with pytest.raises(FoldError) as info:
        call(*args, **kwargs)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.param == param, (err.param, str(err))
    assert err.rule and f"{param}=" in str(err), str(err)
    return err
