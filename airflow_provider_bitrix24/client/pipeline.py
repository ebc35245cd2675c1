"""
Pipelined batches: keep several ``batch`` requests in flight, as many as the portal allows.

A real portal takes about a second or more to answer a batch of 50 writes (the round trip plus the processing of
each command, one after another), while its bucket lets 50 requests go at once. Sending batches one after another
wastes that; sending them all at once ignores the portal's speed. :class:`BatchRun` is the sans-IO plan of one
pipelined run, driven by the sync client (threads) and the async client (tasks) alike:

* every request still books its slot in the portal's bucket (the limiter decides when it goes);
* :class:`AdaptiveWindow` caps how many are in flight: it grows while answers come back at their usual speed and
  halves when the portal slows down or answers ``QUERY_LIMIT_EXCEEDED`` / ``OPERATION_TIME_LIMIT`` / 5xx, instead
  of retrying harder; a method close to its operating-time budget gets one request at a time;
* different requests never carry the same command, and a command is sent again only after its request ended, so
  the same message is never in flight twice;
* with ``spread``, a run is cut into requests of equal size over the requests the bucket lets go at once (its
  headroom, within the window) rather than of 50: the portal processes a request's commands one after another, so
  1,000 saves sent as 50 requests of 20 take 20 commands' time instead of 50 (at least :data:`SPREAD_FLOOR`
  commands per request; when the bucket has little room, or a run is larger than it, requests stay at 50, since
  then the bucket, not the portal's speed, sets the pace);
* the method's operating-time budget is paced (:class:`~airflow_provider_bitrix24.client.limits.ProcessingBudget`):
  once this process has spent most of it, requests wait so that the portal never blocks the method for minutes;
* with ``max_burst_share``, a run keeps at most that share of the bucket's burst in flight at once (and ``spread``
  cuts it over no more requests than that), leaving the rest of the burst to other callers of the portal;
* results come back in input order, and an error from ``stop_codes`` (an error about the chat or the credential,
  which every other command would meet too) stops sending new requests at once.

The options of a run travel as one :class:`BatchOptions` from the hook through the drivers to :class:`BatchRun`.
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from airflow_provider_bitrix24.client.coerce import show
from airflow_provider_bitrix24.client.core import Engine, Flow, Sleep, Stopped
from airflow_provider_bitrix24.client.errors import (
    Bitrix24ApiError,
    Bitrix24AuthError,
    Bitrix24BatchError,
    Bitrix24ConfigError,
    Bitrix24Error,
    Bitrix24OperationTimeLimitError,
    Bitrix24PermissionError,
    Bitrix24RateLimitError,
    Bitrix24RequestError,
    batch_error,
)
from airflow_provider_bitrix24.client.limits import OPERATING_LIMIT, shared_budget
from airflow_provider_bitrix24.client.retry import is_overload
from airflow_provider_bitrix24.client.wire import BATCH_LIMIT, BatchItem, Command, split_batches

#: Upper bound of requests in flight from one run, whatever the bucket's burst (threads are not free).
MAX_IN_FLIGHT: Final = 64
#: An answer this many times slower (per command) than the fastest seen means the portal is struggling.
SLOW_FACTOR: Final = 3.0
#: Below this, an answer is never "slow" (noise on a fast portal).
SLOW_FLOOR: Final = 0.5
#: Share of the operating-time budget from which a method gets one request at a time.
OPERATING_CAUTION: Final = 0.8
#: Fewest commands per request when a run is spread over the window.
SPREAD_FLOOR: Final = 10
#: A reference to another command's outcome inside ``batch`` (``$result[key]...``): such runs keep requests of 50.
_REFERENCE: Final = re.compile(r"\$(?:result|next|total|time|error)\[", re.IGNORECASE)


class AdaptiveWindow:
    """
    How many requests may be in flight: additive increase while the portal keeps its pace, halving when it
    slows down or refuses (at most once per round trip, so one burst of bad answers halves it once).

    :param ceiling: The most ever allowed.
    :param initial: Where to start; the ceiling by default (a full bucket lets a burst go at once).
    """

    def __init__(self, ceiling: int, initial: int | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.ceiling = max(1, ceiling)
        self.size = max(1, min(self.ceiling, initial if initial is not None else self.ceiling))
        self._clock = clock
        self._fastest: float | None = None
        self._calm_until = 0.0
        self.shrinks = 0

    def __repr__(self) -> str:
        return f"AdaptiveWindow(size={self.size}, ceiling={self.ceiling})"

    def on_answer(self, seconds: float, commands: int) -> None:
        """A request came back in ``seconds`` carrying ``commands`` commands."""
        per_command = seconds / max(1, commands)
        if self._fastest is None or per_command < self._fastest:
            self._fastest = per_command
        if seconds > SLOW_FLOOR and per_command > SLOW_FACTOR * self._fastest:
            self._shrink(seconds)
        elif self.size < self.ceiling:
            self.size += 1

    def on_overload(self, seconds: float = 1.0) -> None:
        """The portal refused for load (rate limit, operating limit, server error)."""
        self._shrink(seconds)

    def _shrink(self, seconds: float) -> None:
        now = self._clock()
        if now < self._calm_until:
            return
        self.size = max(1, self.size // 2)
        self.shrinks += 1
        self._calm_until = now + max(seconds, 0.1)


@dataclass
class Job:
    """One request of a run: a chunk of up to 50 commands, or one command sent alone."""

    entries: list[tuple[str, Command]]
    single: bool = False
    attempt: int = 0
    booked: float = 0.0
    wait: float = 0.0


@dataclass
class _Pending:
    job: Job
    not_before: float = 0.0


@dataclass
class Progress:
    """Counts after each finished request, for progress lines."""

    done: int
    total: int
    ok: int
    failed: int
    items: list[BatchItem] = field(default_factory=list)


@dataclass(frozen=True)
class BatchOptions:
    """
    How one run of many commands through ``batch`` behaves; passed whole from the hook through the drivers to
    :class:`BatchRun`.

    :param halt: Stop at the first failing command (one request at a time).
    :param stop_codes: Error codes after which no new request is sent (unsent commands: ``NOT_EXECUTED``).
    :param on_progress: Called after each finished request.
    :param spread: Cut the run into requests of equal size over the requests that may go at once (at least
        :data:`SPREAD_FLOOR` commands each) instead of 50 per request. Ignored with ``halt``, for runs of at most 50
        commands (one request), and when a command refers to another one's outcome (references resolve only within
        one request).
    :param max_burst_share: The share of the portal bucket's burst (above 0, at most 1) the run may have in flight
        at once: at most ``floor(burst x share)`` requests (at least one), and ``spread`` cuts the run over no more
        than that. ``None``: the whole burst (up to :data:`MAX_IN_FLIGHT`).
    """

    halt: bool = False
    stop_codes: frozenset[str] = frozenset()
    on_progress: Callable[[Progress], None] | None = None
    spread: bool = False
    max_burst_share: float | None = None

    def __post_init__(self) -> None:
        share = self.max_burst_share
        if share is not None and (isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1):
            raise ValueError(f"max_burst_share: {show(share)} is not a share of the burst (above 0, at most 1)")

    def in_flight_cap(self, burst: int) -> int:
        """The most requests of a run in flight at once, for a bucket of ``burst``."""
        cap = min(MAX_IN_FLIGHT, max(1, burst))
        if self.max_burst_share is not None:
            cap = min(cap, max(1, math.floor(burst * self.max_burst_share)))
        return 1 if self.halt else cap


_DEFAULTS: Final = BatchOptions()


def batch_options(options: BatchOptions | None = None, **legacy: Any) -> BatchOptions:
    """
    The options of a run: ``options`` (the defaults when ``None``), with the keyword arguments of the methods'
    earlier signatures (``halt=``, ``stop_codes=``, ``on_progress=``, ``spread=``) laid over it where they differ
    from their defaults.
    """
    base = options if options is not None else _DEFAULTS
    changes = {name: value for name, value in legacy.items() if value != getattr(_DEFAULTS, name)}
    return replace(base, **changes) if changes else base


class BatchRun:
    """
    The plan of one pipelined run of many commands through ``batch``.

    The driver repeatedly takes :meth:`next_job` while it returns one (and it has capacity), runs
    :meth:`job_flow` for each (concurrently), hands each outcome to :meth:`finish`, and waits at most
    :meth:`wake_in` seconds for the next outcome; once :attr:`done`, :meth:`results` gives one
    :class:`BatchItem` per command, in input order, or raises the error that ended the run.

    :param engine: The portal's engine.
    :param commands: ``(method, params)`` commands, as a list (keys are positions) or a mapping of keys.
    :param options: The run's :class:`BatchOptions`; ``halt``, ``stop_codes``, ``on_progress`` and ``spread`` may
        still be given as keyword arguments, as before (they override ``options``).
    :param window: The in-flight cap; a new one sized to the portal's burst (and ``max_burst_share``) by default.
    :param headroom: How many requests the portal's bucket lets go right now (the limiter's ``headroom()``); with
        ``spread``, the run is not cut into more requests than that.
    """

    def __init__(
        self,
        engine: Engine,
        commands: Sequence[Command] | Mapping[str, Command],
        options: BatchOptions | None = None,
        *,
        halt: bool = False,
        stop_codes: frozenset[str] = frozenset(),
        on_progress: Callable[[Progress], None] | None = None,
        window: AdaptiveWindow | None = None,
        clock: Callable[[], float] = time.monotonic,
        spread: bool = False,
        headroom: int | None = None,
    ) -> None:
        self.engine = engine
        options = batch_options(options, halt=halt, stop_codes=stop_codes, on_progress=on_progress, spread=spread)
        self.options = options
        items = list(commands.items()) if isinstance(commands, Mapping) else list(enumerate(commands))
        self.entries: list[tuple[str, Command]] = []
        seen: set[str] = set()
        for key, cmd in items:
            if not isinstance(key, str | int) or isinstance(key, bool) or str(key) == "":
                raise ValueError(f"batch command keys must be non-empty strings or ints, got {key!r}")
            if str(key) in seen:
                raise ValueError(f"batch command key {str(key)!r} is used twice")
            seen.add(str(key))
            self.entries.append((str(key), cmd))
        self.halt = halt = options.halt
        self.stop_codes = options.stop_codes
        self.on_progress = options.on_progress
        self.window = window or AdaptiveWindow(options.in_flight_cap(engine.config.rate_limit.burst))
        self._clock = clock
        self.chunk = BATCH_LIMIT
        if (
            options.spread
            and not halt
            and len(self.entries) > BATCH_LIMIT
            and not any(_refers(c) for _, c in self.entries)
        ):
            room = self.window.size if headroom is None else max(1, min(self.window.size, headroom))
            self.chunk = min(BATCH_LIMIT, max(SPREAD_FLOOR, math.ceil(len(self.entries) / room)))
        #: The methods of the run, as the caller spelled them.
        self.methods = frozenset(cmd[0] for _, cmd in self.entries)
        lowered = {method.lower() for method in self.methods}
        self.budget = shared_budget(engine.config, lowered.pop()) if len(lowered) == 1 else None
        self._queue: deque[_Pending] = deque(_Pending(Job(part)) for part in split_batches(self.entries, self.chunk))
        self._results: dict[str, BatchItem] = {}
        self._ok = 0
        self._waited: dict[str, float] = {}
        self.in_flight = 0
        self.stop_error: Bitrix24Error | None = None
        self.fatal: BaseException | None = None
        #: The commands of requests that ended with an error instead of an answer, and that error.
        self._request_errors: dict[str, BaseException] = {}

    # -- what to send

    @property
    def stopped(self) -> bool:
        return self.stop_error is not None or self.fatal is not None

    def _cap(self) -> int:
        """The window, narrowed to one request while a method of the run is close to its operating budget."""
        limiter = self.engine.limiter
        if any(limiter.operating(m) >= OPERATING_CAUTION * OPERATING_LIMIT for m in self.methods):
            return 1
        return self.window.size

    def next_job(self) -> Job | None:
        """The next request to start now, or ``None`` (nothing ready, window full, or stopped)."""
        if self.stopped or not self._queue or self.in_flight >= self._cap():
            return None
        now = self._clock()
        for index, pending in enumerate(self._queue):
            if pending.not_before <= now:
                del self._queue[index]
                self.in_flight += 1
                job = pending.job
                if self.budget is not None:
                    job.booked, job.wait = self.budget.reserve(len(job.entries))
                return job
        return None

    def wake_in(self) -> float | None:
        """
        Seconds until a delayed request becomes ready; ``None`` when nothing is left to send, or when the window is
        full, since then only an answer lets the next request go (the driver waits for one instead of polling).
        """
        if self.stopped or not self._queue or self.in_flight >= self._cap():
            return None
        return max(0.0, min(p.not_before for p in self._queue) - self._clock())

    @property
    def done(self) -> bool:
        return self.in_flight == 0 and (self.stopped or not self._queue)

    def job_flow(self, job: Job) -> Flow:
        """The flow the driver runs for ``job``; it returns ``{key: BatchItem}``."""
        stop = self._should_stop
        if job.single:
            ((key, cmd),) = job.entries
            flow = self.engine.single_flow(key, cmd, should_stop=stop)
        else:
            flow = self.engine.chunk_flow(job.entries, halt=self.halt, should_stop=stop)
        return _after(job.wait, flow) if job.wait > 0 else flow

    def _should_stop(self) -> bool:
        return self.stopped

    # -- outcomes

    def finish(self, job: Job, outcome: Mapping[str, BatchItem] | BaseException, seconds: float) -> None:
        """Record what one request of the run gave: its items, or the exception its flow raised."""
        self.in_flight -= 1
        if isinstance(outcome, Stopped):
            return
        if isinstance(outcome, BaseException):
            if is_overload(outcome):
                self.window.on_overload(seconds)
            if self.fatal is None:
                self.fatal = outcome
            for key, _ in job.entries:
                self._request_errors[key] = outcome
            return
        self.window.on_answer(seconds, len(job.entries))
        if self.budget is not None:
            timed = [item for item in outcome.values() if item.time is not None]
            self.budget.settle(job.booked, sum(item.processing for item in timed), len(timed))
        retry: list[tuple[str, Command]] = []
        delay = 0.0
        overloaded = False
        for key, cmd in job.entries:
            item = outcome.get(key) or BatchItem(
                key, cmd[0], error=Bitrix24ApiError("NOT_EXECUTED", "no outcome for this command", method=cmd[0])
            )
            error = item.error
            if error is not None and error.code == "ERROR_BATCH_METHOD_NOT_ALLOWED" and not job.single:
                self._queue.append(_Pending(Job([(key, cmd)], single=True)))
                continue
            if error is not None and error.retryable and not self.halt:
                pause = self.engine.retry_policy.delay(error, job.attempt, self._waited.get(key, 0.0))
                if pause is None and isinstance(error, Bitrix24OperationTimeLimitError):
                    # Blocked longer than the retry budget: say when the method unblocks.
                    item = BatchItem(key, cmd[0], error=self.engine.blocked_error(cmd[0], error.unblocks_at))
                    error = item.error
                if pause is not None:
                    overloaded = overloaded or (error is not None and is_overload(error))
                    self._waited[key] = self._waited.get(key, 0.0) + pause
                    delay = max(delay, pause)
                    retry.append((key, cmd))
                    continue
            self._results[key] = item
            self._ok += item.ok
            if error is not None and error.code in self.stop_codes and self.stop_error is None:
                self.stop_error = error
            if error is not None and self.halt and self.stop_error is None:
                self.stop_error = error
        if overloaded:
            self.window.on_overload(seconds)
        if retry:
            self.engine.log.warning(
                "Bitrix24 batch: %d command(s) failed transiently; sending them again in %.1f s", len(retry), delay
            )
            self._requeue(retry, job.attempt + 1, self._clock() + delay)
        if self.on_progress is not None:
            items = [self._results[key] for key, _ in job.entries if key in self._results]
            done = len(self._results)
            self.on_progress(Progress(done, len(self.entries), self._ok, done - self._ok, items))

    def _requeue(self, entries: list[tuple[str, Command]], attempt: int, not_before: float) -> None:
        """Queue commands to send again, filling retries of other requests due about as soon (fewer requests)."""
        for pending in self._queue:
            if not entries:
                return
            job = pending.job
            room = BATCH_LIMIT - len(job.entries)
            if job.single or job.attempt == 0 or room <= 0 or abs(pending.not_before - not_before) > 1.0:
                continue
            job.entries.extend(entries[:room])
            job.attempt = max(job.attempt, attempt)
            pending.not_before = max(pending.not_before, not_before)
            entries = entries[room:]
        for part in split_batches(entries):
            self._queue.append(_Pending(Job(part, attempt=attempt), not_before))

    def results(self) -> list[BatchItem]:
        """
        One item per command, in input order; commands never sent carry ``NOT_EXECUTED``.

        :raises Bitrix24BatchError: when a request of the run failed (after the client's retries): an instance of
            that request's error class too, carrying every command's outcome (see :meth:`outcomes`).
        """
        if self.fatal is not None:
            if not isinstance(self.fatal, Bitrix24Error):
                raise self.fatal
            items, outcomes = self.outcomes()
            raise batch_error(self.fatal, items, outcomes) from self.fatal
        return self.outcomes()[0]

    def outcomes(self) -> tuple[list[BatchItem], dict[str, str]]:
        """
        Every command's item, in input order, and its outcome: ``done``, ``failed`` (its own error, or its request
        was refused before it ran), ``unknown`` (its request got no readable answer: the portal may have run it)
        or ``not_sent``.
        """
        items: list[BatchItem] = []
        outcomes: dict[str, str] = {}
        for key, (method, _) in self.entries:
            item = self._results.get(key)
            request_error = self._request_errors.get(key)
            if item is not None:
                outcome = Bitrix24BatchError.DONE if item.ok else Bitrix24BatchError.FAILED
            elif request_error is not None:
                outcome = Bitrix24BatchError.UNKNOWN if _maybe_ran(request_error) else Bitrix24BatchError.FAILED
                error = request_error if isinstance(request_error, Bitrix24Error) else None
                if error is None:
                    error = Bitrix24ApiError("NOT_EXECUTED", f"the request failed ({type(request_error).__name__})")
                item = BatchItem(key, method, error=error)
            else:
                outcome = Bitrix24BatchError.NOT_SENT
                reason = (
                    f"not sent: the run stopped after {self.stop_error.code}"
                    if self.stop_error is not None
                    else "not sent"
                )
                item = BatchItem(key, method, error=Bitrix24ApiError("NOT_EXECUTED", reason, method=method))
            items.append(item)
            outcomes[key] = outcome
        return items, outcomes


def _maybe_ran(error: BaseException) -> bool:
    """Whether a request that ended with ``error`` may still have run its commands on the portal."""
    refused = (
        Bitrix24ConfigError
        | Bitrix24AuthError
        | Bitrix24PermissionError
        | Bitrix24RateLimitError
        | Bitrix24OperationTimeLimitError
        | Bitrix24RequestError
    )
    return not isinstance(error, refused)


def _after(seconds: float, flow: Flow) -> Flow:
    """``flow``, after a wait: the operating-time budget asked for it."""
    yield Sleep(seconds)
    return (yield from flow)


def _refers(cmd: Command) -> bool:
    """Whether a command's parameters refer to another command's outcome (``$result[...]`` and its kin)."""
    pending: list[object] = [cmd[1]]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if _REFERENCE.search(value):
                return True
        elif isinstance(value, Mapping):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list | tuple):
            pending.extend(value)
    return False
