"""What every Hydra app shares: the run directory, the fold-factor syntax, and one skeleton.

Every app is config -> run -> checks -> write (:func:`app_command`): Hydra composes the config, :func:`instantiate`
turns it into the app's own dataclass (validating it), the app's body computes and writes its own tables and
figures and returns an :class:`AppResult` holding its :class:`Check` list, and :func:`conclude` writes
``checks.{csv,md}``, ``summary.md`` (unless the app writes its own) and ``index.md`` into the run directory, raises :class:`ClaimFailed` naming the failed
checks, or returns the success line. :func:`finish` turns the outcome into an exit status:

- 0: the run finished and every checked claim held;
- 1: the run finished, wrote everything, and a checked claim failed (``ClaimFailed``);
- 2: the request was malformed (a :class:`~foldconv.errors.FoldError`): one line on stderr names the
  parameter, its value and the rule, and nothing that looks like a complete output is left behind.

:func:`hydra_app` is ``@hydra.main`` that reports an override Hydra cannot compose (unknown key, value of
the wrong type) the same way: exit 2 with one line.

The structured config of an app IS a library dataclass: :func:`register` stores it in Hydra's ConfigStore
(frozen dataclasses included) and :func:`instantiate` turns the composed config back into it, running its
validation and naming a bad field by its full key (``conv.groups=3: ...``).

Example:
    >>> parse_r("2x4"), parse_r("3"), parse_r(2), parse_r([2, 1])
    ((2, 4), 3, 2, (2, 1))
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, NoReturn, Optional, Tuple, Union

from .._validate import parse_factors
from ..errors import FoldError, first_line, fold_error
from .io import write_atomic, write_index, write_markdown, write_table
from .records import COMMAND_OF_CONFIG, MARKER, clear_marker, interrupted_line, interrupted_multirun, write_marker

__all__ = [
    "CONFIG_DIR", "R_RULE", "SUMMARY", "ClaimFailed", "Check", "AppResult", "conclude", "checks_verdict", "app_command", "model_given", "parse_r", "run_dir", "finish",
    "hydra_app", "structured", "register", "instantiate", "invoked_as", "close_matches",
]

#: The one wording of the rule a fold factor breaks, in every app (``fold.r``, ``fold_compare_r``, ``example.r``).
R_RULE = "must be an integer >= 1 or one per spatial axis"  # as foldconv._validate.per_axis_ints words it

#: The apps' Hydra configs, shipped inside the package (so installed commands find them).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


class ClaimFailed(Exception):
    """A checked claim did not hold; the outputs are written, the app exits 1."""


@dataclass(frozen=True)
class Check:
    """One checked claim of a run: ``name`` says what must hold, ``ok`` whether it did; ``subject`` is what it is
    about (a model, a form), ``expected`` and ``observed`` the compared values, ``claim`` the ID of
    paper_notes/claims.md it supports, ``detail`` the evidence in words.

    Example:
        >>> c = Check.equal("params == sum(numel)", 580, 580, subject="tiny")
        >>> c.ok, bool(Check("the fold table is consistent", False)), c.row()["check"]
        (True, False, 'params == sum(numel)')
    """

    name: str
    ok: bool
    subject: str = ""
    expected: Any = ""
    observed: Any = ""
    claim: str = ""
    detail: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.ok, bool):
            raise fold_error("ok", self.ok, f"must be True or False (check {self.name!r})")

    @classmethod
    def equal(cls, name: str, expected: Any, observed: Any, **fields: Any) -> Check:
        """The check ``expected == observed``."""
        return cls(name, bool(expected == observed), expected=expected, observed=observed, **fields)

    def __bool__(self) -> bool:
        return self.ok

    def row(self) -> Dict[str, Any]:
        """The checks table's row."""
        return {"subject": self.subject, "check": self.name, "expected": self.expected, "observed": self.observed,
                "ok": self.ok, "claim": self.claim, "detail": self.detail}

    def describe(self) -> str:
        """One line for a failure message: ``"<subject>: <name> (<evidence>)"``."""
        text = f"{self.subject}: {self.name}" if self.subject else self.name
        if self.detail:
            return f"{text} ({self.detail})"
        if (self.expected, self.observed) != ("", ""):
            return f"{text} (expected {self.expected!r}, observed {self.observed!r})"
        return text


