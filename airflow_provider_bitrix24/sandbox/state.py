"""
In-memory data of the sandbox portal and its deterministic seed.

Every id below is stable across starts and resets; :data:`SEED` names them so tests need no magic numbers.

Users
    1 Anna Admin (administrator, operator of lines 1 and 2, owner of the default webhook and of the OAuth tokens),
    2 Boris Petrov (operator of line 1, owner of the "limited" webhook), 3 Clara Smirnova (operator of lines 2
    and 3), 4 Helper Bot (``bot: true``), 101-109 external clients (``connector: true``,
    ``externalAuthId: "imconnector"``); 109 writes in the pool chats.

Lines
    1 Support (queue 1, 2), 2 Sales (queue 1, 3), 3 VIP (queue 3 only: nobody else may open its chats).

Open-line chats (``entityType`` ``LINES``), their sessions and what they are for
    * 1763 Support, client 101, sessions 321 (closed) and 335 (current). Session 321 holds a system message with
      an attach (85803), a file message (85807, file 5437) and message 85811 whose text equals quick answer 2 (the
      "same text" branch of ``quick.save``); 85805 has a text no answer has (the "insert" branch). Operator 3 is
      a member without rights on line 1 (``CANT_SAVE_QUICK_ANSWER`` for a webhook of user 3).
    * 1777 Sales, client 103, session 343. Message 85819 was saved before as quick answer 3 and edited
      afterwards (the "same message id" branch updates the answer's text). User 1 is not a member but may join.
      Message 85815 mentions the client (``[USER=103]...[/USER]``), 85847 in chat 1763 has a ``[br]``: the
      history renders both.
    * 1801 Support, client 102, sessions 351, 357 (closed) and 365 (current): three sessions in one chat.
    * 1815 Sales (WhatsApp), client 104, session 371, closed (an inactive chat for ``crm.chat.get``; its
      ``entity_data_1`` names no session).
    * 1830 VIP, client 105, session 381: user 1 may not open it (``ACCESS_DENIED`` / ``ACCESS_ERROR``).
    * 1850 Support, client 106: no session at all (``INVALID_SESSION_ID``). Chats without a CRM link (1850,
      1870, 2001 and the pool) have an empty ``entity_data_2``.
    * 1870 Support, client 108, session 391 without messages (history answers an empty ``message`` map).
    * 2001 Support, client 107, session 401 with ``bulk_messages`` messages of distinct texts, ids from 100001.
    * Pool: ``extra_sessions`` chats 20001, 20002, ... with one session each, 10001, 10002, ..., one client
      message each (ids right after the bulk messages).

Other chats
    1900 "Support team": a group chat (not an open line) with messages 85857 and 85859 (``CHAT_TYPE``).

Quick answers
    1 "Hello! How can I help you?" and 2 "Thank you for contacting us! Have a nice day." on line 1, 3 on line 2
    (saved from message 85819, older text).

Message ids grow with time across the whole portal; seed messages are dated 2026-03-11 from 09:00 UTC on, one
minute per id step. Messages added later (``SandboxPortal.add_message``) get the next id and the current time;
opening a session adds a system message, so a fresh session is never empty.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_bitrix24.sandbox.config import SandboxConfig
from airflow_provider_bitrix24.sandbox.im_events import EventLog, on_message_added

SEED_EPOCH = 1773219600  # 2026-03-11T09:00:00Z
FIRST_SEED_MESSAGE_ID = 85800
BULK_FIRST_MESSAGE_ID = 100001
EXTRA_FIRST_SESSION_ID = 10001
EXTRA_FIRST_CHAT_ID = 20001
POOL_CLIENT_ID = 109
LINES = "LINES"


@dataclass
class User:
    id: int
    first_name: str
    last_name: str
    gender: str = "M"
    work_position: str | None = None
    admin: bool = False
    bot: bool = False
    connector: bool = False
    departments: tuple[int, ...] = ()
    color: str = "#4ba984"

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()

    @property
    def external_auth_id(self) -> str:
        if self.connector:
            return "imconnector"
        return "bot" if self.bot else "socservices"

    @property
    def kind(self) -> str:
        return "bot" if self.bot else "user"


@dataclass
class QuickAnswer:
    id: int
    line_id: int
    name: str
    text: str
    rating: int = 1
    section: str | None = None
    message_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "line_id": self.line_id,
            "message_id": self.message_id,
            "name": self.name,
            "text": self.text,
            "rating": self.rating,
            "section": self.section,
        }


@dataclass
class Line:
    id: int
    name: str
    operator_ids: tuple[int, ...]
    answers: list[QuickAnswer] = field(default_factory=list)


@dataclass
class Message:
    id: int
    chat_id: int
    session_id: int | None
    author_id: int
    date: float
    text: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class FileItem:
    id: int
    chat_id: int
    author_id: int
    date: float
    name: str
    size: int
    width: int
    height: int


@dataclass
class Session:
    id: int
    chat_id: int
    operator_id: int
    date_create: float
    closed: bool = False
    message_ids: list[int] = field(default_factory=list)


@dataclass
class Chat:
    id: int
    title: str
    entity_type: str
    line_id: int
    user_code: str
    owner_id: int
    member_ids: list[int]
    date_create: float
    crm_type: str = "NONE"
    crm_id: int = 0
    color: str = "#ba9c7b"
    message_ids: list[int] = field(default_factory=list)
    session_ids: list[int] = field(default_factory=list)

    @property
    def is_lines(self) -> bool:
        return self.entity_type == LINES

    @property
    def connector(self) -> str:
        return self.user_code.split("|", 1)[0] if self.user_code else ""


@dataclass(frozen=True)
class SeedIds:
    """Ids of the seed data (see the module docstring for what each one is for)."""

    admin_user_id: int = 1
    webhook_user_id: int = 1
    limited_user_id: int = 2
    operator_ids: tuple[int, ...] = (2, 3)
    no_rights_operator_id: int = 3
    bot_user_id: int = 4
    client_user_ids: tuple[int, ...] = (101, 102, 103, 104, 105, 106, 107, 108, 109)
    support_line_id: int = 1
    sales_line_id: int = 2
    vip_line_id: int = 3
    support_chat_id: int = 1763
    support_session_ids: tuple[int, ...] = (321, 335)
    support_session_id: int = 321
    support_latest_session_id: int = 335
    support_user_code: str = "livechat|1|1761|101"
    sales_chat_id: int = 1777
    sales_session_id: int = 343
    sales_user_code: str = "telegrambot|2|1775|103"
    multi_session_chat_id: int = 1801
    multi_session_ids: tuple[int, ...] = (351, 357, 365)
    whatsapp_chat_id: int = 1815
    whatsapp_session_id: int = 371
    restricted_chat_id: int = 1830
    restricted_session_id: int = 381
    restricted_user_code: str = "livechat|3|1829|105"
    restricted_message_id: int = 85853
    no_session_chat_id: int = 1850
    empty_session_chat_id: int = 1870
    empty_session_id: int = 391
    group_chat_id: int = 1900
    group_message_id: int = 85857
    system_message_id: int = 85803
    file_message_id: int = 85807
    file_id: int = 5437
    new_text_message_id: int = 85805
    same_text_message_id: int = 85811
    saved_message_id: int = 85819
    saved_answer_id: int = 3
    support_crm: tuple[str, int] = ("lead", 1205)
    restricted_crm: tuple[str, int] = ("company", 88)
    bulk_chat_id: int = 2001
    bulk_session_id: int = 401
    bulk_message_ids: range = range(BULK_FIRST_MESSAGE_ID, BULK_FIRST_MESSAGE_ID + 3000)
    extra_chat_ids: range = range(EXTRA_FIRST_CHAT_ID, EXTRA_FIRST_CHAT_ID)
    extra_session_ids: range = range(EXTRA_FIRST_SESSION_ID, EXTRA_FIRST_SESSION_ID)

    @classmethod
    def for_config(cls, bulk_messages: int, extra_sessions: int) -> SeedIds:
        """The seed ids of a portal with ``bulk_messages`` bulk messages and ``extra_sessions`` pool sessions."""
        return cls(
            bulk_message_ids=range(BULK_FIRST_MESSAGE_ID, BULK_FIRST_MESSAGE_ID + bulk_messages),
            extra_chat_ids=range(EXTRA_FIRST_CHAT_ID, EXTRA_FIRST_CHAT_ID + extra_sessions),
            extra_session_ids=range(EXTRA_FIRST_SESSION_ID, EXTRA_FIRST_SESSION_ID + extra_sessions),
        )


#: Seed ids of a portal with the default config (3000 bulk messages, no pool sessions).
SEED = SeedIds()

_USERS = [
    User(1, "Anna", "Admin", "F", "Head of Support", admin=True, departments=(1,), color="#df532d"),
    User(2, "Boris", "Petrov", "M", "Support Operator", departments=(1,), color="#4ba984"),
    User(3, "Clara", "Smirnova", "F", "Sales Manager", departments=(2,), color="#58cc47"),
    User(4, "Helper", "Bot", "M", None, bot=True, color="#8474c8"),
    User(101, "John", "Carter", connector=True, color="#ba9c7b"),
    User(102, "Maria", "Lopez", "F", connector=True, color="#f76187"),
    User(103, "Guest", "#17", connector=True, color="#58cc47"),
    User(104, "Peter", "Novak", connector=True, color="#2fc6f6"),
    User(105, "Olga", "Ivanova", "F", connector=True, color="#e89b06"),
    User(106, "Sam", "Quiet", connector=True, color="#ab7761"),
    User(107, "Bulk", "Client", connector=True, color="#29619b"),
    User(108, "Eva", "Silent", "F", connector=True, color="#728f7a"),
    User(POOL_CLIENT_ID, "Pool", "Client", connector=True, color="#3e99ce"),
]

_LINES = [Line(1, "Support", (1, 2)), Line(2, "Sales", (1, 3)), Line(3, "VIP", (3,))]

_LEAD_ATTACH = {
    "attach": [
        {
            "id": 1773219780,
            "blocks": [
                {"link": [{"name": "Lead #1205", "link": "/crm/lead/details/1205/"}]},
                {
                    "grid": [
                        {"display": "ROW", "name": "Name", "value": "John Carter", "colorToken": "base"},
                        {
                            "display": "LINE",
                            "name": "Phone",
                            "value": "+10000000000",
                            "height": 20,
                            "colorToken": "base",
                        },
                    ]
                },
            ],
            "description": "",
            "color": "#df532d",
        }
    ]
}

# (chat id, title, entity type, line, user code, owner, members, crm type, crm id,
#  [(session id, closed, [(message id, author, text, params), ...]), ...])
_MessageSeed = tuple[int, int, str, dict[str, Any]]
_ChatSeed = tuple[int, str, str, int, str, int, list[int], str, int, list[tuple[int, bool, list[_MessageSeed]]]]
# fmt: off
_CHATS: list[_ChatSeed] = [
    (1763, "John Carter - Support", LINES, 1, "livechat|1|1761|101", 1, [101, 1, 3], "LEAD", 1205, [
        (321, True, [
            (85801, 101, "Hello! How do I add an observer to a task?", {}),
            (85803, 0, "[b]A new lead has been created[/b]", _LEAD_ATTACH),
            (85805, 1, "Open the task card and click [b]Observers[/b].", {"connectorMid": ["85806"]}),
            (85807, 1, "Here is a screenshot:", {"connectorMid": ["85808"], "fileId": [5437]}),
            (85809, 101, "Thank you, it works!", {}),
            (85811, 1, "Thank you for contacting us! Have a nice day.", {"connectorMid": ["85812"]}),
        ]),
        (335, False, [
            (85841, 101, "Hi again! I cannot find the Observers button on mobile.", {}),
            (85843, 4, "All operators are busy right now. We will answer shortly.", {}),
            (85845, 1, "Hello! How can I help you?", {"connectorMid": ["85846"]}),
            (85847, 1, "On mobile tap [b]...[/b] in the top-right corner, then [i]Observers[/i].[br]Does it help?",
             {"connectorMid": ["85848"]}),
        ]),
    ]),
    (1777, "Guest #17 - Sales", LINES, 2, "telegrambot|2|1775|103", 3, [103, 3], "LEAD", 1209, [
        (343, False, [
            (85813, 103, "Do you deliver to Berlin?", {}),
            (85815, 3, "[USER=103]Guest #17[/USER], yes, delivery to Berlin takes 2-3 days.",
             {"connectorMid": ["85816"]}),
            (85817, 103, "[b]Great![/b] How much does it cost?", {}),
            (85819, 3, "Delivery is free for orders over 100 EUR.", {"connectorMid": ["85820"]}),
        ]),
    ]),
    (1801, "Maria Lopez - Support", LINES, 1, "livechat|1|1799|102", 2, [102, 2], "CONTACT", 77, [
        (351, True, [
            (85821, 102, "My invoice is wrong.", {}),
            (85823, 2, "Let me check it. What is the invoice number, please?", {"connectorMid": ["85824"]}),
            (85825, 102, "INV-2031", {}),
            (85827, 2, "Fixed: a corrected invoice was sent to your e-mail.", {"connectorMid": ["85828"]}),
        ]),
        (357, True, [
            (85829, 102, "Can I pay by card?", {}),
            (85831, 2, "Yes, we accept Visa and Mastercard.", {"connectorMid": ["85832"]}),
            (85833, 0, "The conversation was closed by the operator.", {}),
        ]),
        (365, False, [
            (85849, 102, "Hello, is anyone there?", {}),
            (85851, 4, "Your position in the queue: 1.", {}),
        ]),
    ]),
    (1815, "Peter Novak - Sales", LINES, 2, "whatsappbytwilio|2|1813|104", 1, [104, 1], "COMPANY", 15, [
        (371, True, [
            (85835, 104, "Hi! Can I change my order? \U0001f642", {}),
            (85837, 1, "Sure, open [url=https://example.com/orders]your orders[/url] and press Edit.",
             {"connectorMid": ["85838"]}),
            (85839, 104, "Done, thanks \U0001f44d", {}),
        ]),
    ]),
    (1830, "Olga Ivanova - VIP", LINES, 3, "livechat|3|1829|105", 3, [105, 3], "COMPANY", 88, [
        (381, False, [
            (85853, 105, "I need a personal offer.", {}),
            (85855, 3, "Our VIP manager will call you today.", {"connectorMid": ["85856"]}),
        ]),
    ]),
    (1850, "Sam Quiet - Support", LINES, 1, "livechat|1|1849|106", 1, [106, 1], "NONE", 0, []),
    (1870, "Eva Silent - Support", LINES, 1, "livechat|1|1869|108", 1, [108, 1], "NONE", 0, [(391, False, [])]),
]
# fmt: on

_GROUP_MESSAGES = [(85857, 2, "Team meeting at 15:00 today."), (85859, 1, "OK, see you there.")]

_GREETING = "Hello! How can I help you?"
_THANKS = "Thank you for contacting us! Have a nice day."
_DELIVERY_OLD = "Delivery is free for orders over 50 EUR."
_ANSWERS = [
    QuickAnswer(1, 1, _GREETING, _GREETING, section="GREETING"),
    QuickAnswer(2, 1, _THANKS, _THANKS, section="COMMON"),
    QuickAnswer(3, 2, _DELIVERY_OLD, _DELIVERY_OLD, section="DELIVERY", message_id=85819),
]


def seed_date(message_id: int) -> float:
    """Creation time of a seed message: one minute per id step from 2026-03-11 09:00 UTC."""
    return float(SEED_EPOCH + (message_id - FIRST_SEED_MESSAGE_ID) * 60)


def answer_name(text: str) -> str:
    """Name of a quick answer: the first 100 characters of its text."""
    return text[:100]


class PortalState:
    """
    Everything the portal stores. Callers hold :attr:`lock` while reading or changing it.

    :param config: Decides the size of the bulk chat and of the session pool.
    """

    def __init__(self, config: SandboxConfig) -> None:
        self.lock = threading.RLock()
        self.config = config
        #: Per-user ``im.v2.Event.*`` queues: every message added through :meth:`add_message` lands there.
        self.events = EventLog()
        self.users: dict[int, User] = {}
        self.lines: dict[int, Line] = {}
        self.chats: dict[int, Chat] = {}
        self.sessions: dict[int, Session] = {}
        self.messages: dict[int, Message] = {}
        self.files: dict[int, FileItem] = {}
        self.seed = SeedIds.for_config(config.bulk_messages, config.extra_sessions)
        self._next_message_id = 0
        self._next_session_id = 0
        self._next_answer_id = 0
        self._load(config)

    # -- seed ---------------------------------------------------------------------------------------------------

    def _load(self, config: SandboxConfig) -> None:
        self.users = {u.id: User(**u.__dict__) for u in _USERS}
        self.lines = {line.id: Line(line.id, line.name, line.operator_ids) for line in _LINES}
        for answer in _ANSWERS:
            self.lines[answer.line_id].answers.append(QuickAnswer(**answer.__dict__))
        self._next_answer_id = max(a.id for a in _ANSWERS) + 1
        for chat_id, title, etype, line_id, code, owner, members, crm_type, crm_id, sessions in _CHATS:
            first = min((m[0] for s in sessions for m in s[2]), default=FIRST_SEED_MESSAGE_ID)
            chat = Chat(
                chat_id, title, etype, line_id, code, owner, list(members), seed_date(first) - 300, crm_type, crm_id
            )
            self.chats[chat_id] = chat
            for session_id, closed, messages in sessions:
                started = seed_date(messages[0][0]) if messages else seed_date(85861)
                self._add_session(Session(session_id, chat_id, owner, started, closed))
                for message_id, author, text, params in messages:
                    date = seed_date(message_id)
                    self._store(Message(message_id, chat_id, session_id, author, date, text, _copy(params)))
        group = Chat(1900, "Support team", "", 0, "", 1, [1, 2, 3], seed_date(85850), color="#4ba984")
        self.chats[group.id] = group
        for message_id, author, text in _GROUP_MESSAGES:
            self._store(Message(message_id, group.id, None, author, seed_date(message_id), text))
        self.files[5437] = FileItem(5437, 1763, 1, seed_date(85807), "screenshot.png", 70855, 646, 615)
        self._load_bulk(config.bulk_messages)
        self._load_pool(config.extra_sessions)
        self._next_message_id = max(self.messages) + 1
        self._next_session_id = max(self.sessions) + 1
        from airflow_provider_bitrix24.sandbox.crm import load_generated  # crm reads this module's types

        load_generated(self, config.generated_sessions, config.generated_messages)

    def _load_bulk(self, count: int) -> None:
        started = float(SEED_EPOCH + 86400)
        chat = Chat(2001, "Bulk Client - Support", LINES, 1, "livechat|1|1999|107", 1, [107, 1], started - 60)
        self.chats[chat.id] = chat
        self._add_session(Session(401, chat.id, 1, started))
        for index in range(count):
            message_id = BULK_FIRST_MESSAGE_ID + index
            author = 107 if index % 2 == 0 else 1
            text = f"Bulk message #{index + 1:05d}: answer template number {index + 1}"
            self._store(Message(message_id, chat.id, 401, author, started + index, text))

    def _load_pool(self, count: int) -> None:
        started = float(SEED_EPOCH + 2 * 86400)
        first_message = max(self.messages) + 1
        for index in range(count):
            chat_id = EXTRA_FIRST_CHAT_ID + index
            session_id = EXTRA_FIRST_SESSION_ID + index
            code = f"livechat|1|{30001 + index}|{POOL_CLIENT_ID}"
            title = f"Pool Client #{index + 1} - Support"
            chat = Chat(chat_id, title, LINES, 1, code, 2, [POOL_CLIENT_ID, 2], started)
            self.chats[chat_id] = chat
            self._add_session(Session(session_id, chat_id, 2, started + index))
            text = f"Pool question #{index + 1}: where is my order?"
            self._store(Message(first_message + index, chat_id, session_id, POOL_CLIENT_ID, started + index, text))

    def _add_session(self, session: Session) -> None:
        self.sessions[session.id] = session
        self.chats[session.chat_id].session_ids.append(session.id)

    def _store(self, message: Message) -> None:
        self.messages[message.id] = message
        self.chats[message.chat_id].message_ids.append(message.id)
        if message.session_id is not None:
            self.sessions[message.session_id].message_ids.append(message.id)

    # -- queries ------------------------------------------------------------------------------------------------

    def latest_session(self, chat: Chat) -> Session | None:
        """The chat's current session (the highest id), or ``None`` for a chat without sessions."""
        return self.sessions[max(chat.session_ids)] if chat.session_ids else None

    def is_operator(self, user_id: int, line_id: int) -> bool:
        line = self.lines.get(line_id)
        return line is not None and user_id in line.operator_ids

    def can_access(self, user_id: int, chat: Chat) -> bool:
        """A member may open the chat; so may any operator of the chat's line (the line lets its queue join)."""
        return user_id in chat.member_ids or (chat.is_lines and self.is_operator(user_id, chat.line_id))

    def chat_by_user_code(self, user_code: str) -> Chat | None:
        for chat in self.chats.values():
            if chat.user_code and chat.user_code == user_code:
                return chat
        return None

    def all_answers(self) -> list[QuickAnswer]:
        """Quick answers of every line, oldest first."""
        return sorted((a for line in self.lines.values() for a in line.answers), key=lambda a: a.id)

    # -- changes ------------------------------------------------------------------------------------------------

    def reserve_message_id(self) -> int:
        message_id = self._next_message_id
        self._next_message_id += 1
        return message_id

    def new_answer_id(self) -> int:
        answer_id = self._next_answer_id
        self._next_answer_id += 1
        return answer_id

    def add_message(
        self,
        session_id: int | None,
        author_id: int,
        text: str,
        message_id: int | None = None,
        date: float | None = None,
        *,
        chat_id: int | None = None,
    ) -> Message:
        """
        Append a message to a session, or, with ``session_id=None``, to the chat ``chat_id``: an open-line chat's
        current session, or no session for a chat without any (group and private chats). The author joins the
        chat if needed.

        :raises KeyError: for an unknown session, chat or author.
        """
        session: Session | None
        if session_id is None:
            found = self.chats.get(chat_id) if chat_id is not None else None
            if found is None:
                raise KeyError(f"chat {chat_id} does not exist")
            session = self.latest_session(found)
        else:
            session = self.sessions.get(session_id)
            if session is None:
                raise KeyError(f"session {session_id} does not exist")
            found = self.chats[session.chat_id]
        if author_id != 0 and author_id not in self.users:
            raise KeyError(f"user {author_id} does not exist")
        chat = found
        message = Message(
            self.reserve_message_id() if message_id is None else message_id,
            chat.id,
            session.id if session is not None else None,
            author_id,
            time.time() if date is None else date,
            text,
        )
        self._store(message)
        if author_id and author_id not in chat.member_ids:
            chat.member_ids.append(author_id)
        on_message_added(self, message)
        return message

    def open_session(self, chat_id: int) -> Session:
        """
        Close the chat's current session and start a new one, announced by a system message.

        :raises KeyError: for an unknown chat; ``ValueError`` for a chat that is not an open line.
        """
        chat = self.chats.get(chat_id)
        if chat is None:
            raise KeyError(f"chat {chat_id} does not exist")
        if not chat.is_lines:
            raise ValueError(f"chat {chat_id} is not an open-line chat")
        current = self.latest_session(chat)
        if current is not None:
            current.closed = True
        session = Session(self._next_session_id, chat.id, chat.owner_id, time.time())
        self._next_session_id += 1
        self._add_session(session)
        self.add_message(session.id, 0, f"[b]A new conversation #{session.id} has started[/b]")
        return session


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
