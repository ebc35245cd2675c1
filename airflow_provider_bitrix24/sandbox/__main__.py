"""``python -m airflow_provider_bitrix24.sandbox``: same as the ``bitrix24-sandbox`` command."""

from __future__ import annotations

import sys

from airflow_provider_bitrix24.sandbox.cli import main

if __name__ == "__main__":
    sys.exit(main())
