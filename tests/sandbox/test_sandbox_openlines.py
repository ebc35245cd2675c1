"""Open Lines methods: quick.save with de-duplication, session.history.get, dialog.get, session.open, crm.chat.get."""

from __future__ import annotations

import re
import threading
import time

import pytest
import requests

from airflow_provider_bitrix24.sandbox import SEED, WebhookSpec
from airflow_provider_bitrix24.sandbox.config import FULL_SCOPES

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")
CHAT_ACCESS = "You do not have permission to access this chat."


def _save(api, chat_id, message_id, **kw):
    return api.post("imopenlines.message.quick.save", {"CHAT_ID": chat_id, "MESSAGE_ID": message_id}, **kw)


def _answers_by_message(portal):
    return [a for a in portal.quick_answers() if a["message_id"] is not None]


# -- imopenlines.message.quick.save ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chat_id", "message_id", "error", "description"),
    [
        (SEED.support_chat_id, 999999, "CANT_SAVE_QUICK_ANSWER", "Error saving canned response"),
        (0, 999999, "CANT_SAVE_QUICK_ANSWER", "Error saving canned response"),
        (0, SEED.new_text_message_id, "CHAT_ID", "Chat ID is invalid."),
        (-5, SEED.new_text_message_id, "CHAT_ID", "Chat ID is invalid."),
        (999999, SEED.new_text_message_id, "CHAT_ID", "Chat ID is invalid."),
        (SEED.group_chat_id, SEED.group_message_id, "CHAT_TYPE", "This chat is not Open Channel"),
        (SEED.support_chat_id, SEED.group_message_id, "CHAT_TYPE", "This chat is not Open Channel"),
        (SEED.restricted_chat_id, SEED.restricted_message_id, "ACCESS_DENIED", CHAT_ACCESS),
        (SEED.support_chat_id, SEED.restricted_message_id, "ACCESS_DENIED", CHAT_ACCESS),
    ],
)
def test_quick_save_errors_follow_the_portal_order(api, portal, chat_id, message_id, error, description):
    before = portal.quick_answers()
    response = _save(api, chat_id, message_id)
    assert response.status_code == 400
    assert response.json() == {"error": error, "error_description": description}
    assert portal.quick_answers() == before


def test_quick_save_needs_rights_on_the_lines_list(api, portal):
    portal.configure(webhooks=[*portal.config.webhooks, WebhookSpec(3, "sandbox-operator-0003", FULL_SCOPES)])
    base = f"{portal.base_url}/rest/3/sandbox-operator-0003/"
    response = _save(api, SEED.support_chat_id, SEED.new_text_message_id, base=base)
    assert response.json()["error"] == "CANT_SAVE_QUICK_ANSWER"
    # The same operator may save in a chat of a line whose queue includes them.
    assert _save(api, SEED.sales_chat_id, SEED.saved_message_id, base=base).json()["result"] is True


def test_quick_save_inserts_a_new_text_once(api, portal):
    before = len(portal.quick_answers())
    for _ in range(3):
        response = _save(api, SEED.support_chat_id, SEED.new_text_message_id)
        assert response.status_code == 200
        assert response.json()["result"] is True
    answers = portal.quick_answers()
    assert len(answers) == before + 1
    added = answers[-1]
    assert added["message_id"] == SEED.new_text_message_id
    assert added["line_id"] == SEED.support_line_id
    assert added["text"] == "Open the task card and click [b]Observers[/b]."
    assert added["name"] == added["text"][:100]
    assert added["rating"] == 1


def test_quick_save_reuses_an_answer_with_the_same_text(api, portal):
    before = portal.quick_answers()
    assert _save(api, SEED.support_chat_id, SEED.same_text_message_id).json()["result"] is True
    assert portal.quick_answers() == before


def test_quick_save_of_a_saved_message_updates_its_text(api, portal):
    [old] = [a for a in portal.quick_answers() if a["id"] == SEED.saved_answer_id]
    assert old["text"] == "Delivery is free for orders over 50 EUR."
    assert _save(api, SEED.sales_chat_id, SEED.saved_message_id).json()["result"] is True
    [new] = [a for a in portal.quick_answers() if a["id"] == SEED.saved_answer_id]
    assert new["text"] == new["name"] == "Delivery is free for orders over 100 EUR."
    assert len(portal.quick_answers()) == 3


