"""
An Airflow 3 trigger runner on its real supervisor-comms path, for tests: ``python -m tests.support.triggerer CONFIG``.

Real: ``airflow.jobs.triggerer_job_runner.TriggerRunner`` (``init_comms``, ``run_trigger`` for every trigger with its
greenback portal, ``cleanup_finished_triggers``, ``sync_state_to_supervisor``), the ``TriggerCommsDecoder`` that
``init_comms`` installs as ``task_runner.SUPERVISOR_COMMS``, and the length-prefixed msgpack frames of
``airflow.sdk.execution_time.comms``. So a ``Variable.get`` or ``mask_secret`` made from a worker thread goes
``run_coroutine_threadsafe(asend).result()`` through the loop, and one made on the loop thread of a trigger's task
goes through greenback, exactly as in a triggerer.

Stand-in: the supervisor process. A thread holds the other end of a socketpair that is dup'ed onto fd 0 (where the
runner expects its supervisor), sends ``StartTriggerer``, then answers one frame at a time like
``TriggerRunnerSupervisor._handle_request``: ``TriggerStateChanges`` (collecting the events),
``GetConnection``, ``GetVariable``, ``PutVariable``, ``DeleteVariable``, ``MaskSecret``. The API server behind it
is a dict of Variables and one of Connections, with a small delay per API call.

On Airflow 2, which has no supervisor comms (a triggerer reads Variables from the metadata database directly), each
trigger's ``run()`` is iterated in a task of one event loop instead, as Airflow 2's ``TriggerRunner.run_trigger``
does, and the Variables are the metadata database's.

A heartbeat coroutine sleeps 10 ms in a loop and records how late it wakes up: the longest loop stall. A watchdog
thread gives up at the deadline (the loop may be frozen for good), reports what it saw and the stacks of the
threads, and ends the process.

Config (JSON file): ``triggers`` (list of ``{"classpath", "kwargs"}``), ``deadline`` (seconds after the triggers
start), ``api_delay`` (seconds per API call of the supervisor), ``variables`` and ``connections`` (what the API
server holds; a connection is a dict of Connection fields, ``extra`` as a JSON string or object),
``sync_interval`` (seconds between two state syncs of the runner's main loop); the last four are for Airflow 3.

Output on stdout: lines ``TRIGGERER <json>``: ``{"event": "started", ...}`` once every trigger runs, then one
``{"event": "result", ...}``.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import threading
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any, NoReturn

PREFIX = "TRIGGERER "
#: The heartbeat's sleep; a stall is how much later than this it woke up.
BEAT = 0.01
#: Gaps above this are listed one by one in the result.
NOTABLE_GAP = 0.05


class Recorder:
    """What the runner, the heartbeat and the supervisor saw; read by the watchdog thread too."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.started_at: float | None = None
        self.lock = threading.Lock()
        self.beats = 0
        self.last_beat = time.monotonic()
        self.max_stall = 0.0
        self.max_stall_at: float | None = None
        self.notable: list[list[float]] = []
        self._reported = False

    def beat(self, stall: float) -> None:
        now_wall = time.time()
        with self.lock:
            self.beats += 1
            self.last_beat = time.monotonic()
            if stall > self.max_stall:
                self.max_stall, self.max_stall_at = stall, now_wall
            if stall > NOTABLE_GAP:
                self.notable.append([round(now_wall - stall, 3), round(stall, 3)])

    def say(self, payload: dict[str, Any]) -> None:
        sys.stdout.write(PREFIX + json.dumps(payload) + "\n")
        sys.stdout.flush()

    def report(self, supervisor: Collector, completed: bool, triggers: int) -> None:
        with self.lock:
            if self._reported:
                return
            self._reported = True
            frozen_for = time.monotonic() - self.last_beat
            heartbeat = {
                "beats": self.beats,
                "max_stall": round(max(self.max_stall, frozen_for if not completed else 0.0), 3),
                "max_stall_at": self.max_stall_at,
                "frozen_for": round(frozen_for, 3),
                "notable": self.notable,
            }
        result: dict[str, Any] = {
            "event": "result",
            "completed": completed,
            "triggers": triggers,
            "elapsed": round(time.monotonic() - (self.started_at or time.monotonic()), 3),
            "heartbeat": heartbeat,
            **supervisor.summary(),
        }
        if not completed:
            result["stacks"] = thread_stacks()
        self.say(result)


