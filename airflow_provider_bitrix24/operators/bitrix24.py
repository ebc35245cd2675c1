"""Operator that calls any Bitrix24 REST method, one call, every page of a list, or a batch of commands."""

from __future__ import annotations

import ast
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, BaseOperator

from airflow_provider_bitrix24.history import show

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_bitrix24.client.core import BatchItem
    from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook

#: What a REST method name looks like: ``crm.deal.update``, ``profile``, ``im.v2.Event.get``.
METHOD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")
#: XCom key of a batch's outcome when the task fails because of failed commands.
OUTCOME_KEY = "batch_outcome"

Commands = list[tuple[str, dict[str, Any]]] | dict[str, tuple[str, dict[str, Any]]]


def fetch_all(
    hook: Bitrix24Hook, method: str, params: Mapping[str, Any], limit: int | None, keyset: bool = False
) -> list[Any]:
    """
    Every row of a list method (at most ``limit`` rows): the one place the operator reads a whole list.

    With ``keyset`` through the portal's fast keyset mode (:meth:`Bitrix24Hook.iter_list`: ``start=-1``, ordered
    by id, the next page by ``>ID``, pages several to a ``batch``), else page after page following ``next``
    (``list_all``), which makes the portal count the whole list on every page.
    """
    if keyset:
        return list(itertools.islice(hook.iter_list(method, params), limit))
    return hook.list_all(method, params, limit)


def run_batch(hook: Bitrix24Hook, commands: Commands, halt: bool) -> dict[str, dict[str, Any]]:
    """
    Send ``commands`` through ``batch`` (50 per request, under the connection's limiter) and split the outcome:
    ``{"results": {key: result}, "errors": {key: {"code", "description", "retryable"}}}``, keys in input order.

    A failure of a whole request that the client's retries did not overcome (the portal down, the credential
    refused) raises :class:`~airflow_provider_bitrix24.client.errors.Bitrix24BatchError`, which carries every
    command's outcome (:func:`split_outcome` reads it).
    """
    return split_outcome(hook.call_batch(commands, halt=halt))


