"""
The sandbox portal: a real HTTP/1.1 server on loopback that answers like a Bitrix24 cloud portal.

Routes:

* ``/rest/{user_id}/{code}/{method}[.json][/]`` (webhook) and ``/rest/{method}[.json][/]`` (OAuth), GET or POST;
* ``/oauth/token/`` (GET query or POST form): the token endpoint;
* ``/_sandbox/...``: control endpoints for tests (no auth, not rate limited, JSON in and out):
  ``GET quick-answers``, ``POST messages``, ``POST sessions``, ``POST sessions/close``, ``POST faults``,
  ``POST reset``, ``POST config``, ``GET stats``, ``GET seed``, ``GET health``.

The control endpoints have no credential, so a web page must not be able to reach them through the developer's
browser: they answer only requests whose ``Host`` is a loopback host (``127.0.0.1``, ``[::1]``, ``localhost``,
with or without the port; a DNS-rebinding page sends its own name), and refuse with 403 a ``POST`` that carries an
``Origin`` other than the sandbox's own or a body that is not ``application/json`` (the only kinds of cross-origin
write a browser sends without asking first). Their bodies are limited to :data:`MAX_CONTROL_BODY` bytes (413).

Every answer carries ``Content-Length`` and connections are kept alive. Nothing is logged unless ``verbose`` is set,
and then webhook codes and query strings are masked. No answer ever repeats a credential.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import socket
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_bitrix24.sandbox.config import SandboxConfig
from airflow_provider_bitrix24.sandbox.faults import Fault, make_fault
from airflow_provider_bitrix24.sandbox.oauth import TOKEN_PATH, OAuthError
from airflow_provider_bitrix24.sandbox.params import merge, parse_body, parse_query, to_int
from airflow_provider_bitrix24.sandbox.rest import RestCall, RestEngine, parse_rest_path
from airflow_provider_bitrix24.sandbox.state import SeedIds

JSON_TYPE = "application/json; charset=utf-8"
_CHUNK = 64 * 1024
#: Largest body a control request may carry, bytes.
MAX_CONTROL_BODY = 1024 * 1024
CONTROL_PREFIX = "/_sandbox/"
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


#: Largest oversized body still read to its end (so the client sees the 413 and may reuse the connection).
_DRAIN_LIMIT = 16 * MAX_CONTROL_BODY


class _BodyTooLarge(Exception):
    def __init__(self, *, drained: bool) -> None:
        super().__init__("request body too large")
        self.drained = drained


def encode_json(payload: Any) -> bytes:
    """JSON the way PHP writes it: ASCII with ``\\uXXXX`` escapes and ``\\/`` for slashes."""
    return json.dumps(payload).replace("/", "\\/").encode("ascii")


def _is_loopback(host: str) -> bool:
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    portal: SandboxPortal

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that go away (timeouts, resets) are normal here; anything else is reported."""
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Bitrix24Sandbox/1.0"
    sys_version = ""
    server: _Server

    # -- connection bookkeeping ---------------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in separate writes; without TCP_NODELAY every answer waits for a delayed ACK.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.portal._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.portal._track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        """Per-request lines are written by :meth:`_log` only in verbose mode."""

    def _log(self, status: int | str) -> None:
        if self.server.portal.config.verbose:
            sys.stderr.write(f"[bitrix24-sandbox] {self.command} {_masked(self.path)} -> {status}\n")

    # -- verbs --------------------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        # The body is not read: the connection closes after the answer.
        self.close_connection = True
        self._send_json(405, {"error": "METHOD_NOT_ALLOWED", "error_description": "Use GET or POST"})

    do_DELETE = do_PUT
    do_PATCH = do_PUT

    def _dispatch(self) -> None:
        try:
            path = urlsplit(self.path).path
            if path.startswith(CONTROL_PREFIX):
                self._guarded_control(path[len(CONTROL_PREFIX) :].strip("/"))
                return
            body = self._read_body()
            if path.startswith("/rest/") or path == "/rest":
                self._rest(path, body)
            elif path.rstrip("/") == TOKEN_PATH.rstrip("/"):
                self._oauth(body)
            else:
                self._send(404, b"<html><body><h1>404 Not Found</h1></body></html>", "text/html; charset=utf-8")
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True

    def _read_body(self, limit: int | None = None) -> bytes:
        """
        The request body.

        :param limit: Largest body accepted, bytes. A larger one raises ``_BodyTooLarge``: read to its end and
            dropped when it is no larger than :data:`_DRAIN_LIMIT` (the connection stays usable), else left unread.
        """
        if limit is not None and not self._is_chunked() and self._content_length() > _DRAIN_LIMIT:
            raise _BodyTooLarge(drained=False)
        parts: list[bytes] = []
        total = 0
        for piece in self._body_pieces():
            total += len(piece)
            if limit is None or total <= limit:
                parts.append(piece)
            elif total > _DRAIN_LIMIT:
                raise _BodyTooLarge(drained=False)
            else:
                parts.clear()
        if limit is not None and total > limit:
            raise _BodyTooLarge(drained=True)
        return b"".join(parts)

    def _body_pieces(self) -> Iterator[bytes]:
        """The body as it arrives, plain (``Content-Length``) or chunked."""
        if self._is_chunked():
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                yield from self._pieces_of(size)
                self.rfile.readline()
        yield from self._pieces_of(self._content_length())

    def _pieces_of(self, size: int) -> Iterator[bytes]:
        remaining = size
        while remaining > 0:
            piece = self.rfile.read(min(remaining, _CHUNK))
            if not piece:
                return
            remaining -= len(piece)
            yield piece

    def _is_chunked(self) -> bool:
        return self.headers.get("Transfer-Encoding", "").lower() == "chunked"

    def _content_length(self) -> int:
        try:
            return max(0, int(self.headers.get("Content-Length") or 0))
        except ValueError:
            return 0

    # -- responses ----------------------------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self._log(status)  # before the answer leaves, so the line is there once the client has the answer
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")  # say so, or the client would reuse a socket about to close
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, payload: Any) -> None:
        self._send(status, encode_json(payload), JSON_TYPE)

    def _drop(self) -> None:
        """Close the connection without an answer."""
        self.close_connection = True
        self._log("dropped")
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send_raw(self, fault: Fault) -> None:
        body = fault.body.encode("utf-8")
        self._log(fault.raw_status)
        self.send_response(fault.raw_status)
        self.send_header("Content-Type", fault.content_type)
        if fault.size is None:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            pattern = body or b"x"
            chunk = pattern * max(1, _CHUNK // len(pattern))
            self.send_header("Content-Length", str(fault.size))
            self.end_headers()
            remaining = fault.size
            while remaining > 0:
                piece = chunk if remaining >= len(chunk) else chunk[:remaining]
                self.wfile.write(piece)
                remaining -= len(piece)

    # -- /rest/ -------------------------------------------------------------------------------------------------

    def _rest(self, path: str, body: bytes) -> None:
        portal = self.server.portal
        engine = portal.engine
        route = parse_rest_path(path)
        if route is None:
            engine.stats.request("?", 404, "ERROR_METHOD_NOT_FOUND")
            self._send_json(404, {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"})
            return
        method, webhook = route
        fault = engine.faults.take(method)
        if fault is not None and fault.kind in ("error", "raw", "drop_before", "hang"):
            self._unexecuted_fault(method, fault)
            return
        query = parse_query(urlsplit(self.path).query)
        params = merge(query, parse_body(body, self.headers.get("Content-Type", "")))
        authorization = self.headers.get("Authorization", "")
        bearer = authorization[7:].strip() if authorization.lower().startswith("bearer ") else None
        https = self.headers.get("X-Forwarded-Proto", "").lower() == "https"
        call = RestCall(method, webhook, params, bearer, self.client_address[0], https)
        dropped = fault is not None and fault.kind == "drop_after"
        round_trip = engine.latency.round_trip
        engine.pause(round_trip / 2)  # the request on its way to the portal
        answer = engine.handle(call, record=not dropped)
        engine.pause(round_trip / 2)  # the answer on its way back
        if dropped:
            engine.stats.request(method, 0)
            self._drop()
            return
        if fault is not None and fault.kind == "slow":
            engine.stop_event.wait(fault.delay if fault.delay is not None else 5.0)
        self._send_json(answer.status, answer.body)

    def _unexecuted_fault(self, method: str, fault: Fault) -> None:
        stats = self.server.portal.engine.stats
        if fault.kind == "error":
            stats.request(method, fault.error_status, fault.error)
            self._send_json(fault.error_status, {"error": fault.error, "error_description": fault.error_description})
        elif fault.kind == "raw":
            stats.request(method, fault.raw_status)
            self._send_raw(fault)
        elif fault.kind == "drop_before":
            stats.request(method, 0)
            self._drop()
        else:
            stats.request(method, 0)
            self.server.portal.engine.stop_event.wait(fault.delay if fault.delay is not None else 3600.0)
            self._drop()

    # -- /oauth/token/ ------------------------------------------------------------------------------------------

    def _oauth(self, body: bytes) -> None:
        portal = self.server.portal
        portal.engine.stats.oauth_request()
        params = merge(parse_query(urlsplit(self.path).query), parse_body(body, self.headers.get("Content-Type", "")))
        portal.engine.pause(portal.engine.latency.round_trip)  # the authorization server is a remote host too
        try:
            answer = portal.engine.oauth.grant(params, portal.base_url + "/rest/")
        except OAuthError as exc:
            self._send_json(exc.status, exc.body())
            return
        self._send_json(200, answer)

    # -- /_sandbox/ ---------------------------------------------------------------------------------------------

    def _guarded_control(self, name: str) -> None:
        """Refuse control requests a web page could have sent through a browser, then run the endpoint."""
        refusal = self._control_refusal()
        if refusal is not None:
            self.close_connection = True  # the body, if any, is left unread
            self._send_json(403, {"error": refusal})
            return
        try:
            body = self._read_body(limit=MAX_CONTROL_BODY)
        except _BodyTooLarge as exc:
            self.close_connection = self.close_connection or not exc.drained
            self._send_json(413, {"error": f"control request body is larger than {MAX_CONTROL_BODY} bytes"})
            return
        self._control(name, body)

    def _control_refusal(self) -> str | None:
        """Why this control request is refused, or ``None``."""
        if not _is_loopback_host(self.headers.get("Host")):
            return "control endpoints answer only requests to a loopback host (127.0.0.1, [::1] or localhost)"
        if self.command != "POST":
            return None
        origin = self.headers.get("Origin")
        if origin is not None and origin.strip().lower() not in self._own_origins():
            return "control endpoints refuse cross-origin requests"
        content_type = self.headers.get("Content-Type")
        has_body = self._is_chunked() or self._content_length() > 0
        if content_type is None and not has_body:
            return None
        if content_type is None or content_type.split(";", 1)[0].strip().lower() != "application/json":
            return "control endpoints take only application/json bodies"
        return None

    def _own_origins(self) -> set[str]:
        portal = self.server.portal
        port = portal.config.port
        names = {*_LOOPBACK_NAMES, urlsplit(portal.base_url).netloc.rsplit(":", 1)[0]}
        return {f"http://{name}:{port}".lower() for name in names}

    def _control(self, name: str, body: bytes) -> None:
        portal = self.server.portal
        try:
            data = json.loads(body.decode("utf-8")) if body.strip() else {}
        except ValueError:
            self._send_json(400, {"error": "request body is not JSON"})
            return
        if not isinstance(data, dict):
            self._send_json(400, {"error": "request body must be a JSON object"})
            return
        try:
            payload = self._control_action(portal, self.command, name, data)
        except LookupError as exc:
            self._send_json(404, {"error": str(exc.args[0] if exc.args else exc)})
            return
        except (ValueError, TypeError) as exc:
            self._send_json(400, {"error": str(exc)})
            return
        if payload is None:
            self._send_json(404, {"error": f"unknown control endpoint {self.command} /_sandbox/{name}"})
            return
        self._send_json(200, payload)

    @staticmethod
    def _control_action(portal: SandboxPortal, verb: str, name: str, data: dict[str, Any]) -> Any:
        if verb == "GET" and name == "quick-answers":
            return {"items": portal.quick_answers()}
        if verb == "GET" and name == "stats":
            return portal.stats()
        if verb == "GET" and name == "health":
            return {"ok": True}
        if verb == "GET" and name == "seed":
            return _seed_json(portal.seed)
        if verb != "POST":
            return None
        if name == "messages":
            delay = data.get("delay")
            session_id = to_int(data.get("session_id"))
            message_id = portal.add_message(
                session_id, to_int(data.get("author_id")), str(data.get("text", "")), delay=delay
            )
            return {"id": message_id, "chat_id": portal.chat_of_session(session_id)}
        if name == "sessions":
            return {"session_id": portal.open_session(to_int(data.get("chat_id")))}
        if name == "sessions/close":
            portal.close_session(to_int(data.get("session_id")))
            return {"ok": True}
        if name == "faults":
            options = dict(data)
            method = options.pop("method", "*")
            kind = options.pop("kind", "error")
            count = options.pop("count", 1)
            portal.inject_fault(str(method), str(kind), int(count), **options)
            return {"ok": True}
        if name == "reset":
            portal.reset(keep_config=bool(data.get("keep_config", False)))
            return {"ok": True}
        if name == "config":
            portal.configure(**data)
            return {"ok": True}
        return None


class SandboxPortal:
    """
    A local Bitrix24 portal for tests and demos.

    Start it, point a client at :attr:`webhook_url` (or at :attr:`base_url` with OAuth), and drive it from the
    test through the methods below or the ``/_sandbox/`` endpoints.

    :param config: Behaviour of the portal; the default is a cloud portal on the standard plan.
    """

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self._initial = (config or SandboxConfig()).copy()
        self.config = self._initial.copy()
        self.engine = RestEngine(self.config)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._timers: set[threading.Timer] = set()
        self._stopped = False

    # -- lifecycle ----------------------------------------------------------------------------------------------

    def start(self) -> SandboxPortal:
        """Bind (a free port when ``port`` is 0), serve in a background thread, and return ``self``."""
        if self._stopped:
            raise RuntimeError("a stopped sandbox portal cannot be started again; create a new one")
        if self._server is not None:
            return self
        if not _is_loopback(self.config.host):
            # The sandbox's credentials are public and it speaks plain HTTP: it only ever listens on loopback.
            raise ValueError(f"host {self.config.host!r} is not a loopback address (127.0.0.0/8, ::1, localhost)")
        server_class = _Server6 if ":" in self.config.host else _Server
        server = server_class((self.config.host, self.config.port), _Handler)
        server.portal = self
        self._server = server
        self.config.port = self._initial.port = int(server.server_address[1])
        self.engine.base_url = self.base_url
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="bitrix24-sandbox", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; hanging and idle connections are cut. Safe to call twice."""
        with self._lock:
            if self._stopped or self._server is None:
                self._stopped = True
                return
            self._stopped = True
            timers, self._timers = list(self._timers), set()
            connections = list(self._connections)
        self.engine.stop_event.set()
        for timer in timers:
            timer.cancel()
        self._server.shutdown()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> SandboxPortal:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _track(self, connection: socket.socket, opened: bool) -> None:
        with self._lock:
            if opened:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    # -- addresses and credentials ------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.config.port}"

    @property
    def webhook_user_id(self) -> int:
        return self.config.default_webhook.user_id

    @property
    def webhook_code(self) -> str:
        return self.config.default_webhook.code

    @property
    def webhook_url(self) -> str:
        return f"{self.base_url}/rest/{self.webhook_user_id}/{self.webhook_code}/"

    @property
    def limited_webhook_url(self) -> str:
        spec = self.config.limited_webhook
        return f"{self.base_url}/rest/{spec.user_id}/{spec.code}/"

    @property
    def oauth_url(self) -> str:
        return self.base_url + TOKEN_PATH

    @property
    def oauth_client_id(self) -> str:
        return self.config.oauth_client_id

    @property
    def oauth_client_secret(self) -> str:
        return self.config.oauth_client_secret

    @property
    def oauth_access_token(self) -> str:
        """The initial access token (valid after start and after every reset)."""
        return self.config.oauth_access_token

    @property
    def oauth_refresh_token(self) -> str:
        """The initial refresh token (valid once, after start and after every reset)."""
        return self.config.oauth_refresh_token

    @property
    def seed(self) -> SeedIds:
        """Seed ids of this portal (bulk and pool ranges follow its config)."""
        return self.engine.state.seed

    def issue_oauth_tokens(self, expired: bool = False) -> dict[str, Any]:
        """A fresh ``{"access_token", "refresh_token", "expires"}`` pair (the access token expired if asked)."""
        return self.engine.oauth.issue_pair(expired=expired)

    def issue_authorization_code(self) -> str:
        """An authorization code for ``grant_type=authorization_code``."""
        return self.engine.oauth.issue_code()

    def expire_access_tokens(self) -> None:
        """Every access token issued so far answers ``expired_token`` from now on."""
        self.engine.oauth.expire_all()

    def airflow_conn_json(self, kind: str = "webhook") -> str:
        """
        JSON for ``AIRFLOW_CONN_<ID>`` pointing at this portal.

        :param kind: ``webhook`` (full webhook URL in host), ``split`` (portal URL, user id in login, code in
            password), ``oauth`` (a freshly issued token pair in extra) or ``limited`` (the ``user``-only webhook).
        """
        conn: dict[str, Any] = {"conn_type": "bitrix24", "host": self.base_url, "login": "", "password": ""}
        extra: dict[str, Any] = {}
        if kind == "webhook":
            conn["host"] = self.webhook_url
        elif kind == "limited":
            conn["host"] = self.limited_webhook_url
        elif kind == "split":
            conn["login"] = str(self.webhook_user_id)
            conn["password"] = self.webhook_code
        elif kind == "oauth":
            pair = self.issue_oauth_tokens()
            extra = {
                "auth_type": "oauth",
                "client_id": self.oauth_client_id,
                "client_secret": self.oauth_client_secret,
                "refresh_token": pair["refresh_token"],
                "access_token": pair["access_token"],
                "expires_at": pair["expires"],
                "oauth_url": self.oauth_url,
            }
        else:
            raise ValueError(f"unknown connection kind {kind!r}; use webhook, split, oauth or limited")
        if self.config.rate_limit_enabled:
            extra["rate_limit"] = {"burst": self.config.burst, "per_second": self.config.per_second}
        conn["extra"] = extra
        return json.dumps(conn)

    # -- control ------------------------------------------------------------------------------------------------

    def configure(self, **fields: Any) -> None:
        """Change config fields on the running portal (see :class:`SandboxConfig`)."""
        fields.pop("host", None)
        fields.pop("port", None)
        self.config.update(**fields)

    def inject_fault(self, method: str, kind: str, count: int = 1, **options: Any) -> None:
        """
        Queue a fault for ``method`` (or ``"*"``); see :mod:`airflow_provider_bitrix24.sandbox.faults`.

        :param options: ``error``, ``status``, ``description``, ``delay``, ``body``, ``content_type``, ``size``,
            ``in_batch``.
        """
        self.engine.faults.add(make_fault(method, kind, count, **options))

    def quick_answers(self) -> list[dict[str, Any]]:
        """Every quick answer of every line."""
        state = self.engine.state
        with state.lock:
            return [answer.as_dict() for answer in state.all_answers()]

    def add_message(self, session_id: int, author_id: int, text: str, delay: float | None = None) -> int:
        """
        Append a message to a session now, or after ``delay`` seconds; returns the message id either way.

        :raises LookupError: for an unknown session or author.
        """
        state = self.engine.state
        with state.lock:
            if session_id not in state.sessions:
                raise LookupError(f"session {session_id} does not exist")
            if author_id != 0 and author_id not in state.users:
                raise LookupError(f"user {author_id} does not exist")
            if not delay or float(delay) <= 0:
                return state.add_message(session_id, author_id, text).id
            message_id = state.reserve_message_id()
        timer = threading.Timer(float(delay), self._publish, (state, session_id, author_id, text, message_id))
        timer.daemon = True
        with self._lock:
            self._timers.add(timer)
        timer.start()
        return message_id

    def _publish(self, state: Any, session_id: int, author_id: int, text: str, message_id: int) -> None:
        with self._lock:
            self._timers = {t for t in self._timers if t.is_alive() and t is not threading.current_thread()}
        if state is not self.engine.state:
            return
        with state.lock:
            state.add_message(session_id, author_id, text, message_id=message_id)

    def chat_messages(self, chat_id: int) -> list[dict[str, Any]]:
        """
        Every message of a chat, oldest first (e.g. what ``im.message.add`` posted into a group chat).

        :raises LookupError: for an unknown chat.
        """
        from airflow_provider_bitrix24.sandbox.im import chat_messages

        return chat_messages(self.engine.state, chat_id)

    def chat_of_session(self, session_id: int) -> int:
        state = self.engine.state
        with state.lock:
            session = state.sessions.get(session_id)
            if session is None:
                raise LookupError(f"session {session_id} does not exist")
            return session.chat_id

    def open_session(self, chat_id: int) -> int:
        """
        Start a new session in an open-line chat (the previous one closes); returns its id.

        :raises LookupError: for an unknown chat; ``ValueError`` for a chat that is not an open line.
        """
        state = self.engine.state
        with state.lock:
            if chat_id not in state.chats:
                raise LookupError(f"chat {chat_id} does not exist")
            return state.open_session(chat_id).id

    def close_session(self, session_id: int) -> None:
        """
        Close a session: once a chat's latest session is closed, its ``entity_data_1`` names no session.

        :raises LookupError: for an unknown session.
        """
        state = self.engine.state
        with state.lock:
            session = state.sessions.get(session_id)
            if session is None:
                raise LookupError(f"session {session_id} does not exist")
            session.closed = True

    def stats(self) -> dict[str, Any]:
        return self.engine.stats.snapshot()

    def reset(self, keep_config: bool = False) -> None:
        """
        Restore the seed data and clear faults, limits, counters and OAuth tokens (back to the initial pair).

        :param keep_config: Keep config changes made since start; by default the config given at construction
            is restored too.
        """
        if not keep_config:
            initial = self._initial.copy()
            for item in dataclasses.fields(initial):
                if item.name not in ("host", "port"):
                    setattr(self.config, item.name, getattr(initial, item.name))
        with self._lock:
            timers, self._timers = list(self._timers), set()
        for timer in timers:
            timer.cancel()
        self.engine.reset()


def _is_loopback_host(header: str | None) -> bool:
    """Whether a ``Host`` header names a loopback host (``127.0.0.1``, ``[::1]``, ``localhost``; port optional)."""
    if not header:
        return False
    host = header.strip().lower()
    if host.startswith("["):
        name, bracket, rest = host[1:].partition("]")
        if not bracket:
            return False
    else:
        name, colon, port = host.partition(":")
        rest = colon + port
    if rest and not (rest.startswith(":") and rest[1:].isascii() and rest[1:].isdigit() and len(rest) <= 6):
        return False
    return _is_loopback(name)


def _masked(path: str) -> str:
    """A request path safe to print: no query string, webhook code replaced by ``***``."""
    clean = urlsplit(path).path
    parts = clean.split("/")
    if len(parts) >= 4 and parts[1] == "rest":
        parts[3 if len(parts) >= 5 else 2] = "***"
    return "/".join(parts)


def _seed_json(seed: SeedIds) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for item in dataclasses.fields(seed):
        value = getattr(seed, item.name)
        if isinstance(value, range):
            value = {"start": value.start, "stop": value.stop}
        elif isinstance(value, tuple):
            value = list(value)
        result[item.name] = value
    return result
