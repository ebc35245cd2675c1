"""Airflow lists the notifier; importing the notifier or the generic operator (DAG parsing) loads no HTTP stack."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

NOTIFIER = "airflow_provider_bitrix24.notifications.bitrix24.Bitrix24Notifier"


def test_airflow_providers_notifications_lists_the_notifier():
    out = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "notifications", "--output", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = json.loads(out[out.index("[{") :].splitlines()[0])
    assert NOTIFIER in [row.get("notification_class_name") for row in rows], rows


@pytest.mark.parametrize(
    "module", ["airflow_provider_bitrix24.notifications", "airflow_provider_bitrix24.operators.bitrix24"]
)
def test_importing_for_dag_parsing_loads_no_http_stack(module):
    code = (
        f"import sys, airflow; before = set(sys.modules); import {module}; "
        "new = set(sys.modules) - before; "
        "print(sorted(m for m in new if m.split('.')[0] in {'requests', 'httpx', 'urllib3', 'httpcore'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
