"""Records that refuse to lie: a run's completion marker, a multirun's job list, and the command that resumes it.

A run directory is complete only when its app wrote :data:`MARKER` (``.complete.json``), which the app
skeleton writes LAST, after every table, figure and ``index.md``, holding the size and SHA-256 of each CSV
it left. The marker is removed when a run starts, so a run cut at any instant (mid-rows, mid-plots) has none,
and a CSV truncated or edited after the run no longer matches it.

A Hydra multirun directory names its own jobs: Hydra writes ``multirun.yaml`` (the sweeper's overrides) before
the first job starts, and :func:`multirun_jobs` expands it exactly as Hydra's basic sweeper does, so a job that
never started is missing by name, not by a gap in the folder numbers. :func:`require_complete` checks every
job and refuses anything less with one FoldError naming every incomplete job and the one command that resumes
the whole multirun (each job's rows resume; finished jobs redo nothing but their outputs).

Example:
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> _ = (out / "results.csv").write_text("a\\n1\\n")
    >>> job_problem(out)
    'cut at 1 row (no completion marker)'
    >>> _ = write_marker(out, app="sweep", status="ok")
    >>> job_problem(out) is None
    True
    >>> _ = (out / "results.csv").write_text("a\\n")
    >>> job_problem(out)
    'results.csv was changed after the job finished (0 rows now, 1 row when it finished): truncated or edited'
"""
from __future__ import annotations

import hashlib
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ..errors import first_line, fold_error
from .io import write_atomic

__all__ = [
    "MARKER", "MultirunJob", "program_words", "clear_marker", "write_marker", "job_problem", "multirun_jobs", "resume_command",
    "require_complete", "interrupted_line", "interrupted_multirun",
]

PathLike = Union[str, Path]

#: The completion marker every app writes last into its run directory.
MARKER = ".complete.json"

#: ``foldconv <command>`` of an app whose config (and Hydra job name) differs from its command.
COMMAND_OF_CONFIG = {"fold_conv": "fold", "receptive_field": "rf"}


def _counted(n: int) -> str:
    return f"{n:,} row{'s' if n != 1 else ''}"


def _rows(path: Path) -> int:
    data = path.read_bytes()
    return max(0, data.count(b"\n") - 1)  # the header line; a torn last line is not a row


def _cut_at(csv_path: Path) -> str:
    """Where a job without its marker stopped: its rows, or all of them when its config recorded how many
    it plans (``rows`` in ``<stem>.config.json``) and every one was written (only the outputs were cut)."""
    rows = _rows(csv_path)
    try:
        planned = json.loads(csv_path.with_name(csv_path.stem + ".config.json").read_text()).get("rows")
    except (OSError, ValueError, AttributeError):
        planned = None
    if isinstance(planned, int) and rows >= planned > 0:
        return f"all {_counted(rows)} written, cut before its outputs were finished"
    if isinstance(planned, int) and planned > 0:
        return f"cut at {_counted(rows)} of {planned:,}"
    return f"cut at {_counted(rows)}"


def _digest(path: Path) -> Dict[str, Any]:
    data = path.read_bytes()
    return {"bytes": len(data), "rows": max(0, data.count(b"\n") - 1), "sha256": hashlib.sha256(data).hexdigest()}


def clear_marker(out: PathLike) -> Optional[str]:
    """Remove the completion marker of ``out`` (a run is starting there); returns its old text, if any."""
    path = Path(out) / MARKER
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    path.unlink(missing_ok=True)
    return text


def write_marker(out: PathLike, *, app: str, status: str) -> Path:
    """Write ``out``'s completion marker (call it last): the app, its status (``ok`` or ``claim failed``) and
    the size, row count and SHA-256 of every CSV in ``out``."""
    out = Path(out)
    files = {p.name: _digest(p) for p in sorted(out.glob("*.csv")) if p.is_file()}
    return write_atomic(out / MARKER, json.dumps({"app": app, "status": status, "files": files}, indent=1, sort_keys=True) + "\n")


def job_problem(job: PathLike, *, record: str = "results.csv") -> Optional[str]:
    """What keeps the run directory ``job`` from being a finished run whose ``record`` can be trusted
    (None: it finished and ``record`` is as its app left it)."""
    job = Path(job)
    if not job.is_dir():
        return "never started"
    csv_path = job / record
    marker = job / MARKER
    if not marker.exists():
        if not csv_path.exists():
            return f"started but wrote no {record} and no completion marker (crashed, killed, or still running)"
        return f"{_cut_at(csv_path)} (no completion marker)"
    try:
        recorded = json.loads(marker.read_text())["files"].get(record)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        return f"its completion marker is unreadable ({first_line(err)})"
    if recorded is None:
        return f"finished without writing {record} (not a job of this kind of multirun)"
    if not csv_path.exists():
        return f"{record} was deleted after the job finished"
    now = _digest(csv_path)
    if now["sha256"] != recorded["sha256"]:
        return (f"{record} was changed after the job finished ({_counted(now['rows'])} now, {_counted(recorded['rows'])} when it "
                "finished): truncated or edited")
    return None


