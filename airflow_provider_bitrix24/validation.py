"""Checks of templated task arguments, run after templating and before any request."""

from __future__ import annotations

from typing import Any

from airflow.providers.common.compat.sdk import AirflowFailException


def positive_int(value: Any, name: str) -> int:
    """
    Return ``value`` as a positive integer, or fail the task naming the parameter and the value.

    Accepts ints, integral floats and numeric strings (what Jinja renders); refuses bools, fractions, zero,
    negatives, empty strings, ``None`` and other text.
    """
    problem = None
    if isinstance(value, bool) or value is None:
        problem = "is not a positive integer"
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not value.is_integer():
            problem = "is a fractional number, not an id"
        number = int(value) if value == value and abs(value) != float("inf") else 0
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            problem = "is an empty string"
        elif not text.lstrip("+-").isdigit():
            problem = "is not a number"
        else:
            number = int(text)
    else:
        problem = f"has type {type(value).__name__}, expected an integer"
    if problem is None and number <= 0:
        problem = "is not a positive integer"
    if problem is not None:
        raise AirflowFailException(f"{name}: {value!r} {problem}")
    return number