class ChecksHeld:
    """``failed``, ``ok`` and truthiness of a result that holds ``checks`` (a tuple of :class:`Check`)."""

    checks: Tuple[Check, ...]

    @property
    def failed(self) -> Tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)

    @property
    def ok(self) -> bool:
        """Every check held."""
        return not self.failed

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True)
class AppResult(ChecksHeld):
    """What an app's body returns to the skeleton: the run's ``title`` and ``answer`` (the first lines of
    index.md and summary.md), its ``checks``, ``files``: what each file it wrote holds (``{name or glob:
    description}``, for index.md; None when the body writes its own index and summary), ``text``: what the app
    prints on success (default: the answer), ``value``: the app's own result object, for callers in Python,
    ``summary``: the Markdown that follows the answer in summary.md (default: ``text`` when it is more than the
    answer), ``document``: ``text`` is a document for programs (``format=json``), printed alone on stdout with the
    "written to" line on stderr, so that ``foldconv count format=json | jq`` parses. An app whose ``files`` names
    ``summary.md`` writes that file itself, answer first.

    Example:
        >>> AppResult("Demo", "2 + 2 = 4", (Check.equal("sum", 4, 2 + 2),)).ok
        True
    """

    title: str
    answer: str
    checks: Tuple[Check, ...] = ()
    files: Optional[Mapping[str, str]] = field(default_factory=dict)
    text: str = ""
    value: Any = field(default=None, repr=False, compare=False)
    summary: str = ""
    document: bool = False


#: index.md's line for the files the skeleton writes.
CHECK_FILES = {"checks.md": "every checked claim of this run: what must hold, expected vs observed, ok",
               "checks.csv": "the same, as CSV"}

#: Every app's run directory starts here: the answer first, then what the app adds.
SUMMARY = "summary.md"

#: The line summary.md holds while a run is in progress: written when the run starts and replaced only when it
#: finished (its tables, figures and index all written), so a run cut at any instant never shows a summary that
#: looks complete (a stale one of an earlier run in the same directory included).
INCOMPLETE = "INCOMPLETE: this run has not finished (it was cut, or it is still running)"


def _in_progress(out: Path, label: str) -> str:
    return "\n".join([f"# {label}: run in progress or cut", "", INCOMPLETE + ": its tables, figures and index.md may be missing or "
                      "partial. Run the same command with", f"hydra.run.dir={out} to resume it; this file is replaced when it finishes.", ""])


def _summary_text(result: AppResult, answer: str) -> str:
    """summary.md of an app that does not write its own: title, answer (with the checks' verdict), the app's
    own Markdown (its leading ``# <title>`` dropped: the title is already there), the failed checks."""
    # a JSON document (format=json) is what stdout prints, not a summary to read: the files hold the same figures
    text = "" if result.document else result.text
    body = result.summary or (text if text.strip() not in ("", result.answer.strip()) else "")
    lines = body.strip("\n").splitlines()
    if lines and lines[0].strip() == f"# {result.title}":
        lines = lines[1:]
    parts = [f"# {result.title}", "", answer, ""]
    if result.failed:
        parts += ["## Failed checks", ""] + [f"- {c.describe()}" for c in result.failed] + [""]
    if "\n".join(lines).strip():
        parts += ["\n".join(lines).strip("\n"), ""]
    parts.append("Every file of this run, with what it holds: [index.md](index.md).")
    return "\n".join(parts)


def _answer_first(path: Path, answer: str, plain: str) -> None:
    """Make the summary.md an app wrote itself start (after its heading) with the run's ``answer``, the line
    index.md starts with (or its ``plain`` form, without the checks' verdict): else the answer goes first."""
    lines = path.read_text().splitlines()
    head = lines[:1] if lines and lines[0].startswith("# ") else []
    rest = lines[len(head):]
    while rest and not rest[0].strip():
        rest = rest[1:]
    first = rest[0].strip() if rest else ""
    if first and (first == answer or first == plain.strip()):  # already the answer (a separate verdict line may follow)
        return
    write_markdown("\n".join(head + ([""] if head else []) + [answer, ""] + rest).rstrip("\n"), path)


