"""
Compare the JSON shape of two answers: key names, JSON types, ``[]`` against ``{}``, nesting.

Values (ids, texts, timestamps, counts) are never compared; what is compared is what a client's parsing depends on:

* JSON types: ``string``, ``int``, ``float``, ``bool``, ``null``, ``list`` (any JSON array, ``[]`` included) and
  ``object`` (a non-empty JSON object). An empty ``{}`` is its own type, ``{}``: PHP writes an empty map as ``[]``,
  so ``[]`` against ``{}`` or against a filled map is a difference. ``int`` and ``float`` are one type only at the
  ``time`` keys listed in :data:`MIXED_NUMBERS`, where real portals send both.
* Key names of records, missing (the real answer has the key, the sandbox's has not) or extra (the other way).
* Maps keyed by ids (every key a number or ``chat<number>``, like the ``message`` map of a history or the sections
  of a batch with numeric command keys): the ids are values, so the shape of their entries is compared, all entries
  merged into one shape.
* Lists: the shape of their items, all items merged into one shape.

Where one answer holds several values at one place (the items of a list, the entries of a map) their shapes are
merged: a key is missing when some real value has it and no sandbox value has it (and extra the other way round),
and the sandbox may send fewer types there than the real answer shows (a field that is ``[]`` for some real messages
and a map for others), never one the real answer does not show.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: Keys of a map keyed by ids: a number, or ``chat<number>`` (``usersMessage`` of a history).
ID_KEY = re.compile(r"(?:chat)?\d+")
#: ``time`` keys where real portals send both an int and a float (``start`` without a fraction,
#: ``processing`` and ``operating`` as a plain ``0``); elsewhere int against float is a difference.
MIXED_NUMBERS = frozenset({"start", "processing", "operating"})

ID = "{id}"
ITEM = "[]"
ANY = "*"


@dataclass(frozen=True)
class Difference:
    """
    One shape difference.

    :param path: Where, dotted from the top: ``{id}`` stands for every entry of a map keyed by ids, ``[]`` for
        every item of a list (``result.message.{id}.params``).
    :param kind: ``missing`` (a key of the real answer the sandbox does not send), ``extra`` (a key the sandbox
        sends and the real answer has not), ``type`` (the sandbox sends a JSON type the real answer has not there).
    :param real: The real answer's JSON types there (``-`` for a key it lacks).
    :param sandbox: The sandbox's JSON types there (``-`` for a key it lacks).
    """

    path: str
    kind: str
    real: str = "-"
    sandbox: str = "-"

    def __str__(self) -> str:
        if self.kind == "missing":
            return f"{self.path}: missing in the sandbox (real: {self.real})"
        if self.kind == "extra":
            return f"{self.path}: sent only by the sandbox ({self.sandbox})"
        return f"{self.path}: real {self.real}, sandbox {self.sandbox}"


@dataclass
class Shape:
    """The merged shape of every value found at one place."""

    types: set[str] = field(default_factory=set)
    fields: dict[str, Shape] = field(default_factory=dict)
    entries: Shape | None = None
    items: Shape | None = None

    def add(self, value: Any) -> None:
        self.types.add(json_type(value))
        if isinstance(value, dict) and value:
            if is_id_map(value):
                self.entries = self.entries or Shape()
                for entry in value.values():
                    self.entries.add(entry)
            else:
                for key, item in value.items():
                    self.fields.setdefault(str(key), Shape()).add(item)
        elif isinstance(value, list):
            for item in value:
                self.items = self.items or Shape()
                self.items.add(item)


def json_type(value: Any) -> str:
    """The JSON type of a decoded value, ``{}`` for an empty object."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object" if value else "{}"
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def is_id_map(value: dict[str, Any]) -> bool:
    """Whether a non-empty object is a map keyed by ids."""
    return bool(value) and all(ID_KEY.fullmatch(str(key)) for key in value)


