"""The first check in a fresh process imports nothing that costs a second: no ``torch._dynamo``.

Recent torch wraps every ``TorchDispatchMode.__torch_dispatch__`` in ``torch._disable_dynamo``, whose first call
imports ``torch._dynamo`` (about a second in a fresh process). foldconv's dispatch modes subclass
:class:`foldconv.capture.DispatchMode`, which keeps the handler as written. The time itself is measured in
benchmarks/check_fold.py (speed goals never live in unit tests); here the import is checked, in a subprocess,
because this process has long imported whatever any other test needed.
"""
from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

from torch.utils._python_dispatch import TorchDispatchMode

import foldconv
from foldconv.capture import DispatchMode
from helpers import ROOT

FIRST_CALLS = """
import sys
import torch
from torch import nn
import foldconv
from foldconv.check import check_equivalence
from foldconv.check.ops import OpRecorder
from foldconv.tracing import forward_elements

for conv, r, order in [(nn.Conv2d(8, 4, 3, padding=1), 2, "crd"), (nn.Conv2d(8, 8, 3, padding=1, groups=2), 2, "dcr"),
                       (nn.Conv1d(6, 2, 3, padding=1, padding_mode="circular"), 3, "focus"), (nn.Conv3d(8, 2, 2), 2, "crd")]:
    assert foldconv.check_fold(conv, r, order), (conv, r, order)
conv = nn.Conv2d(3, 4, 3)
assert check_equivalence(conv, conv, (1, 3, 8, 8))
assert forward_elements(conv, (1, 3, 8, 8)) > 0
x = torch.ones(1, 1, 4)
with OpRecorder(sources=[x]) as rec:
    torch.nn.functional.conv1d(x, torch.ones(1, 1, 2))
assert rec.ran
print(sorted(m for m in sys.modules if m == "torch._dynamo" or m.startswith("torch._dynamo.")))
"""


def test_the_first_checks_in_a_fresh_process_do_not_import_dynamo():
    out = subprocess.run([sys.executable, "-c", FIRST_CALLS], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


def test_a_plain_dispatch_mode_would_import_dynamo():
    # The subprocess above can fail: a mode on torch's own base class pulls torch._dynamo in on its first call.
    code = (
        "import sys, torch\n"
        "from torch.utils._python_dispatch import TorchDispatchMode\n"
        "class Mode(TorchDispatchMode):\n"
        "    def __torch_dispatch__(self, func, types, args=(), kwargs=None):\n"
        "        return func(*args, **(kwargs or {}))\n"
        "with Mode():\n"
        "    torch.ones(2) + 1\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    wraps = hasattr(TorchDispatchMode, "_should_skip_dynamo")  # older torch wraps nothing and imports nothing
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(wraps)


def test_every_dispatch_mode_in_foldconv_keeps_its_handler_unwrapped():
    for info in pkgutil.walk_packages(foldconv.__path__, "foldconv."):
        if not info.name.startswith(("foldconv.experiments", "foldconv.__main__")):
            importlib.import_module(info.name)
    modes = [cls for cls in _subclasses(TorchDispatchMode) if cls.__module__.startswith("foldconv.")]
    assert {cls.__name__ for cls in modes} >= {"OpRecorder", "_Allocations", "_Recorder"}
    for cls in modes:
        if cls is DispatchMode:
            continue
        assert issubclass(cls, DispatchMode), f"{cls.__module__}.{cls.__qualname__} subclasses TorchDispatchMode directly"
        handler = cls.__dict__.get("__torch_dispatch__")
        assert handler is None or not hasattr(handler, "__wrapped__"), f"{cls.__qualname__}'s handler is wrapped"


def _subclasses(cls: type) -> list:
    found = []
    for sub in cls.__subclasses__():
        found += [sub] + _subclasses(sub)
    return found