def checks_verdict(checks: Tuple[Check, ...]) -> str:
    """Whether ``checks`` held, in the words every summary's and index's first line uses.

    Example:
        >>> checks_verdict((Check.equal("sum", 4, 2 + 2),)), checks_verdict((Check.equal("a", 1, 1), Check.equal("b", 1, 2)))
        ('the 1 check holds.', '1 of 2 checks FAILED (checks.md).')
    """
    failed = [c for c in checks if not c.ok]
    if failed:
        return f"{len(failed)} of {len(checks)} checks FAILED (checks.md)."
    return "the 1 check holds." if len(checks) == 1 else f"all {len(checks)} checks hold."


def conclude(result: AppResult, out_dir: Union[str, Path]) -> str:
    """The skeleton's end of a run: ``checks.{csv,md}`` (when there are checks), ``summary.md`` (the answer first;
    unless the app's ``files`` name its own) and ``index.md`` into ``out_dir``, then :class:`ClaimFailed` naming
    the failed checks, or the success line (the app's text and where it wrote).

    Example:
        >>> import tempfile
        >>> out = tempfile.mkdtemp()
        >>> print(conclude(AppResult("Demo", "one sum", (Check.equal("sum", 4, 2 + 2),)), out).splitlines()[0])
        one sum; the 1 check holds.
        >>> (Path(out) / "summary.md").read_text().splitlines()[:3]
        ['# Demo', '', 'one sum; the 1 check holds.']
        >>> conclude(AppResult("Demo", "one sum", (Check.equal("sum", 5, 2 + 2, subject="arithmetic"),)), out)
        Traceback (most recent call last):
        ...
        foldconv.experiments.app.ClaimFailed: 1 of 1 check(s) failed: arithmetic: sum (expected 5, observed 4); see .../checks.md
    """
    if not isinstance(result, AppResult):
        raise fold_error("result", type(result).__name__, "must be an AppResult (what an app's body returns)")
    out = Path(out_dir)
    failed = result.failed
    answer = result.answer
    if result.checks:
        rows = [c.row() for c in result.checks]
        used = [k for k in rows[0] if k in ("check", "ok") or any(r[k] not in ("", None) for r in rows)]
        write_table([{k: r[k] for k in used} for r in rows], out / "checks", title=f"{result.title}: checks")
        answer += f"; {checks_verdict(result.checks)}"
    if result.files is None and (out / SUMMARY).is_file() and INCOMPLETE in (out / SUMMARY).read_text():
        write_markdown(_summary_text(result, answer), out / SUMMARY)  # an app that writes its own index did not write it
    if result.files is not None:
        files = dict(result.files)
        if SUMMARY not in files:
            write_markdown(_summary_text(result, answer), out / SUMMARY)
            files = {SUMMARY: "the answer first, then what this run found", **files}
        elif (out / SUMMARY).is_file() and INCOMPLETE in (out / SUMMARY).read_text():  # the app did not write its own after all
            write_markdown(_summary_text(result, answer), out / SUMMARY)
        elif (out / SUMMARY).is_file():  # the app's own: every summary.md starts with the answer index.md starts with
            _answer_first(out / SUMMARY, answer, result.answer)
        write_index(out, {**files, **(CHECK_FILES if result.checks else {})}, title=result.title, answer=answer)
    if failed:
        named = "; ".join(c.describe() for c in failed[:3]) + ("; ..." if len(failed) > 3 else "")
        raise ClaimFailed(f"{len(failed)} of {len(result.checks)} check(s) failed: {named}; see {out / 'checks.md'}")
    return f"{result.text or answer}\n\nwritten to {out}"