def shape_of(values: Iterable[Any]) -> Shape:
    """The merged shape of ``values``."""
    shape = Shape()
    for value in values:
        shape.add(value)
    return shape


def compare(real: Any, sandbox: Any, *, opaque: Iterable[str] = ()) -> list[Difference]:
    """
    Every shape difference between a real body and the sandbox's body for the same call.

    :param opaque: Paths whose values are not looked into (``*`` matches one step), e.g. the results of a batch
        whose commands the sandbox played with methods of its own.
    """
    patterns = [_pattern(p) for p in opaque]
    differences: list[Difference] = []
    _compare(shape_of([real]), shape_of([sandbox]), "", patterns, differences)
    return differences


def paths(value: Any) -> dict[str, set[str]]:
    """Every path of a value's shape, named as :class:`Difference` names them, with the JSON types found there."""
    found: dict[str, set[str]] = {}
    _walk(shape_of([value]), "", found)
    return found


def _walk(shape: Shape, path: str, found: dict[str, set[str]]) -> None:
    found[path or "(top)"] = _types(shape, path)
    for key, child in shape.fields.items():
        _walk(child, _join(path, key), found)
    if shape.entries is not None:
        _walk(shape.entries, _join(path, ID), found)
    if shape.items is not None:
        _walk(shape.items, _join(path, ITEM), found)


def _compare(real: Shape, sandbox: Shape, path: str, opaque: list[re.Pattern[str]], out: list[Difference]) -> None:
    if path and any(p.fullmatch(path) for p in opaque):
        return
    real_types, sandbox_types = _types(real, path), _types(sandbox, path)
    if not sandbox_types <= real_types:
        out.append(Difference(path or "(top)", "type", _names(real_types), _names(sandbox_types)))
    if "object" in real.types and "object" in sandbox.types:
        for key in sorted(real.fields.keys() - sandbox.fields.keys()):
            where = _join(path, key)
            out.append(Difference(where, "missing", real=_names(_types(real.fields[key], where))))
        for key in sorted(sandbox.fields.keys() - real.fields.keys()):
            where = _join(path, key)
            out.append(Difference(where, "extra", sandbox=_names(_types(sandbox.fields[key], where))))
        for key in sorted(real.fields.keys() & sandbox.fields.keys()):
            _compare(real.fields[key], sandbox.fields[key], _join(path, key), opaque, out)
        if real.entries is not None and sandbox.entries is not None:
            _compare(real.entries, sandbox.entries, _join(path, ID), opaque, out)
        elif real.entries is not None:
            out.append(Difference(_join(path, ID), "missing", real="entries keyed by ids"))
        elif sandbox.entries is not None:
            out.append(Difference(_join(path, ID), "extra", sandbox="entries keyed by ids"))
    if real.items is not None and sandbox.items is not None:
        _compare(real.items, sandbox.items, _join(path, ITEM), opaque, out)


def _types(shape: Shape, path: str) -> set[str]:
    """The types at ``path``, with int and float as one ``number`` at the ``time`` keys where portals mix them."""
    last = path.rsplit(".", 1)[-1]
    if last in MIXED_NUMBERS and _in_time_block(path) and shape.types & {"int", "float"}:
        return (shape.types - {"int", "float"}) | {"number"}
    return set(shape.types)


def _in_time_block(path: str) -> bool:
    """Whether ``path`` ends at a key of a ``time`` block (the answer's or a batch command's)."""
    steps = path.split(".")
    return len(steps) >= 2 and (steps[-2] == "time" or (len(steps) >= 3 and steps[-3] == "result_time"))


def type_names(text: str) -> set[str]:
    """The types of a :class:`Difference`'s ``real`` or ``sandbox`` text."""
    return set() if text == "-" else set(text.split("|"))


def _names(types: set[str]) -> str:
    return "|".join(sorted(types)) or "-"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _pattern(path: str) -> re.Pattern[str]:
    return re.compile(r"[^.]+".join(re.escape(step) for step in path.split(ANY)))
