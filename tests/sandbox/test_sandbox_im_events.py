"""The sandbox's ``im.v2.Event.*``: per-user queues, membership, confirmation by offset, retention, one reader."""

from __future__ import annotations

import time

import requests

from airflow_provider_bitrix24.sandbox.config import FULL_SCOPES, WebhookSpec
from airflow_provider_bitrix24.sandbox.im_events import delete_message, edit_message
from airflow_provider_bitrix24.sandbox.state import SEED

CLIENT = 101
SESSION = SEED.support_latest_session_id  # chat 1763: members 101, 1, 3
SALES_SESSION = SEED.sales_session_id  # chat 1777: members 103, 3 (user 1 is not a member)


def _add(portal, text: str, session: int = SESSION, author: int = CLIENT) -> int:
    return portal.add_message(session, author, text)


def test_nothing_is_recorded_before_subscribe(api, portal):
    _add(portal, "before")
    answer = api.ok("im.v2.Event.get", {"offset": 0})
    assert answer == {"events": [], "nextOffset": 0, "hasMore": False}
    assert api.ok("im.v2.Event.subscribe") is True
    assert api.ok("im.v2.Event.subscribe") is True  # idempotent
    message_id = _add(portal, "after")
    events = api.ok("im.v2.Event.get", {"offset": 0})["events"]
    assert [e["data"]["message"]["id"] for e in events] == [message_id]


def test_event_shape_of_an_open_line_message(api, portal):
    api.ok("im.v2.Event.subscribe")
    message_id = _add(portal, "Where is [b]my[/b] order?")
    answer = api.ok("im.v2.Event.get", {"offset": 0, "limit": 10})
    (event,) = answer["events"]
    assert set(event) == {"eventId", "type", "date", "data"}
    assert event["type"] == "ONIMV2MESSAGEADD"
    assert answer["nextOffset"] == event["eventId"] + 1
    assert answer["hasMore"] is False
    data = event["data"]
    assert set(data) == {"message", "chat", "user", "language"}
    assert data["message"]["id"] == message_id
    assert data["message"]["chatId"] == SEED.support_chat_id
    assert data["message"]["authorId"] == CLIENT
    assert data["message"]["text"] == "Where is [b]my[/b] order?"
    chat = data["chat"]
    assert chat["entityType"] == "LINES"
    assert chat["entityId"] == SEED.support_user_code
    assert chat["entityData1"].split("|")[5] == str(SESSION)
    assert data["user"]["connector"] is True
    assert data["user"]["id"] == CLIENT


def test_only_members_get_the_event_and_the_author_too(api, portal):
    api.ok("im.v2.Event.subscribe")  # user 1
    sales = _add(portal, "to sales", session=SALES_SESSION, author=103)
    own = _add(portal, "operator's answer", author=1)
    events = api.ok("im.v2.Event.get", {"offset": 0})["events"]
    ids = [e["data"]["message"]["id"] for e in events]
    assert sales not in ids  # user 1 is an operator of line 2 but no member of chat 1777
    assert own in ids


def test_offset_confirms_below_it_and_redelivers_the_rest(api, portal):
    api.ok("im.v2.Event.subscribe")
    ids = [_add(portal, f"m{i}") for i in range(5)]
    first = api.ok("im.v2.Event.get", {"offset": 0, "limit": 2})
    assert [e["data"]["message"]["id"] for e in first["events"]] == ids[:2]
    assert first["hasMore"] is True
    again = api.ok("im.v2.Event.get", {"offset": 0, "limit": 2})
    assert again["events"] == first["events"]  # nothing confirmed yet: redelivered
    rest = api.ok("im.v2.Event.get", {"offset": first["nextOffset"], "limit": 10})
    assert [e["data"]["message"]["id"] for e in rest["events"]] == ids[2:]
    assert rest["hasMore"] is False
    empty = api.ok("im.v2.Event.get", {"offset": rest["nextOffset"]})
    assert empty == {"events": [], "nextOffset": rest["nextOffset"], "hasMore": False}
    assert portal.engine.state.events.pending(1) == []
    # Event ids are one counter for the whole portal: ascending, not contiguous per user.
    assert all(b["eventId"] > a["eventId"] for a, b in zip(rest["events"], rest["events"][1:], strict=False))


def test_limit_is_clamped(api, portal):
    api.ok("im.v2.Event.subscribe")
    for i in range(3):
        _add(portal, f"m{i}")
    assert len(api.ok("im.v2.Event.get", {"offset": 0, "limit": 0})["events"]) == 1
    assert len(api.ok("im.v2.Event.get", {"offset": 0, "limit": 5000})["events"]) == 3


