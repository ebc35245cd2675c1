"""
The wire format of the Bitrix24 REST API, with no I/O: what a request and an answer are, how parameters and batch
commands are encoded, how an answer's envelope and a ``batch`` answer's sections are read, and where a run of
commands is split into ``batch`` requests (:func:`split_batches`).

Everything here is a pure function of its inputs (plus the limiter's record of blocked methods, read when an error
answer is turned into an exception); the call engine (:mod:`.core`) decides when to send what.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar
from urllib.parse import urlencode

from airflow_provider_bitrix24.client.coerce import as_int, as_seconds
from airflow_provider_bitrix24.client.errors import (
    TRANSIENT_HTTP_STATUSES,
    Bitrix24ApiError,
    Bitrix24ConfigError,
    Bitrix24Error,
    Bitrix24OperationTimeLimitError,
    Bitrix24ResponseError,
    error_from_payload,
)
from airflow_provider_bitrix24.client.limits import OPERATING_LIMIT, UNKNOWN_BLOCK, Limiter
from airflow_provider_bitrix24.client.redaction import redact

_Entry = TypeVar("_Entry")
#: Most commands one ``batch`` request may carry.
BATCH_LIMIT: Final = 50
USER_AGENT: Final = "airflow-provider-bitrix24"
#: Longest error code and description kept from an answer (a hostile portal could send megabytes).
_MAX_CODE: Final = 100
_MAX_DESCRIPTION: Final = 1000

# --------------------------------------------------------------------------- requests and answers


@dataclass(frozen=True, repr=False)
class HttpRequest:
    """One HTTP request; ``url`` and ``json`` may hold secrets, ``redacted`` never does."""

    method: str
    url: str
    redacted: str
    json: dict[str, Any] | None = None
    rest_method: str = ""
    token: str | None = None

    def __repr__(self) -> str:
        return f"HttpRequest({self.method} {self.redacted})"


_UNDECODED: Final[Any] = object()


@dataclass(frozen=True)
class HttpResponse:
    """
    One HTTP answer.

    :param parsed: The body already decoded as JSON (the async client decodes large bodies off its event loop),
        or the exception decoding raised.
    """

    status: int
    #: May hold secrets (a token answer's pair).
    body: bytes = field(repr=False)
    headers: Mapping[str, str] = field(default_factory=dict)
    parsed: Any = field(default=_UNDECODED, repr=False, compare=False)


def decode_json(body: bytes) -> Any:
    """The JSON value of a body, or the exception decoding it raised (returned, not raised)."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return exc


@dataclass(frozen=True)
class Envelope:
    """A successful answer: ``result`` plus the list fields and the ``time`` block."""

    result: Any
    time: Mapping[str, Any]
    next: int | None = None
    total: int | None = None


@dataclass(frozen=True)
class BatchItem:
    """
    The outcome of one command of a batch.

    :param key: The command's key: the caller's own key, or its position as a string for a list of commands.
    :param method: The REST method of the command.
    :param result: The command's ``result`` when it succeeded.
    :param error: The command's error when it failed.
    :param time: The command's ``time`` block, when the portal sent one.
    """

    key: str
    method: str
    result: Any = None
    error: Bitrix24Error | None = None
    next: int | None = None
    total: int | None = None
    time: Mapping[str, Any] | None = None

    @property
    def processing(self) -> float:
        """Seconds the portal spent executing the command (0 when it did not say)."""
        return (as_seconds(self.time.get("processing")) or 0.0) if self.time is not None else 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


Command = tuple[str, Mapping[str, Any] | None]


# --------------------------------------------------------------------------- encoding and parsing


def _php_pairs(value: Any, prefix: str) -> Iterable[tuple[str, str]]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _php_pairs(item, f"{prefix}[{key}]")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _php_pairs(item, f"{prefix}[{index}]")
    elif isinstance(value, bool):
        yield prefix, "Y" if value else "N"
    elif value is None:
        yield prefix, ""
    else:
        yield prefix, str(value)


def php_query(params: Mapping[str, Any]) -> str:
    """Encode parameters as a PHP-style query string (``a[b][0]=1``), as batch commands need."""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        pairs.extend(_php_pairs(value, str(key)))
    return urlencode(pairs)


