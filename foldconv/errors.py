"""The one error family of foldconv.

Every message names the parameter, the value it had and the rule it breaks, so that a user reading a
traceback never has to open the library to find out what went wrong.
"""
from __future__ import annotations

from typing import Any

__all__ = ["FoldError", "fold_error", "first_line"]


class FoldError(ValueError):
    """Raised when a fold, unfold or equivalence request is impossible or malformed.

    ``param``, ``value`` and ``rule`` name what broke; a message written by hand states its rule after the
    first ``": "``, which becomes ``rule`` when none is given, so every FoldError carries one.

    Example:
        >>> from foldconv import FoldError
        >>> issubclass(FoldError, ValueError)
        True
        >>> FoldError("op='roll': has no receptive-field rule", param="op").rule
        'has no receptive-field rule'
    """

    def __init__(self, message: str, *, param: str | None = None, value: Any = None, rule: str | None = None):
        super().__init__(message)
        self.param = param
        self.value = value
        self.rule = rule if rule is not None else message.split(": ", 1)[-1]


def fold_error(param: str, value: Any, rule: str) -> FoldError:
    """Build a FoldError with the canonical message ``"<param>=<value!r>: <rule>"``.

    Example:
        >>> str(fold_error("r", 0, "must be a positive integer"))
        'r=0: must be a positive integer'
    """
    return FoldError(f"{param}={value!r}: {rule}", param=param, value=value, rule=rule)


def first_line(err: BaseException, *, limit: int | None = None, with_type: bool = False) -> str:
    """The first non-empty line of an exception's message (``with_type``: prefixed by its type), cut at ``limit``.

    This is how foldconv quotes an error raised by a user's model or by torch inside its own one-line errors.

    Example:
        >>> first_line(RuntimeError("shapes do not match\\n  more detail"))
        'shapes do not match'
        >>> first_line(KeyError("x"), with_type=True)
        "KeyError: 'x'"
    """
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if with_type:
        text = f"{type(err).__name__}: {text}".rstrip(": ").strip() if text else type(err).__name__
    elif not text:
        text = type(err).__name__
    return text if limit is None or len(text) <= limit else text[: max(limit - 3, 0)] + "..."