def thread_stacks() -> dict[str, list[str]]:
    """The innermost frames of every thread, ``file:line function``, for a report of where a process is stuck."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    stacks: dict[str, list[str]] = {}
    for ident, frame in sys._current_frames().items():
        if ident == threading.get_ident():
            continue
        lines = []
        for entry in traceback.extract_stack(frame)[-10:]:
            path = entry.filename
            for marker in ("site-packages/", "airflow_provider_bitrix24/"):
                if marker in path:
                    path = path.split(marker, 1)[1] if marker == "site-packages/" else marker + path.split(marker, 1)[1]
            lines.append(f"{path}:{entry.lineno} {entry.name}")
        stacks[names.get(ident, str(ident))] = lines
    return stacks


class Collector:
    """The trigger events, failures and finished triggers, as the triggerer's supervisor would record them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: dict[int, Any] = {}
        self.event_times: dict[int, float] = {}
        self.failures: dict[int, str] = {}
        self.finished: set[int] = set()

    def event(self, trigger_id: int, payload: Any) -> None:
        with self.lock:
            self.events[trigger_id] = _summarise(payload)
            self.event_times[trigger_id] = time.time()

    def summary(self) -> dict[str, Any]:
        with self.lock:
            return {
                "events": {str(k): v for k, v in self.events.items()},
                "event_times": {str(k): v for k, v in self.event_times.items()},
                "failures": {str(k): v for k, v in self.failures.items()},
                "finished": sorted(self.finished),
            }


class FakeSupervisor(Collector, threading.Thread):
    """The supervisor end of the comms socket: answers the runner's frames one at a time, as the real one does."""

    def __init__(
        self,
        sock: socket.socket,
        variables: dict[str, str],
        connections: dict[str, dict[str, Any]],
        api_delay: float,
    ) -> None:
        Collector.__init__(self)
        threading.Thread.__init__(self, name="fake-triggerer-supervisor", daemon=True)
        self.sock = sock
        self.variables = dict(variables)
        self.connections = connections
        self.api_delay = api_delay
        self.requests: Counter[str] = Counter()
        self.put_variables: list[str] = []
        self.errors: list[str] = []

    def summary(self) -> dict[str, Any]:
        result = super().summary()
        with self.lock:
            result["supervisor"] = {
                "requests": dict(self.requests),
                "put_variables": list(self.put_variables),
                "variables": dict(self.variables),
                "errors": list(self.errors),
            }
        return result

    # -- frames

    def _recv_exactly(self, size: int) -> bytes | None:
        buffer = bytearray()
        while len(buffer) < size:
            chunk = self.sock.recv(size - len(buffer))
            if not chunk:
                return None
            buffer += chunk
        return bytes(buffer)

    def _send(self, request_id: int, message: Any, dump_opts: dict[str, bool]) -> None:
        from airflow.sdk.execution_time.comms import _ResponseFrame

        if message is not None:
            frame = _ResponseFrame(id=request_id, body=message.model_dump(**dump_opts))
        else:
            frame = _ResponseFrame(id=request_id, error=None)
        self.sock.sendall(frame.as_bytes())

    def run(self) -> None:
        import msgspec
        from airflow.jobs.triggerer_job_runner import ToTriggerSupervisor, messages
        from airflow.sdk.execution_time.comms import _RequestFrame
        from pydantic import TypeAdapter

        decoder: TypeAdapter[Any] = TypeAdapter(ToTriggerSupervisor)
        frames = msgspec.msgpack.Decoder(_RequestFrame)
        self._send(0, messages.StartTriggerer(), {})
        while True:
            try:
                header = self._recv_exactly(4)
                if header is None:
                    return
                body = self._recv_exactly(int.from_bytes(header, byteorder="big"))
                if body is None:
                    return
            except OSError:
                return
            frame = frames.decode(body)
            try:
                message = decoder.validate_python(frame.body)
                response, dump_opts = self._answer(message)
            except Exception as exc:  # a harness bug: answer, so the runner is not left waiting, and report it
                from airflow.sdk.exceptions import ErrorType
                from airflow.sdk.execution_time.comms import ErrorResponse

                with self.lock:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                traceback.print_exc(file=sys.stderr)
                response, dump_opts = ErrorResponse(error=ErrorType.GENERIC_ERROR, detail={"error": str(exc)}), {}
            try:
                self._send(frame.id, response, dump_opts)
            except OSError:
                return

    def _answer(self, message: Any) -> tuple[Any, dict[str, bool]]:
        from airflow.jobs.triggerer_job_runner import messages
        from airflow.sdk.api.datamodels._generated import ConnectionResponse, VariableResponse
        from airflow.sdk.exceptions import ErrorType
        from airflow.sdk.execution_time.comms import (
            ConnectionResult,
            DeleteVariable,
            ErrorResponse,
            GetConnection,
            GetVariable,
            MaskSecret,
            OKResponse,
            PutVariable,
            VariableResult,
        )

        kind = type(message).__name__
        with self.lock:
            self.requests[kind] += 1
        if isinstance(message, messages.TriggerStateChanges):
            for entry in message.events or ():
                self.event(entry.trigger_id, getattr(entry.event, "payload", None))
            with self.lock:
                for trigger_id, trace in message.failures or ():
                    self.failures[trigger_id] = "".join(trace or [])[-2000:]
                self.finished.update(message.finished or ())
            return messages.TriggerStateSync(to_create=[], to_cancel=set(), events_persisted=None), {}
        if isinstance(message, MaskSecret):
            # The real supervisor adds the value to its own masker; nothing of it comes back to the runner.
            return None, {}
        # The rest would be calls to the API server.
        time.sleep(self.api_delay)
        if isinstance(message, GetVariable):
            with self.lock:
                value = self.variables.get(message.key)
            if value is None:
                return ErrorResponse(error=ErrorType.VARIABLE_NOT_FOUND, detail={"key": message.key}), {}
            response = VariableResponse(key=message.key, value=value)
            return VariableResult.from_variable_response(response), {"exclude_unset": True}
        if isinstance(message, PutVariable):
            with self.lock:
                if message.value is None:
                    self.variables.pop(message.key, None)
                else:
                    self.variables[message.key] = message.value
                self.put_variables.append(message.key)
            return None, {}
        if isinstance(message, DeleteVariable):
            with self.lock:
                self.variables.pop(message.key, None)
            return OKResponse(ok=True), {}
        if isinstance(message, GetConnection):
            conn = self.connections.get(message.conn_id)
            if conn is None:
                return ErrorResponse(error=ErrorType.CONNECTION_NOT_FOUND, detail={"conn_id": message.conn_id}), {}
            extra = conn.get("extra")
            fields = {
                "conn_id": message.conn_id,
                "conn_type": conn.get("conn_type", "bitrix24"),
                "host": conn.get("host"),
                "schema": conn.get("schema"),
                "login": conn.get("login"),
                "password": conn.get("password"),
                "port": conn.get("port"),
                "extra": extra if extra is None or isinstance(extra, str) else json.dumps(extra),
            }
            result = ConnectionResult.from_conn_response(ConnectionResponse.model_validate(fields))
            return result, {"exclude_unset": True, "by_alias": True}
        raise ValueError(f"the stand-in supervisor does not handle {kind}")


