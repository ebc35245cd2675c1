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
