"""The sandbox's messenger methods: ``im.message.add`` posts through the one message path; unknown methods 404."""

from __future__ import annotations

import pytest

from airflow_provider_bitrix24.sandbox.im import MAX_TEXT
from airflow_provider_bitrix24.sandbox.state import SEED


def test_message_into_a_group_chat_is_stored_with_its_bb_codes(api, portal):
    text = "[B]Task failed[/B][BR][URL=http://airflow.local/log]Task log[/URL]"
    message_id = api.ok("im.message.add", {"DIALOG_ID": f"chat{SEED.group_chat_id}", "MESSAGE": text})
    assert isinstance(message_id, int)
    last = portal.chat_messages(SEED.group_chat_id)[-1]
    assert last["id"] == message_id
    assert last["text"] == text
    assert last["author_id"] == SEED.webhook_user_id
    assert last["session_id"] is None
    got = api.ok("im.dialog.messages.get", {"DIALOG_ID": f"chat{SEED.group_chat_id}", "LIMIT": 1})
    assert [m["id"] for m in got["messages"]] == [message_id]


def test_message_into_an_open_line_chat_joins_its_current_session_history(api, portal):
    message_id = api.ok("im.message.add", {"DIALOG_ID": f"chat{SEED.support_chat_id}", "MESSAGE": "We are on it"})
    history = api.ok("imopenlines.session.history.get", {"SESSION_ID": SEED.support_latest_session_id})
    assert str(message_id) in history["message"]
    assert history["message"][str(message_id)]["text"] == "We are on it"


def test_message_to_a_user_id_opens_one_private_chat(api, portal):
    first = api.ok("im.message.add", {"DIALOG_ID": str(SEED.limited_user_id), "MESSAGE": "one"})
    second = api.ok("im.message.add", {"DIALOG_ID": SEED.limited_user_id, "MESSAGE": "two"})
    got = api.ok("im.dialog.messages.get", {"DIALOG_ID": str(SEED.limited_user_id)})
    assert [m["id"] for m in got["messages"]] == [second, first]


def test_long_text_is_cut_with_the_portals_marker(api, portal):
    message_id = api.ok("im.message.add", {"DIALOG_ID": f"chat{SEED.group_chat_id}", "MESSAGE": "x" * (MAX_TEXT + 50)})
    (stored,) = [m for m in portal.chat_messages(SEED.group_chat_id) if m["id"] == message_id]
    assert len(stored["text"]) == MAX_TEXT
    assert stored["text"].endswith(" (...)")


@pytest.mark.parametrize(
    ("dialog", "text", "status", "code"),
    [
        ("chat", "hi", 400, "CHAT_ID_EMPTY"),
        ("", "hi", 400, "USER_ID_EMPTY"),
        ("chat99999", "hi", 400, "CHAT_ID"),
        ("99999", "hi", 400, "USER_NOT_FOUND"),
        (f"chat{SEED.restricted_chat_id}", "hi", 403, "ACCESS_ERROR"),
        (f"chat{SEED.group_chat_id}", "  ", 400, "MESSAGE_EMPTY"),
    ],
)
def test_message_add_errors(api, portal, dialog, text, status, code):
    before = len(portal.chat_messages(SEED.group_chat_id))
    got_status, body = api.error("im.message.add", {"DIALOG_ID": dialog, "MESSAGE": text})
    assert (got_status, body["error"]) == (status, code)
    assert body["error_description"]
    assert len(portal.chat_messages(SEED.group_chat_id)) == before


def test_message_add_needs_the_im_scope(api, portal):
    status, body = api.error(
        "im.message.add", {"DIALOG_ID": f"chat{SEED.group_chat_id}", "MESSAGE": "hi"}, base=portal.limited_webhook_url
    )
    assert (status, body["error"]) == (401, "insufficient_scope")


def test_unknown_method_answers_404_method_not_found(api):
    status, body = api.error("crm.deal.update", {"ID": 1, "FIELDS": {"TITLE": "x"}})
    assert (status, body) == (404, {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"})


def test_unknown_method_inside_a_batch_fails_only_its_command(api, portal):
    result = api.ok(
        "batch",
        {
            "halt": 0,
            "cmd": {"a": "crm.deal.update?ID=1", "b": f"im.message.add?DIALOG_ID=chat{SEED.group_chat_id}&MESSAGE=hi"},
        },
    )
    assert result["result_error"]["a"]["error"] == "ERROR_METHOD_NOT_FOUND"
    assert isinstance(result["result"]["b"], int)


def test_every_posted_message_goes_through_the_one_message_path(api, portal, monkeypatch):
    from airflow_provider_bitrix24.sandbox.state import PortalState

    seen: list[tuple[int | None, int | None, str]] = []
    original = PortalState.add_message

    def spy(self, session_id, author_id, text, *args, **kwargs):
        seen.append((session_id, kwargs.get("chat_id"), text))
        return original(self, session_id, author_id, text, *args, **kwargs)

    monkeypatch.setattr(PortalState, "add_message", spy)
    api.ok("im.message.add", {"DIALOG_ID": f"chat{SEED.group_chat_id}", "MESSAGE": "group"})
    api.ok("im.message.add", {"DIALOG_ID": f"chat{SEED.support_chat_id}", "MESSAGE": "line"})
    api.ok("im.message.add", {"DIALOG_ID": str(SEED.limited_user_id), "MESSAGE": "private"})
    assert [(s, t) for s, _, t in seen] == [(None, "group"), (None, "line"), (None, "private")]
    assert seen[0][1] == SEED.group_chat_id
    assert seen[1][1] == SEED.support_chat_id


def test_add_message_to_a_chat_picks_its_current_session_or_none(portal):
    state = portal.engine.state
    with state.lock:
        into_line = state.add_message(None, SEED.webhook_user_id, "a", chat_id=SEED.support_chat_id)
        into_group = state.add_message(None, SEED.webhook_user_id, "b", chat_id=SEED.group_chat_id)
        into_sessionless_line = state.add_message(None, SEED.webhook_user_id, "c", chat_id=SEED.no_session_chat_id)
        with pytest.raises(KeyError, match="chat 99999"):
            state.add_message(None, SEED.webhook_user_id, "d", chat_id=99999)
    assert into_line.session_id == SEED.support_latest_session_id
    assert into_group.session_id is None
    assert into_sessionless_line.session_id is None