def model_given(value: Any) -> bool:
    """Whether a config's ``model`` field names a model: its default is an empty node (``{}``), which leaves the
    app's own ``models``; anything else (a name, a ``_target_`` node, a module, a list) replaces them.

    Example:
        >>> model_given({}), model_given(None), model_given("resnet18"), model_given({"_target_": "torch.nn.ReLU"})
        (False, False, True, True)
    """
    return value is not None and not (isinstance(value, (str, Mapping, list, tuple)) and len(value) == 0)


def parse_r(value: Any) -> Union[int, Tuple[int, ...]]:
    """A fold factor in the syntax every app accepts: ``4``, ``"4"``, ``"2x4"`` or ``[2, 4]``.

    Validation of the numbers themselves (``>= 1``, one per axis) is the library's; this only parses.

    Example:
        >>> parse_r("2x1x1")
        (2, 1, 1)
    """
    try:
        parsed = parse_factors(value, "r")
    except FoldError:
        parsed = None
    if isinstance(parsed, bool) or not isinstance(parsed, (int, tuple)):
        raise fold_error("r", value, R_RULE)
    return parsed


def run_dir() -> Path:
    """The Hydra run directory of the current app (the working directory outside Hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except (ImportError, ValueError):
        return Path.cwd()


def _writable(node: Any) -> None:
    from omegaconf import DictConfig, OmegaConf

    node._set_flag("readonly", None)
    for key in node.keys() if isinstance(node, DictConfig) else range(len(node)):
        child = node._get_node(key)
        if isinstance(child, DictConfig) and child._metadata.ref_type is Any:
            # A free-form node (a model's `_target_` and its kwargs): `model.width=8` adds the key, no `+` needed
            child._set_flag("struct", False)
        if OmegaConf.is_config(child):
            _writable(child)


def structured(node: Any) -> Any:
    """``OmegaConf.structured(node)``, writable even for a frozen dataclass (whose config OmegaConf locks).

    Example:
        >>> from foldconv.experiments.operators import OperatorsExperiment
        >>> cfg = structured(OperatorsExperiment)
        >>> cfg.example.r = "2x1"
        >>> cfg.example.r
        '2x1'
    """
    from omegaconf import OmegaConf

    config = OmegaConf.structured(node)
    _writable(config)
    return config


def register(name: str, node: Any) -> None:
    """Store a dataclass as the structured config ``name`` (use it in a config's ``defaults`` list).

    The stored config is :func:`structured`, so command-line overrides reach a frozen dataclass; its own
    checks run in :func:`instantiate`.

    Example:
        >>> from foldconv.experiments.operators import OperatorsExperiment
        >>> register("operators_schema", OperatorsExperiment)
    """
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=name, node=structured(node))


def _prefixed(err: FoldError, prefix: str) -> FoldError:
    if err.param is not None and err.rule is not None:
        return fold_error(prefix + err.param, err.value, err.rule)
    return FoldError(f"{prefix.rstrip('.')}: {err}", param=prefix + (err.param or ""), value=err.value, rule=err.rule)


def instantiate(cfg: Any, *, prefix: str = "") -> Any:
    """The dataclass behind a composed structured config, built (and so validated) field by field.

    A FoldError raised by a nested dataclass names the field by its full key; a missing mandatory value
    (``???``) is a FoldError too.

    Example:
        >>> from foldconv.experiments.operators import OperatorsExperiment
        >>> cfg = structured(OperatorsExperiment)
        >>> instantiate(cfg).example.r
        (2, 2)
        >>> cfg.example.stride = 0
        >>> instantiate(cfg)
        Traceback (most recent call last):
        ...
        foldconv.errors.FoldError: example.stride=0: must be an integer >= 1 or one per spatial axis
    """
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import MissingMandatoryValue

    cls = OmegaConf.get_type(cfg)
    if not dataclasses.is_dataclass(cls):
        return OmegaConf.to_object(cfg)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    names = {f.name for f in fields}
    for key in cfg:
        if key not in names:  # e.g. a `+key=value` override: nothing would read it
            node = cfg._get_node(key)
            value = OmegaConf.to_container(node) if OmegaConf.is_config(node) else node._value()
            close = close_matches(str(key), names)
            hint = f"; did you mean {' or '.join(prefix + c for c in close)}?" if close else ""
            raise fold_error(prefix + str(key), value, _not_an_option(sorted(names), hint))
    kwargs = {}
    for f in fields:
        if f.name in cfg._content and OmegaConf.is_missing(cfg, f.name):  # `in` is False for a ??? value
            raise fold_error(prefix + f.name, "???", f"must be given on the command line ({prefix}{f.name}=...)")
        if f.name not in cfg:
            continue
        child = cfg._get_node(f.name)
        try:
            if isinstance(child, DictConfig) and dataclasses.is_dataclass(OmegaConf.get_type(child)):
                kwargs[f.name] = instantiate(child, prefix=f"{prefix}{f.name}.")
            else:
                kwargs[f.name] = OmegaConf.to_object(child) if OmegaConf.is_config(child) else getattr(cfg, f.name)
        except MissingMandatoryValue:
            raise fold_error(prefix + f.name, "???", "must be given") from None
    try:
        return cls(**kwargs)
    except FoldError as err:
        raise (_prefixed(err, prefix) if prefix else err) from None


def invoked_as(config_name: str) -> str:
    """The name the user typed for the app of ``config_name``, which prefixes its one-line errors: the command of
    ``foldconv <command>``, a script's own name (``python scripts/receptive_field.py``), else the command.

    Example:
        >>> import sys
        >>> argv, sys.argv = sys.argv, ["foldconv rf"]
        >>> invoked_as("receptive_field")
        'rf'
        >>> sys.argv = ["scripts/receptive_field.py"]
        >>> invoked_as("receptive_field"), invoked_as("fold_conv")
        ('receptive_field', 'fold')
        >>> sys.argv = argv
    """
    argv0 = sys.argv[0] if sys.argv else ""
    if argv0.startswith("foldconv "):
        return argv0.split(" ", 1)[1]
    if Path(argv0).stem == config_name:
        return config_name
    return COMMAND_OF_CONFIG.get(config_name, config_name)


def close_matches(key: str, names: Any, n: int = 3, *, cutoff: float = 0.6) -> List[str]:
    """The names closest to a misspelt ``key``, a different case first (``R`` -> ``r``), as the model resolver
    suggests model names.

    Example:
        >>> close_matches("R", ["r", "order", "dims"]), close_matches("kernal", ["kernel", "stride"]), close_matches("xyz", ["r"])
        (['r'], ['kernel'], [])
    """
    import difflib

    names = [str(x) for x in names]
    lower = {x.lower(): x for x in names}
    same_case = [lower[key.lower()]] if key.lower() in lower and lower[key.lower()] != key else []
    close = [lower[c] for c in difflib.get_close_matches(key.lower(), list(lower), n=n, cutoff=cutoff)]
    return list(dict.fromkeys(same_case + close))[:n]


def _not_an_option(options: Any, hint: str) -> str:
    """The rule an unknown option key breaks, the same whichever way it was typed (``key=v`` or ``+key=v``): the
    close matches when there are some, else every option of its level."""
    return f"not an option{hint}" if hint else f"not an option (one of {', '.join(str(o) for o in options)})"


def _unknown_key(text: str) -> Optional[str]:
    """The full key of an override Hydra refused because its config has no such key (None for any other error)."""
    import re

    match = re.search(r"Could not override '([^']+)': Key '[^']+' (?:not in '[^']+'|is not in struct)", text)
    return match.group(1).lstrip("+~") if match else None


def _options(config_name: str, config_dir: Path, parent: str) -> Optional[List[str]]:
    """The keys of the config node ``parent`` (``""``: the top) of the app ``config_name``; None when it is no node."""
    try:
        from hydra import compose, initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra
        from omegaconf import DictConfig, OmegaConf

        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = compose(config_name=config_name, return_hydra_config=parent.split(".")[0] == "hydra")
        node = OmegaConf.select(cfg, parent) if parent else cfg
    except Exception:  # noqa: BLE001 - a hint is a courtesy: never let it hide the error itself
        return None
    if not isinstance(node, DictConfig):
        return None
    return [str(k) for k in node.keys() if not (parent == "" and k == "hydra")]


def _key_hint(config_name: str, config_dir: Path, text: str) -> str:
    """``"; did you mean fold.r?"`` for an override of a key the app's config lacks (empty when none is close)."""
    import re

    match = re.search(r"Could not (?:override|append to config\. An item is already at) '([^']+)'", text) or re.search(r"Key '([^']+)' is not in struct", text)
    if not match:
        return ""
    parent, _, key = match.group(1).lstrip("+~").rpartition(".")
    options = _options(config_name, config_dir, parent)
    close = close_matches(key, options or [])
    where = f"{parent}." if parent else ""
    return f"; did you mean {' or '.join(where + c for c in close)}?" if close else ""


def _type_error(config_name: str, text: str) -> Optional[str]:
    """``"check_nodes=1.5: must be an integer >= 1"``: a value of the wrong type, which OmegaConf refuses before the
    app's dataclass sees it, worded by the rule the dataclass itself states for that field (one wording for
    ``check_nodes=0`` and ``check_nodes=1.5``); None when the override is no such error or the rule cannot be found."""
    import re

    match = re.search(r"Error merging override ([^=\s]+)=(.*?): Value '", text)
    if not match:
        return None
    key, raw = match.group(1).lstrip("+~"), match.group(2)
    try:
        import yaml
        from hydra.core.config_store import ConfigStore
        from omegaconf import OmegaConf

        cls = OmegaConf.get_type(ConfigStore.instance().load(f"{config_name}_schema.yaml").node)
        *parents, name = key.split(".")
        obj = cls()
        for parent in parents:  # a nested dataclass field: its default
            obj = getattr(obj, parent)
        if not dataclasses.is_dataclass(obj) or name not in {f.name for f in dataclasses.fields(obj)}:
            return None
        dataclasses.replace(obj, **{name: yaml.safe_load(raw)})  # the defaults but this field: its own rule
    except FoldError as err:
        if err.param == name and err.rule:
            return f"{key}={raw}: {err.rule}"
    except Exception:  # noqa: BLE001 - the rule is a courtesy: Hydra's own line stands otherwise
        return None
    return None


def _option_error(config_name: str, config_dir: Path, text: str) -> Optional[str]:
    """``"fold.R=2: not an option; did you mean fold.r?"``: an unknown option key named as the user typed it
    (not by the class behind its config), with its value and the close matches (else every option there)."""
    full = _unknown_key(text)
    if full is None:
        return None
    typed = [a.split("=", 1)[1] for a in sys.argv[1:] if "=" in a and a.split("=", 1)[0].lstrip("+~") == full]
    parent = full.rpartition(".")[0]
    hint = _key_hint(config_name, config_dir, text)
    options = _options(config_name, config_dir, parent) or []
    value = f"={typed[-1]}" if typed else ""
    return f"{full}{value}: {_not_an_option(options, hint)}" if hint or options else f"{full}{value}: not an option"


def _refuse(name: str, reason: str) -> NoReturn:
    print(f"{name}: error: {' '.join(reason.split())}", file=sys.stderr)  # one line, always
    sys.exit(2)


def _first_lines(err: BaseException) -> str:
    """``"<first line of err>: <first line of its cause>"``: Hydra's composition errors put the override
    in the first and OmegaConf's reason (wrong type, unknown key) in the second."""
    import re

    parts = [str(e).strip().splitlines()[0].rstrip(".") for e in (err, err.__cause__) if e is not None and str(e).strip()]
    options = re.search(r"Available options in '([^']+)':\n((?:\t.*\n?)+)", str(err))  # a config group's choices
    if options:
        parts.append(f"{options.group(1)} is one of {', '.join(o.strip() for o in options.group(2).splitlines())}")
    return ": ".join(parts) or type(err).__name__


def hydra_app(config_name: str, *, config_path: Optional[str] = None) -> Callable[[Callable[[Any], None]], Callable]:
    """``@hydra.main(version_base="1.3", config_path=..., config_name=...)`` that reports a bad override in one line.

    An override Hydra cannot compose (an unknown key, a value of the wrong type, bad syntax) exits 2 with one
    line on stderr, as a FoldError does through :func:`finish`, instead of Hydra's multi-line report.
    ``config_path`` defaults to the packaged :data:`CONFIG_DIR` (a relative one is relative to the script, as
    with ``hydra.main``); ``config_name`` also names the app in its error lines. Called with a composed
    config (as Hydra's compose API allows) the task runs directly.
    """

    def decorate(task: Callable[[Any], None]) -> Callable:
        import functools
        import os

        import hydra
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        started_task = False

        @functools.wraps(task)
        def marked(cfg: Any) -> None:
            nonlocal started_task
            started_task = True
            return task(cfg)

        entry = hydra.main(version_base="1.3", config_path=config_path or str(CONFIG_DIR), config_name=config_name)(marked)

        @functools.wraps(task)
        def main(cfg: Any = None) -> None:
            nonlocal started_task
            started_task = False  # per call: an earlier call in this process (a test) ran its task
            if cfg is not None:
                return entry(cfg)
            import time

            started = time.time() - 1  # file times have a coarse grain on some file systems
            _EXISTING.update(Path(a.split("=", 1)[1]).resolve() for a in sys.argv[1:]
                             if a.startswith("hydra.run.dir=") and Path(a.split("=", 1)[1]).is_dir())
            previous = os.environ.get("HYDRA_FULL_ERROR")
            os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises instead of printing: the report is ours
            try:
                entry()
            except (HydraException, OmegaConfBaseException) as err:  # composing the config (the task's are FoldErrors)
                config_dir = Path(config_path) if config_path and Path(config_path).is_absolute() else CONFIG_DIR
                line = _first_lines(err)
                _refuse(invoked_as(config_name), _option_error(config_name, config_dir, line) or _type_error(config_name, line)
                        or line + _key_hint(config_name, config_dir, line))
            except (ValueError, TypeError, IndexError, KeyError) as err:
                if started_task:  # the task's own bug: its traceback is the report
                    raise
                # an override OmegaConf cannot apply (``models.x=1``: a list indexed by a name) fails with a plain error
                _refuse(invoked_as(config_name), f"cannot apply the overrides {' '.join(sys.argv[1:])}: {first_line(err, with_type=True)}")
            except KeyboardInterrupt:  # a multirun's launcher (a job's own interrupt exits 130 with its own line)
                multirun = any(a in ("-m", "--multirun") for a in sys.argv[1:])
                print(_interrupted_multirun(started) if multirun else "interrupted before the run started: nothing was written", file=sys.stderr)
                sys.exit(130)
            finally:
                if previous is None:
                    os.environ.pop("HYDRA_FULL_ERROR", None)
                else:
                    os.environ["HYDRA_FULL_ERROR"] = previous

        return main

    return decorate


def _interrupted_multirun(started: float) -> str:
    """The lines of a multirun's main process stopped by Ctrl-C: one per job, then the command that resumes them
    all. The sweep directory is ``hydra.sweep.dir`` of the command line, else the newest ``multirun.yaml``
    written since ``started`` under Hydra's default ``multirun/<date>/<time>``."""
    import glob
    import os

    given = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("hydra.sweep.dir=")]
    records = [Path(given[-1]) / "multirun.yaml"] if given else [
        Path(p) for p in glob.glob(os.path.join("multirun", "*", "*", "multirun.yaml")) if os.path.getmtime(p) >= started]
    records = sorted((p for p in records if p.exists()), key=lambda p: p.stat().st_mtime)
    if not records:
        return "interrupted before the multirun's first job started: nothing to resume"
    try:
        return "\n".join(interrupted_multirun(records[-1].parent))
    except FoldError as err:
        return f"interrupted: {err}"


