"""
Load the corpus of real Bitrix24 answers in ``tests/fixtures/real/`` (see its README for the sources).

Each file is one recorded body with the call that produced it; :func:`load_all` returns them as
:class:`RealAnswer` objects named ``<source>/<file stem>``, e.g. ``fast_bitrix24/list_crm_item_list_wrapped``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

ROOT = Path(__file__).resolve().parent / "fixtures" / "real"
KINDS = frozenset({"call", "batch", "list", "oauth", "history", "quick_save"})

#: The status to serve a body with when its source gives none (each file's ``status_note`` says why).
STATUS_WHEN_UNKNOWN: Mapping[str, int] = {
    # b24pysdk's live test asserts HTTP 200 for wrong_client from the token server.
    "b24phpsdk/oauth_wrong_client_no_description": 200,
    # b24pysdk's live test asserts HTTP 401 for the portal's PAYMENT_REQUIRED.
    "b24phpsdk/error_payment_required_subscription_ended": 401,
    # The token server refuses grants with 400 (invalid_grant, invalid_client in b24pysdk's live tests).
    "b24restdocs/oauth_payment_required": 400,
}


@dataclass(frozen=True)
class RealAnswer:
    """One recorded answer and the call it answered."""

    name: str
    path: Path
    source: Mapping[str, Any]
    kind: str
    method: str
    params: Mapping[str, Any]
    status: int | None
    body: Any
    notes: str
    status_note: str | None = None

    def __repr__(self) -> str:
        return f"RealAnswer({self.name})"

    @property
    def served_status(self) -> int:
        """The HTTP status to serve the body with: the recorded one, else :data:`STATUS_WHEN_UNKNOWN`."""
        return self.status if self.status is not None else STATUS_WHEN_UNKNOWN[self.name]

    @property
    def is_error(self) -> bool:
        """Whether the body is an error answer (``{"error": ...}``)."""
        return isinstance(self.body, Mapping) and "error" in self.body

    @property
    def time(self) -> Mapping[str, Any]:
        block = self.body.get("time") if isinstance(self.body, Mapping) else None
        return block if isinstance(block, Mapping) else {}

    def batch_commands(self) -> dict[str, tuple[str, dict[str, str]]]:
        """The commands of a recorded ``batch`` call: key -> (method, flat query parameters)."""
        commands: dict[str, tuple[str, dict[str, str]]] = {}
        for key, text in dict(self.params.get("cmd") or {}).items():
            method, _, query = str(text).partition("?")
            commands[str(key)] = (method, dict(parse_qsl(query, keep_blank_values=True)))
        return commands


def _read(path: Path) -> RealAnswer:
    data = json.loads(path.read_text(encoding="utf-8"))
    name = f"{path.parent.name}/{path.stem}"
    call = data["call"]
    if call["kind"] not in KINDS:
        raise ValueError(f"{name}: unknown kind {call['kind']!r}")
    if data["status"] is None and not data.get("status_note"):
        raise ValueError(f"{name}: a null status needs a status_note")
    for key in ("repo", "path", "commit", "url", "recorded"):
        if not data["source"].get(key):
            raise ValueError(f"{name}: source.{key} is missing")
    return RealAnswer(
        name=name,
        path=path,
        source=data["source"],
        kind=call["kind"],
        method=call["method"],
        params=call.get("params") or {},
        status=data["status"],
        body=data["body"],
        notes=data["notes"],
        status_note=data.get("status_note"),
    )


@functools.cache
def load_all() -> tuple[RealAnswer, ...]:
    """Every answer of the corpus, sorted by name."""
    return tuple(sorted((_read(p) for p in ROOT.glob("*/*.json")), key=lambda a: a.name))


def load(name: str) -> RealAnswer:
    """One answer by its ``<source>/<file stem>`` name."""
    for answer in load_all():
        if answer.name == name:
            return answer
    raise KeyError(name)
