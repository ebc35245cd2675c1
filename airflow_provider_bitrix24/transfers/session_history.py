"""
Export the open-line sessions of a time window and their messages to Airflow's object storage.

Two tables under ``path``, one file each per window, named after the window in UTC::

    <path>/sessions/<start>_<end>.jsonl     e.g. sessions/20260321T000000Z_20260322T000000Z.jsonl
    <path>/messages/<start>_<end>.jsonl

A re-run of the same window writes the same names, replacing the files (never appending), so rows are never
duplicated. Each file is written aside (``.<name>.<random>.tmp`` in the same folder) and moved into place once
complete: a run that fails midway leaves the previous files as they were and removes its own.
"""

from __future__ import annotations

import json
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from functools import cached_property
from typing import IO, TYPE_CHECKING, Any, Final

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, BaseOperator

from airflow_provider_bitrix24.sessions import MESSAGE_COLUMNS, SESSION_COLUMNS, WindowError, parse_window

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook

FORMATS: Final = ("jsonl", "parquet")
#: Sessions whose histories are read together (10 ``batch`` requests of 50, in flight at once).
CHUNK: Final = 500
#: Chunks read at once: the next chunk's histories are read while the one before is written, so the portal is
#: never idle between chunks; at most this many chunks of rows are held in memory, whatever the window's size.
CHUNKS_IN_FLIGHT: Final = 2
_INT_COLUMNS: Final = frozenset({"id", "chat_id", "line_id", "operator_id", "client_id", "message_count", "session_id"})
_DATE_COLUMNS: Final = frozenset({"start", "end", "last_updated", "date"})


def window_stem(start: datetime, end: datetime) -> str:
    """The file name (without extension) of a window: both bounds in UTC, ``20260321T000000Z_20260322T000000Z``."""

    def utc(moment: datetime) -> str:
        return moment.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")

    return f"{utc(start)}_{utc(end)}"


class _JsonlWriter:
    def __init__(self, handle: IO[bytes], columns: Sequence[str]) -> None:
        self.handle = handle
        self.columns = columns

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        lines = [json.dumps({c: row[c] for c in self.columns}, ensure_ascii=False) + "\n" for row in rows]
        self.handle.write("".join(lines).encode("utf-8"))

    def close(self) -> None:
        return None


