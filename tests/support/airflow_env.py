"""The environment for another process of the test's Airflow deployment."""

from __future__ import annotations

import os


def deployment_env() -> dict[str, str]:
    """
    This process's environment, without its ``AIRFLOW_CONN_*`` connections, and with its Fernet key made explicit.

    Every process of a deployment must share one Fernet key, or Variables one of them writes are ciphertext to the
    others. Airflow 2 only generates the key when ``airflow db migrate`` writes ``airflow.cfg``; a test process that
    imported Airflow before that has none (it reads and writes Variables in clear), while a child started later
    would read the generated one. Handing the children this process's key keeps them all alike.
    """
    from airflow.configuration import conf

    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env["AIRFLOW__CORE__FERNET_KEY"] = conf.get("core", "fernet_key", fallback="") or ""
    return env
