"""
The Airflow-version shims of the provider, in one place: what differs between Airflow 2 and 3 (and between
versions of the common-compat provider) and is not covered by ``airflow.providers.common.compat``.
"""

from __future__ import annotations

from typing import Any


def mask_secret(secret: str) -> None:
    """Mask ``secret`` in every log of this process (and, on Airflow 3, of the supervisor)."""
    try:
        from airflow.providers.common.compat.sdk import mask_secret as _mask_secret
    except ImportError:  # common-compat < 1.22 (the newest one Python 3.10 can install)
        try:
            from airflow.sdk.log import mask_secret as _mask_secret  # Airflow 3
        except ImportError:
            from airflow.utils.log.secrets_masker import (  # type: ignore[no-redef]  # Airflow 2
                mask_secret as _mask_secret,
            )

    _mask_secret(secret)


async def amask_secret(secret: str) -> None:
    """Mask without a sync round trip to the supervisor from an event loop (Airflow 3's ``amask_secret``)."""
    try:
        from airflow.sdk.log import amask_secret as _amask_secret
    except ImportError:  # Airflow 2: masking is local, no I/O
        mask_secret(secret)
        return
    await _amask_secret(secret)


def supervisor_comms() -> Any:
    """Airflow 3's channel to the supervisor when this process has an async one (the triggerer), else ``None``."""
    try:
        from airflow.sdk.execution_time import task_runner
    except ImportError:
        return None
    comms = getattr(task_runner, "SUPERVISOR_COMMS", None)
    return comms if comms is not None and hasattr(comms, "asend") else None


def variable_classes() -> list[Any]:
    """
    The Task SDK's ``Variable`` and, where it differs (Airflow 3), the metadata database's model: the SDK one works
    inside a task, the model outside one (``airflow connections test``, scripts).
    """
    from airflow.providers.common.compat.sdk import Variable

    classes: list[Any] = [Variable]
    try:
        from airflow.models.variable import Variable as VariableModel
    except ImportError:  # pragma: no cover - every supported Airflow has it
        return classes
    if VariableModel is not Variable:
        classes.append(VariableModel)
    return classes
