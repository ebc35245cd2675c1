"""Notifier that posts DAG and task events into a Bitrix24 chat (``im.message.add``)."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.providers.common.compat.notifier import BaseNotifier

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook

METHOD = "im.message.add"
#: Longest message text a portal keeps (the documented limit of message texts; longer ones are cut).
MAX_MESSAGE = 20_000
#: What ends a text the notifier had to cut (the marker the portal itself uses).
CUT_MARK = " (...)"
#: Cap of the task's error shown in the default text.
MAX_ERROR = 1_000
#: ``dialog_id``: ``chatNNN`` (a chat), ``sgNNN`` (a workgroup's chat) or a user id (a private chat).
DIALOG_ID = re.compile(r"(chat|sg)[1-9][0-9]*|[1-9][0-9]*")

#: What to do about an error that keeps a notification from being sent, in a few words.
HINTS: dict[str, str] = {
    "insufficient_scope": "add the 'im' scope to the webhook or application permissions",
    "ACCESS_ERROR": "the connection's user is not a member of this chat",
    "CHAT_ID": "no chat with this id exists (check dialog_id)",
    "CHAT_ID_EMPTY": "dialog_id names no chat",
    "USER_ID_EMPTY": "dialog_id must be chatNNN, sgNNN or a user id",
    "USER_NOT_FOUND": "no user with this id exists (check dialog_id)",
    "MESSAGE_EMPTY": "the rendered text is empty",
}

_STATES = {
    "failed": "failed",
    "up_for_retry": "failed, will retry",
    "success": "succeeded",
    "skipped": "was skipped",
    "up_for_reschedule": "is waiting to be rescheduled",
    "upstream_failed": "did not run: an upstream task failed",
}


def check_dialog_id(value: Any) -> str:
    """``value`` as a ``DIALOG_ID`` (``chatNNN``, ``sgNNN`` or a user id), or ``ValueError`` naming the field."""
    text = str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else ""
    if not DIALOG_ID.fullmatch(text):
        raise ValueError(f"dialog_id: {value!r} is not chatNNN (a chat), sgNNN (a workgroup chat) or a user id")
    return text


def plain(value: Any) -> str:
    """A value shown inside a message, unable to open a BB code: square brackets become full-width ones."""
    return str(value).replace("[", "\uff3b").replace("]", "\uff3d")


def cut(text: str, limit: int) -> str:
    """``text`` within ``limit`` characters: cut, without a half BB tag, and ending with :data:`CUT_MARK`."""
    if len(text) <= limit:
        return text
    head = text[: max(0, limit - len(CUT_MARK))]
    opening = head.rfind("[")
    if opening > head.rfind("]"):
        head = head[:opening]
    return head.rstrip() + CUT_MARK


def _redactor() -> Callable[[Any], Any]:
    try:
        from airflow.providers.common.compat.sdk import redact
    except ImportError:  # common-compat < 1.12
        try:
            from airflow.sdk.log import redact  # type: ignore[attr-defined]  # Airflow 3
        except ImportError:
            from airflow.utils.log.secrets_masker import redact  # type: ignore[no-redef]  # Airflow 2
    return redact


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without any value Airflow masks (connections, variables, tokens) nor any of ``secrets``."""
    for secret in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, "***")
    try:
        redacted = _redactor()(text)
    except Exception:  # the masker is not usable here: the explicit secrets are gone already
        return text
    return redacted if isinstance(redacted, str) else text


def _airflow_3() -> bool:
    from airflow import __version__

    return int(__version__.split(".", 1)[0]) >= 3


def _base_url() -> str:
    """The UI's address as Airflow itself builds task-log links: ``[api] base_url`` (3) or ``[webserver]`` (2)."""
    from airflow.providers.common.compat.sdk import conf

    section = "api" if _airflow_3() else "webserver"
    return str(conf.get(section, "base_url", fallback=None) or "http://localhost:8080").rstrip("/")


def dag_run_url(dag_id: str, run_id: str) -> str:
    """The DAG run's page in the Airflow UI (``[api] base_url`` on Airflow 3, ``[webserver] base_url`` on 2)."""
    if _airflow_3():
        return f"{_base_url()}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
    return f"{_base_url()}/dags/{quote(dag_id, safe='')}/grid?dag_run_id={quote(run_id, safe='')}"