def app_command(config_name: str, body: Callable[[Any, Path], AppResult], *, name: Optional[str] = None) -> Callable:
    """The Hydra app ``config_name``: compose -> :func:`instantiate` -> ``body(config, run_dir)`` -> :func:`conclude`,
    ended by :func:`finish` (``name`` prefixes its one-line errors; default: :func:`invoked_as`).

    The run's completion marker (:mod:`foldconv.experiments.records`) is removed when the body starts and
    written after everything else (also when a claim failed: the run finished), so a run cut at any instant
    has none; a refused request (FoldError) leaves the directory as it was, marker included. Ctrl-C prints one
    line (what is saved, the command that resumes it) and exits 130; in a multirun, the main process prints one
    line per job and the one command that resumes the whole multirun.
    """

    @hydra_app(config_name)
    def main(cfg: Any) -> None:
        label = name or invoked_as(config_name)

        def run() -> str:
            out = run_dir()
            try:
                config = instantiate(cfg)
            except FoldError:
                _remove_refused_run(out)
                raise
            old = clear_marker(out)
            summary = (out / SUMMARY).read_text() if (out / SUMMARY).is_file() else None
            if out.is_dir():
                write_markdown(_in_progress(out, label), out / SUMMARY)
            try:
                result = body(config, out)
                line = conclude(result, out)
                if getattr(result, "document", False):  # stdout is the document alone; where it went, on stderr
                    line, _, where = line.rpartition("\n\nwritten to ")
                    print(f"written to {where}", file=sys.stderr)
            except FoldError:  # refused: the directory as it was
                if summary is not None:
                    write_atomic(out / SUMMARY, summary)
                elif out.is_dir():
                    (out / SUMMARY).unlink(missing_ok=True)
                if old is not None:
                    write_atomic(out / MARKER, old)
                _remove_refused_run(out)
                raise
            except ClaimFailed:
                write_marker(out, app=label, status="claim failed")
                raise
            except KeyboardInterrupt:
                line = interrupted_line(out)
                if line is None:  # a job of a multirun: its main process reports every job at once
                    raise
                print(line, file=sys.stderr)
                sys.exit(130)
            write_marker(out, app=label, status="ok")
            return line

        finish(run, name=label)

    main.__name__ = main.__qualname__ = config_name
    main.__doc__ = f"``foldconv`` app of the {config_name} config."
    return main


