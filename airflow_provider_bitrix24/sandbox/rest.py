"""
The REST pipeline of the portal, independent of HTTP.

One ``/rest/`` request goes through, in order: portal-wide flags (``PORTAL_DELETED``, ``PAYMENT_REQUIRED``, the
plan's ``ACCESS_DENIED``, ``OVERLOAD_LIMIT``), the per-IP leaky bucket, HTTPS (webhooks, when required), the credential
(webhook code, or OAuth token from ``auth``, ``access_token`` or ``Authorization: Bearer``), the method lookup,
its scope, its operating limit, and finally the handler. ``batch`` runs its commands through the same steps after
the credential, each command checked against its own method's operating limit; how the batch is metered follows
``batch_billing`` (see :meth:`RestEngine._batch`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from airflow_provider_bitrix24.sandbox.batch import CommandOutcome, run_batch
from airflow_provider_bitrix24.sandbox.config import SandboxConfig
from airflow_provider_bitrix24.sandbox.errors import OAUTH_SCOPE_TEXT, WEBHOOK_SCOPE_TEXT, RestError
from airflow_provider_bitrix24.sandbox.faults import FaultQueue
from airflow_provider_bitrix24.sandbox.latency import LatencyModel, model_of
from airflow_provider_bitrix24.sandbox.limits import LeakyBucket, OperatingLimiter, OperatingStatus
from airflow_provider_bitrix24.sandbox.methods import METHODS, CallContext, Caller, MethodResult
from airflow_provider_bitrix24.sandbox.oauth import OAuthServer
from airflow_provider_bitrix24.sandbox.render import iso
from airflow_provider_bitrix24.sandbox.state import PortalState
from airflow_provider_bitrix24.sandbox.stats import Stats

AUTH_PARAMS = ("auth", "access_token")


@dataclass
class RestCall:
    """
    One ``/rest/`` request.

    :param method: Lower-case method name without ``.json``.
    :param webhook: ``(user_id, code)`` from a webhook path, or ``None`` for the OAuth route.
    :param params: Merged query and body parameters.
    :param bearer: Token from ``Authorization: Bearer``.
    :param client_ip: Source address (keys the leaky bucket).
    :param https: Whether the request arrived over HTTPS (per ``X-Forwarded-Proto``).
    """

    method: str
    webhook: tuple[str, str] | None
    params: dict[str, Any]
    bearer: str | None = None
    client_ip: str = "127.0.0.1"
    https: bool = False


@dataclass
class RestAnswer:
    status: int
    body: dict[str, Any]
    error: str | None = None


def parse_rest_path(path: str) -> tuple[str, tuple[str, str] | None] | None:
    """
    Split ``/rest/{user}/{code}/{method}[.json][/]`` or ``/rest/{method}[.json][/]``.

    Returns ``(method, (user, code) or None)``, or ``None`` when the path names no method (which the portal
    answers with ``ERROR_METHOD_NOT_FOUND``, e.g. a webhook path without the user id).
    """
    if not path.startswith("/rest/"):
        return None
    segments = path[len("/rest/") :].split("/")
    if segments and segments[-1] == "":
        segments.pop()
    if not segments or any(s == "" for s in segments):
        return None
    if len(segments) == 1:
        webhook = None
    elif len(segments) == 3:
        webhook = (unquote(segments[0]), unquote(segments[1]))
    else:
        return None
    method = unquote(segments[-1]).strip().lower().removesuffix(".json")
    return (method, webhook) if method else None


def time_block(
    start: float, finish: float, processing: float, operating: OperatingStatus | None, offset: int
) -> dict[str, Any]:
    """The ``time`` object of a successful answer."""
    block: dict[str, Any] = {
        "start": start,
        "finish": finish,
        "duration": finish - start,
        "processing": processing,
        "date_start": iso(start, offset),
        "date_finish": iso(finish, offset),
    }
    if operating is not None:
        if operating.reset_at is not None:
            block["operating_reset_at"] = operating.reset_at
        block["operating"] = operating.operating
    return block


class RestEngine:
    """
    The portal without its HTTP server: data, limits, faults, tokens and counters.

    :param config: The live config; limits and flags are read from it on every request.
    """

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.state = PortalState(config)
        self.bucket = LeakyBucket(config)
        self.operating = OperatingLimiter(config)
        self.faults = FaultQueue()
        self.oauth = OAuthServer(config)
        self.stats = Stats(config.log_size)
        self.stop_event = threading.Event()
        self.base_url = ""

    def reset(self) -> None:
        """Seed data, limits, faults, counters and OAuth tokens back to their initial state."""
        self.state = PortalState(self.config)
        self.bucket.clear()
        self.operating.clear()
        self.faults.clear()
        self.oauth.reset()
        self.stats.reset()

    @property
    def latency(self) -> LatencyModel:
        """The latency model of the live config."""
        return model_of(self.config)

    def pause(self, seconds: float) -> None:
        """
        Spend modelled time. Callers hold no lock of the portal while pausing, so concurrent requests are
        processed in parallel; stopping the portal cuts every pause short.
        """
        if seconds > 0:
            self.stop_event.wait(seconds)

    def handle(self, call: RestCall, *, record: bool = True) -> RestAnswer:
        """Answer one ``/rest/`` request and count it (unless ``record`` is off: the answer will not be sent)."""
        started = time.time()
        self.pause(self.latency.overhead)
        try:
            answer = self._handle(call, started)
        except RestError as exc:
            answer = RestAnswer(exc.status, exc.body(), exc.code)
        if record:
            self.stats.request(call.method, answer.status, answer.error)
        return answer

    def _handle(self, call: RestCall, started: float) -> RestAnswer:
        config = self.config
        if config.portal_deleted:
            raise RestError("PORTAL_DELETED")
        if config.subscription_ended:
            raise RestError("PAYMENT_REQUIRED")
        if config.rest_unavailable:
            raise RestError("ACCESS_DENIED")
        if config.overloaded:
            raise RestError("OVERLOAD_LIMIT")
        if not self.bucket.admit(call.client_ip):
            raise RestError("QUERY_LIMIT_EXCEEDED", status=config.limit_status)
        caller = self.authenticate(call)
        params = {k: v for k, v in call.params.items() if k not in AUTH_PARAMS}
        if call.method == "batch":
            return self._batch(caller, params, started)
        outcome = self.invoke(caller, call.method, params, started=started)
        if outcome.error is not None:
            raise outcome.error
        body: dict[str, Any] = {"result": outcome.result}
        if outcome.next is not None:
            body["next"] = outcome.next
        if outcome.total is not None:
            body["total"] = outcome.total
        body["time"] = outcome.time
        return RestAnswer(200, body)

    def authenticate(self, call: RestCall) -> Caller:
        """Resolve the credential of a request, or raise the portal's auth error."""
        config = self.config
        if call.webhook is not None:
            if config.https_required and not call.https:
                raise RestError("INVALID_REQUEST")
            user, code = call.webhook
            spec = next((w for w in config.webhooks if w.code == code), None)
            if spec is None or str(spec.user_id) != user:
                if config.auth_error_style == "docs":
                    raise RestError("NO_AUTH_FOUND")
                raise RestError("INVALID_CREDENTIALS")
            self._require_user(spec.user_id)
            return Caller("webhook", spec.user_id, tuple(spec.scopes), f"webhook:{spec.code}")
        token = _token_of(call)
        if not token:
            raise RestError("NO_AUTH_FOUND")
        check = self.oauth.check(token)
        if check.status == "unknown":
            raise RestError("invalid_token")
        if check.status == "expired":
            raise RestError("expired_token")
        if config.app_user_restricted:
            raise RestError("user_access_error")
        self._require_user(check.user_id)
        return Caller("oauth", check.user_id, tuple(config.oauth_scopes), f"app:{config.oauth_client_id}")

    def _require_user(self, user_id: int) -> None:
        if user_id not in self.state.users:
            raise RestError("authorization_error")

    def invoke(
        self, caller: Caller, method: str, params: dict[str, Any], *, started: float | None = None, nested: bool = False
    ) -> CommandOutcome:
        """
        Run one method with its scope, fault and operating-limit checks (``nested``: inside a batch).

        Outside a batch, and inside one when ``batch_billing`` is ``"command"``, the method's execution time is
        charged to its own operating counter. Inside a batch billed as ``"batch"`` the charge is left to the
        batch (``CommandOutcome.charge``).
        """
        config = self.config
        start = time.time() if started is None else started
        spec = METHODS.get(method)
        try:
            if nested and method == "batch":
                raise RestError("ERROR_BATCH_METHOD_NOT_ALLOWED")
            if spec is None or spec.handler is None:
                raise RestError("ERROR_METHOD_NOT_FOUND")
            if not spec.available_to(caller.scopes):
                text = "" if nested else (WEBHOOK_SCOPE_TEXT if caller.kind == "webhook" else OAUTH_SCOPE_TEXT)
                raise RestError("insufficient_scope", text)
            if nested:
                fault = self.faults.take(method, in_batch=True)
                if fault is not None:
                    raise RestError(fault.error, fault.error_description, fault.error_status)
        except RestError as exc:
            return CommandOutcome(error=exc)
        if self.operating.blocked(caller.credential, method):
            status = self.operating.status(caller.credential, method)
            return CommandOutcome(error=RestError("OPERATION_TIME_LIMIT"), operating=status)
        context = CallContext(self.state, config, caller, params, self.base_url, self.stop_event)
        clock = time.perf_counter()
        value: Any = None
        error: RestError | None = None
        try:
            value = spec.handler(context)
        except RestError as exc:
            error = exc
        except Exception:
            error = RestError("INTERNAL_SERVER_ERROR")
        self.pause(self.latency.processing_of(method))  # the handler released the state's lock
        processing = time.perf_counter() - clock
        charge = config.operating_cost.get(method, processing)
        operating = None
        if config.operating_enabled and not (nested and config.batch_billing == "batch"):
            operating = self.operating.record(caller.credential, method, charge)
        if error is not None:
            return CommandOutcome(error=error, charge=charge, operating=operating)
        block = time_block(start, time.time(), processing, operating, config.tz_offset_minutes)
        if isinstance(value, MethodResult):
            return CommandOutcome(
                value.result, time=block, total=value.total, next=value.next, charge=charge, operating=operating
            )
        return CommandOutcome(value, time=block, charge=charge, operating=operating)

    def _batch(self, caller: Caller, params: dict[str, Any], started: float) -> RestAnswer:
        """
        Run a batch: its commands one after the other (its processing time is the sum of theirs), then the
        ``time`` block of the whole request.

        With ``batch_billing="batch"`` the batch is metered under the method ``batch`` (a blocked ``batch`` refuses
        the whole request with 429) and each command's ``result_time`` carries the running total; with
        ``"command"`` each command is metered under its own method, and the outer block reports the operating
        counter of the last command's method.
        """
        config = self.config
        billed_as_batch = config.operating_enabled and config.batch_billing == "batch"
        if billed_as_batch and self.operating.blocked(caller.credential, "batch"):
            raise RestError("OPERATION_TIME_LIMIT")
        before = self.operating.status(caller.credential, "batch").operating
        charges: list[float] = []
        last: list[OperatingStatus] = []

        def run(method: str, command_params: dict[str, Any]) -> CommandOutcome:
            outcome = self.invoke(caller, method, command_params, nested=True)
            self.stats.batch_command(outcome.error.code if outcome.error else None)
            charges.append(outcome.charge)
            if outcome.operating is not None:
                last[:] = [outcome.operating]
            if billed_as_batch and outcome.time is not None and outcome.error is None:
                outcome.time["operating"] = before + sum(charges)
            return outcome

        clock = time.perf_counter()
        result = run_batch(params, run)
        processing = time.perf_counter() - clock
        operating: OperatingStatus | None = None
        if billed_as_batch:
            operating = self.operating.record(
                caller.credential, "batch", config.operating_cost.get("batch", sum(charges))
            )
        elif config.operating_enabled:
            operating = last[0] if last else self.operating.status(caller.credential, "batch")
        block = time_block(started, time.time(), processing, operating, config.tz_offset_minutes)
        return RestAnswer(200, {"result": result, "time": block})


def _token_of(call: RestCall) -> str:
    auth = call.params.get("auth")
    if isinstance(auth, dict):
        auth = auth.get("access_token")
    for candidate in (auth, call.params.get("access_token"), call.bearer):
        if isinstance(candidate, str) and candidate.strip():
            return candidate.strip()
    return ""