def _get(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def describe_event(context: Mapping[str, Any]) -> dict[str, Any]:
    """
    What the context is about: ``kind`` (``task``, ``dag`` or ``deadline``), ``dag_id``, ``run_id``, and for tasks
    ``task_id``, ``state``, ``try_number``, ``error`` and ``log_url`` (each ``None`` when the context lacks it).
    """
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    dag = context.get("dag")
    dag_id = _get(dag_run, "dag_id") or _get(dag, "dag_id") or _get(ti, "dag_id")
    run_id = _get(dag_run, "run_id") or _get(dag_run, "dag_run_id") or context.get("run_id") or _get(ti, "run_id")
    if "deadline" in context:
        kind = "deadline"
    elif "reason" in context or ti is None:
        kind = "dag"
    else:
        kind = "task"
    log_url = None
    if ti is not None:
        try:
            log_url = ti.log_url
        except Exception:  # a partial task instance (DAG callbacks build one from the last task)
            log_url = None
    state = _get(ti, "state")
    return {
        "kind": kind,
        "dag_id": dag_id,
        "run_id": run_id,
        "task_id": _get(ti, "task_id"),
        "state": str(getattr(state, "value", state)) if state is not None else None,
        "try_number": _get(ti, "try_number"),
        "error": context.get("exception"),
        "reason": context.get("reason"),
        "deadline": _get(context.get("deadline"), "deadline_time"),
        "log_url": log_url,
    }


def default_text(event: Mapping[str, Any]) -> str:
    """The message sent when no ``text`` is given: what happened, where, and the task's error."""
    where = []
    if event["dag_id"]:
        where.append(f"DAG [B]{plain(event['dag_id'])}[/B]")
    if event["task_id"]:
        where.append(f"task [B]{plain(event['task_id'])}[/B]")
    if event["run_id"]:
        where.append(f"run {plain(event['run_id'])}")
    if event["kind"] == "deadline":
        title = "Deadline missed"
        if event["deadline"]:
            where.append(f"deadline {plain(event['deadline'])}")
    elif event["kind"] == "dag":
        title = f"DAG run: {plain(event['reason'])}" if event["reason"] else "DAG run event"
    else:
        state = event["state"] or ""
        title = f"Task {_STATES.get(state, plain(state) or 'event')}"
        if event["try_number"]:
            where.append(f"try {plain(event['try_number'])}")
    lines = [f"[B]Airflow: {title}[/B]", ", ".join(where)]
    error = event["error"]
    if error is not None:
        shown = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
        lines.append(f"Error: {plain(cut(shown, MAX_ERROR))}")
    return "\n".join(line for line in lines if line)


def links(event: Mapping[str, Any]) -> str:
    """BB-code links to the task's log and the DAG run, as far as the context names them."""
    found = []
    if event["log_url"]:
        found.append(f"[URL={event['log_url']}]Task log[/URL]")
    if event["dag_id"] and event["run_id"]:
        found.append(f"[URL={dag_run_url(str(event['dag_id']), str(event['run_id']))}]DAG run[/URL]")
    return " | ".join(found)


class Bitrix24Notifier(BaseNotifier):
    """
    Post a message into a Bitrix24 chat or to a user (``im.message.add``) when a DAG or task event happens.

    Use it as ``on_failure_callback``, ``on_retry_callback`` or ``on_success_callback`` of a task (or in
    ``default_args``) or of a DAG; or, on Airflow 3.1+, in a deadline alert
    (``DeadlineAlert(..., callback=AsyncCallback(Bitrix24Notifier, kwargs={...}))``), where the triggerer awaits
    :meth:`async_notify` on its event loop. The text is sent with Bitrix24's BB codes (``[B]``, ``[URL=...]``,
    ``[BR]`` or new lines) and, unless ``links=False``, ends with links to the task's log and the DAG run.

    A notification that cannot be sent (portal down, no ``im`` scope, chat gone) is logged in one line and never
    changes the task's outcome nor hides its error. Calls go through the connection's rate limiter with short
    retries. A text longer than the portal keeps (20,000 characters) is cut; values Airflow masks (connection
    passwords, sensitive variables, tokens) and the connection's own secrets are replaced by ``***`` in the
    message and the log.

    .. seealso::
        https://apidocs.bitrix24.com/api-reference/chats/messages/im-message-add.html

    :param dialog_id: ``chatNNN`` (a chat), ``sgNNN`` (a workgroup chat) or a user id (a private chat from the
        connection's user). (templated)
    :param text: The message, with BB codes; by default what happened, where, and the task's error. (templated)
    :param bitrix24_conn_id: The Bitrix24 connection. (templated)
    :param links: Add links to the task's log and the DAG run (``[api] base_url``).
    :param url_preview: Let the portal turn links into rich previews.
    :param system: Show the message as a system message.
    """

    template_fields: Sequence[str] = ("text", "dialog_id", "bitrix24_conn_id")

    def __init__(
        self,
        *,
        dialog_id: str | int,
        text: str | None = None,
        bitrix24_conn_id: str = "bitrix24_default",
        links: bool = True,
        url_preview: bool = False,
        system: bool = False,
        **kwargs: Any,
    ) -> None:
        if "context" in inspect.signature(BaseNotifier.__init__).parameters:
            super().__init__(**kwargs)  # Airflow 3.1+: a deadline alert passes the context
        else:
            super().__init__()
        if (isinstance(dialog_id, str) and "{{" not in dialog_id) or isinstance(dialog_id, int):
            dialog_id = check_dialog_id(dialog_id)
        self.dialog_id = dialog_id
        self.text = text
        self.bitrix24_conn_id = bitrix24_conn_id
        self.links = links
        self.url_preview = url_preview
        self.system = system
        self._templates = {name: getattr(self, name) for name in self.template_fields}
        #: The id of the last message sent, ``None`` when the last notification failed.
        self.message_id: int | None = None

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        # Render from the templates every time: one notifier object may serve several tasks and tries.
        for name, template in self._templates.items():
            setattr(self, name, template)
        self._render_error: Exception | None = None
        if "dag" not in context:  # a deadline's context has no DAG; Airflow 2's notifier reads context["dag"]
            context["dag"] = None  # type: ignore[typeddict-item]
        dag = context.get("dag")
        if jinja_env is None and dag is not None and not callable(getattr(dag, "get_template_env", None)):
            # dag.test() hands DAG callbacks the scheduler's serialized DAG, which has no template environment.
            jinja_env = self.get_template_env(dag=None)
        try:
            super().render_template_fields(context, jinja_env)
        except Exception as exc:  # reported by notify / async_notify in their one line, never raised
            self._render_error = exc

    def _check_rendered(self) -> None:
        error = getattr(self, "_render_error", None)
        if error is not None:
            raise ValueError(f"text, dialog_id or bitrix24_conn_id: the template could not be rendered: {error}")

    @property
    def hook(self) -> Bitrix24Hook:
        """The hook of the (rendered) connection, built once per connection id."""
        from airflow_provider_bitrix24.client.retry import RetryPolicy
        from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook

        hook = self.__dict__.get("_hook")
        if hook is None or hook.bitrix24_conn_id != self.bitrix24_conn_id:
            # Short retries: a callback must not hold the worker, the DAG processor or the triggerer for minutes.
            policy = RetryPolicy(max_retries=2, base_delay=0.5, max_delay=2.0, max_total_wait=5.0)
            hook = self.__dict__["_hook"] = Bitrix24Hook(bitrix24_conn_id=self.bitrix24_conn_id, retry_policy=policy)
        return hook

    def build_params(self, context: Mapping[str, Any], secrets: Iterable[str] = ()) -> dict[str, Any]:
        """The ``im.message.add`` parameters for ``context``: checked, scrubbed of secrets, cut to the limit."""
        dialog_id = check_dialog_id(self.dialog_id)
        event = describe_event(context)
        secrets = tuple(secrets)
        body = self.text if self.text is not None else default_text(event)
        body = scrub(str(body), secrets)
        tail = scrub(links(event), secrets) if self.links else ""
        if tail:
            body = cut(body, MAX_MESSAGE - len(tail) - 1) + "\n" + tail
        message = cut(body, MAX_MESSAGE)
        if not message.strip():
            raise ValueError("text: renders to an empty message")
        return {
            "DIALOG_ID": dialog_id,
            "MESSAGE": message,
            "SYSTEM": "Y" if self.system else "N",
            "URL_PREVIEW": "Y" if self.url_preview else "N",
        }

    def _sent(self, result: Any) -> None:
        self.message_id = result if isinstance(result, int) and not isinstance(result, bool) else None
        self.log.info("Bitrix24 notification sent to %s (message %s)", self.dialog_id, result)

    def _failed(self, exc: Exception, secrets: Iterable[str]) -> None:
        """One line naming what went wrong; never raised further, so the task keeps its own outcome and error."""
        from airflow_provider_bitrix24.client.errors import Bitrix24Error

        self.message_id = None
        if isinstance(exc, Bitrix24Error):
            hint = HINTS.get(exc.code)
            if hint is None:
                from airflow_provider_bitrix24.failures import HINTS as GENERAL_HINTS

                hint = GENERAL_HINTS.get(exc.code)
            reason = f"{exc}. Hint: {hint}" if hint else str(exc)
        else:
            reason = f"{type(exc).__name__}: {exc}"
        self.log.warning(
            "Bitrix24 notification to %s not sent: %s", scrub(str(self.dialog_id), secrets), scrub(reason, secrets)
        )

    def notify(self, context: Context) -> None:
        """Send the message (task and DAG callbacks); a failure is logged, never raised."""
        secrets: tuple[str, ...] = ()
        try:
            self._check_rendered()
            secrets = tuple(self.hook.config.auth.secrets)
            result = self.hook.call(METHOD, self.build_params(context, secrets))
        except Exception as exc:
            self._failed(exc, secrets)
            return
        self._sent(result)

    async def async_notify(self, context: Context) -> None:
        """Send the message from an event loop (the triggerer, for deadline alerts); a failure is logged."""
        secrets: tuple[str, ...] = ()
        try:
            self._check_rendered()
            client = await self.hook.get_async_client()
            try:
                secrets = tuple(client.config.auth.secrets)
                result = await client.call(METHOD, self.build_params(context, secrets))
            finally:
                await client.aclose()
        except Exception as exc:
            self._failed(exc, secrets)
            return
        self._sent(result)


send_bitrix24_notification = Bitrix24Notifier
