"""
Read loosely typed values from the portal's answers without trusting them.

Bitrix24 sends ids and numbers as strings or numbers, and a broken or hostile answer may send anything: a
4,000-digit number, ``NaN``, ``1e18``, ``"²"`` (which :meth:`str.isdigit` accepts but :func:`int` refuses), or
Arabic-Indic digits (which :func:`int` silently converts). These helpers accept only what a real portal sends and
return ``None`` for the rest, so that callers decide what a missing value means instead of crashing.
"""

from __future__ import annotations

import math
import re
from typing import Any, Final

#: Plain ASCII decimal digits with an optional minus sign, at most 19 digits (PHP's 64-bit integers).
_INT_TEXT: Final = re.compile(r"-?[0-9]{1,19}")
_INT64_MAX: Final = 2**63 - 1
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