def test_quick_save_deduplicates_per_line(api, portal):
    assert _save(api, SEED.support_chat_id, SEED.new_text_message_id).json()["result"] is True
    # The same message saved through a chat of another line lands in that line's list too.
    assert _save(api, SEED.sales_chat_id, SEED.new_text_message_id).json()["result"] is True
    lines = sorted(a["line_id"] for a in _answers_by_message(portal) if a["message_id"] == SEED.new_text_message_id)
    assert lines == [SEED.support_line_id, SEED.sales_line_id]


def _concurrent_saves(http, portal, message_id, count=2):
    barrier = threading.Barrier(count)
    statuses: list[int] = []

    def save() -> None:
        barrier.wait()
        response = http.post(
            portal.webhook_url + "imopenlines.message.quick.save",
            json={"CHAT_ID": SEED.bulk_chat_id, "MESSAGE_ID": message_id},
            timeout=10,
        )
        statuses.append(response.status_code)

    threads = [threading.Thread(target=save) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return statuses


def test_concurrent_saves_of_one_message_duplicate_when_the_race_is_on(portal):
    # Both saves must look up the message before either inserts it: the second has 2 s to arrive.
    portal.configure(quick_save_race=True, race_window=2.0)
    message_id = SEED.bulk_message_ids[0]
    with requests.Session() as http:
        assert _concurrent_saves(http, portal, message_id) == [200, 200]
    assert [a["message_id"] for a in _answers_by_message(portal)].count(message_id) == 2


def test_concurrent_saves_of_one_message_do_not_duplicate_without_the_race(portal):
    message_id = SEED.bulk_message_ids[1]
    with requests.Session() as http:
        assert _concurrent_saves(http, portal, message_id, count=4) == [200] * 4
    assert [a["message_id"] for a in _answers_by_message(portal)].count(message_id) == 1


# -- imopenlines.session.history.get ---------------------------------------------------------------------------

HISTORY_KEYS = [
    "chatId", "canJoin", "canVoteHead", "sessionId", "sessionVoteHead", "sessionCommentHead", "userId", "message",
    "usersMessage", "users", "openlines", "userInGroup", "woUserInGroup", "chat", "userBlockChat", "userInChat",
    "files",
]  # fmt: skip
MESSAGE_KEYS = ["id", "chatid", "senderid", "recipientid", "date", "text", "textlegacy", "params"]
USER_KEYS = {
    "id", "name", "active", "firstName", "lastName", "workPosition", "color", "avatar", "avatarId", "birthday",
    "gender", "phoneDevice", "phones", "extranet", "network", "bot", "connector", "profile", "externalAuthId",
    "status", "idle", "lastActivityDate", "mobileLastDate", "desktopLastDate", "departments", "absent", "type",
    "services", "botData",
}  # fmt: skip

VIEWER_KEYS = [
    "viewer", "viewertype", "src", "viewerresized", "objectid", "viewergroupby", "imchatid", "title", "actions",
]  # fmt: skip


def _history(api, **params):
    return api.ok("imopenlines.session.history.get", params)


def test_history_has_the_documented_shape(api):
    result = _history(api, SESSION_ID=SEED.support_session_id)
    assert list(result) == HISTORY_KEYS
    assert (result["chatId"], result["sessionId"], result["userId"]) == (1763, 321, "chat1763")
    assert (result["canJoin"], result["canVoteHead"], result["sessionVoteHead"]) == ("Y", "Y", 0)
    assert result["sessionCommentHead"] is None
    message_ids = ["85811", "85809", "85807", "85805", "85803", "85801"]
    assert list(result["message"]) == message_ids
    assert result["usersMessage"] == {"chat1763": message_ids}
    system = result["message"]["85803"]
    assert list(system) == MESSAGE_KEYS
    assert (system["id"], system["chatid"], system["senderid"], system["recipientid"]) == (
        "85803",
        "1763",
        "0",
        "chat1763",
    )
    assert system["textlegacy"] == "<b>A new lead has been created</b>"
    # The attach of a CRM form as in the documentation's 2026 answer: a ROW line, and a LINE with its height.
    grid = system["params"]["attach"][0]["blocks"][1]["grid"]
    assert [(row["display"], row.get("height")) for row in grid] == [("ROW", None), ("LINE", 20)]
    assert ISO.match(system["date"])
    assert result["message"]["85801"]["params"] == []
    assert set(result["users"]) == {"1", "101"}
    assert set(result["users"]["101"]) == USER_KEYS
    client = result["users"]["101"]
    assert (client["connector"], client["externalAuthId"], client["bot"]) == (True, "imconnector", False)
    assert result["openlines"] == {"canvoteashead": {"1": True}}
    assert result["userInGroup"] == {"1": {"id": 1, "users": ["1"]}}
    assert result["woUserInGroup"] == []
    assert result["userInChat"] == {"1763": [101, 1, 3]}
    assert result["userBlockChat"] == {"1763": {"101": False, "1": False, "3": False}}
    assert list(result["files"]) == ["5437"]
    assert result["files"]["5437"]["id"] == 5437
    # The viewer attributes of the documentation's 2026 answer, in its order.
    assert list(result["files"]["5437"]["viewerattrs"]) == VIEWER_KEYS


def test_history_chat_item_carries_the_current_session_in_entity_data_1(api):
    chat = _history(api, SESSION_ID=SEED.support_session_id)["chat"]["1763"]
    assert chat["entityType"] == "LINES"
    assert chat["entityId"] == SEED.support_user_code
    fields = chat["entityData1"].split("|")
    assert len(fields) == 10
    assert int(fields[5]) == SEED.support_latest_session_id
    assert fields[:3] == ["Y", "LEAD", "1205"]
    assert chat["entityData2"] == "LEAD|1205|COMPANY|0|CONTACT|0|DEAL|0"
    assert (chat["type"], chat["messageType"], chat["owner"]) == ("lines", "L", "1")


def test_entity_data_name_no_session_once_the_chat_has_no_active_one(http, api, portal):
    # Chat 1815's only session is closed: index 5 is 0 in dialog.get and in the history's chat item.
    dialog = api.ok("imopenlines.dialog.get", {"CHAT_ID": SEED.whatsapp_chat_id})
    assert dialog["entity_data_1"].split("|")[5] == "0"
    history = _history(api, SESSION_ID=SEED.whatsapp_session_id)
    assert history["chat"][str(SEED.whatsapp_chat_id)]["entityData1"].split("|")[5] == "0"
    # Closing the current session of chat 1763 does the same there.
    response = http.post(
        portal.base_url + "/_sandbox/sessions/close", json={"session_id": SEED.support_latest_session_id}
    )
    assert response.json() == {"ok": True}
    dialog = api.ok("imopenlines.dialog.get", {"CHAT_ID": SEED.support_chat_id})
    fields = dialog["entity_data_1"].split("|")
    assert (fields[5], fields[:3]) == ("0", ["Y", "LEAD", "1205"])
    assert int(fields[6]) > 0  # the session's start stays
    assert api.ok("imopenlines.crm.chat.get", {"CRM_ENTITY_TYPE": "lead", "CRM_ENTITY": 1205}) == []


def test_a_chat_without_an_active_session_has_no_managers(http, api, portal):
    # As real answers for such chats: managerList null in the history (2023), manager_list [] in dialog.get (2020).
    history = _history(api, SESSION_ID=SEED.whatsapp_session_id)
    assert history["chat"][str(SEED.whatsapp_chat_id)]["managerList"] is None
    assert api.ok("imopenlines.dialog.get", {"CHAT_ID": SEED.whatsapp_chat_id})["manager_list"] == []
    assert api.ok("imopenlines.dialog.get", {"CHAT_ID": SEED.no_session_chat_id})["manager_list"] == []
    # While a session is active the owner manages the chat; closing it takes that away.
    active = _history(api, SESSION_ID=SEED.support_session_id)["chat"][str(SEED.support_chat_id)]
    assert active["managerList"] == [1]
    assert api.ok("imopenlines.dialog.get", {"CHAT_ID": SEED.support_chat_id})["manager_list"] == [1]
    http.post(portal.base_url + "/_sandbox/sessions/close", json={"session_id": SEED.support_latest_session_id})
    closed = _history(api, SESSION_ID=SEED.support_session_id)["chat"][str(SEED.support_chat_id)]
    assert closed["managerList"] is None
    assert api.ok("imopenlines.dialog.get", {"CHAT_ID": SEED.support_chat_id})["manager_list"] == []
    # A group chat is no open line: its owner manages it.
    assert api.ok("imopenlines.dialog.get", {"CHAT_ID": SEED.group_chat_id})["manager_list"] == [1]


def test_entity_data_2_is_empty_for_chats_without_a_crm_link(api):
    dialog = api.ok("imopenlines.dialog.get", {"CHAT_ID": SEED.no_session_chat_id})
    assert dialog["entity_data_2"] == ""
    assert dialog["entity_data_1"].startswith("N|NONE|0|")
    chat = _history(api, SESSION_ID=SEED.empty_session_id)["chat"][str(SEED.empty_session_chat_id)]
    assert chat["entityData2"] == ""
    linked = api.ok("imopenlines.dialog.get", {"CHAT_ID": SEED.multi_session_chat_id})
    assert linked["entity_data_2"] == "LEAD|0|COMPANY|0|CONTACT|77|DEAL|0"


def test_history_by_chat_id_returns_the_latest_session_only(api):
    result = _history(api, CHAT_ID=SEED.multi_session_chat_id)
    assert result["sessionId"] == SEED.multi_session_ids[-1]
    assert list(result["message"]) == ["85851", "85849"]
    bot = result["users"][str(SEED.bot_user_id)]
    assert (bot["bot"], bot["type"]) == (True, "bot")
    assert bot["botData"] is not None


def test_history_covers_exactly_the_session_range(api):
    seen = {}
    for session_id in SEED.multi_session_ids:
        seen[session_id] = list(_history(api, SESSION_ID=session_id)["message"])
    assert seen == {
        351: ["85827", "85825", "85823", "85821"],
        357: ["85833", "85831", "85829"],
        365: ["85851", "85849"],
    }


def test_history_without_files_or_departments_uses_empty_arrays(api):
    result = _history(api, SESSION_ID=SEED.multi_session_ids[-1])
    assert set(result["users"]) == {"102", str(SEED.bot_user_id)}
    assert result["files"] == []
    assert result["userInGroup"] == []


def test_history_keeps_unicode_and_renders_links(api):
    result = _history(api, SESSION_ID=SEED.whatsapp_session_id)
    assert result["message"]["85835"]["text"] == "Hi! Can I change my order? \U0001f642"
    assert result["message"]["85837"]["textlegacy"] == (
        'Sure, open <a href="https://example.com/orders" target="_blank">your orders</a> and press Edit.'
    )


@pytest.mark.parametrize(
    ("params", "error", "description"),
    [
        ({}, "MISSING_REQUIRED_PARAM", "Session ID or Chat ID must be provided"),
        ({"SESSION_ID": 0, "CHAT_ID": ""}, "MISSING_REQUIRED_PARAM", "Session ID or Chat ID must be provided"),
        (
            {"CHAT_ID": SEED.no_session_chat_id},
            "INVALID_SESSION_ID",
            "Unable to determine session ID from provided parameters",
        ),
        ({"CHAT_ID": 999999}, "INVALID_SESSION_ID", "Unable to determine session ID from provided parameters"),
        ({"SESSION_ID": 999999}, "ACCESS_DENIED", CHAT_ACCESS),
        ({"SESSION_ID": SEED.restricted_session_id}, "ACCESS_DENIED", CHAT_ACCESS),
        ({"CHAT_ID": SEED.restricted_chat_id}, "ACCESS_DENIED", CHAT_ACCESS),
    ],
)
def test_history_errors(api, params, error, description):
    assert api.error("imopenlines.session.history.get", params) == (
        400,
        {"error": error, "error_description": description},
    )


@pytest.mark.parametrize("params", [{"SESSION_ID": SEED.empty_session_id}, {"CHAT_ID": SEED.empty_session_chat_id}])
def test_history_of_a_session_without_messages_is_a_success_with_an_empty_map(api, params):
    result = _history(api, **params)
    assert list(result) == HISTORY_KEYS
    assert result["sessionId"] == SEED.empty_session_id
    assert result["message"] == []
    assert result["usersMessage"] == {f"chat{SEED.empty_session_chat_id}": []}
    assert (result["users"], result["files"], result["userInGroup"]) == ([], [], [])


def test_history_text_is_rendered_as_the_portal_renders_it(api, portal):
    sales = _history(api, SESSION_ID=SEED.sales_session_id)["message"]["85815"]
    assert sales["text"] == "Guest #17, yes, delivery to Berlin takes 2-3 days."
    assert sales["textlegacy"] == "Guest #17, yes, delivery to Berlin takes 2-3 days."
    support = _history(api, SESSION_ID=SEED.support_latest_session_id)["message"]["85847"]
    # [br] becomes a newline; other BB-code stays in text, as in the documentation's examples.
    assert support["text"] == "On mobile tap [b]...[/b] in the top-right corner, then [i]Observers[/i].\nDoes it help?"
    assert support["textlegacy"] == (
        "On mobile tap <b>...</b> in the top-right corner, then <i>Observers</i>.<br />Does it help?"
    )
    mention = portal.add_message(SEED.sales_session_id, 3, "[USER=1][/USER], [USER=103]the client[/USER] waits")
    added = _history(api, SESSION_ID=SEED.sales_session_id)["message"][str(mention)]
    assert added["text"] == "Anna Admin, the client waits"
    # What was typed is kept: a quick answer saved from the message holds the BB-code.
    assert api.ok("imopenlines.message.quick.save", {"CHAT_ID": SEED.sales_chat_id, "MESSAGE_ID": 85815}) is True
    saved = [a for a in portal.quick_answers() if a["message_id"] == 85815]
    assert saved[0]["text"].startswith("[USER=103]Guest #17[/USER], yes")


def test_history_orders_messages_newest_first_by_date_not_by_id(api, portal):
    # A message whose id was taken first but that arrived later (in a later second) is the newest one.
    late = portal.add_message(SEED.sales_session_id, 103, "Arrives later", delay=2.0)
    early = portal.add_message(SEED.sales_session_id, 3, "Arrives now")
    assert late < early
    deadline = time.monotonic() + 10
    while str(late) not in _history(api, SESSION_ID=SEED.sales_session_id)["message"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    result = _history(api, SESSION_ID=SEED.sales_session_id)
    assert list(result["message"])[:2] == [str(late), str(early)]
    assert result["usersMessage"][f"chat{SEED.sales_chat_id}"][:2] == [str(late), str(early)]
    # Messages of the same second come in id order.
    state, second_start = portal.engine.state, float(int(time.time()) + 100)
    with state.lock:
        first = state.add_message(SEED.sales_session_id, 103, "same second, first", date=second_start + 0.1).id
        second = state.add_message(SEED.sales_session_id, 3, "same second, second", date=second_start + 0.6).id
    assert list(_history(api, SESSION_ID=SEED.sales_session_id)["message"])[:2] == [str(first), str(second)]


def test_history_ignores_chat_id_on_older_imopenlines_versions(api, portal):
    portal.configure(history_ignores_chat_id=True)
    assert api.error("imopenlines.session.history.get", {"CHAT_ID": SEED.sales_chat_id}) == (
        400,
        {
            "error": "ACCESS_DENIED",
            "error_description": "You cannot open this conversation because you do not have sufficient rights.",
        },
    )
    assert _history(api, SESSION_ID=SEED.sales_session_id)["sessionId"] == SEED.sales_session_id
    both = _history(api, SESSION_ID=SEED.sales_session_id, CHAT_ID=SEED.support_chat_id)
    assert both["chatId"] == SEED.sales_chat_id


def test_added_messages_appear_in_the_session(api, portal):
    message_id = portal.add_message(SEED.sales_session_id, 103, "One more [i]question[/i]")
    assert message_id > max(portal.seed.bulk_message_ids)
    result = _history(api, SESSION_ID=SEED.sales_session_id)
    assert next(iter(result["message"])) == str(message_id)
    assert result["message"][str(message_id)]["textlegacy"] == "One more <i>question</i>"


def test_pool_sessions_each_have_one_message(api, portal):
    seed = portal.seed
    assert len(seed.extra_session_ids) == 3
    for chat_id, session_id in zip(seed.extra_chat_ids, seed.extra_session_ids, strict=True):
        result = _history(api, SESSION_ID=session_id)
        assert result["chatId"] == chat_id
        assert len(result["message"]) == 1


# -- imopenlines.dialog.get ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"CHAT_ID": SEED.sales_chat_id},
        {"DIALOG_ID": f"chat{SEED.sales_chat_id}"},
        {"SESSION_ID": SEED.sales_session_id},
        {"USER_CODE": SEED.sales_user_code},
        {"USER_CODE": "imol|" + SEED.sales_user_code},
        {"chat_id": SEED.sales_chat_id},
    ],
)
def test_dialog_get_resolves_every_identifier(api, params):
    dialog = api.ok("imopenlines.dialog.get", params)
    assert dialog["id"] == SEED.sales_chat_id
    assert dialog["dialog_id"] == f"chat{SEED.sales_chat_id}"
    assert dialog["entity_id"] == SEED.sales_user_code
    assert int(dialog["entity_data_1"].split("|")[5]) == SEED.sales_session_id
    assert (dialog["owner"], dialog["role"], dialog["entity_type"]) == (3, "guest", "LINES")
    assert dialog["last_message_id"] == 85819
    assert dialog["permissions"]["manage_users_add"] == "member"