class _ParquetWriter:
    def __init__(self, handle: IO[bytes], columns: Sequence[str]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        def kind(name: str) -> Any:
            if name in _DATE_COLUMNS:
                return pa.timestamp("us", tz="UTC")
            if name in _INT_COLUMNS or name.endswith("_id"):
                return pa.int64()
            return pa.string()

        self.pa = pa
        self.columns = columns
        self.schema = pa.schema([(name, kind(name)) for name in columns])
        self.writer = pq.ParquetWriter(handle, self.schema)

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        converted = [
            {c: (_to_datetime(row[c]) if c in _DATE_COLUMNS else row[c]) for c in self.columns} for row in rows
        ]
        self.writer.write_table(self.pa.Table.from_pylist(converted, schema=self.schema))

    def close(self) -> None:
        self.writer.close()


def _to_datetime(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


class SessionHistoryToObjectStorageOperator(BaseOperator):
    """
    Export the open-line sessions active in a window, and their messages, to object storage.

    The sessions are those whose CRM activity (``IMOPENLINES_SESSION``) changed in ``[start, end)``, found with
    keyset listing of ``crm.activity.list`` (needs the ``crm`` scope); their histories are read as the session
    sensor reads them (``batch``, 50 sessions a request, several requests in flight within the portal's limits).

    :param bitrix24_conn_id: The Bitrix24 connection.
    :param path: Where to write, an object-storage URL (``file:///data/bitrix24``, ``s3://bucket/openlines``...):
        anything the Airflow installation's ``ObjectStoragePath`` can write.
    :param format: ``"jsonl"`` (newline-delimited JSON, default) or ``"parquet"`` (needs ``pyarrow``: the
        ``parquet`` extra).
    :param start: Start of the window (included): a time-zone-aware datetime or ISO 8601 string; the run's
        ``data_interval_start`` by default.
    :param end: End of the window (excluded); the run's ``data_interval_end`` by default.
    :param storage_conn_id: The Airflow connection of the object store (e.g. an AWS connection for ``s3://``).
    :return: (XCom) ``{"start", "end", "sessions", "messages", "sessions_path", "messages_path"}``.
    """

    template_fields: Sequence[str] = ("path", "format", "start", "end", "bitrix24_conn_id", "storage_conn_id")
    ui_color = "#2fc6f6"

    def __init__(
        self,
        *,
        path: str,
        format: str = "jsonl",
        start: Any = None,
        end: Any = None,
        bitrix24_conn_id: str = "bitrix24_default",
        storage_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        if "outlets" not in kwargs and isinstance(path, str) and "{{" not in path and "{%" not in path:
            from airflow.providers.common.compat.sdk import Asset

            kwargs["outlets"] = [Asset(uri=path.rstrip("/"))]
        super().__init__(**kwargs)
        self.path = path
        self.format = format
        self.start = start
        self.end = end
        self.bitrix24_conn_id = bitrix24_conn_id
        self.storage_conn_id = storage_conn_id

    @cached_property
    def hook(self) -> Bitrix24Hook:
        from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook

        return Bitrix24Hook(bitrix24_conn_id=self.bitrix24_conn_id)

    def _window(self, context: Context) -> tuple[datetime, datetime]:
        start = self.start if self.start not in (None, "") else context.get("data_interval_start")
        end = self.end if self.end not in (None, "") else context.get("data_interval_end")
        try:
            return parse_window(start, end)
        except WindowError as exc:
            raise AirflowFailException(
                f"{exc} (pass start and end, or run the task in a DAG run with a data interval)"
            ) from None

    def _root(self) -> Any:
        from airflow.providers.common.compat.sdk import ObjectStoragePath

        if not isinstance(self.path, str) or not self.path.strip():
            raise AirflowFailException("path: must be an object-storage URL such as file:///data/bitrix24")
        return ObjectStoragePath(self.path.strip(), conn_id=self.storage_conn_id)

    def _lineage(self) -> None:
        """Record the portal's sessions as the input asset (the files are recorded by ObjectStoragePath)."""
        try:
            from airflow.providers.common.compat.lineage.hook import get_hook_lineage_collector
        except ImportError:
            return
        from urllib.parse import urlsplit

        host = urlsplit(self.hook.config.base_url).hostname or "portal"
        try:
            get_hook_lineage_collector().add_input_asset(
                context=self.hook, uri=f"bitrix24://{host}/imopenlines/sessions"
            )
        except Exception as exc:  # lineage must never fail an export
            self.log.debug("Hook lineage not recorded: %s", type(exc).__name__)

    def execute(self, context: Context) -> dict[str, Any]:
        fmt = str(self.format).strip().lower()
        if fmt not in FORMATS:
            raise AirflowFailException(f"format: {self.format!r} is not one of {', '.join(FORMATS)}")
        if fmt == "parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise AirflowFailException(
                    "format: 'parquet' needs pyarrow; install airflow-provider-bitrix24[parquet]"
                ) from None
        start, end = self._window(context)
        root = self._root()
        stem = window_stem(start, end)
        targets = {table: root / table / f"{stem}.{fmt}" for table in ("sessions", "messages")}
        self.log.info("Exporting the open-line sessions of [%s, %s) to %s", start.isoformat(), end.isoformat(), root)
        try:
            self.hook.config  # noqa: B018 - validate the connection before any request
        except Exception as exc:
            self._raise(exc)
        self._lineage()
        temporary = {t: p.parent / f".{p.name}.{uuid.uuid4().hex}.tmp" for t, p in targets.items()}
        try:
            counts = self._write(start, end, temporary, fmt)
            for table in ("messages", "sessions"):
                temporary[table].rename(targets[table])
        finally:
            for path in temporary.values():
                try:
                    if path.exists():
                        path.unlink()
                except Exception as exc:  # cleaning up must not hide the error
                    self.log.warning("Could not remove %s: %s", path, type(exc).__name__)
        self.log.info("Exported %d session(s) and %d message(s)", counts["sessions"], counts["messages"])
        return {
            "start": start.isoformat(),
            "end": end.isoformat(),
            **counts,
            "sessions_path": str(targets["sessions"]),
            "messages_path": str(targets["messages"]),
        }

    def _write(self, start: datetime, end: datetime, temporary: dict[str, Any], fmt: str) -> dict[str, int]:
        from airflow_provider_bitrix24.client.errors import Bitrix24Error
        from airflow_provider_bitrix24.history import HistoryPayloadError
        from airflow_provider_bitrix24.sessions import iter_sessions

        writer_class = _ParquetWriter if fmt == "parquet" else _JsonlWriter
        for path in temporary.values():
            path.parent.mkdir(parents=True, exist_ok=True)
        client = self.hook.client
        counts = {"sessions": 0, "messages": 0}
        with temporary["sessions"].open("wb") as s_handle, temporary["messages"].open("wb") as m_handle:
            sessions_out = writer_class(s_handle, SESSION_COLUMNS)
            messages_out = writer_class(m_handle, MESSAGE_COLUMNS)
            try:
                self._export(client, iter_sessions(client, start, end), sessions_out, messages_out, counts)
            except Bitrix24Error as exc:
                self._raise(exc)
            except HistoryPayloadError as exc:
                raise AirflowFailException(f"A session's history cannot be read: {exc}") from None
            finally:
                sessions_out.close()
                messages_out.close()
        return counts

    def _export(
        self,
        client: Any,
        sessions: Iterator[dict[str, Any]],
        sessions_out: Any,
        messages_out: Any,
        counts: dict[str, int],
    ) -> None:
        """
        Read the histories of ``sessions`` chunk by chunk, up to :data:`CHUNKS_IN_FLIGHT` chunks at once (they share
        the client's limiter), and write them in the order the sessions came, so that a re-run writes the same bytes.
        """
        from airflow_provider_bitrix24.sessions import read_histories

        with ThreadPoolExecutor(max_workers=CHUNKS_IN_FLIGHT, thread_name_prefix="bitrix24-export") as pool:
            reading: deque[tuple[list[dict[str, Any]], Future[Any]]] = deque()
            try:
                chunk: list[dict[str, Any]] = []
                for row in sessions:
                    chunk.append(row)
                    if len(chunk) == CHUNK:
                        reading.append((chunk, pool.submit(read_histories, client, chunk)))
                        chunk = []
                        if len(reading) == CHUNKS_IN_FLIGHT:
                            done, future = reading.popleft()
                            self._flush(done, future.result(), sessions_out, messages_out, counts)
                if chunk:
                    reading.append((chunk, pool.submit(read_histories, client, chunk)))
                while reading:
                    done, future = reading.popleft()
                    self._flush(done, future.result(), sessions_out, messages_out, counts)
            finally:
                for _, future in reading:  # a failure: read nothing more
                    future.cancel()

    def _flush(
        self,
        chunk: list[dict[str, Any]],
        histories: tuple[list[dict[str, Any]], list[Any]],
        sessions_out: Any,
        messages_out: Any,
        counts: dict[str, int],
    ) -> None:
        messages, failed = histories
        if failed:
            first = failed[0].error
            assert first is not None
            ids = ", ".join(str(chunk[int(item.key)]["id"]) for item in failed[:10])
            more = f" and {len(failed) - 10} more" if len(failed) > 10 else ""
            retryable = any(item.error is not None and item.error.retryable for item in failed)
            text = f"The histories of {len(failed)} session(s) could not be read ({ids}{more}): {first}"
            if retryable:
                raise AirflowException(f"{text} (transient; the task's retries may succeed)")
            from airflow_provider_bitrix24.failures import describe

            raise AirflowFailException(f"{text}. {describe(first).removeprefix(str(first)).lstrip('. ')}".rstrip())
        sessions_out.write(chunk)
        messages_out.write(messages)
        counts["sessions"] += len(chunk)
        counts["messages"] += len(messages)

    def _raise(self, exc: Exception) -> None:
        from airflow_provider_bitrix24.client.errors import Bitrix24Error
        from airflow_provider_bitrix24.failures import to_airflow

        if isinstance(exc, Bitrix24Error):
            if exc.code.lower() == "insufficient_scope":
                raise AirflowFailException(str(exc)) from None
            raise to_airflow(exc) from None
        raise exc
