"""One registry type for every rule table of foldconv: rewrite rules, following-layer rules, receptive-field
rules and op costs.

A :class:`Registry` maps keys (a rule name, a module class, an aten op...) to values (the rules) with one
policy everywhere:

- ``register(key, value)`` adds an entry; a key that is registered already is a FoldError unless
  ``replace=True`` (so a typo never silently shadows a built-in). Usable as a decorator.
- ``get(key)`` returns the entry or raises a FoldError that names the key and suggests close matches;
  ``find(key)`` returns ``None`` instead.
- ``names()`` lists the keys as text, sorted; ``unregister(key)`` removes an entry and returns it.
- ``with_overrides(mapping)`` is a read-only view that consults ``mapping`` first: the per-call override
  (``count(model, shape, op_costs={op: rule})``) that leaves the global table untouched. Its errors name
  the per-call parameter (``param``: ``op_costs``, ``rules``); a tuple key stands for each of its members.

A table whose keys are classes looks them up along the method resolution order (the most specific
registration wins): pass ``candidates=mro_candidates``.

Example:
    >>> rules = Registry("greeting")
    >>> _ = rules.register("hello", str.upper)
    >>> rules.get("hello")("hi")
    'HI'
    >>> rules.register("hello", str.lower)
    Traceback (most recent call last):
    ...
    foldconv.errors.FoldError: greeting='hello': is registered already; pass replace=True to replace it
    >>> rules.with_overrides({"hello": str.title}).get("hello")("hi there")
    'Hi There'
    >>> rules.get("helo")
    Traceback (most recent call last):
    ...
    foldconv.errors.FoldError: greeting='helo': is not registered; did you mean hello?
"""
from __future__ import annotations

import difflib
from typing import Any, Callable, Dict, Generic, Hashable, Iterator, Mapping, Optional, Sequence, Tuple, TypeVar

from .errors import FoldError, fold_error

__all__ = ["Registry", "mro_candidates"]

V = TypeVar("V")
_MISSING = object()


def mro_candidates(key: Any) -> Sequence[Any]:
    """Lookup order for a class key (or an instance): the class, then its bases, most specific first.

    Example:
        >>> import torch
        >>> mro_candidates(torch.nn.Conv2d)[:2] == (torch.nn.Conv2d, torch.nn.modules.conv._ConvNd)
        True
    """
    cls = key if isinstance(key, type) else type(key)
    return cls.__mro__


def _identity(key: Any) -> Sequence[Any]:
    return (key,)


def _text(key: Any) -> str:
    if isinstance(key, type):
        return key.__qualname__
    name = getattr(key, "__qualname__", None) or getattr(key, "__name__", None)
    return name if isinstance(name, str) else str(key)