def _summarise(payload: Any) -> Any:
    """A trigger event's payload without the message bodies (ids only)."""
    if not isinstance(payload, dict):
        return payload
    summary = {k: v for k, v in payload.items() if k != "messages"}
    if isinstance(payload.get("messages"), list):
        summary["message_ids"] = [m.get("id") for m in payload["messages"] if isinstance(m, dict)]
    return summary


async def _heartbeat(recorder: Recorder) -> None:
    while True:
        before = time.monotonic()
        await asyncio.sleep(BEAT)
        recorder.beat(max(0.0, time.monotonic() - before - BEAT))


async def _run(config: dict[str, Any], recorder: Recorder, supervisor: FakeSupervisor) -> None:
    from airflow.jobs.triggerer_job_runner import TriggerRunner

    runner = TriggerRunner()
    await runner.init_comms()
    beat = asyncio.create_task(_heartbeat(recorder), name="heartbeat")
    specs = config["triggers"]
    for number, spec in enumerate(specs, start=1):
        trigger_class = runner.get_trigger_by_classpath(spec["classpath"])
        trigger = trigger_class(**spec["kwargs"])
        trigger.trigger_id = number
        trigger.triggerer_job_id = None  # type: ignore[attr-defined]  # set the same way by create_triggers
        trigger.timeout_after = None  # type: ignore[attr-defined]
        name = f"ID {number}"
        details: dict[str, Any] = {"task": None, "is_watcher": False, "name": name, "events": 0}
        runner.triggers[number] = details  # type: ignore[assignment]
        details["task"] = asyncio.create_task(runner.run_trigger(number, trigger, None, None), name=name)
    recorder.started_at = time.monotonic()
    recorder.say({"event": "started", "triggers": len(specs), "time": time.time()})
    finished: set[int] = set()
    interval = float(config.get("sync_interval", 0.25))
    while len(finished) < len(specs):
        # The main loop of TriggerRunner.arun, minus creating and cancelling triggers.
        done = await runner.cleanup_finished_triggers()
        await runner.sync_state_to_supervisor(done)
        finished.update(done)
        await asyncio.sleep(interval)
    beat.cancel()
    recorder.report(supervisor, completed=True, triggers=len(specs))