def split_outcome(items: Sequence[BatchItem], outcomes: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """
    Results and errors of batch items apart; with ``outcomes`` (a run that a failed request ended), also each
    command's ``done`` / ``failed`` / ``unknown`` (sent, no answer: the portal may have run it) / ``not_sent``.
    """
    results: dict[str, Any] = {}
    errors: dict[str, dict[str, Any]] = {}
    for item in items:
        if item.error is None:
            results[item.key] = item.result
        else:
            errors[item.key] = {
                "code": item.error.code,
                "description": item.error.description,
                "retryable": item.error.retryable,
            }
    split: dict[str, dict[str, Any]] = {"results": results, "errors": errors}
    if outcomes is not None:
        split["outcomes"] = dict(outcomes)
    return split


def _structure(value: Any, name: str) -> Any:
    """A templated value that rendered to text (``"{'ID': 5}"``, JSON) back as the dict or list it shows."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text.startswith(("{", "[", "(")):
        return value
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise AirflowFailException(f"{name}: {show(value)} looks like a dict or list but cannot be parsed") from None


def check_method(value: Any, name: str = "method") -> str:
    """A REST method name, or fail the task naming the field."""
    if not isinstance(value, str) or not METHOD_NAME.fullmatch(value.strip()):
        raise AirflowFailException(f"{name}: {show(value)} is not a REST method name such as 'crm.deal.update'")
    return value.strip()


def check_params(value: Any, name: str = "api_params") -> dict[str, Any]:
    """The parameters of a call as a dict (``None`` is none), or fail the task naming the field."""
    value = _structure(value, name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise AirflowFailException(f"{name}: must be a dict of the method's parameters, got {type(value).__name__}")
    return {str(key): item for key, item in value.items()}


def check_commands(value: Any) -> Commands:
    """
    ``commands`` as the batch takes them. A list (keys ``"0"``, ``"1"``, ...) or a dict of your own keys; each
    command is ``(method, params)``, ``{"method": ..., "params": ...}`` or a method name alone.
    """
    value = _structure(value, "commands")

    def one(command: Any, name: str) -> tuple[str, dict[str, Any]]:
        if isinstance(command, str):
            return check_method(command, f"{name}"), {}
        if isinstance(command, Mapping):
            unknown = sorted(str(k) for k in command if k not in ("method", "params"))
            if unknown:
                raise AirflowFailException(f"{name}: unknown keys {show(unknown)}; a command has method and params")
            return check_method(command.get("method"), f"{name}.method"), check_params(
                command.get("params"), f"{name}.params"
            )
        if isinstance(command, list | tuple) and len(command) == 2:
            return check_method(command[0], f"{name}[0]"), check_params(command[1], f"{name}[1]")
        raise AirflowFailException(
            f"{name}: {show(command)} is not a command: pass (method, params), {{'method': ..., 'params': ...}} "
            "or a method name"
        )

    if isinstance(value, Mapping):
        commands: Commands = {str(key): one(command, f"commands[{key!r}]") for key, command in value.items()}
    elif isinstance(value, list | tuple):
        commands = [one(command, f"commands[{index}]") for index, command in enumerate(value)]
    else:
        raise AirflowFailException(f"commands: must be a list or a dict of commands, got {type(value).__name__}")
    if not commands:
        raise AirflowFailException("commands: is empty; pass at least one command")
    return commands


class Bitrix24Operator(BaseOperator):
    """
    Call any Bitrix24 REST method: once, over every page of a list, or many commands through ``batch``.

    With ``method`` the method is called once with ``api_params`` and its ``result`` is returned (pushed to XCom);
    with ``all_pages=True`` a list method is read page after page and every row is returned. With ``commands`` the
    commands go through ``batch`` requests of 50, several in flight as the connection's rate limit allows, and the
    task returns ``{"results": {key: result}, "errors": {key: {"code", "description", "retryable"}}}``: a failed
    command never hides the others' results.

    Errors are classified as for the other operators: a permanent one (``ERROR_METHOD_NOT_FOUND``, a missing scope,
    a refused credential, a method's own validation error) fails the task at once without retries; a transient
    one that outlasted the client's retries leaves the task to Airflow's ``retries``. When commands of a batch
    fail, the task fails the same way (permanent if any failure is), after pushing the outcome to XCom under
    ``batch_outcome``; ``fail_on_error=False`` returns it instead. A retried task sends every command again: keep
    commands idempotent (``update``, not ``add``) or set ``retries=0``.

    .. seealso::
        https://apidocs.bitrix24.com/settings/how-to-call-rest-api/index.html

    :param method: The REST method, e.g. ``crm.deal.update``. (templated)
    :param api_params: Its parameters; nested dicts and lists reach the portal as PHP arrays
        (``filter[>ID]=5``, ``select[0]=ID``). Named ``api_params`` because ``params`` is Airflow's own. A template
        rendering to a dict's text (or JSON) is read back as the dict. (templated)
    :param commands: Instead of ``method``: a list of commands, or a dict of your own keys to commands; a command
        is ``(method, params)``, ``{"method": ..., "params": ...}`` or a method name. (templated)
    :param all_pages: Read every page of a list method (``method`` only).
    :param limit: With ``all_pages``: stop after this many rows.
    :param keyset: With ``all_pages``: read in the portal's fast keyset mode (ordered by id; for ``*.list``
        methods that filter by ``>ID``, such as ``crm.*.list``, ``crm.item.list``, ``tasks.task.list``), without
        the count of the whole list that paging by ``next`` costs on every page.
    :param halt: With ``commands``: stop at the first failing command.
    :param fail_on_error: With ``commands``: fail the task when a command fails (default), or return the outcome.
    :param bitrix24_conn_id: The Bitrix24 connection. (templated)
    """

    template_fields: Sequence[str] = ("method", "api_params", "commands", "bitrix24_conn_id")
    template_fields_renderers = {"api_params": "py", "commands": "py"}
    ui_color = "#2fc6f6"

    def __init__(
        self,
        *,
        method: str | None = None,
        api_params: Mapping[str, Any] | str | None = None,
        commands: Sequence[Any] | Mapping[str, Any] | str | None = None,
        all_pages: bool = False,
        limit: int | None = None,
        keyset: bool = False,
        halt: bool = False,
        fail_on_error: bool = True,
        bitrix24_conn_id: str = "bitrix24_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (method is None) == (commands is None):
            raise ValueError("method, commands: pass method (one call) or commands (a batch), exactly one of them")
        if commands is not None and (api_params is not None or all_pages):
            raise ValueError("api_params, all_pages: only with method; each command carries its own params")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0):
            raise ValueError(f"limit: {limit!r} is not a positive integer")
        if keyset and not all_pages:
            raise ValueError("keyset: only with all_pages=True")
        self.method = method
        self.api_params = api_params
        self.commands = commands
        self.all_pages = all_pages
        self.limit = limit
        self.keyset = keyset
        self.halt = halt
        self.fail_on_error = fail_on_error
        self.bitrix24_conn_id = bitrix24_conn_id

    @cached_property
    def hook(self) -> Bitrix24Hook:
        from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook

        return Bitrix24Hook(bitrix24_conn_id=self.bitrix24_conn_id)

    @staticmethod
    def _raise(exc: BaseException) -> None:
        from airflow_provider_bitrix24.client.errors import Bitrix24Error
        from airflow_provider_bitrix24.failures import to_airflow

        if isinstance(exc, Bitrix24Error):
            raise to_airflow(exc) from None
        raise exc

    def execute(self, context: Context) -> Any:
        if self.commands is not None:
            return self._execute_batch(context, check_commands(self.commands))
        method = check_method(self.method)
        params = check_params(self.api_params)
        try:
            if self.all_pages:
                rows = fetch_all(self.hook, method, params, self.limit, self.keyset)
                self.log.info("%s: %d row(s)", method, len(rows))
                return rows
            result = self.hook.call(method, params)
        except Exception as exc:
            self._raise(exc)
        self.log.info("%s: done", method)
        return result

    def _execute_batch(self, context: Context, commands: Commands) -> dict[str, Any]:
        self.log.info("Sending %d command(s) through batch", len(commands))
        from airflow_provider_bitrix24.client.errors import Bitrix24BatchError

        try:
            outcome = run_batch(self.hook, commands, self.halt)
        except Bitrix24BatchError as exc:
            # A request failed for good: what the portal already did is pushed before the task fails, so that
            # whoever retries methods that are not idempotent (crm.lead.add...) can send only what was not done.
            context["ti"].xcom_push(key=OUTCOME_KEY, value=split_outcome(exc.items, exc.outcomes))
            self._raise(exc)
        except Exception as exc:
            self._raise(exc)
        errors = outcome["errors"]
        self.log.info("Batch: %d command(s) done, %d failed", len(outcome["results"]), len(errors))
        if not errors or not self.fail_on_error:
            return outcome
        context["ti"].xcom_push(key=OUTCOME_KEY, value=outcome)
        shown = "; ".join(f"{key}: {error['code']}" for key, error in list(errors.items())[:20])
        more = f" and {len(errors) - 20} more" if len(errors) > 20 else ""
        done = f"{len(outcome['results'])} other command(s) succeeded; the outcome is in XCom '{OUTCOME_KEY}'"
        if all(error["retryable"] for error in errors.values()):
            raise AirflowException(
                f"{len(errors)} of {len(commands)} command(s) failed with transient errors ({shown}{more}); {done}. "
                "The task's retries send every command again"
            )
        raise AirflowFailException(f"{len(errors)} of {len(commands)} command(s) failed ({shown}{more}); {done}")