def _section(value: Any) -> dict[str, Any]:
    """A batch result section: PHP sends an empty map as ``[]`` and a 0..n-1 map as a list."""
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    return {}


def _text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else "" if value is None else json.dumps(value)[:limit]
    return redact(text[:limit])


def parse_response(response: HttpResponse, method: str, limiter: Limiter | None = None) -> Envelope:
    """
    Turn an HTTP answer into an :class:`Envelope`, or raise the matching :class:`Bitrix24Error`.

    Anything that is not the Bitrix24 envelope (an HTML page from a proxy, an empty or truncated body, JSON
    without ``result``, JSON nested too deep to read) raises :class:`Bitrix24ResponseError` with the HTTP status. An
    empty or unparsable body is retryable whatever the status (a cut connection, as with a dropped one);
    well-formed JSON of the wrong shape is retryable when the status says the portal or a gateway was briefly
    unavailable. Error descriptions are redacted like URLs are: a portal may echo what it was sent.
    """
    status = response.status
    transient = status in TRANSIENT_HTTP_STATUSES
    content_type = response.headers.get("content-type", "unknown type")
    if not response.body.strip():
        raise Bitrix24ResponseError(
            "EMPTY_RESPONSE",
            "the portal sent an empty body",
            status=status,
            method=method,
            retryable=True,
        )
    data = response.parsed if response.parsed is not _UNDECODED else decode_json(response.body)
    if isinstance(data, RecursionError):
        raise Bitrix24ResponseError(
            "INVALID_RESPONSE", "the JSON answer is nested too deeply to read", status=status, method=method
        )
    if isinstance(data, Exception):
        raise Bitrix24ResponseError(
            "INVALID_RESPONSE",
            f"the answer is not JSON ({_text(content_type, 80)}, {len(response.body)} bytes); "
            "a proxy or gateway may have answered instead of the portal",
            status=status,
            method=method,
            retryable=True,
        )
    if not isinstance(data, dict):
        raise Bitrix24ResponseError(
            "INVALID_RESPONSE",
            "the JSON answer is not an object",
            status=status,
            method=method,
            retryable=transient,
        )
    if "error" in data:
        code, description = data["error"], data.get("error_description")
        if isinstance(code, Mapping):  # REST 3.0 shape {"error": {"code", "message"}}
            code, description = code.get("code", ""), code.get("message", "")
        unblocks = limiter.unblocks_at(method) if limiter is not None else None
        raise error_from_payload(
            _text(code, _MAX_CODE),
            _text(description, _MAX_DESCRIPTION),
            status=status,
            method=method,
            unblocks_at=unblocks,
        )
    if "result" not in data:
        raise Bitrix24ResponseError(
            "INVALID_RESPONSE",
            "the JSON answer has neither result nor error",
            status=status,
            method=method,
            retryable=transient,
        )
    if status >= 400:
        raise Bitrix24ResponseError(
            "INVALID_RESPONSE", "an error status came with a result body", status=status, method=method
        )
    time_block = data.get("time")
    return Envelope(
        result=data["result"],
        time=time_block if isinstance(time_block, Mapping) else {},
        next=as_int(data.get("next")),
        total=as_int(data.get("total")),
    )


def list_rows(result: Any) -> list[Any]:
    """
    The rows of one page of a list method.

    Most list methods answer a list; some wrap it in an object with one key (``tasks.task.list`` ->
    ``{"tasks": [...]}``, ``crm.item.list`` -> ``{"items": [...]}``); a few answer a map keyed by id.
    """
    if isinstance(result, list):
        return result
    if isinstance(result, Mapping):
        if len(result) == 1:
            (only,) = result.values()
            if isinstance(only, list):
                return only
            if isinstance(only, Mapping) and all(isinstance(v, Mapping) for v in only.values()):
                return list(only.values())
        return list(result.values())
    return [result]


def check_method(method: Any) -> None:
    """Refuse what cannot be a REST method name (it goes into a URL path, or a batch command before its ``?``)."""
    if not method or not isinstance(method, str) or "/" in method or "?" in method:
        raise Bitrix24ConfigError("method", f"must be a REST method name such as 'profile', got {method!r}")


# --------------------------------------------------------------------------- batch requests