class Registry(Generic[V]):
    """A named table ``key -> value`` with one duplicate policy and per-call overrides.

    ``name`` names the table in errors (it is the parameter users pass keys for); ``normalize`` maps what a
    user passes to the stored key (``torch.ops.aten.mm.default`` -> its packet); ``candidates`` gives the keys
    tried by a lookup, in order (:func:`mro_candidates` for class keys); ``check_key``/``check_value`` raise a
    FoldError for entries that do not belong in the table; ``describe`` writes a key as text; ``param`` is the
    keyword through which one call passes overrides (default ``name + "s"``), which their errors name.

    Example:
        >>> import torch
        >>> layers = Registry("layer", candidates=mro_candidates)
        >>> _ = layers.register(torch.nn.modules.conv._ConvNd, "any conv")
        >>> layers.get(torch.nn.Conv2d(1, 1, 1))
        'any conv'
    """

    def __init__(
        self,
        name: str,
        *,
        normalize: Callable[[Any], Hashable] = lambda key: key,
        candidates: Callable[[Any], Sequence[Any]] = _identity,
        check_key: Optional[Callable[[Any], None]] = None,
        check_value: Optional[Callable[[Any, Any], None]] = None,
        describe: Callable[[Any], str] = _text,
        param: Optional[str] = None,
    ) -> None:
        self.name = name
        self.param = param or name + "s"
        self._normalize = normalize
        self._candidates = candidates
        self._check_key = check_key
        self._check_value = check_value
        self._describe = describe
        self._entries: Dict[Hashable, V] = {}
        self.version = 0  # changes with every register/unregister: what was derived from the table is stale then

    # -- mutation: the global table ------------------------------------------------------------------------

    def register(self, key: Any, value: Any = _MISSING, *, replace: bool = False) -> Any:
        """Add ``key -> value`` and return ``value``; without ``value``, a decorator that registers what it wraps.

        Example:
            >>> table = Registry("op")
            >>> @table.register("double")
            ... def double(x): return 2 * x
            >>> table.get("double")(4)
            8
        """
        if not isinstance(replace, bool):
            raise fold_error("replace", replace, "must be True or False")
        stored = self._key(key)

        def add(entry: V) -> V:
            if self._check_value is not None:
                self._check_value(key, entry)
            if stored in self._entries and not replace:
                raise fold_error(self.name, self._describe(stored), "is registered already; pass replace=True to replace it")
            self._entries[stored] = entry
            self.version += 1
            return entry

        return add if value is _MISSING else add(value)

    def unregister(self, key: Any) -> V:
        """Remove ``key`` and return what it held (a FoldError, with close matches, when it is not registered).

        Example:
            >>> table = Registry("op")
            >>> _ = table.register("x", 1)
            >>> table.unregister("x"), "x" in table
            (1, False)
        """
        stored = self._key(key)
        if stored not in self._entries:
            raise self._unknown(stored)
        self.version += 1
        return self._entries.pop(stored)

    # -- lookup -------------------------------------------------------------------------------------------

    def find(self, key: Any) -> Optional[V]:
        """The entry for ``key`` (along its candidates), or None.

        Example:
            >>> Registry("op").find("nothing") is None
            True
        """
        return self._lookup(key, self._entries)

    def get(self, key: Any, default: Any = _MISSING) -> V:
        """The entry for ``key``; ``default`` when given and there is none, else a FoldError with close matches."""
        found = self.find(key)
        if found is not None:
            return found
        if default is not _MISSING:
            return default
        raise self._unknown(self._key(key))

    def names(self) -> Tuple[str, ...]:
        """Every registered key as text, sorted.

        Example:
            >>> table = Registry("op")
            >>> _ = table.register("b", 1); _ = table.register("a", 2)
            >>> table.names()
            ('a', 'b')
        """
        return tuple(sorted(self._describe(k) for k in self._entries))

    def keys(self) -> Tuple[Hashable, ...]:
        return tuple(self._entries)

    def items(self) -> Tuple[Tuple[Hashable, V], ...]:
        return tuple(self._entries.items())

    def __contains__(self, key: Any) -> bool:
        try:
            return self.find(key) is not None
        except Exception:  # a key of the wrong kind is simply not in the table
            return False

    def __iter__(self) -> Iterator[Hashable]:
        return iter(tuple(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.name!r}, {len(self)} entries)"

    # -- per-call overrides -------------------------------------------------------------------------------

    def with_overrides(self, overrides: Optional[Mapping[Any, Any]]) -> Registry[V]:
        """A read-only view of this table that consults ``overrides`` first (``None`` or ``{}``: this table).

        The global table is not modified: this is how one call prices a custom op or analyses a custom module
        differently from every other call. A tuple key stands for each of its members; a bad key or value is
        a FoldError naming :attr:`param`.

        Example:
            >>> table = Registry("op", param="op_rules")
            >>> _ = table.register("x", 1)
            >>> view = table.with_overrides({"x": 2, ("y", "z"): 3})
            >>> view.get("x"), view.get("z"), table.get("x"), "y" in table
            (2, 3, 1, False)
            >>> table.with_overrides([("x", 2)])
            Traceback (most recent call last):
            ...
            foldconv.errors.FoldError: op_rules='list': must be a mapping {op: rule}
        """
        if overrides is None or (isinstance(overrides, Mapping) and not overrides):
            return self
        if not isinstance(overrides, Mapping):
            raise fold_error(self.param, type(overrides).__name__, f"must be a mapping {{{self.name}: rule}}")
        try:
            return _View(self, {k: v for key, v in overrides.items() for k in (key if isinstance(key, tuple) else (key,))})
        except FoldError as err:
            raise fold_error(self.param, err.value, err.rule) from err

    # -- internals ----------------------------------------------------------------------------------------

    def _key(self, key: Any) -> Hashable:
        if self._check_key is not None:
            self._check_key(key)
        stored = self._normalize(key)
        try:
            hash(stored)
        except TypeError:
            raise fold_error(self.name, key, "cannot be a registry key (it is not hashable)") from None
        return stored

    def _lookup(self, key: Any, entries: Mapping[Hashable, V]) -> Optional[V]:
        for candidate in self._candidates(key):
            try:
                stored = self._normalize(candidate)
                if stored in entries:
                    return entries[stored]
            except TypeError:  # unhashable candidates cannot have been registered
                continue
        return None

    def _unknown(self, stored: Hashable) -> Exception:
        text = self._describe(stored)
        close = difflib.get_close_matches(text, self.names(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else (f" (registered: {', '.join(self.names()[:12])}"
                                                                    f"{', ...' if len(self) > 12 else ''})" if len(self) else "")
        return fold_error(self.name, text, "is not registered" + hint)


class _View(Registry[V]):
    """``base`` with ``overrides`` consulted first; read-only."""

    def __init__(self, base: Registry[V], overrides: Mapping[Any, Any]) -> None:
        super().__init__(base.name, normalize=base._normalize, candidates=base._candidates, check_key=base._check_key,
                         check_value=base._check_value, describe=base._describe, param=base.param)
        self._base = base
        for key, value in overrides.items():
            super().register(key, value)
        self._overrides = dict(self._entries)
        self._entries = {**base._entries, **self._overrides}

    def find(self, key: Any) -> Optional[V]:
        # an override beats every table entry, even one registered for a more specific class: it is what this
        # call asked for
        found = self._lookup(key, self._overrides)
        return found if found is not None else self._base.find(key)

    def register(self, key: Any, value: Any = _MISSING, *, replace: bool = False) -> Any:
        raise fold_error(self.name, _text(key), "cannot be registered on a per-call view; register it on the table itself")

    def unregister(self, key: Any) -> V:
        raise fold_error(self.name, _text(key), "cannot be unregistered from a per-call view")
