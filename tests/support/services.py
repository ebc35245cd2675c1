"""
Throw-away Redis and PostgreSQL servers on loopback, for the tests that share state through Redis, the
CeleryExecutor deployment and the B5 benchmark.

Both run from the distribution's binaries (``.ci/install-services`` installs them), in a temporary directory, on
a free port, and stop with the test. PostgreSQL refuses to run as root: when the test runs as root its cluster is
created and run as the ``postgres`` user through ``runuser``; otherwise as the current user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.support.waiting import free_port

#: Seconds to wait for a started redis-server to answer PING.
REDIS_START_TIMEOUT = 15.0
INSTALL_HINT = "run .ci/install-services (installs redis-server and postgresql from the Debian packages)"


class ServiceMissing(RuntimeError):
    """The server's binaries are not installed."""


def redis_binary() -> str | None:
    """The ``redis-server`` binary: on PATH, else Debian's, else ``None``."""
    return shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)


def _encode(*args: str) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def redis_command(host: str, port: int, password: str | None, args: tuple[str, ...], timeout: float) -> bytes:
    """Run one command (after ``AUTH`` when there is a password) and return the raw RESP reply to it."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall((_encode("AUTH", password) if password is not None else b"") + _encode(*args))
        lines = 2 if password is not None else 1
        reply = b""
        while reply.count(b"\r\n") < lines:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    if password is None:
        return reply
    auth, _, rest = reply.partition(b"\r\n")
    if auth != b"+OK":
        raise ConnectionError(f"Redis refused AUTH: {auth[:80]!r}")
    return rest


def start_redis(
    binary: str, directory: Path, password: str | None = None, timeout: float = REDIS_START_TIMEOUT
) -> tuple[subprocess.Popen[bytes], int]:
    """
    Start ``redis-server`` on 127.0.0.1 and a free port, without persistence, working in ``directory`` (its log:
    ``redis.log``); with a password, it is given in a config file, never on the command line where ``ps`` shows it.
    Return the process and the port once it answers PING.
    """
    args: list[str] = [binary]
    if password is not None:
        config = directory / "redis.conf"
        config.write_text(f"requirepass {password}\n")
        config.chmod(0o600)
        args.append(str(config))
    last_error = ""
    for _ in range(3):  # another process may take the free port between the check and the bind
        port = free_port()
        log_path = directory / "redis.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [
                    *args,
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(directory),
                    "--daemonize",
                    "no",
                    "--protected-mode",
                    "yes",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=directory,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            with contextlib.suppress(OSError):
                if redis_command("127.0.0.1", port, password, ("PING",), 1.0).startswith(b"+PONG"):
                    return process, port
            time.sleep(0.05)
        stop_process(process)
        last_error = log_path.read_text(errors="replace")[-2000:]
        if password is not None:
            last_error = last_error.replace(password, "***")
    raise RuntimeError(f"redis-server did not start:\n{last_error}")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Terminate a server process, killing it after 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


class RedisServer:
    """``redis-server`` on 127.0.0.1, without persistence and without a password, in ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def binary() -> str:
        found = redis_binary()
        if found is None:
            raise ServiceMissing(f"redis-server is not installed; {INSTALL_HINT}")
        return found

    def start(self) -> RedisServer:
        binary = self.binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._proc, self.port = start_redis(binary, self.workdir, timeout=30)
        return self

    def ping(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self._proc.returncode}; see {self.workdir / 'redis.log'}")
        try:
            return redis_command("127.0.0.1", self.port, None, ("PING",), 1.0).startswith(b"+PONG")
        except OSError:
            return False

    def flush(self) -> None:
        """Drop every key of every database."""
        answer = redis_command("127.0.0.1", self.port, None, ("FLUSHALL",), 5.0)
        if not answer.startswith(b"+OK"):
            raise RuntimeError(f"FLUSHALL answered {answer!r}")

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def airflow_conn(self, db: int = 0) -> dict[str, object]:
        """An Airflow Redis connection (``apache-airflow-providers-redis``) to this server."""
        return {"conn_type": "redis", "host": "127.0.0.1", "port": self.port, "extra": {"db": db}}

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc)


def _postgres_bindir() -> Path:
    """The directory of ``initdb`` and ``pg_ctl``: on PATH, else the newest /usr/lib/postgresql/<version>/bin."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(os.path.realpath(on_path)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if not candidates:
        raise ServiceMissing(f"PostgreSQL is not installed; {INSTALL_HINT}")
    return Path(candidates[-1]).parent


class PostgresServer:
    """
    A PostgreSQL cluster in ``workdir`` on 127.0.0.1, trust authentication, one database ``airflow``.

    Durability is switched off (``fsync``, ``synchronous_commit``, ``full_page_writes``): the data lives as long
    as the test.
    """

    user = "airflow"
    database = "airflow"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.data = workdir / "data"
        self.port = 0
        self.bindir = _postgres_bindir()
        self._run_as: list[str] = []
        self._started = False

    def _cmd(self, *args: str, timeout: float = 120) -> None:
        proc = subprocess.run(
            [*self._run_as, *args],
            cwd=self.workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed ({proc.returncode}):\n{proc.stdout[-3000:]}")

    def start(self) -> PostgresServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root: the cluster belongs to the distribution's postgres user.
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise ServiceMissing(f"no 'postgres' user to run PostgreSQL as; {INSTALL_HINT}") from None
            os.chown(self.workdir, owner.pw_uid, owner.pw_gid)
            runuser = shutil.which("runuser") or "/usr/sbin/runuser"
            self._run_as = [runuser, "-u", "postgres", "--"]
        self.port = free_port()
        self._cmd(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            self.user,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        options = [
            "-c listen_addresses=127.0.0.1",
            f"-p {self.port}",
            f"-c unix_socket_directories={self.workdir}",
            "-c max_connections=400",
            "-c fsync=off",
            "-c synchronous_commit=off",
            "-c full_page_writes=off",
        ]
        self._cmd(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.workdir / "postgres.log"),
            "-o",
            " ".join(options),
            "-w",
            "-t",
            "60",
            "start",
        )
        self._started = True
        self._create_database()
        return self

    def _create_database(self) -> None:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            conn.close()

    def sqlalchemy_url(self, driver: str = "psycopg2") -> str:
        return f"postgresql+{driver}://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def connect(self):
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, dbname=self.database)
        conn.autocommit = True
        return conn

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        try:
            self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")
        except (RuntimeError, subprocess.TimeoutExpired):
            pid_file = self.data / "postmaster.pid"
            with contextlib.suppress(OSError, ValueError, IndexError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