def split_batches(entries: Sequence[_Entry], size: int = BATCH_LIMIT) -> list[list[_Entry]]:
    """
    Where a run of keyed commands (or of anything that becomes one command each) is split into ``batch``
    requests: consecutive slices of ``size`` (at most :data:`BATCH_LIMIT`), in input order.
    """
    step = max(1, min(size, BATCH_LIMIT))
    return [list(entries[i : i + step]) for i in range(0, len(entries), step)]


def encode_batch(chunk: Sequence[tuple[str, Command]], *, halt: bool) -> dict[str, Any]:
    """
    The parameters of one ``batch`` request. The commands' keys reach the portal unchanged, so ``$result[key][...]``
    references between commands of the same request resolve.
    """
    cmd: dict[str, str] = {}
    for key, (method, params) in chunk:
        check_method(method)
        query = php_query(params or {})
        cmd[key] = f"{method}?{query}" if query else method
    return {"halt": 1 if halt else 0, "cmd": cmd}


def decode_batch(
    envelope: Envelope,
    chunk: Sequence[tuple[str, Command]],
    *,
    halt: bool,
    limiter: Limiter,
    unknown_block: float = UNKNOWN_BLOCK,
) -> tuple[dict[str, BatchItem], list[tuple[str, float]]]:
    """
    Read a ``batch`` answer: ``{key: BatchItem}`` for the commands of ``chunk``, and the ``(method, until)`` blocks
    the answer announced (``OPERATION_TIME_LIMIT`` of a command), for the caller to report.

    Each command's ``time`` block is given to the limiter. A command that was sent but is in no section of the
    answer (and not after a halting error) is a bad answer, retryable, never taken for "not executed".

    :param unknown_block: Seconds a method refused with no known reset is held.
    """
    body = envelope.result if isinstance(envelope.result, Mapping) else {}
    ok = _section(body.get("result"))
    errors = _section(body.get("result_error"))
    totals = _section(body.get("result_total"))
    nexts = _section(body.get("result_next"))
    times = _section(body.get("result_time"))
    outer_operating = as_seconds(envelope.time.get("operating"))
    outer_block = (
        as_seconds(envelope.time.get("operating_reset_at"))
        if outer_operating is not None and outer_operating > OPERATING_LIMIT
        else None
    )
    out: dict[str, BatchItem] = {}
    blocks: list[tuple[str, float]] = []
    halted = False
    for key, (method, _) in chunk:
        if key in times and isinstance(times[key], Mapping):
            limiter.observe(method, times[key])
        if key in errors:
            raw = errors[key] if isinstance(errors[key], Mapping) else {}
            err = error_from_payload(
                _text(raw.get("error", ""), _MAX_CODE),
                _text(raw.get("error_description"), _MAX_DESCRIPTION),
                status=None,
                method=method,
                unblocks_at=limiter.unblocks_at(method),
            )
            if isinstance(err, Bitrix24OperationTimeLimitError):
                # When does the command's method unblock: its own timing if the answer has it, else what the
                # method's earlier answers said, else the outer block when it is over the limit itself (portals
                # that bill a batch per command report the busiest method there), else look again after
                # ``unknown_block`` seconds.
                own = times.get(key)
                reset = as_seconds(own.get("operating_reset_at")) if isinstance(own, Mapping) else None
                until = reset or err.unblocks_at or outer_block or time.time() + unknown_block
                err.unblocks_at = until
                blocks.append((method, until))
            out[key] = BatchItem(key, method, error=err)
            halted = halted or halt
        elif key in ok:
            own_time = times.get(key)
            out[key] = BatchItem(
                key,
                method,
                result=ok[key],
                next=as_int(nexts.get(key)),
                total=as_int(totals.get(key)),
                time=own_time if isinstance(own_time, Mapping) else None,
            )
        elif halted:
            not_run = Bitrix24ApiError("NOT_EXECUTED", "the batch stopped before this command (halt)", method=method)
            out[key] = BatchItem(key, method, error=not_run)
        else:
            missing = Bitrix24ResponseError(
                "MISSING_IN_BATCH",
                "the batch answer holds neither a result nor an error for this command",
                status=200,
                method=method,
                retryable=True,
            )
            out[key] = BatchItem(key, method, error=missing)
    return out, blocks
