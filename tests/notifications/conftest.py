"""The notifier's tests start from an empty secrets masker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


def _masker() -> Any:
    try:
        from airflow.sdk._shared.secrets_masker.secrets_masker import _secrets_masker  # Airflow 3
    except ImportError:
        from airflow.utils.log.secrets_masker import _secrets_masker  # Airflow 2
    return _secrets_masker()


@pytest.fixture(autouse=True)
def _fresh_masker() -> Iterator[None]:
    """
    Airflow's masker is one per process: a value masked by an earlier test (a connection whose password is ``x``)
    would be masked in every message here too. Each test starts empty and the process's set comes back after it.
    """
    masker = _masker()
    patterns, replacer = set(masker.patterns), masker.replacer
    masker.patterns = set()
    masker.replacer = None
    try:
        yield
    finally:
        masker.patterns, masker.replacer = patterns, replacer