@dataclass(frozen=True)
class MultirunJob:
    """Job ``number`` of a multirun: its folder ``path`` and its ``overrides`` (as Hydra's sweeper made them)."""

    number: int
    path: Path
    overrides: Tuple[str, ...]


def _load(root: Path) -> Any:
    from omegaconf import OmegaConf

    record = root / "multirun.yaml"
    if not record.exists():
        raise fold_error("input", str(root), "has no multirun.yaml (the record Hydra writes when a multirun starts), so its jobs "
                                             "cannot be listed; pass the hydra.sweep.dir of a multirun (foldconv <app> -m ...)")
    try:
        return OmegaConf.load(record)
    except Exception as err:  # noqa: BLE001 - any parse error of a hand-edited record is the same refusal
        raise fold_error("input", str(root), f"its multirun.yaml cannot be read ({first_line(err)})") from None


def multirun_jobs(root: PathLike) -> List[MultirunJob]:
    """Every job of the multirun in ``root``, from its ``multirun.yaml``, expanded as Hydra's basic sweeper does.

    Example:
        >>> import tempfile
        >>> from omegaconf import OmegaConf
        >>> d = Path(tempfile.mkdtemp())
        >>> OmegaConf.save({"hydra": {"overrides": {"task": ["fold.r=2,4", "grid=quick"]}, "sweeper": {"params": None}}}, d / "multirun.yaml")
        >>> [(j.number, j.overrides) for j in multirun_jobs(d)]
        [(0, ('fold.r=2', 'grid=quick')), (1, ('fold.r=4', 'grid=quick'))]
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    root = Path(root)
    cfg = OmegaConf.to_container(_load(root), resolve=False)
    hydra = cfg.get("hydra", {}) or {}
    sweeper = hydra.get("sweeper", {}) or {}
    target = sweeper.get("_target_", "hydra._internal.core_plugins.basic_sweeper.BasicSweeper")
    if not str(target).endswith("BasicSweeper"):
        raise fold_error("input", str(root), f"was swept by {target}, whose jobs cannot be listed from multirun.yaml (only Hydra's basic sweeper)")
    params = sweeper.get("params") or {}
    task = [f"{k}={v}" for k, v in params.items()] + list((hydra.get("overrides", {}) or {}).get("task", []) or [])
    try:
        parsed = OverridesParser.create().parse_overrides(task)
        (batch,) = BasicSweeper.split_arguments(parsed, None)
    except Exception as err:  # noqa: BLE001 - Hydra's parse errors have several types
        raise fold_error("input", str(root), f"its multirun.yaml overrides cannot be expanded ({first_line(err)})") from None
    return [MultirunJob(i, root / str(i), tuple(overrides)) for i, overrides in enumerate(batch)]


def program_words(config_name: str) -> List[str]:
    """How to start the app of ``config_name`` the way this process was started: ``python <its script>`` when
    this process runs one of the project's scripts (that app's script, or a sibling's: ``scripts/aggregate.py``
    resumes ``scripts/sweep.py``), else the ``foldconv <command>`` (the command as
    :func:`foldconv.experiments.app.invoked_as` names it).

    Example:
        >>> import sys
        >>> argv, sys.argv = sys.argv, ["foldconv sweep"]
        >>> program_words("receptive_field")
        ['foldconv', 'rf']
        >>> sys.argv = argv
    """
    argv0 = sys.argv[0] if sys.argv else ""
    if not argv0.startswith("foldconv ") and argv0.endswith(".py"):
        script = Path(argv0).with_name(f"{config_name}.py")
        if script.is_file():
            return ["python", str(script)]
    return ["foldconv", COMMAND_OF_CONFIG.get(config_name, config_name)]


def resume_command(root: PathLike) -> str:
    """The one command that resumes (or completes) the whole multirun in ``root``: the same app started the way
    this process was (:func:`program_words`), the same overrides, the same ``hydra.sweep.dir``.

    Example:
        >>> import tempfile
        >>> from omegaconf import OmegaConf
        >>> d = Path(tempfile.mkdtemp())
        >>> OmegaConf.save({"hydra": {"job": {"name": "receptive_field"}, "overrides": {"task": ["model=vgg11,vgg13"],
        ...     "hydra": ["hydra/launcher=parallel", "hydra.mode=MULTIRUN", "hydra.sweep.dir=x"]}}}, d / "multirun.yaml")
        >>> resume_command(d).replace(str(d), "DIR")
        'foldconv rf -m model=vgg11,vgg13 hydra/launcher=parallel hydra.sweep.dir=DIR'
    """
    from omegaconf import OmegaConf

    root = Path(root)
    cfg = OmegaConf.to_container(_load(root), resolve=False)
    hydra = cfg.get("hydra", {}) or {}
    name = (hydra.get("job", {}) or {}).get("name") or "<app>"
    overrides = hydra.get("overrides", {}) or {}
    kept = [o for o in overrides.get("hydra", []) or [] if not o.startswith(("hydra.mode=", "hydra.sweep.dir="))]
    words = [*program_words(name), "-m", *(overrides.get("task", []) or []), *kept,
             f"hydra.sweep.dir={root.resolve()}"]
    return " ".join(shlex.quote(w) for w in words)


def require_complete(root: PathLike, *, record: str = "results.csv", param: str = "input") -> List[MultirunJob]:
    """Every job of the multirun in ``root``, after checking that each finished and left its ``record``
    untouched; otherwise one FoldError naming every incomplete job and the command that resumes them all.

    Example:
        >>> import tempfile
        >>> from omegaconf import OmegaConf
        >>> d = Path(tempfile.mkdtemp())
        >>> OmegaConf.save({"hydra": {"job": {"name": "sweep"}, "overrides": {"task": ["fold.r=2,4"]}}}, d / "multirun.yaml")
        >>> require_complete(d)
        Traceback (most recent call last):
        ...
        foldconv.errors.FoldError: input=...: 2 of its 2 jobs are incomplete: job 0 (fold.r=2) never started; job 1 (fold.r=4) never started; refusing to merge; resume the whole multirun with: foldconv sweep -m fold.r=2,4 hydra.sweep.dir=...
    """
    root = Path(root)
    if not root.is_dir():
        raise fold_error(param, str(root), "is not a directory")
    jobs = multirun_jobs(root)
    problems = [(job, job_problem(job.path, record=record)) for job in jobs]
    bad = [f"job {job.number} ({' '.join(job.overrides)}) {problem}" for job, problem in problems if problem]
    if bad:
        raise fold_error(param, str(root), f"{len(bad)} of its {len(jobs)} jobs are incomplete: {'; '.join(bad)}; refusing to merge; "
                                           f"resume the whole multirun with: {resume_command(root)}")
    return jobs


def _multirun_mode() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except (ImportError, ValueError):
        return False


def interrupted_line(out: PathLike, records: Sequence[str] = ("results.csv", "models.csv")) -> Optional[str]:
    """The one line a run prints when Ctrl-C stops it: what is saved in ``out`` and the command that resumes it;
    None for a job of a multirun, whose main process reports every job at once (:func:`interrupted_multirun`).

    Example:
        >>> import tempfile
        >>> interrupted_line(tempfile.mkdtemp()).startswith("interrupted: nothing is saved in ")
        True
    """
    if _multirun_mode():
        return None
    out = Path(out)
    saved = [f"{_counted(_rows(out / r))} saved in {out / r}" for r in records if (out / r).exists()]
    return f"interrupted: {saved[0] if saved else f'nothing is saved in {out}'}; run the same command with hydra.run.dir={out} to resume"


def interrupted_multirun(root: PathLike) -> List[str]:
    """The lines a multirun's main process prints when Ctrl-C stops it: one per job (its overrides and where it
    stopped), then the one command that resumes the whole multirun.

    Example:
        >>> import tempfile
        >>> from omegaconf import OmegaConf
        >>> d = Path(tempfile.mkdtemp())
        >>> OmegaConf.save({"hydra": {"job": {"name": "sweep"}, "overrides": {"task": ["fold.r=2,4"]}}}, d / "multirun.yaml")
        >>> for line in interrupted_multirun(d):
        ...     print(line.replace(str(d), "DIR"))
        interrupted: job 0 (fold.r=2): never started
        interrupted: job 1 (fold.r=4): never started
        resume the whole multirun (finished jobs only redraw their outputs) with: foldconv sweep -m fold.r=2,4 hydra.sweep.dir=DIR
    """
    root = Path(root)
    lines = [f"interrupted: job {job.number} ({' '.join(job.overrides)}): {job_problem(job.path) or 'finished'}" for job in multirun_jobs(root)]
    return lines + [f"resume the whole multirun (finished jobs only redraw their outputs) with: {resume_command(root)}"]
