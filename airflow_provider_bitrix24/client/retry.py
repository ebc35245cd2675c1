"""
The back-off: when to repeat a failed call, after how long, and what a refusal for load tells the other callers.

This is the one home of the 503 back-off. When the portal answers ``QUERY_LIMIT_EXCEEDED`` (HTTP 503), another
process shares its bucket: :func:`fills_bucket` says so, the call engine (:mod:`.core`, ``call_flow``) reports it to
the limiter, whose bucket then takes :func:`level_after_rejection` (full) for every client of the portal, and the
call waits :meth:`RetryPolicy.delay` before sending again. A pipelined batch run also narrows its window of requests
in flight after any refusal for load (:func:`is_overload`).

Only transient failures are retried (:attr:`Bitrix24Error.retryable`): the rate limit, the operating-time limit,
the portal's ``INTERNAL_SERVER_ERROR`` / ``ERROR_UNEXPECTED_ANSWER``, gateway pages without JSON, connection
errors and timeouts. The delay grows exponentially with full jitter and is capped; the sum of all waits of one
call is bounded, after which the error is raised and the caller (for Airflow: the task's own ``retries``) takes
over. An ``OPERATION_TIME_LIMIT`` is waited out until the portal's reset when that fits the budget.

After a timeout the portal may still be executing the request (it cuts requests only after 60 s), so the retry
is held until that cut-off has passed since the request was sent: a write is never in flight twice. With the
default 75 s timeout this adds no wait.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from airflow_provider_bitrix24.client.errors import (
    Bitrix24Error,
    Bitrix24OperationTimeLimitError,
    Bitrix24RateLimitError,
    Bitrix24ServerError,
)


def fills_bucket(error: BaseException) -> bool:
    """Whether ``error`` says the portal's request bucket is full (a 503 ``QUERY_LIMIT_EXCEEDED``)."""
    return isinstance(error, Bitrix24RateLimitError)


def level_after_rejection(level: float, capacity: float) -> float:
    """
    A bucket's level once the portal answered 503: another process is using the bucket too, so it is assumed full
    (never emptier than it was).
    """
    return max(level, capacity)


def is_overload(error: BaseException) -> bool:
    """Whether the portal refused for load (rate limit, operating-time limit, server error): send less at once."""
    return isinstance(error, Bitrix24RateLimitError | Bitrix24OperationTimeLimitError | Bitrix24ServerError)


@dataclass(frozen=True)
class RetryPolicy:
    """
    Capped exponential backoff with jitter and a bounded total wait.

    :param max_retries: Retries after the first attempt.
    :param base_delay: Delay before the first retry, in seconds (before jitter).
    :param max_delay: Cap of a single delay.
    :param max_total_wait: Cap of the sum of all delays of one call.
    :param jitter: Fraction of each delay that is randomised (0 = none, 1 = full jitter).
    :param server_cutoff: Seconds after which the portal has stopped executing any request.
    """

    max_retries: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_total_wait: float = 120.0
    jitter: float = 0.5
    server_cutoff: float = 60.0
    random: Callable[[], float] = field(default=random.random, repr=False, compare=False)
    clock: Callable[[], float] = field(default=time.time, repr=False, compare=False)

    def delay(self, error: Bitrix24Error, attempt: int, waited: float, sent_ago: float | None = None) -> float | None:
        """
        Seconds to wait before retry number ``attempt + 1``, or ``None`` to give up and raise ``error``.

        :param error: The failure of attempt number ``attempt`` (0-based).
        :param waited: Seconds already spent waiting between the earlier attempts of this call.
        :param sent_ago: Seconds since the failed request was sent; after a timeout the retry waits until the
            portal's cut-off has passed.
        """
        if not error.retryable or attempt >= self.max_retries:
            return None
        if isinstance(error, Bitrix24OperationTimeLimitError) and error.unblocks_at is not None:
            pause = max(0.0, error.unblocks_at - self.clock()) + 1.0
        else:
            backoff = min(self.max_delay, self.base_delay * (2**attempt))
            pause = backoff * (1.0 - self.jitter) + backoff * self.jitter * self.random()
        if error.code == "TIMEOUT" and sent_ago is not None:
            pause = max(pause, self.server_cutoff - sent_ago)
        if waited + pause > self.max_total_wait:
            return None
        return pause
