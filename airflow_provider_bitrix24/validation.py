"""Checks of templated task arguments, run after templating and before any request."""

from __future__ import annotations

from typing import Any

from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_bitrix24.client.coerce import IntegerError, show, to_int


def positive_int(value: Any, name: str) -> int:
    """
    Return ``value`` as a positive integer, or fail the task naming the parameter and the value.

    Accepts ints, integral floats and strings of the ASCII digits 0-9 (what Jinja renders); refuses bools,
    fractions, zero, negatives, empty strings, ``None``, other digits (``"²"``, Arabic-Indic or fullwidth digits),
    ``"--5"``, ids above 2**63-1 (the largest the portal stores) and other text.
    """
    problem = None
    number = 0
    if isinstance(value, bool) or value is None:
        problem = "is not a positive integer"
    else:
        try:
            number = to_int(value)
        except IntegerError as exc:
            problem = str(exc)
        else:
            if number <= 0:
                problem = "is not a positive integer"
    if problem is not None:
        raise AirflowFailException(f"{name}: {show(value)} {problem}")
    return number


def burst_share(value: Any, name: str) -> float | None:
    """
    Return ``value`` as a share of the portal bucket's burst (a number above 0, at most 1), ``None`` for the whole
    burst, or fail the task naming the parameter and the value. Numeric strings (what Jinja renders) are read.
    """
    if value is None:
        return None
    number: float | None = None
    if not isinstance(value, bool):
        try:
            number = float(value.strip()) if isinstance(value, str) else float(value)
        except (TypeError, ValueError, OverflowError):
            number = None
    if number is None or not 0 < number <= 1:
        raise AirflowFailException(
            f"{name}: {show(value)} is not a share of the burst: give a number above 0, at most 1"
        )
    return number