def test_dialog_get_prefers_chat_id_over_other_identifiers(api):
    dialog = api.ok("imopenlines.dialog.get", {"CHAT_ID": SEED.support_chat_id, "SESSION_ID": SEED.sales_session_id})
    assert dialog["id"] == SEED.support_chat_id
    assert dialog["role"] == "owner"


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"DIALOG_ID": str(SEED.sales_chat_id)},
        {"CHAT_ID": 999999},
        {"CHAT_ID": SEED.restricted_chat_id},
        {"USER_CODE": SEED.restricted_user_code},
        {"SESSION_ID": 999999},
    ],
)
def test_dialog_get_errors_are_access_error(api, params):
    assert api.error("imopenlines.dialog.get", params) == (
        400,
        {"error": "ACCESS_ERROR", "error_description": "You do not have access to the specified dialog"},
    )


# -- imopenlines.session.open ----------------------------------------------------------------------------------


def test_session_open_returns_the_chat_id_as_a_string(api):
    assert api.ok("imopenlines.session.open", {"USER_CODE": SEED.support_user_code}) == {"chatId": "1763"}


@pytest.mark.parametrize("code", ["", "livechat|1|0|0", SEED.restricted_user_code])
def test_session_open_errors_are_access_denied(api, code):
    assert api.error("imopenlines.session.open", {"USER_CODE": code}) == (
        400,
        {"error": "ACCESS_DENIED", "error_description": CHAT_ACCESS},
    )


