"""
Airflow version flags for behaviour that differs between Airflow 2.11 and 3.x.

Imports of Airflow classes go through ``airflow.providers.common.compat.sdk``; this module only answers
"which Airflow is this?" for the few places where behaviour must branch.
"""

from __future__ import annotations


def get_base_airflow_version_tuple() -> tuple[int, int, int]:
    from airflow import __version__
    from packaging.version import Version

    version = Version(__version__)
    return version.major, version.minor, version.micro


AIRFLOW_V_3_0_PLUS = get_base_airflow_version_tuple() >= (3, 0, 0)
