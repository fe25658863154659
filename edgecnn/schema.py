"""Load-time checks of untrusted documents: checkpoint metadata, export reports, resume states.

A :class:`Doc` wraps one decoded mapping and hands out its fields by type and by
:class:`~edgecnn.limits.Bound`; anything else is one :class:`~edgecnn.errors.EdgeCNNError` line
naming the file and the field, raised before any value is used.
"""

from __future__ import annotations

from typing import Any

from edgecnn.errors import EdgeCNNError, shorten
from edgecnn.limits import KNOBS, Bound

REQUIRED = object()
_NAMES = {str: "a string", dict: "an object", list: "a list", bool: "true or false", int: "an integer",
          float: "a number"}


def kind_name(value: object) -> str:
    """What a JSON reader would call ``value``'s type: 'a list', 'a string', 'null', ..."""
    if value is None:
        return "null"
    return next((name for t, name in _NAMES.items() if type(value) is t), type(value).__name__)


class Doc:
    """A mapping read from ``where`` (a file, or a field of one), with checked accessors."""

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, dict):
            raise EdgeCNNError(f"{where} must be an object with named fields, got {kind_name(data)}")
        self.data, self.where = data, where

    def _fail(self, key: str, text: str) -> EdgeCNNError:
        return EdgeCNNError(f"{self.where}: {key} {text}")

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def get(self, key: str, kind: type | tuple[type, ...] = object, default: Any = REQUIRED, *,
            bound: Bound | None = None, choices: tuple | None = None) -> Any:
        """Field ``key`` checked against ``kind`` (or ``bound``, or ``choices``); a missing or null field is
        ``default``, or an error when there is none."""
        value = self.data.get(key)
        if value is None:
            if default is REQUIRED:
                raise self._fail(key, "is missing")
            return default
        if bound is not None:
            if not bound.allows(value):
                raise self._fail(key, f"must be {'an integer' if bound.integer else 'a number'} in "
                                      f"{bound.interval}, got {shorten(repr(value))}")
        elif isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
            names = " or ".join(_NAMES.get(k, k.__name__) for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise self._fail(key, f"must be {names}, got {kind_name(value)}")
        if choices is not None and value not in choices:
            raise self._fail(key, f"must be one of {', '.join(map(str, choices))}, got {shorten(repr(value))}")
        return value

    def doc(self, key: str, default: Any = REQUIRED) -> "Doc":
        """Field ``key`` as a :class:`Doc` of its own (an empty one for a missing optional field)."""
        value = self.get(key, dict, default)
        return Doc(value if value is not None else {}, f"{self.where}: {key}")

    def items(self, key: str, kind: type | tuple[type, ...] = object, default: Any = REQUIRED, *,
              bound: Bound | None = None, max_len: int | None = None) -> list:
        """Field ``key``: a list whose every item is ``kind`` (or within ``bound``)."""
        values = self.get(key, list, default)
        if values is None:
            return values
        if max_len is not None and len(values) > max_len:
            raise self._fail(key, f"has {len(values)} entries, more than {max_len}")
        holder = Doc({f"{key}[{i}]": v for i, v in enumerate(values)}, self.where)
        return [holder.get(f"{key}[{i}]", kind, bound=bound) for i in range(len(values))]


def check_knobs(doc: Doc, key: str, tunable: dict[str, Any]) -> dict[str, Any]:
    """Field ``key``: a model's knobs, each one the model has (``tunable``: name -> default), a switch
    where the default is one, else a number within its bound."""
    knobs = doc.doc(key, {})
    unknown = sorted(set(knobs.data) - set(tunable))
    if unknown:
        raise EdgeCNNError(f"{knobs.where}: the model has no knob {shorten(unknown[0])} "
                           f"(its knobs: {', '.join(sorted(tunable)) or 'none'})")
    return {k: knobs.get(k, bool) if isinstance(tunable[k], bool) else knobs.get(k, (int, float), bound=KNOBS.get(k))
            for k in knobs.data}
