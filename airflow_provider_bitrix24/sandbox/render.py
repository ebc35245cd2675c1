"""
JSON shapes of portal objects, key for key as the real portal sends them.

``imopenlines.session.history.get`` items went through the portal's key encoder (``CHAT_ID`` -> ``chatId`` but
``chatId`` -> ``chatid``), so they mix camelCase and lower-case keys; ``imopenlines.dialog.get`` uses snake_case
with integer ids. Empty maps are ``[]``, as PHP encodes them.

A message's ``text`` is what the portal renders, not what was typed: ``[br]`` becomes a newline and
``[USER=n]Name[/USER]`` becomes the name (the user's name when the tag is empty); other BB-code such as ``[b]`` or
``[url=...]`` stays, as in the documentation's examples. ``textlegacy`` is the HTML form.

``entity_data_1`` carries the session id at index 5 only while the chat has an active session: once its latest
session is closed (or it never had one) the field is ``0``, as real answers show. ``entity_data_2`` is ``""`` for a
chat without a CRM link. An open-line chat without an active session has no managers: the history's ``managerList``
is ``null`` and ``dialog.get``'s ``manager_list`` is ``[]``, as in the real answers for such chats (2023 history,
2020 dialog).
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_provider_bitrix24.sandbox.state import SEED_EPOCH, Chat, FileItem, Message, PortalState, User

BLANK_AVATAR = "/bitrix/js/im/images/blank.gif"
CRM_TYPES = ("LEAD", "COMPANY", "CONTACT", "DEAL")
CONNECTOR_TITLES = {
    "livechat": "Live Chat",
    "telegrambot": "Telegram",
    "whatsappbytwilio": "WhatsApp (Twilio)",
}
_PERMISSIONS = {
    "manageUsersAdd": "member",
    "manageUsersDelete": "manager",
    "manageUi": "member",
    "manageSettings": "owner",
    "manageMessages": "member",
    "canPost": "member",
}
_BB_RULES = [
    (re.compile(r"\[(b|i|u|s)\](.*?)\[/\1\]", re.IGNORECASE | re.DOTALL), r"<\1>\2</\1>"),
    (re.compile(r"\[br\]", re.IGNORECASE), "<br />"),
    (re.compile(r"\[url=([^\]]+)\](.*?)\[/url\]", re.IGNORECASE | re.DOTALL), r'<a href="\1" target="_blank">\2</a>'),
    (re.compile(r"\[url\](.*?)\[/url\]", re.IGNORECASE | re.DOTALL), r'<a href="\1" target="_blank">\1</a>'),
]
_USER_TAG = re.compile(r"\[user=(\d+)\](.*?)\[/user\]", re.IGNORECASE | re.DOTALL)
_BR_TAG = re.compile(r"\[br\]", re.IGNORECASE)


def iso(timestamp: float, offset_minutes: int) -> str:
    """ISO-8601 with the portal's offset, like PHP ``date('c')``."""
    return _zoned(timestamp, offset_minutes).isoformat()


def _zoned(timestamp: float, offset_minutes: int) -> datetime:
    zone = timezone.utc if offset_minutes == 0 else timezone(timedelta(minutes=offset_minutes))
    return datetime.fromtimestamp(int(timestamp), tz=zone)


def expand_mentions(text: str, names: Mapping[int, str]) -> str:
    """``[USER=n]Name[/USER]`` -> ``Name`` (the name of user ``n`` when the tag is empty)."""

    def mention(match: re.Match[str]) -> str:
        return match.group(2) or names.get(int(match.group(1)), "")

    return _USER_TAG.sub(mention, text)


def rendered_text(text: str, names: Mapping[int, str]) -> str:
    """The ``text`` of a message as the portal sends it: mentions expanded, ``[br]`` as a newline, BB-code kept."""
    return _BR_TAG.sub("\n", expand_mentions(text, names))


def bb_to_html(text: str, names: Mapping[int, str] | None = None) -> str:
    """The ``textlegacy`` form of a BB-code message text."""
    result = html.escape(expand_mentions(text, names or {}), quote=False)
    for pattern, replacement in _BB_RULES:
        result = pattern.sub(replacement, result)
    return result


def php_map(items: dict[str, Any]) -> dict[str, Any] | list[Any]:
    """A map as PHP's ``json_encode`` writes it: empty -> ``[]``, keys ``0..n-1`` in order -> list."""
    if not items:
        return []
    if list(items) == [str(i) for i in range(len(items))]:
        return list(items.values())
    return items