def test_a_second_reader_of_the_same_user_takes_events_away(api, portal):
    api.ok("im.v2.Event.subscribe")
    _add(portal, "first")
    seen_by_a = api.ok("im.v2.Event.get", {"offset": 0})
    _add(portal, "second")
    seen_by_b = api.ok("im.v2.Event.get", {"offset": 0})
    # Reader B confirms everything it read; reader A, still at offset 0 + its next offset, loses "second".
    api.ok("im.v2.Event.get", {"offset": seen_by_b["nextOffset"]})
    after = api.ok("im.v2.Event.get", {"offset": seen_by_a["nextOffset"]})
    assert after["events"] == []


def test_users_have_separate_queues(api, portal, http):
    portal.configure(webhooks=[portal.config.webhooks[0], WebhookSpec(3, "clara-0000", FULL_SCOPES)])
    clara = f"{portal.base_url}/rest/3/clara-0000/"
    api.ok("im.v2.Event.subscribe")
    api.ok("im.v2.Event.subscribe", base=clara)
    message_id = _add(portal, "both are members")
    anna = api.ok("im.v2.Event.get", {"offset": 0})
    api.ok("im.v2.Event.get", {"offset": anna["nextOffset"]})  # Anna confirms hers
    events = api.ok("im.v2.Event.get", {"offset": 0}, base=clara)["events"]
    assert [e["data"]["message"]["id"] for e in events] == [message_id]


def test_unsubscribe_stops_recording_and_keeps_what_was_recorded(api, portal):
    api.ok("im.v2.Event.subscribe")
    kept = _add(portal, "kept")
    assert api.ok("im.v2.Event.unsubscribe") is True
    _add(portal, "not recorded")
    events = api.ok("im.v2.Event.get", {"offset": 0})["events"]
    assert [e["data"]["message"]["id"] for e in events] == [kept]


def test_events_expire_after_the_retention(api, portal):
    api.ok("im.v2.Event.subscribe")
    _add(portal, "old")
    portal.configure(im_event_retention=0.2)
    time.sleep(0.3)
    fresh = _add(portal, "fresh")
    events = api.ok("im.v2.Event.get", {"offset": 0})["events"]
    assert [e["data"]["message"]["id"] for e in events] == [fresh]


def test_older_portal_answers_method_not_found(api, portal):
    portal.configure(im_events_available=False)
    for method in ("im.v2.Event.subscribe", "im.v2.Event.get", "im.v2.Event.unsubscribe"):
        status, body = api.error(method)
        assert (status, body["error"]) == (404, "ERROR_METHOD_NOT_FOUND")


def test_scope_im_is_required(api, portal):
    status, body = api.error("im.v2.Event.get", base=portal.limited_webhook_url)
    assert (status, body["error"]) == (401, "insufficient_scope")


def test_messages_from_the_control_api_and_sessions_land_in_queues(api, portal, http: requests.Session):
    api.ok("im.v2.Event.subscribe")
    response = http.post(
        f"{portal.base_url}/_sandbox/messages",
        json={"session_id": SESSION, "author_id": CLIENT, "text": "via control"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    new_session = portal.open_session(SEED.support_chat_id)  # adds a system message
    events = api.ok("im.v2.Event.get", {"offset": 0})["events"]
    assert events[0]["data"]["message"]["id"] == response.json()["id"]
    assert events[1]["data"]["message"]["authorId"] == 0
    assert events[1]["data"]["user"] is None
    assert events[1]["data"]["chat"]["entityData1"].split("|")[5] == str(new_session)


def test_edits_and_deletes_are_recorded(api, portal):
    api.ok("im.v2.Event.subscribe")
    message_id = _add(portal, "typo")
    state = portal.engine.state
    with state.lock:
        edit_message(state, message_id, "fixed")
        delete_message(state, message_id)
    events = api.ok("im.v2.Event.get", {"offset": 0})["events"]
    assert [e["type"] for e in events] == ["ONIMV2MESSAGEADD", "ONIMV2MESSAGEUPDATE", "ONIMV2MESSAGEDELETE"]
    assert events[1]["data"]["message"]["text"] == "fixed"
    assert events[2]["data"]["messageId"] == message_id
    assert "message" not in events[2]["data"]


def test_reset_empties_queues(api, portal):
    api.ok("im.v2.Event.subscribe")
    _add(portal, "x")
    portal.reset()
    assert api.ok("im.v2.Event.get", {"offset": 0})["events"] == []
