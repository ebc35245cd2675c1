"""
JSON shapes of portal objects, key for key as the real portal sends them.

``imopenlines.session.history.get`` items went through the portal's key encoder (``CHAT_ID`` -> ``chatId`` but
``chatId`` -> ``chatid``), so they mix camelCase and lower-case keys; ``imopenlines.dialog.get`` uses snake_case
with integer ids. Empty maps are ``[]``, as PHP encodes them.
"""

from __future__ import annotations

import html
import re
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
    (re.compile(r"\[user=\d+\](.*?)\[/user\]", re.IGNORECASE | re.DOTALL), r"\1"),
]


def iso(timestamp: float, offset_minutes: int) -> str:
    """ISO-8601 with the portal's offset, like PHP ``date('c')``."""
    zone = timezone.utc if offset_minutes == 0 else timezone(timedelta(minutes=offset_minutes))
    return datetime.fromtimestamp(int(timestamp), tz=zone).isoformat()


def bb_to_html(text: str) -> str:
    """The ``textlegacy`` form of a BB-code message text."""
    result = html.escape(text, quote=False)
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


def entity_data_1(state: PortalState, chat: Chat) -> str:
    """``CRM|CRM_ENTITY_TYPE|CRM_ENTITY_ID|PAUSE|WAIT_ACTION|SESSION_ID|DATE_CREATE|LINE_ID|BLOCK_DATE|BLOCK_REASON``."""
    if not chat.is_lines:
        return ""
    session = state.latest_session(chat)
    crm = "Y" if chat.crm_type != "NONE" else "N"
    session_id = session.id if session else 0
    started = int(session.date_create) if session else 0
    return f"{crm}|{chat.crm_type}|{chat.crm_id}|N|N|{session_id}|{started}|{chat.line_id}|0|0"


def entity_data_2(chat: Chat) -> str:
    """CRM bindings: ``LEAD|<id>|COMPANY|<id>|CONTACT|<id>|DEAL|<id>``."""
    if not chat.is_lines:
        return ""
    return "|".join(f"{kind}|{chat.crm_id if chat.crm_type == kind else 0}" for kind in CRM_TYPES)


def message_item(message: Message, offset: int) -> dict[str, Any]:
    return {
        "id": str(message.id),
        "chatid": str(message.chat_id),
        "senderid": str(message.author_id),
        "recipientid": f"chat{message.chat_id}",
        "date": iso(message.date, offset),
        "text": message.text,
        "textlegacy": bb_to_html(message.text),
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
        "managerList": [chat.owner_id],
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
        "manager_list": [chat.owner_id],
        "last_message_views": {"message_id": last_id, "first_viewers": [], "count_of_viewers": 0},
        "dialog_id": f"chat{chat.id}",
    }


def portal_user_record(user: User, offset: int) -> dict[str, Any]:
    """A user the way ``user.current`` and ``user.get`` return it."""
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
        "LAST_ACTIVITY_DATE": "2026-03-11 09:00:00",
        "PERSONAL_GENDER": user.gender,
        "WORK_POSITION": user.work_position or "",
        "UF_DEPARTMENT": list(user.departments),
        "USER_TYPE": "employee",
    }


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()