def in_session(state: PortalState, chat: Chat) -> bool:
    """Whether an open-line chat's latest session is active (group chats count as always active)."""
    if not chat.is_lines:
        return True
    session = state.latest_session(chat)
    return session is not None and not session.closed


def entity_data_1(state: PortalState, chat: Chat) -> str:
    """``CRM|CRM_ENTITY_TYPE|CRM_ENTITY_ID|PAUSE|WAIT_ACTION|SESSION_ID|DATE_CREATE|LINE_ID|BLOCK_DATE|BLOCK_REASON``."""
    if not chat.is_lines:
        return ""
    session = state.latest_session(chat)
    crm = "Y" if chat.crm_type != "NONE" else "N"
    session_id = session.id if session is not None and not session.closed else 0
    started = int(session.date_create) if session else 0
    return f"{crm}|{chat.crm_type}|{chat.crm_id}|N|N|{session_id}|{started}|{chat.line_id}|0|0"


def entity_data_2(chat: Chat) -> str:
    """CRM bindings: ``LEAD|<id>|COMPANY|<id>|CONTACT|<id>|DEAL|<id>``; empty for a chat without a CRM link."""
    if not chat.is_lines or chat.crm_type == "NONE":
        return ""
    return "|".join(f"{kind}|{chat.crm_id if chat.crm_type == kind else 0}" for kind in CRM_TYPES)


def message_item(message: Message, offset: int, names: Mapping[int, str] | None = None) -> dict[str, Any]:
    """A message of ``session.history.get``; ``names`` (user id -> full name) expands empty mentions."""
    names = names or {}
    return {
        "id": str(message.id),
        "chatid": str(message.chat_id),
        "senderid": str(message.author_id),
        "recipientid": f"chat{message.chat_id}",
        "date": iso(message.date, offset),
        "text": rendered_text(message.text, names),
        "textlegacy": bb_to_html(message.text, names),
        "params": message.params if message.params else [],
    }


def user_item(user: User, offset: int) -> dict[str, Any]:
    bot_data = None
    if user.bot:
        bot_data = {"code": "helper_bot", "type": "B", "appId": "", "isHidden": False, "isSupportOpenline": True}
    return {
        "id": str(user.id),
        "name": user.name,
        "active": True,
        "firstName": user.first_name,
        "lastName": user.last_name,
        "workPosition": user.work_position,
        "color": user.color,
        "avatar": "",
        "avatarId": None,
        "birthday": False,
        "gender": user.gender,
        "phoneDevice": False,
        "phones": False,
        "extranet": False,
        "network": False,
        "bot": user.bot,
        "connector": user.connector,
        "profile": f"/company/personal/user/{user.id}/",
        "externalAuthId": user.external_auth_id,
        "status": None if user.connector or user.bot else "online",
        "idle": False,
        "lastActivityDate": iso(SEED_EPOCH, offset),
        "mobileLastDate": False,
        "desktopLastDate": False,
        "departments": list(user.departments),
        "absent": False,
        "type": user.kind,
        "services": None,
        "botData": bot_data,
    }


def history_chat_item(state: PortalState, chat: Chat, offset: int) -> dict[str, Any]:
    return {
        "id": str(chat.id),
        "parentChatId": 0,
        "parentMessageId": 0,
        "name": chat.title,
        "owner": str(chat.owner_id),
        "color": chat.color,
        "extranet": False,
        "avatar": BLANK_AVATAR,
        "call": "0",
        "callNumber": "",
        "entityType": chat.entity_type,
        "entityId": chat.user_code,
        "entityData1": entity_data_1(state, chat),
        "entityData2": entity_data_2(chat),
        "entityData3": "",
        "messageCount": len(chat.message_ids),
        "public": "",
        "muteList": {str(uid): False for uid in chat.member_ids},
        "managerList": [chat.owner_id] if in_session(state, chat) else None,
        "dateCreate": iso(chat.date_create, offset),
        "type": "lines" if chat.is_lines else "chat",
        "entityLink": {"type": chat.entity_type, "url": "", "id": chat.user_code},
        "permissions": dict(_PERMISSIONS),
        "textFieldEnabled": True,
        "backgroundId": None,
        "messageType": "L" if chat.is_lines else "C",
        "isNew": False,
    }


