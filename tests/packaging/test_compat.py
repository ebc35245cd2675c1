"""Secret masking on every supported Airflow and Python, with or without a recent common-compat provider."""

from __future__ import annotations

import sys
import types

import pytest

from airflow_provider_bitrix24.hooks.bitrix24 import _mask


def _redact(text: str) -> str:
    try:
        from airflow.sdk.log import redact  # Airflow 3
    except ImportError:
        from airflow.utils.log.secrets_masker import redact  # Airflow 2
    return str(redact(text))


def test_a_new_secret_is_masked_in_logs():
    secret = "compat-secret-0000-abcd"
    _mask(secret)
    assert _redact(f"token {secret} used") == "token *** used"


def test_a_new_secret_is_masked_with_a_common_compat_that_lacks_mask_secret(monkeypatch):
    # Python 3.10 can only install common-compat <= 1.20.0, whose sdk module has no mask_secret.
    without = types.ModuleType("airflow.providers.common.compat.sdk")
    monkeypatch.setitem(sys.modules, "airflow.providers.common.compat.sdk", without)
    with pytest.raises(ImportError):
        from airflow.providers.common.compat.sdk import mask_secret  # noqa: F401
    secret = "compat-secret-1111-efgh"
    _mask(secret)
    assert _redact(f"token {secret} used") == "token *** used"
