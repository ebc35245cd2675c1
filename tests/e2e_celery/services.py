"""
Throw-away Redis and PostgreSQL servers on loopback, for the CeleryExecutor deployment and the B5 benchmark.

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
from pathlib import Path

from tests.support.waiting import free_port, wait_for

INSTALL_HINT = "run .ci/install-services (installs redis-server and postgresql from the Debian packages)"


class ServiceMissing(RuntimeError):
    """The server's binaries are not installed."""


class RedisServer:
    """``redis-server`` on 127.0.0.1, without persistence, in ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def binary() -> str:
        found = shutil.which("redis-server") or (
            "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
        )
        if found is None:
            raise ServiceMissing(f"redis-server is not installed; {INSTALL_HINT}")
        return found

    def start(self) -> RedisServer:
        binary = self.binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        args = [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log"), "--daemonize", "no"]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_for("redis-server to answer PING", self.ping, 30, interval=0.1, error=RuntimeError)
        return self

    def ping(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self._proc.returncode}; see {self.workdir / 'redis.log'}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def flush(self) -> None:
        """Drop every key of every database."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"FLUSHALL\r\n")
            answer = sock.recv(64)
        if not answer.startswith(b"+OK"):
            raise RuntimeError(f"FLUSHALL answered {answer!r}")

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def airflow_conn(self, db: int = 0) -> dict[str, object]:
        """An Airflow Redis connection (``apache-airflow-providers-redis``) to this server."""
        return {"conn_type": "redis", "host": "127.0.0.1", "port": self.port, "extra": {"db": db}}

    def stop(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(10)


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