def test_opening_a_session_moves_the_chat_to_it(http, api, portal):
    response = http.post(portal.base_url + "/_sandbox/sessions", json={"chat_id": SEED.support_chat_id})
    session_id = response.json()["session_id"]
    assert session_id > max(portal.seed.extra_session_ids)
    dialog = api.ok("imopenlines.dialog.get", {"CHAT_ID": SEED.support_chat_id})
    assert int(dialog["entity_data_1"].split("|")[5]) == session_id
    history = _history(api, CHAT_ID=SEED.support_chat_id)
    assert history["sessionId"] == session_id
    [system] = history["message"].values()
    assert system["senderid"] == "0"


# -- imopenlines.crm.chat.get ----------------------------------------------------------------------------------


def test_crm_chat_get_lists_active_chats_of_the_object(api):
    result = api.ok("imopenlines.crm.chat.get", {"CRM_ENTITY_TYPE": "lead", "CRM_ENTITY": 1205})
    assert result == [{"CHAT_ID": "1763", "CONNECTOR_ID": "livechat", "CONNECTOR_TITLE": "Live Chat"}]
    assert api.ok("imopenlines.crm.chat.get", {"CRM_ENTITY_TYPE": "company", "CRM_ENTITY": 15}) == []
    everything = api.ok(
        "imopenlines.crm.chat.get", {"CRM_ENTITY_TYPE": "company", "CRM_ENTITY": 15, "ACTIVE_ONLY": "N"}
    )
    assert [c["CHAT_ID"] for c in everything] == [str(SEED.whatsapp_chat_id)]
    assert api.ok("imopenlines.crm.chat.get", {"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 424242}) == []


@pytest.mark.parametrize(
    ("params", "status", "body"),
    [
        (
            {"CRM_ENTITY": 1205},
            400,
            {
                "error": "ERROR_ARGUMENT",
                "error_description": "Argument 'CRM_ENTITY_TYPE' is null or empty",
                "argument": "CRM_ENTITY_TYPE",
            },
        ),
        (
            {"CRM_ENTITY_TYPE": "lead"},
            400,
            {
                "error": "ERROR_ARGUMENT",
                "error_description": "Argument 'CRM_ENTITY' is null or empty",
                "argument": "CRM_ENTITY",
            },
        ),
        (
            {"CRM_ENTITY_TYPE": "lead", "CRM_ENTITY": "abc"},
            400,
            {
                "error": "ERROR_ARGUMENT",
                "error_description": "The value of an argument 'CRM_ENTITY' has an invalid type",
                "argument": "CRM_ENTITY",
            },
        ),
        (
            {"CRM_ENTITY_TYPE": "company", "CRM_ENTITY": 88},
            403,
            {"error": "ACCESS_DENIED", "error_description": "Access denied! You don't have access to this action"},
        ),
    ],
)
def test_crm_chat_get_errors(api, params, status, body):
    assert api.error("imopenlines.crm.chat.get", params) == (status, body)
