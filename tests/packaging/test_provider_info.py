"""The provider info against the JSON schema that the installed Airflow ships and uses to validate providers."""

from __future__ import annotations

import copy
import importlib
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from airflow_provider_bitrix24.get_provider_info import get_provider_info


@pytest.fixture(scope="module")
def airflow_schema() -> dict[str, Any]:
    import airflow

    path = Path(airflow.__file__).parent / "provider_info.schema.json"
    assert path.is_file(), f"Airflow {airflow.__version__} ships no {path.name}"
    return json.loads(path.read_text())


def _errors(schema: dict[str, Any], info: dict[str, Any]) -> list[str]:
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(info)]


def test_the_provider_info_is_valid_against_airflows_schema(airflow_schema):
    assert _errors(airflow_schema, get_provider_info()) == []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("description",), None),
        (("connection-types", 0, "hook-class-name"), 42),
        (("connection-types", 0, "connection-type"), None),
    ],
)
def test_the_schema_check_would_catch_a_broken_provider_info(airflow_schema, path, value):
    broken = copy.deepcopy(get_provider_info())
    target = broken
    for key in path[:-1]:
        target = target[key]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    assert _errors(airflow_schema, broken)


def test_every_module_and_class_the_provider_info_names_imports():
    info = get_provider_info()
    for section in ("hooks", "operators", "sensors", "triggers"):
        for entry in info[section]:
            for module in entry["python-modules"]:
                importlib.import_module(module)
    for connection_type in info["connection-types"]:
        module, _, name = connection_type["hook-class-name"].rpartition(".")
        hook = getattr(importlib.import_module(module), name)
        assert hook.conn_type == connection_type["connection-type"]
        assert hook.hook_name == connection_type["hook-name"]
