"""
A loopback HTTP server that answers with queued replies and records every request it gets (tests only).

It stands in for a Bitrix24 portal and its OAuth token server when a test must serve an exact recorded body with
its recorded status: queue ``(status, body)`` replies, point the client at :attr:`ReplayServer.webhook_url` (or
:attr:`ReplayServer.oauth_url`), run the call, then read :attr:`ReplayServer.requests`. A request that finds the
queue empty gets HTTP 500 with a plain-text body, which the client reads as a broken answer.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

WEBHOOK_USER = 1
WEBHOOK_CODE = "fake-webhook-0000"
JSON_TYPE = "application/json; charset=utf-8"


@dataclass(frozen=True)
class Reply:
    """One queued answer."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = (("Content-Type", JSON_TYPE),)


@dataclass(frozen=True)
class Recorded:
    """One request the server received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes = b""

    @property
    def json(self) -> Any:
        """The JSON body, or ``None`` when the request had none."""
        return json.loads(self.body) if self.body else None

    @property
    def rest_method(self) -> str:
        """The last path segment: the REST method of a ``/rest/...`` call."""
        return self.path.rstrip("/").rsplit("/", 1)[-1]


@dataclass
class _State:
    replies: deque[Reply] = field(default_factory=deque)
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        state = self.server.state
        with state.lock:
            state.requests.append(
                Recorded(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query, keep_blank_values=True),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
            )
            reply = state.replies.popleft() if state.replies else None
        if reply is None:
            reply = Reply(500, b"replay: no answer queued", (("Content-Type", "text/plain"),))
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: _State) -> None:
        self.state = state
        super().__init__(("127.0.0.1", 0), _Handler)


class ReplayServer:
    """Serve queued replies on ``127.0.0.1:<free port>`` and record the requests."""

    def __init__(self) -> None:
        self._state = _State()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ReplayServer:
        self._server = _Server(self._state)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="replay-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "the server is not started"
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}"

    @property
    def webhook_url(self) -> str:
        """An inbound-webhook URL on this server."""
        return f"{self.base_url}/rest/{WEBHOOK_USER}/{WEBHOOK_CODE}/"

    @property
    def oauth_url(self) -> str:
        """A token-endpoint URL on this server."""
        return f"{self.base_url}/oauth/token/"

    def queue(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        """Queue one reply; ``body`` is sent as is when it is bytes, else as JSON."""
        raw = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
        pairs = tuple((headers or {"Content-Type": JSON_TYPE}).items())
        with self._state.lock:
            self._state.replies.append(Reply(status, raw, pairs))

    def queue_all(self, replies: Iterable[tuple[int, Any]]) -> None:
        for status, body in replies:
            self.queue(status, body)

    @property
    def requests(self) -> list[Recorded]:
        with self._state.lock:
            return list(self._state.requests)

    @property
    def pending(self) -> int:
        """Replies queued and not served yet."""
        with self._state.lock:
            return len(self._state.replies)
