"""
The ``batch`` method: up to 50 commands in one HTTP request.

Commands run in order; each is ``"method?query"`` with a PHP query string whose values may reference earlier
answers as ``$result[cmd][key]...`` (also ``$next``, ``$total``, ``$time`` and ``$error``). A value that is exactly
one reference is replaced by the referenced value (of any type); a reference inside a longer string is replaced
only by a string or number. A walk that meets a missing key stops there and uses what it reached.

Sections of the answer are PHP arrays on the wire: an empty one is ``[]``, one keyed ``0..n-1`` in order is a
JSON array, anything else an object with string keys. A command that fails, whatever the reason, is in
``result_error`` only: it has no ``result_time`` entry, not even when its method's operating limit refused it
(real portals answer so: ``result_time`` is ``[]`` in a batch whose one command was blocked; the answer's outer
``time`` still carries ``operating`` and ``operating_reset_at``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from airflow_provider_bitrix24.sandbox.errors import RestError
from airflow_provider_bitrix24.sandbox.params import is_true, parse_query
from airflow_provider_bitrix24.sandbox.render import php_map

MAX_COMMANDS = 50
_REFERENCE = re.compile(r"\$(result|next|total|time|error)((?:\[[^\]]*\])+)")
_KEY = re.compile(r"\[([^\]]*)\]")


@dataclass
class CommandOutcome:
    """
    What one command produced: a result with its time block, or an error (no time block).

    :param charge: Execution seconds the command costs on the operating limit (billed by the caller).
    :param operating: ``(operating, operating_reset_at)`` of the method the command was checked against, or
        ``None`` when the operating limit did not look at it.
    """

    result: Any = None
    error: RestError | None = None
    time: dict[str, Any] | None = None
    total: int | None = None
    next: int | None = None
    charge: float = 0.0
    operating: Any = None


RunCommand = Callable[[str, dict[str, Any]], CommandOutcome]


def commands_of(params: dict[str, Any]) -> list[tuple[str, str]]:
    """The ``(id, "method?query")`` pairs of a batch request, in order."""
    cmd = params.get("cmd")
    if isinstance(cmd, list):
        return [(str(i), str(v)) for i, v in enumerate(cmd)]
    if isinstance(cmd, dict):
        return [(str(k), str(v)) for k, v in cmd.items()]
    return []


def split_command(command: str) -> tuple[str, str]:
    """``"method?query"`` -> ``(method lower-cased without a .json suffix, query)``."""
    method, _, query = command.strip().partition("?")
    method = method.strip().strip("/").lower()
    return method.removesuffix(".json"), query


def run_batch(params: dict[str, Any], run_command: RunCommand) -> dict[str, Any]:
    """
    Execute a batch and build its ``result`` object.

    :param params: The batch request parameters (``cmd``, ``halt``).
    :param run_command: Runs one command (method name, parameters) with all the portal's checks.
    """
    halt = is_true(params.get("halt"))
    sections: dict[str, dict[str, Any]] = {"result": {}, "error": {}, "total": {}, "next": {}, "time": {}}
    for index, (key, command) in enumerate(commands_of(params)):
        if index >= MAX_COMMANDS:
            sections["error"][key] = RestError("ERROR_BATCH_LENGTH_EXCEEDED").body()
            if halt:
                break
            continue
        method, query = split_command(command)
        outcome = run_command(method, substitute(parse_query(query), sections))
        if outcome.error is not None:
            sections["error"][key] = outcome.error.body()
            if halt:
                break
            continue
        sections["result"][key] = outcome.result
        if outcome.time is not None:
            sections["time"][key] = outcome.time
        if outcome.total is not None:
            sections["total"][key] = outcome.total
        if outcome.next is not None:
            sections["next"][key] = outcome.next
    return {
        "result": php_map(sections["result"]),
        "result_error": php_map(sections["error"]),
        "result_total": php_map(sections["total"]),
        "result_next": php_map(sections["next"]),
        "result_time": php_map(sections["time"]),
    }


def substitute(value: Any, sections: dict[str, dict[str, Any]]) -> Any:
    """Replace ``$result[...]``-style references in every string of ``value``."""
    if isinstance(value, dict):
        return {k: substitute(v, sections) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, sections) for v in value]
    if not isinstance(value, str) or "$" not in value:
        return value
    whole = _REFERENCE.fullmatch(value)
    if whole:
        return _resolve(whole.group(1), whole.group(2), sections)

    def replace(match: re.Match[str]) -> str:
        resolved = _resolve(match.group(1), match.group(2), sections)
        if isinstance(resolved, bool):
            return "1" if resolved else ""
        if isinstance(resolved, str | int | float):
            return str(resolved)
        return match.group(0)

    return _REFERENCE.sub(replace, value)


def _resolve(kind: str, path: str, sections: dict[str, dict[str, Any]]) -> Any:
    current: Any = sections[kind]
    for key in _KEY.findall(path):
        if isinstance(current, dict) and key in current:
            current = current[key]
        elif isinstance(current, list) and key.isdigit() and int(key) < len(current):
            current = current[int(key)]
        else:
            break
    return current
