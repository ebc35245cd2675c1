"""
What every benchmark shares: the sandbox portal (optionally behind TLS), worker processes, and the arithmetic.

The runner process hosts the sandbox portal; every contender runs in a worker process of its own
(``benchmarks.<module>.worker`` in a new interpreter), so that the portal and the client never compete for one
interpreter lock and every run starts from a cold client: no shared rate-limit bucket, no cached token. A worker
prints its result as one ``RESULT {json}`` line on stdout.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from airflow_provider_bitrix24.sandbox import stats

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "benchmarks"
RESULT_PREFIX = "RESULT "
QUICK_SAVE = "imopenlines.message.quick.save"
HISTORY = "imopenlines.session.history.get"
#: The standard plan's leaky bucket (the sandbox's ``standard`` preset).
BURST, PER_SECOND = 50, 2.0
#: A client-side rate limit high enough to mean "no pacing".
NO_PACING = {"burst": 1_000_000, "per_second": 1_000_000.0}


# --------------------------------------------------------------------------- numbers


def summary(values: Sequence[float]) -> dict[str, float]:
    """``min``, ``median`` and ``max`` of a non-empty sequence."""
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}


def percentile(values: Sequence[float], share: float) -> float:
    """The ``share`` percentile (0..1) by the nearest-rank method."""
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


def ideal_seconds(requests: int, burst: int = BURST, per_second: float = PER_SECOND) -> float:
    """The least time the portal's leaky bucket allows for ``requests`` requests: the burst, then the drain rate."""
    return max(0.0, (requests - burst) / per_second)


def refused_by_bucket(times: Iterable[float], burst: int = BURST, per_second: float = PER_SECOND) -> int:
    """How many requests sent at these times the standard portal's leaky bucket would refuse."""
    return stats.refused_by_bucket(times, burst, per_second)


# --------------------------------------------------------------------------- TLS in front of the sandbox


class TlsFront:
    """
    A TLS terminator on loopback that relays every connection to the plain-HTTP sandbox.

    Real portals are HTTPS-only and one of the peers builds ``https://`` URLs itself, so B1 runs every contender
    through this front. The certificate is issued by a throw-away CA (``trustme``); clients trust it through
    ``REQUESTS_CA_BUNDLE`` / ``SSL_CERT_FILE`` or the connection's ``verify`` extra. The front adds no logic:
    bytes are copied both ways, and a connection closed on one side is closed on the other.
    """

    def __init__(self, target_port: int, workdir: Path) -> None:
        import trustme

        self.target = ("127.0.0.1", target_port)
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_path = workdir / "sandbox-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_path))
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(self.context)
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.port = int(self._listener.getsockname()[1])
        self._stopped = threading.Event()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="tls-front", daemon=True)

    def start(self) -> TlsFront:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets = list(self._open)
        for sock in sockets:
            _close(sock)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            secure = self.context.wrap_socket(client, server_side=True)
            upstream = socket.create_connection(self.target)
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, ssl.SSLError):
            _close(client)
            return
        with self._lock:
            self._open.update((secure, upstream))
        back = threading.Thread(target=self._pump, args=(upstream, secure), daemon=True)
        back.start()
        self._pump(secure, upstream)
        back.join()
        with self._lock:
            self._open.difference_update((secure, upstream))

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except (OSError, ssl.SSLError):
            pass
        _close(source)
        _close(sink)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError, ssl.SSLError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    with contextlib.suppress(OSError, ssl.SSLError):
        sock.close()


# --------------------------------------------------------------------------- the portal


