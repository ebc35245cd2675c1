"""
A loopback HTTP proxy that answers like its upstream, only later: a token endpoint as far away as the real one.

The sandbox answers in a millisecond; ``oauth.bitrix.info`` is a WAN round trip away and slower when busy. Point a
connection's ``oauth_url`` at :attr:`SlowProxy.base_url` and every request is forwarded to the upstream (same
path, query and body) after ``delay`` seconds; a successful (2xx) answer is then held ``success_delay`` seconds
more. The latter opens, every time, the window in which two processes race for one refresh token: the winner's
grant is used up at the upstream at once, the loser hears ``invalid_grant`` at once, and the winner learns its new
pair (and can store it) only ``success_delay`` later.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the query holds secrets
        pass

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else None
        if self.server.delay and self.server.stop_event.wait(self.server.delay):
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "accept", "user-agent")}
        request = urllib.request.Request(
            self.server.upstream + self.path, data=body, headers=headers, method=self.command
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, payload, content_type = response.status, response.read(), response.headers.get_content_type()
        except urllib.error.HTTPError as exc:
            status, payload, content_type = exc.code, exc.read(), exc.headers.get_content_type()
        if 200 <= status < 300 and self.server.success_delay and self.server.stop_event.wait(self.server.success_delay):
            return
        with self.server.lock:
            self.server.forwarded += 1
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _forward
    do_POST = _forward


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    upstream: str
    delay: float
    success_delay: float
    stop_event: threading.Event
    lock: threading.Lock
    forwarded: int


class SlowProxy:
    """
    Forward every request to ``upstream``, later than it came; use as a context manager.

    :param upstream: Base URL of the upstream, e.g. the sandbox's ``http://127.0.0.1:PORT``.
    :param delay: Seconds to wait before forwarding each request.
    :param success_delay: Seconds to hold a successful answer before passing it on.
    """

    def __init__(self, upstream: str, delay: float = 0.0, success_delay: float = 0.0) -> None:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.upstream = upstream.rstrip("/")
        server.delay = delay
        server.success_delay = success_delay
        server.stop_event = threading.Event()
        server.lock = threading.Lock()
        server.forwarded = 0
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def forwarded(self) -> int:
        with self._server.lock:
            return self._server.forwarded

    def __enter__(self) -> SlowProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop_event.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
