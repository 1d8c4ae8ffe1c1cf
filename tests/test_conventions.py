"""The project's naming conventions, checked over every module of the package (README "Architecture").

"Did it pass" is spelled one way: a result with an ``ok`` property is truthy exactly when ``ok`` is, and no
result carries a second spelling of the same bit. Full tensor shapes are ``input_shape`` and spatial sizes
``input_size``: no public function takes ``size``/``shape``/``in_shape``/``spatial_dims``.
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import re

import pytest

import foldconv
from foldconv import EquivalenceReport, Verdict

SECOND_SPELLINGS = {"equivalent", "passed", "holds", "success", "is_ok", "all_ok"}
SHAPE_SPELLINGS = {"size", "shape", "in_shape", "x_shape", "spatial_dims", "ndim"}


def _public_objects():
    for info in pkgutil.walk_packages(foldconv.__path__, "foldconv."):
        module = importlib.import_module(info.name)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if getattr(obj, "__module__", None) == module.__name__ and "._" not in module.__name__:
                yield f"{module.__name__}.{name}", obj


PUBLIC = dict(_public_objects())
RESULTS = {name: cls for name, cls in PUBLIC.items() if inspect.isclass(cls) and isinstance(vars(cls).get("ok"), property)}


def test_the_scan_sees_the_results():
    # guards the scan itself: if discovery broke, the tests below would pass on nothing
    assert len(PUBLIC) > 150
    assert {"foldconv.check.report.EquivalenceReport", "foldconv.analysis.receptive_field.empirical.RFCheck"} <= set(RESULTS)
    assert len(RESULTS) >= 8


@pytest.mark.parametrize("name", sorted(RESULTS))
def test_ok_results_are_truthy_exactly_when_ok_and_have_one_spelling(name):
    cls = RESULTS[name]
    assert "__bool__" in vars(cls), f"{name} has .ok but bool() ignores it"
    assert not (SECOND_SPELLINGS & {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set())
    assert not SECOND_SPELLINGS & set(vars(cls)), f"{name} spells 'did it pass' twice"


@pytest.mark.parametrize("verdict", list(Verdict))
def test_equivalence_report_bool_is_ok(verdict):
    report = EquivalenceReport(verdict, True, (1,), (1,))
    assert bool(report) is report.ok is (verdict is Verdict.EQUIVALENT)
    assert not hasattr(report, "equivalent")


def test_public_functions_use_input_shape_and_input_size():
    offenders = []
    for name, obj in PUBLIC.items():
        functions = [(name, obj)] if inspect.isfunction(obj) else []
        if inspect.isclass(obj):
            for attr, value in vars(obj).items():
                value = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
                if not attr.startswith("_") and inspect.isfunction(value):
                    functions.append((f"{name}.{attr}", value))
        for fname, fn in functions:
            bad = SHAPE_SPELLINGS & set(inspect.signature(fn).parameters)
            # check.exact.integers(shape, ...) draws a tensor of any shape, like torch.randint(size=...)
            if bad and fname != "foldconv.check.exact.integers":
                offenders.append((fname, sorted(bad)))
    assert not offenders, offenders


SECTION = re.compile(r"^(\s*)(Args|Arguments|Returns|Yields|Raises|Example|Examples|Note|Notes|See Also):\s*$")
ENTRY = re.compile(r"^(\*{0,2}\w+)(\s*\([^)]*\))?:")


def _sections(doc: str) -> dict:
    """Google-style sections of a docstring: ``{header: [entry lines at the section's first indentation]}``."""
    sections, header, indent = {}, None, None
    for line in inspect.cleandoc(doc or "").splitlines():
        match = SECTION.match(line)
        if match:
            header, indent = match.group(2), None
            sections[header] = []
            continue
        if header is None or not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if depth == 0:  # prose after the section ends it
            header = None
            continue
        indent = depth if indent is None else indent
        if depth == indent:
            sections[header].append(line.strip())
    return sections


def documented_parameters(fn) -> list:
    """What ``fn``'s docstring is missing: parameters absent from ``Args:`` and a missing ``Returns:``/``Yields:``."""
    sections = _sections(inspect.getdoc(fn))
    named = {m.group(1) for m in map(ENTRY.match, sections.get("Args", ())) if m}
    missing = []
    for p in inspect.signature(fn).parameters.values():
        spelled = {p.VAR_POSITIONAL: f"*{p.name}", p.VAR_KEYWORD: f"**{p.name}"}.get(p.kind, p.name)
        if spelled not in named:
            missing.append(f"Args: {spelled}")
    if "Returns" not in sections and "Yields" not in sections:
        missing.append("Returns:")
    return missing


TOP_LEVEL_FUNCTIONS = sorted(name for name in foldconv.__all__ if inspect.isfunction(inspect.unwrap(getattr(foldconv, name))))


def test_the_top_level_function_scan_sees_them_all():
    assert len(TOP_LEVEL_FUNCTIONS) >= 36
    assert {"fold_conv", "allocation_limit", "count", "build_model", "check_fold"} <= set(TOP_LEVEL_FUNCTIONS)


@pytest.mark.parametrize("name", TOP_LEVEL_FUNCTIONS)
def test_top_level_functions_document_args_and_returns(name):
    fn = getattr(foldconv, name)
    assert not documented_parameters(fn), f"foldconv.{name} docstring lacks {documented_parameters(fn)}"


def test_the_docstring_check_can_fail():
    def documented(a: int, *rest: int, b: int = 1, **extra: int) -> int:
        """Add.

        Args:
            a: the first.
            *rest: more.
            b (int): the second; default 1.
                A continuation line that is not an entry: b_shadow: ignored.
            **extra: ignored.

        Returns:
            The sum.
        """

    def undocumented(a: int, b: int = 1) -> int:
        """Add.

        Args:
            a: the first.

        Example:
            >>> 1
            1
        """

    assert documented_parameters(documented) == []
    assert documented_parameters(undocumented) == ["Args: b", "Returns:"]