#: Run directories that existed before Hydra made them the run's (a refused run removes what it wrote, not them).
_EXISTING: set = set()


def _remove_refused_run(out: Path) -> None:
    """Remove what Hydra wrote into the run directory ``out`` for a request the app refused (its ``.hydra`` record
    and the apps' logs), so that no folder that looks like a result is left, when that is all it holds: a
    directory with anything else (an earlier run's outputs) is left as it is, and so is any directory outside a
    Hydra run (the working directory); a directory that existed before the run is emptied of those, not removed."""
    import shutil

    try:
        from hydra.core.hydra_config import HydraConfig

        if Path(HydraConfig.get().runtime.output_dir).resolve() != out.resolve():
            return
    except (ImportError, ValueError):
        return
    entries = list(out.iterdir()) if out.is_dir() else []
    ours = [p for p in entries if (p.name == ".hydra" and p.is_dir()) or (p.suffix == ".log" and p.is_file())]
    if len(ours) != len(entries):
        return
    for p in ours:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    if out.resolve() in _EXISTING:
        return
    try:
        out.rmdir()
    except OSError:  # something appeared meanwhile (another process): leave it
        pass


def finish(run: Callable[[], Optional[str]], *, name: str = "foldconv") -> None:
    """Run an experiment and exit with the status described in the module docstring.

    ``run`` returns an optional line to print on success; it raises :class:`ClaimFailed` when a checked
    claim fails (after writing its outputs) and :class:`FoldError` for a malformed request.
    """
    try:
        message = run()
    except FoldError as err:
        _refuse(name, str(err))
    except ClaimFailed as err:
        print(f"CLAIM FAILED: {err}", file=sys.stderr)
        sys.exit(1)
    if message:
        print(message)
