"""The ``bitrix24`` scheme of common-messaging's ``MessageQueueTrigger``, and its optional extra."""

from __future__ import annotations

import builtins
import importlib
import sys

import pytest

from airflow_provider_bitrix24.get_provider_info import get_provider_info

QUEUE_CLASS = "airflow_provider_bitrix24.queues.bitrix24.Bitrix24MessageQueueProvider"
MODULE = "airflow_provider_bitrix24.queues.bitrix24"


def _has_messaging() -> bool:
    try:
        importlib.import_module("airflow.providers.common.messaging.providers.base_provider")
    except ImportError:
        return False
    return True


needs_messaging = pytest.mark.skipif(
    not _has_messaging(),
    reason="apache-airflow-providers-common-messaging is not installed (it needs Airflow 3; extra [messaging])",
)


def test_the_queue_is_registered_in_the_provider_info():
    assert get_provider_info()["queues"] == [QUEUE_CLASS]


def test_without_common_messaging_the_import_names_the_extra(monkeypatch):
    real_import = builtins.__import__

    def no_messaging(name, *args, **kwargs):
        if name.startswith("airflow.providers.common.messaging"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    monkeypatch.setattr(builtins, "__import__", no_messaging)
    from airflow.providers.common.compat.sdk import AirflowOptionalProviderFeatureException

    with pytest.raises(AirflowOptionalProviderFeatureException, match=r"airflow-provider-bitrix24\[messaging\]"):
        importlib.import_module(MODULE)
    monkeypatch.delitem(sys.modules, MODULE, raising=False)


@needs_messaging
def test_the_provider_matches_the_bitrix24_scheme_only():
    from airflow_provider_bitrix24.queues.bitrix24 import Bitrix24MessageQueueProvider
    from airflow_provider_bitrix24.triggers.messages import Bitrix24MessageTrigger

    provider = Bitrix24MessageQueueProvider()
    assert provider.scheme_matches("bitrix24")
    assert not provider.scheme_matches("sqs")
    assert not provider.queue_matches("bitrix24://portal/queue")
    assert provider.trigger_class() is Bitrix24MessageTrigger


@needs_messaging
def test_message_queue_trigger_builds_and_stores_the_bitrix24_trigger(monkeypatch):
    from airflow.providers.common.messaging.triggers import msg_queue

    from airflow_provider_bitrix24.queues.bitrix24 import Bitrix24MessageQueueProvider
    from airflow_provider_bitrix24.triggers.messages import CLASSPATH, Bitrix24MessageTrigger

    # Discovery reads the installed distribution's provider info; register this checkout's provider directly.
    others = [p for p in msg_queue.MESSAGE_QUEUE_PROVIDERS if not isinstance(p, Bitrix24MessageQueueProvider)]
    monkeypatch.setattr(msg_queue, "MESSAGE_QUEUE_PROVIDERS", [*others, Bitrix24MessageQueueProvider()])
    trigger = msg_queue.MessageQueueTrigger(
        scheme="bitrix24", bitrix24_conn_id="bitrix24_default", line_ids=[1, 2], text_pattern="(?i)refund"
    )
    assert isinstance(trigger.trigger, Bitrix24MessageTrigger)
    path, kwargs = trigger.serialize()
    assert path == CLASSPATH  # the triggerer runs Bitrix24MessageTrigger itself (shared stream, ack mode)
    assert kwargs["line_ids"] == [1, 2]
    assert kwargs["bitrix24_conn_id"] == "bitrix24_default"


@needs_messaging
def test_message_queue_trigger_in_an_asset_watcher(monkeypatch):
    from airflow.providers.common.messaging.triggers import msg_queue
    from airflow.sdk import Asset, AssetWatcher

    from airflow_provider_bitrix24.queues.bitrix24 import Bitrix24MessageQueueProvider

    monkeypatch.setattr(msg_queue, "MESSAGE_QUEUE_PROVIDERS", [Bitrix24MessageQueueProvider()])
    trigger = msg_queue.MessageQueueTrigger(scheme="bitrix24", bitrix24_conn_id="bitrix24_default")
    asset = Asset("bitrix24_messages", watchers=[AssetWatcher(name="messages", trigger=trigger)])
    assert asset.watchers[0].trigger is trigger