async def _run_direct(config: dict[str, Any], recorder: Recorder, collector: Collector) -> None:
    """Airflow 2: every trigger's ``run()`` iterated in a task of this loop, as ``TriggerRunner.run_trigger`` does."""
    from airflow.utils.module_loading import import_string

    async def run_trigger(trigger_id: int, trigger: Any) -> None:
        try:
            async for event in trigger.run():
                collector.event(trigger_id, event.payload)
        except Exception:
            with collector.lock:
                collector.failures[trigger_id] = traceback.format_exc()[-2000:]
        finally:
            with collector.lock:
                collector.finished.add(trigger_id)

    beat = asyncio.create_task(_heartbeat(recorder), name="heartbeat")
    specs = config["triggers"]
    tasks = []
    for number, spec in enumerate(specs, start=1):
        trigger = import_string(spec["classpath"])(**spec["kwargs"])
        tasks.append(asyncio.create_task(run_trigger(number, trigger), name=f"ID {number}"))
    recorder.started_at = time.monotonic()
    recorder.say({"event": "started", "triggers": len(specs), "time": time.time()})
    await asyncio.gather(*tasks)
    beat.cancel()
    recorder.report(collector, completed=True, triggers=len(specs))


def _watchdog(recorder: Recorder, supervisor: Collector, triggers: int, done: threading.Event) -> None:
    while not done.wait(0.05):
        if recorder.started_at is not None and time.monotonic() - recorder.started_at > recorder.deadline:
            recorder.report(supervisor, completed=False, triggers=triggers)
            os._exit(0)


def main(argv: list[str]) -> None:
    config = json.loads(Path(argv[1]).read_text())
    # What a triggerer has imported once its first trigger ran, so that first-use imports are not counted as stalls.
    import airflow.jobs.triggerer_job_runner
    import httpx  # noqa: F401

    import airflow_provider_bitrix24.client.aio
    import airflow_provider_bitrix24.client.sync
    import airflow_provider_bitrix24.hooks.bitrix24  # noqa: F401

    try:
        import airflow.sdk.execution_time.comms  # noqa: F401
    except ImportError:  # Airflow 2
        _main_direct(config)
    os.environ["_AIRFLOW_PROCESS_CONTEXT"] = "client"
    runner_end, supervisor_end = socket.socketpair()
    os.dup2(runner_end.fileno(), 0)  # the runner finds its supervisor on fd 0, as in a triggerer
    runner_end.close()
    supervisor = FakeSupervisor(
        supervisor_end, config.get("variables", {}), config.get("connections", {}), float(config.get("api_delay", 0))
    )
    supervisor.start()
    recorder = Recorder(float(config["deadline"]))
    done = threading.Event()
    triggers = len(config["triggers"])
    threading.Thread(
        target=_watchdog, args=(recorder, supervisor, triggers, done), name="watchdog", daemon=True
    ).start()
    try:
        asyncio.run(_run(config, recorder, supervisor))
    except BaseException as exc:
        recorder.say({"event": "crashed", "error": "".join(traceback.format_exception(exc))[-4000:]})
        recorder.report(supervisor, completed=False, triggers=triggers)
        os._exit(1)
    done.set()
    sys.stdout.flush()
    os._exit(0)


def _main_direct(config: dict[str, Any]) -> NoReturn:
    collector = Collector()
    recorder = Recorder(float(config["deadline"]))
    done = threading.Event()
    triggers = len(config["triggers"])
    threading.Thread(target=_watchdog, args=(recorder, collector, triggers, done), name="watchdog", daemon=True).start()
    try:
        asyncio.run(_run_direct(config, recorder, collector))
    except BaseException as exc:
        recorder.say({"event": "crashed", "error": "".join(traceback.format_exception(exc))[-4000:]})
        recorder.report(collector, completed=False, triggers=triggers)
        os._exit(1)
    done.set()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv)
