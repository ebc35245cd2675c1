"""
Canary secrets of the reliability suite's portal, and the scan that looks for them in everything the suite produced.
"""

from __future__ import annotations

import json
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.helpers import set_conn

CODE = "CANARYwebhook-3f9a61c2"
LIMITED_CODE = "CANARYlimited-77d0b4e1"
CLIENT_SECRET = "CANARYclientsecret-c5e2a9"
ACCESS = "CANARYaccess-19fe0d"
REFRESH = "CANARYrefresh-a4c7e3"
CANARIES = (CODE, LIMITED_CODE, CLIENT_SECRET, ACCESS, REFRESH)


@dataclass
class LeakScan:
    """Texts a test run produced, and the secrets none of them may contain."""

    # Kept out of repr: pytest prints a failing test's arguments, and the scan would then report itself.
    secrets: set[str] = field(default_factory=lambda: set(CANARIES), repr=False)
    texts: list[tuple[str, str]] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, origin: str, text: Any) -> None:
        with self._lock:
            self.texts.append((origin, text if isinstance(text, str) else repr(text)))

    def exception(self, origin: str, exc: BaseException) -> None:
        """An exception's message, repr and traceback (with every chained exception)."""
        self.add(origin, "\n".join([str(exc), repr(exc), "".join(traceback.format_exception(exc))]))

    def secret(self, value: str | None) -> None:
        """One more secret to look for (a token rotated during the run)."""
        if value:
            with self._lock:
                self.secrets.add(value)

    def leaks(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(origin, s) for origin, text in self.texts for s in self.secrets if s in text]


#: The one scan of the session (the ``leak_scan`` fixture hands it out).
SCAN = LeakScan()


def webhook_conn(monkeypatch: pytest.MonkeyPatch, portal: Any, conn_id: str = "rel_webhook", **extra: Any) -> str:
    """A webhook connection to the canary portal; ``extra`` adds connection extras (timeout, rate_limit...)."""
    data = json.loads(portal.airflow_conn_json("webhook"))
    data["extra"] = {**data.get("extra", {}), **extra}
    set_conn(monkeypatch, conn_id, data)
    return conn_id