def file_item(item: FileItem, base_url: str, offset: int) -> dict[str, Any]:
    query = f"/bitrix/services/main/ajax.php?action=disk.api.file.{{}}&fileId={item.id}"
    extension = item.name.rsplit(".", 1)[-1]
    return {
        "id": item.id,
        "chatid": item.chat_id,
        "date": iso(item.date, offset),
        "type": "image",
        "name": item.name,
        "extension": extension,
        "size": item.size,
        "image": {"height": item.height, "width": item.width},
        "status": "done",
        "progress": 100,
        "authorid": item.author_id,
        "authorname": "",
        "urlpreview": base_url + query.format("showPreview"),
        "urlshow": base_url + query.format("showImage"),
        "urldownload": base_url + query.format("download"),
        "viewerattrs": {
            "viewer": "",
            "viewertype": "image",
            "src": base_url + query.format("showImage"),
            "viewerresized": "",
            "objectid": str(item.id),
            "viewergroupby": str(item.chat_id),
            "imchatid": item.chat_id,
            "title": item.name,
            "actions": "[]",
        },
        "mediaurl": {"preview": {"250": base_url + query.format("showPreview")}},
        "istranscribable": False,
        "isvideonote": False,
        "isvoicenote": False,
    }


def dialog_item(state: PortalState, chat: Chat, user_id: int, offset: int) -> dict[str, Any]:
    """The ``imopenlines.dialog.get`` object: snake_case keys, integer ids."""
    last_id = max(chat.message_ids) if chat.message_ids else 0
    role = "owner" if user_id == chat.owner_id else "member" if user_id in chat.member_ids else "guest"
    restrictions = ("avatar", "rename", "extend", "call", "mute", "leave", "leave_owner", "send", "user_list")
    return {
        "id": chat.id,
        "parent_chat_id": 0,
        "parent_message_id": 0,
        "name": chat.title,
        "description": None,
        "owner": chat.owner_id,
        "extranet": False,
        "avatar": "",
        "color": chat.color,
        "type": "lines" if chat.is_lines else "chat",
        "counter": 0,
        "user_counter": len(chat.member_ids),
        "message_count": len(chat.message_ids),
        "unread_id": 0,
        "restrictions": dict.fromkeys(restrictions, True),
        "last_message_id": last_id,
        "last_id": last_id,
        "marked_id": 0,
        "disk_folder_id": 0,
        "entity_type": chat.entity_type,
        "entity_id": chat.user_code,
        "entity_data_1": entity_data_1(state, chat),
        "entity_data_2": entity_data_2(chat),
        "entity_data_3": "N" if chat.is_lines else "",
        "mute_list": [],
        "date_create": iso(chat.date_create, offset),
        "message_type": "L" if chat.is_lines else "C",
        "public": "",
        "role": role,
        "entity_link": {"type": chat.entity_type, "url": "", "id": chat.user_code},
        "text_field_enabled": True,
        "background_id": None,
        "permissions": {_snake(k): v for k, v in _PERMISSIONS.items()},
        "is_new": False,
        "readed_list": [],
        "manager_list": [chat.owner_id] if in_session(state, chat) else [],
        "last_message_views": {"message_id": last_id, "first_viewers": [], "count_of_viewers": 0},
        "dialog_id": f"chat{chat.id}",
    }


def portal_user_record(user: User, offset: int) -> dict[str, Any]:
    """
    A user the way ``user.current`` and ``user.get`` return it: the fields of the documentation's real answers
    (``TIMESTAMP_X`` in the site's date format, empty personal fields as ``""``).
    """
    return {
        "ID": str(user.id),
        "ACTIVE": True,
        "NAME": user.first_name,
        "LAST_NAME": user.last_name,
        "SECOND_NAME": "",
        "EMAIL": f"{user.first_name.lower()}.{user.last_name.lower()}@sandbox.example",
        "LAST_LOGIN": iso(SEED_EPOCH, offset),
        "DATE_REGISTER": iso(SEED_EPOCH - 69 * 86400, offset),
        "IS_ONLINE": "N",
        "TIME_ZONE_OFFSET": str(offset * 60),
        "TIMESTAMP_X": _zoned(SEED_EPOCH - 69 * 86400, offset).strftime("%d.%m.%Y %H:%M:%S"),
        "LAST_ACTIVITY_DATE": "2026-03-11 09:00:00",
        "PERSONAL_GENDER": user.gender,
        "PERSONAL_BIRTHDAY": "",
        "WORK_POSITION": user.work_position or "",
        "UF_EMPLOYMENT_DATE": "",
        "UF_DEPARTMENT": list(user.departments),
        "USER_TYPE": "employee",
    }


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()
