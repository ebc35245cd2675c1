"""
The ``bitrix24`` scheme of ``MessageQueueTrigger`` (provider ``apache-airflow-providers-common-messaging``).

Registered in the provider info under ``queues``, so that a DAG watches new open-line messages the way it watches
an SQS or Kafka queue::

    from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger
    from airflow.sdk import Asset, AssetWatcher

    trigger = MessageQueueTrigger(scheme="bitrix24", bitrix24_conn_id="bitrix24_default", line_ids=[1])
    asset = Asset("bitrix24_support_messages", watchers=[AssetWatcher(name="support", trigger=trigger)])

Every keyword besides ``scheme`` goes to
:class:`~airflow_provider_bitrix24.triggers.messages.Bitrix24MessageTrigger`, which is also what Airflow stores
and runs (``MessageQueueTrigger.serialize`` hands over the provider's trigger). Install the extra
``airflow-provider-bitrix24[messaging]``; without common-messaging this module raises
``AirflowOptionalProviderFeatureException``, which Airflow's provider discovery skips quietly.
"""

from __future__ import annotations

from typing import Any, Final

from airflow.providers.common.compat.sdk import AirflowOptionalProviderFeatureException

MISSING: Final = (
    "The 'bitrix24' message queue needs apache-airflow-providers-common-messaging (Airflow 3): "
    "pip install 'airflow-provider-bitrix24[messaging]'"
)

try:
    from airflow.providers.common.messaging.providers.base_provider import BaseMessageQueueProvider
except ImportError as exc:
    raise AirflowOptionalProviderFeatureException(MISSING) from exc

SCHEME: Final = "bitrix24"


class Bitrix24MessageQueueProvider(BaseMessageQueueProvider):
    """
    New open-line messages of a Bitrix24 portal as a message queue: ``MessageQueueTrigger(scheme="bitrix24", ...)``.

    The keywords are those of :class:`~airflow_provider_bitrix24.triggers.messages.Bitrix24MessageTrigger`
    (``bitrix24_conn_id``, ``chat_ids``, ``line_ids``, ``authors``, ``text_pattern``, ``event_types``,
    ``poll_interval``, ``one_event_per_message``). The deprecated queue-URI form is not supported: a Bitrix24
    queue has no URI of its own.
    """

    scheme = SCHEME

    def queue_matches(self, queue: str) -> bool:
        return False

    def trigger_class(self) -> Any:
        from airflow_provider_bitrix24.triggers.messages import Bitrix24MessageTrigger

        return Bitrix24MessageTrigger

    def trigger_kwargs(self, queue: str, **kwargs: Any) -> dict[str, Any]:
        return {}
