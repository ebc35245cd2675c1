"""
The one home of value readers: integers, seconds, and values shown in error messages.

* :func:`to_int` reads an integer *argument* (ids and counts of tasks, after templating) and raises
  :class:`IntegerError` saying what is wrong; :func:`read_id` reads an id of an *answer* the same strict way;
  :func:`as_int` and :func:`as_seconds` read loose numbers of an answer and return ``None`` for anything else.
* :func:`show` and :func:`cut` put a value or a text into an error message, cut to a length.

Bitrix24 sends ids and numbers as strings or numbers, and a broken or hostile answer may send anything: a
4,000-digit number, ``NaN``, ``1e18``, ``"²"`` (which :meth:`str.isdigit` accepts but :func:`int` refuses), or
Arabic-Indic digits (which :func:`int` silently converts). These readers accept only what a real portal sends and
return ``None`` (or raise saying why) for the rest, so that callers decide what a missing value means instead of
crashing. The client is the bottom layer: the hook, the operators, the sensor and the trigger read values here.
"""

from __future__ import annotations

import math
import re
from typing import Any, Final

#: The largest id the portal stores (ids are signed 64-bit integers, PHP's).
MAX_ID: Final = 2**63 - 1
#: The largest integer a float holds exactly.
_MAX_EXACT_FLOAT: Final = 2**53
#: Plain ASCII decimal digits with an optional minus sign, at most 19 digits (PHP's 64-bit integers).
_INT_TEXT: Final = re.compile(r"-?[0-9]{1,19}")
_INT64_MAX: Final = MAX_ID
_ASCII_DIGITS: Final = re.compile(r"[0-9]+", re.ASCII)
_ASCII_INTEGER: Final = re.compile(r"[+-]?[0-9]+", re.ASCII)
#: Why an integer beyond :data:`MAX_ID` is refused.
OUT_OF_RANGE: Final = f"is out of range: the portal accepts ids up to {MAX_ID} (2**63-1)"
#: Larger magnitudes are not seconds of anything the portal measures (a year is 3.2e7 s; Unix time 1.8e9).
_MAX_SECONDS: Final = 1e12


def as_int(value: Any) -> int | None:
    """An integer from an int or a string of ASCII digits within 64 bits; ``None`` for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if -_INT64_MAX <= value <= _INT64_MAX else None
    if isinstance(value, str):
        text = value.strip()
        if _INT_TEXT.fullmatch(text):
            number = int(text)
            return number if -_INT64_MAX <= number <= _INT64_MAX else None
    return None


def as_seconds(value: Any) -> float | None:
    """A finite, non-negative number of seconds (or Unix time) from a number or numeric string, else ``None``."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        number = float(value) if -_MAX_SECONDS <= value <= _MAX_SECONDS else math.nan
    elif isinstance(value, float):
        number = value
    elif isinstance(value, str) and len(value) <= 32:
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    if not math.isfinite(number) or not 0.0 <= number <= _MAX_SECONDS:
        return None
    return number


# --------------------------------------------------------------------------- strict readers and error texts


class IntegerError(ValueError):
    """A value is not an integer the portal accepts; ``str()`` says why, e.g. ``is not a number``."""


def cut(text: str, limit: int) -> str:
    """``text``, cut to ``limit`` characters."""
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def show(value: Any, limit: int = 80) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters."""
    try:
        text = repr(value)
    except Exception:  # an int too long to print, a broken __repr__
        text = f"<{type(value).__name__}>"
    return cut(text, limit)


def to_int(value: Any) -> int:
    """
    Read an integer argument, converting only what cannot mean anything else.

    Accepts ints, integral floats up to 2**53 and strings of the ASCII digits 0-9 with at most one sign (what
    templates render); refuses bools, ``None``, other digits (Arabic-Indic, fullwidth, ``"²"``), ``"--5"``, ``"+-5"``
    and anything beyond ±(2**63-1), the range of the portal's ids.

    :raises IntegerError: saying what is wrong with the value.
    """
    if isinstance(value, bool) or value is None:
        raise IntegerError("is not an integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise IntegerError("is not a finite number")
        if not value.is_integer():
            raise IntegerError("is a fractional number, not an id")
        if abs(value) > _MAX_EXACT_FLOAT:
            raise IntegerError("is too large to be exact as a float; pass it as an int or a string")
        number = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise IntegerError("is an empty string")
        if not _ASCII_INTEGER.fullmatch(text):
            if any((char.isdigit() or char.isnumeric()) and not "0" <= char <= "9" for char in text):
                raise IntegerError("is not a number: only the ASCII digits 0-9 are accepted")
            raise IntegerError("is not a number")
        if len(text.lstrip("+-").lstrip("0")) > len(str(MAX_ID)):
            raise IntegerError(OUT_OF_RANGE)
        number = int(text)
    else:
        raise IntegerError(f"has type {type(value).__name__}, expected an integer")
    if not -MAX_ID <= number <= MAX_ID:
        raise IntegerError(OUT_OF_RANGE)
    return number


def read_id(value: Any) -> int | None:
    """
    An id of the portal's answer: an int or a string of ASCII digits within 0..:data:`MAX_ID`; ``None`` when absent
    or empty.

    :raises IntegerError: ``is not a plain integer`` or ``is out of range``.
    """
    if value is None or (isinstance(value, str) and not value):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _ASCII_DIGITS.fullmatch(value):
        number = int(value) if len(value.lstrip("0")) <= len(str(MAX_ID)) else MAX_ID + 1
    else:
        raise IntegerError("is not a plain integer")
    if not 0 <= number <= MAX_ID:
        raise IntegerError("is out of range")
    return number