@dataclass
class BenchPortal:
    """
    A sandbox portal hosted by the runner, plus the connection settings that point contenders at it.

    :param preset: ``standard``, ``enterprise`` or ``unlimited``.
    :param tls: Put a :class:`TlsFront` before it.
    :param fields: Other :class:`~airflow_provider_bitrix24.sandbox.SandboxConfig` fields.
    """

    preset: str = "standard"
    tls: bool = False
    fields: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from airflow_provider_bitrix24.sandbox import SandboxConfig, SandboxPortal

        self.workdir = Path(tempfile.mkdtemp(prefix="bitrix24-bench-"))
        self.portal = SandboxPortal(SandboxConfig.preset(self.preset, **self.fields)).start()
        self.front = TlsFront(self.portal.config.port, self.workdir).start() if self.tls else None

    def stop(self) -> None:
        if self.front is not None:
            self.front.stop()
        self.portal.stop()

    def __enter__(self) -> BenchPortal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self.front is not None:
            return f"https://127.0.0.1:{self.front.port}"
        return self.portal.base_url

    @property
    def ca_path(self) -> str | None:
        return str(self.front.ca_path) if self.front is not None else None

    @property
    def user_id(self) -> int:
        return self.portal.webhook_user_id

    @property
    def code(self) -> str:
        return self.portal.webhook_code

    @property
    def webhook_url(self) -> str:
        return f"{self.base_url}/rest/{self.user_id}/{self.code}/"

    def bitrix24_conn(self, rate_limit: dict[str, float] | None = None, **extra: Any) -> str:
        """``AIRFLOW_CONN_...`` JSON of a Bitrix24 connection using the inbound webhook."""
        config = self.portal.config
        values: dict[str, Any] = {
            "rate_limit": rate_limit or {"burst": config.burst, "per_second": config.per_second},
            **extra,
        }
        if self.ca_path:
            values["verify"] = self.ca_path
        return json.dumps({"conn_type": "bitrix24", "host": self.webhook_url, "extra": values})

    def http_conn(self) -> str:
        """``AIRFLOW_CONN_...`` JSON of a generic HTTP connection to the portal, for ``HttpHook``."""
        scheme, rest = self.base_url.split("://", 1)
        host, port = rest.rsplit(":", 1)
        return json.dumps({"conn_type": "http", "host": host, "port": int(port), "schema": scheme})

    def reset(self, **fields: Any) -> None:
        """Back to the seed data with empty counters and an empty bucket; then apply ``fields``."""
        self.portal.reset()
        if fields:
            self.portal.configure(**fields)

    def stats(self) -> dict[str, Any]:
        return self.portal.stats()


# --------------------------------------------------------------------------- workers


def worker_env(home: Path, connections: dict[str, str] | None = None, ca_path: str | None = None) -> dict[str, str]:
    """The environment of a worker: a throw-away Airflow home, the connections, the CA of the TLS front."""
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "NO_PROXY": "127.0.0.1,localhost,::1",
            "no_proxy": "127.0.0.1,localhost,::1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")])),
        }
    )
    for conn_id, value in (connections or {}).items():
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = value
    if ca_path:
        env["REQUESTS_CA_BUNDLE"] = env["SSL_CERT_FILE"] = ca_path
    return env


def run_worker(
    module: str,
    args: Sequence[str],
    env: dict[str, str],
    *,
    timeout: float,
    python: str = sys.executable,
    on_line: Callable[[str, subprocess.Popen[str]], None] | None = None,
) -> dict[str, Any]:
    """
    Run ``benchmarks.<module>.worker(ARGS)`` in a new interpreter and return its ``RESULT`` JSON.

    The worker is called from a ``-c`` stub rather than run as ``__main__``: Airflow's operator wrapper inspects
    the calling frames, which costs about 0.1 s per ``execute`` when the caller is a ``__main__`` module.

    :param on_line: Called with every other stdout line (e.g. a worker announcing that it is ready).
    :raises RuntimeError: when the worker fails, times out or prints no result.
    """
    stub = f"import sys; from benchmarks.{module} import worker; worker(sys.argv[1:])"
    command = [python, "-c", stub, *args]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    errors: list[str] = []
    reader = threading.Thread(target=lambda: errors.append(process.stderr.read() if process.stderr else ""))
    reader.start()
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    result: dict[str, Any] | None = None
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(RESULT_PREFIX):
                result = json.loads(line[len(RESULT_PREFIX) :])
            elif on_line is not None:
                on_line(line.rstrip("\n"), process)
        process.wait()
    finally:
        timer.cancel()
        reader.join()
    if result is None or process.returncode != 0:
        tail = "".join(errors)[-3000:]
        raise RuntimeError(f"worker {module} {' '.join(args)} failed (exit {process.returncode}):\n{tail}")
    return result


def emit(result: dict[str, Any]) -> None:
    """Hand a worker's result to the runner."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the machine


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = None
    with contextlib.suppress(Exception):
        import psutil

        memory = round(psutil.virtual_memory().total / 2**30, 1)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": memory,
        "os": platform.platform(),
        "python": platform.python_version(),
    }


VERSIONED = (
    "airflow-provider-bitrix24",
    "apache-airflow",
    "apache-airflow-providers-http",
    "fast-bitrix24",
    "b24pysdk",
    "requests",
    "httpx",
    "aiohttp",
)


def versions(names: Iterable[str] = VERSIONED) -> dict[str, str]:
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found
