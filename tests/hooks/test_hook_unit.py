"""Hook behaviour that needs no portal: construction, connection parsing, provider registration."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from airflow_provider_bitrix24.client.config import WebhookAuth
from airflow_provider_bitrix24.client.errors import Bitrix24ConfigError
from airflow_provider_bitrix24.get_provider_info import get_provider_info
from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook
from tests.helpers import set_conn

CODE = "fake-webhook-code-4242"


def test_init_only_stores_arguments(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_BITRIX24_DEFAULT", raising=False)
    hook = Bitrix24Hook(bitrix24_conn_id="does_not_exist")  # no lookup, no client yet
    assert hook.bitrix24_conn_id == "does_not_exist"
    assert "client" not in hook.__dict__
    assert repr(hook) == "Bitrix24Hook(bitrix24_conn_id='does_not_exist')"


def test_uri_connection_with_path_in_schema(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_B24_URI", f"bitrix24://portal.bitrix24.com/rest/9/{CODE}")
    config = Bitrix24Hook(bitrix24_conn_id="b24_uri").config
    assert config.base_url == "https://portal.bitrix24.com"
    assert config.auth == WebhookAuth(user_id=9, code=CODE)


def test_split_connection(monkeypatch):
    set_conn(
        monkeypatch,
        "b24_split",
        {"conn_type": "bitrix24", "host": "portal.bitrix24.com", "login": "4", "password": CODE},
    )
    config = Bitrix24Hook(bitrix24_conn_id="b24_split").config
    assert config.auth == WebhookAuth(user_id=4, code=CODE)


def test_malformed_connection_raises_naming_the_field(monkeypatch):
    set_conn(monkeypatch, "b24_bad", {"conn_type": "bitrix24", "host": "portal.bitrix24.com", "password": CODE})
    with pytest.raises(Bitrix24ConfigError, match=r"^INVALID_CONNECTION: Webhook user ID \(login\): is empty"):
        Bitrix24Hook(bitrix24_conn_id="b24_bad").config  # noqa: B018


def test_provider_info_declares_the_connection_form():
    info = get_provider_info()
    assert info["package-name"] == "airflow-provider-bitrix24"
    (conn_type,) = info["connection-types"]
    assert conn_type["connection-type"] == Bitrix24Hook.conn_type == "bitrix24"
    assert conn_type["hook-class-name"] == "airflow_provider_bitrix24.hooks.bitrix24.Bitrix24Hook"
    assert conn_type["conn-fields"]["client_secret"]["schema"]["format"] == "password"
    assert set(conn_type["ui-field-behaviour"]["hidden-fields"]) == {"schema", "port"}
    for section in ("hooks", "operators", "sensors", "triggers"):
        for module in info[section][0]["python-modules"]:
            assert module.startswith("airflow_provider_bitrix24.")


def test_airflow_discovers_the_provider_and_its_connection_type():
    out = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "hooks", "--output", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = json.loads(out[out.index("[{") :].splitlines()[0])
    ours = [r for r in rows if r.get("connection_type") == "bitrix24"]
    assert ours, rows
    assert ours[0]["class"] == "airflow_provider_bitrix24.hooks.bitrix24.Bitrix24Hook"


@pytest.mark.parametrize(
    "module",
    [
        "airflow_provider_bitrix24.hooks.bitrix24",
        "airflow_provider_bitrix24.operators.quick_answer",
    ],
)
def test_importing_for_dag_parsing_loads_no_http_stack(module):
    code = (
        f"import sys, airflow; before = set(sys.modules); import {module}; "
        "new = set(sys.modules) - before; "
        "print(sorted(m for m in new if m.split('.')[0] in {'requests', 'httpx', 'urllib3', 'httpcore'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_connection_form_for_airflow_2():
    pytest.importorskip("wtforms", reason="Airflow 3 reads the form from the provider info instead")
    pytest.importorskip("flask_appbuilder")
    from airflow_provider_bitrix24.get_provider_info import CONN_FIELDS

    widgets = Bitrix24Hook.get_connection_form_widgets()
    assert set(widgets) == set(CONN_FIELDS)
    behaviour = Bitrix24Hook.get_ui_field_behaviour()
    assert behaviour["relabeling"]["password"] == "Webhook code"
    assert "port" in behaviour["hidden_fields"]


def test_redis_conn_id_shares_the_limits_through_that_redis_connection(monkeypatch):
    from airflow_provider_bitrix24.client.limits_redis import RedisLimiter

    set_conn(
        monkeypatch,
        "b24_redis_limits",
        {"conn_type": "redis", "host": "127.0.0.1", "port": 6399, "password": "redis-password-for-tests"},
    )
    set_conn(
        monkeypatch,
        "b24_shared",
        {
            "conn_type": "bitrix24",
            "host": "portal.bitrix24.com",
            "login": "4",
            "password": CODE,
            "extra": {"redis_conn_id": "b24_redis_limits"},
        },
    )
    limiter = Bitrix24Hook(bitrix24_conn_id="b24_shared").client.engine.limiter
    assert isinstance(limiter, RedisLimiter)  # built without connecting: Redis is first asked at the first call
    assert "127.0.0.1:6399 (b24_redis_limits)" in repr(limiter)
    assert "bucket" in repr(limiter)


def test_redis_conn_id_is_read_from_airflow_2s_prefixed_form_field_too():
    conn = SimpleNamespace(extra_dejson={"extra__bitrix24__redis_conn_id": "b24_redis_limits"})
    assert Bitrix24Hook._redis_conn_id(conn) == "b24_redis_limits"


@pytest.mark.parametrize("value", [5, ["redis"], "   "])
def test_a_malformed_redis_conn_id_is_refused_naming_the_field(monkeypatch, value):
    extra = {"redis_conn_id": value}
    set_conn(
        monkeypatch,
        "b24_bad_redis",
        {"conn_type": "bitrix24", "host": "portal.bitrix24.com", "login": "4", "password": CODE, "extra": extra},
    )
    if value == "   ":  # blank means "not set": limits stay per process
        from airflow_provider_bitrix24.client.limits import LocalLimiter

        assert isinstance(Bitrix24Hook(bitrix24_conn_id="b24_bad_redis").client.engine.limiter, LocalLimiter)
        return
    with pytest.raises(Bitrix24ConfigError, match=r"^INVALID_CONNECTION: Redis connection ID \(shared limits\)"):
        Bitrix24Hook(bitrix24_conn_id="b24_bad_redis").client  # noqa: B018


@pytest.mark.parametrize("missing", ["redis", "redis.asyncio"])
def test_redis_conn_id_without_the_redis_extra_is_a_configuration_error_naming_the_extra(monkeypatch, missing):
    from airflow.providers.common.compat.sdk import AirflowFailException

    from airflow_provider_bitrix24.operators.quick_answer import SaveQuickAnswerOperator

    monkeypatch.setitem(sys.modules, missing, None)  # as if `pip install airflow-provider-bitrix24` without [redis]
    set_conn(
        monkeypatch,
        "b24_redis_limits",
        {"conn_type": "redis", "host": "127.0.0.1", "port": 6399, "password": "redis-password-for-tests"},
    )
    set_conn(
        monkeypatch,
        "b24_shared",
        {
            "conn_type": "bitrix24",
            "host": "portal.bitrix24.com",
            "login": "4",
            "password": CODE,
            "extra": {"redis_conn_id": "b24_redis_limits"},
        },
    )
    with pytest.raises(Bitrix24ConfigError) as info:
        Bitrix24Hook(bitrix24_conn_id="b24_shared").client  # noqa: B018
    assert str(info.value).startswith("INVALID_CONNECTION: Redis connection ID (shared limits) (extra.redis_conn_id)")
    assert "pip install 'airflow-provider-bitrix24[redis]'" in str(info.value)
    # In a task: fails at once, without retries, before any request.
    op = SaveQuickAnswerOperator(task_id="save", chat_id=1763, message_id=[1, 2], bitrix24_conn_id="b24_shared")
    with pytest.raises(AirflowFailException, match=r"^INVALID_CONNECTION: .*\[redis\].*Hint: fix the Airflow conn"):
        op.execute(context={})
