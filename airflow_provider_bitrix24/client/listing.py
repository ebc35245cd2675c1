"""
Keyset listing: stream every row of a ``*.list`` method in the portal's fast mode.

The portal's own guide for large reads (``settings/performance/huge-data.md``) pages by id instead of by offset:
order by ``ID`` ascending, filter ``>ID`` with the last id received, pass ``start=-1`` so that the portal does not
count the whole selection on every page, and stop at the first page shorter than 50 rows. Offset paging (``next``)
makes the portal count the selection on every page (the guide measured 49.9 s per page on 2.39 M leads against
0.097 s without the count).

:class:`KeysetPlan` is the sans-IO plan: which commands the next request carries, and what a page's answer means.
After the first page, several pages travel in one ``batch`` request, each command taking its ``>ID`` from the last
row of the command before it (``$result[p0][49][ID]``); the number of pages per request doubles after each request
of full pages (2, 4, 8 ... up to 50), so a short list costs one plain call and a long one a few requests, and at most
one request's worth of commands is spent past the end of the list. Pages after the first short one are discarded
(their reference did not resolve). :func:`iter_list` and :func:`aiter_list` drive the plan with a client's public
``call`` and ``batch``, so every request is paced by the client's limiter and operating-time budget.

Rows are yielded as they arrive; at most one request's pages (50 x 50 rows) are held at once.

Newer methods wrap their rows (``crm.item.list`` -> ``{"items": [...]}``, ``tasks.task.list`` ->
``{"tasks": [...]}``) and spell the id ``id``: the wrapper is learnt from the first answer and the id's spelling from
the first row; the filter and order keys come from :data:`SHAPES` for the methods known to spell them in lower
case, or from ``id_key``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from airflow_provider_bitrix24.client.core import Command
from airflow_provider_bitrix24.client.errors import Bitrix24ConfigError, Bitrix24Error, Bitrix24ResponseError

if TYPE_CHECKING:
    from airflow_provider_bitrix24.client.aio import AsyncBitrix24Client
    from airflow_provider_bitrix24.client.sync import Bitrix24Client

#: Rows per page of every list method (the portal's fixed page size).
PAGE_SIZE: Final = 50
#: Most pages one ``batch`` request carries (the portal's limit of commands per batch).
MAX_PAGES_PER_REQUEST: Final = 50

#: The key of a method's filter and order on its id, for methods that spell it in lower case (the rest use ``ID``).
SHAPES: Final[Mapping[str, str]] = {
    "crm.item.list": "id",
    "crm.type.list": "id",
    "crm.item.productrow.list": "id",
}


@dataclass
class _Shape:
    """Where a page's rows are (``wrapper``: ``items``, ``tasks``... or ``None``) and how the id is spelled."""

    wrapper: str | None = None
    row_id: str | None = None


def _id_of(value: Any, method: str) -> int:
    if isinstance(value, bool):
        raise Bitrix24ResponseError("INVALID_RESPONSE", f"a row's id is {value!r}", status=200, method=method)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value.strip())
    raise Bitrix24ResponseError(
        "INVALID_RESPONSE", f"a row's id {str(value)[:40]!r} is not a whole number", status=200, method=method
    )


class KeysetPlan:
    """
    The plan of one keyset listing.

    The driver asks :meth:`next_commands` for the next request (one command: a plain call; more: one ``batch``
    request whose commands chain by reference), hands :meth:`feed` the outcome of each command in order (its
    ``result``, or the :class:`Bitrix24Error` it failed with), yields the rows :meth:`feed` returns, and stops once
    :attr:`done`.

    :param method: The list method, e.g. ``crm.activity.list``.
    :param params: The method's parameters: ``filter``, ``select`` and any other are kept; ``order`` may only be
        ascending by id (the mode needs it); ``start`` is replaced by ``-1``. A ``>ID`` in ``filter`` is where the
        listing starts (rows with a greater id), which resumes an earlier listing.
    :param id_key: How the method's filter and order spell the id (``ID`` or ``id``); by default from
        :data:`SHAPES`, else ``ID``.
    :param pages_per_request: The most pages one request carries (1: one plain call per page, no ``batch``).
    :raises Bitrix24ConfigError: naming ``params``, ``order``, ``filter``, ``select`` or ``pages_per_request``.
    """

    def __init__(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        id_key: str | None = None,
        pages_per_request: int = MAX_PAGES_PER_REQUEST,
    ) -> None:
        if not isinstance(method, str) or not method.strip():
            raise Bitrix24ConfigError("method", "must be the name of a list method such as 'crm.activity.list'")
        if params is not None and not isinstance(params, Mapping):
            raise Bitrix24ConfigError("params", f"must be a mapping of the method's parameters, not {type(params)}")
        if isinstance(pages_per_request, bool) or not isinstance(pages_per_request, int):
            raise Bitrix24ConfigError("pages_per_request", "must be a whole number from 1 to 50")
        if not 1 <= pages_per_request <= MAX_PAGES_PER_REQUEST:
            raise Bitrix24ConfigError("pages_per_request", f"must be from 1 to 50, not {pages_per_request}")
        self.method = method
        self.key = id_key or SHAPES.get(method.strip().lower(), "ID")
        if self.key not in ("ID", "id"):
            raise Bitrix24ConfigError("id_key", f"must be 'ID' or 'id', not {self.key!r}")
        self.max_pages = pages_per_request
        query = dict(params or {})
        self.filter = self._filter(query.pop("filter", None))
        self.last_id: int | None = None
        for key in (f">{self.key}", ">ID", ">id"):
            if key in self.filter:
                value = self.filter.pop(key)
                try:
                    self.last_id = _id_of(value, method)
                except Bitrix24ResponseError:
                    raise Bitrix24ConfigError("filter", f"{key} must be a whole number, not {value!r}") from None
        self._check_order(query.pop("order", None))
        query.pop("start", None)
        select = query.get("select")
        if select is not None:
            if isinstance(select, str) or not isinstance(select, Sequence):
                raise Bitrix24ConfigError("select", "must be a list of field names")
            if "*" not in select and not any(str(f).upper() == "ID" for f in select):
                query["select"] = [self.key, *select]
        self.base = query
        self.shape = _Shape()
        self.pages = 1
        self.done = False
        #: Requests planned so far.
        self.requests = 0

    @staticmethod
    def _filter(value: Any) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise Bitrix24ConfigError("filter", "must be a mapping of conditions, e.g. {'PROVIDER_ID': 'X'}")
        return dict(value)

    def _check_order(self, order: Any) -> None:
        if order is None:
            return
        if (
            isinstance(order, Mapping)
            and all(str(k).upper() == "ID" for k in order)
            and all(str(v).strip().upper() == "ASC" for v in order.values())
        ):
            return
        raise Bitrix24ConfigError(
            "order", f"keyset listing goes by id ascending; leave order out or pass {{{self.key!r}: 'ASC'}}"
        )

    def _params(self, after: Any) -> dict[str, Any]:
        query = dict(self.base)
        conditions = dict(self.filter)
        if after is not None:
            conditions[f">{self.key}"] = after
        query["filter"] = conditions
        query["order"] = {self.key: "ASC"}
        query["start"] = -1
        return query

    def _reference(self, previous: str) -> str:
        path = f"[{previous}]"
        if self.shape.wrapper is not None:
            path += f"[{self.shape.wrapper}]"
        return f"$result{path}[{PAGE_SIZE - 1}][{self.shape.row_id or self.key}]"

    def next_commands(self) -> list[tuple[str, Command]]:
        """The commands of the next request, keyed ``p0``, ``p1``...; empty once the listing is done."""
        if self.done:
            return []
        self.requests += 1
        commands: list[tuple[str, Command]] = [("p0", (self.method, self._params(self.last_id)))]
        for index in range(1, self.pages):
            commands.append((f"p{index}", (self.method, self._params(self._reference(f"p{index - 1}")))))
        return commands

    def _rows(self, result: Any) -> list[Any]:
        if isinstance(result, list):
            return result
        if isinstance(result, Mapping):
            if self.shape.wrapper is not None and isinstance(result.get(self.shape.wrapper), list):
                return list(result[self.shape.wrapper])
            lists = [(k, v) for k, v in result.items() if isinstance(v, list)]
            if len(result) == 1 and len(lists) == 1:
                self.shape.wrapper = str(lists[0][0])
                return list(lists[0][1])
            if not result:
                return []
        raise Bitrix24ResponseError(
            "INVALID_RESPONSE", "a page of the list is neither a list of rows nor one wrapped", status=200,
            method=self.method,
        )  # fmt: skip

    def _row_id(self, row: Any) -> int:
        if not isinstance(row, Mapping):
            raise Bitrix24ResponseError("INVALID_RESPONSE", "a row is not an object", status=200, method=self.method)
        key = self.shape.row_id
        if key is None:
            key = next((k for k in ("ID", "id", self.key) if k in row), None)
            if key is None:
                raise Bitrix24ResponseError(
                    "INVALID_RESPONSE", "a row has no ID (select it)", status=200, method=self.method
                )
            self.shape.row_id = key
        if key not in row:
            raise Bitrix24ResponseError("INVALID_RESPONSE", f"a row has no {key}", status=200, method=self.method)
        return _id_of(row[key], self.method)

    def feed(self, outcomes: Sequence[Any]) -> list[Any]:
        """
        Read the outcome of each command of the last request, in order; return the new rows.

        :raises Bitrix24Error: the first command's permanent error; any other error only shrinks the next request
            to one plain call (which has the client's retries), starting after the last row received.
        :raises Bitrix24ResponseError: for rows whose ids do not grow (the method ignored the keyset filter).
        """
        rows: list[Any] = []
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, Bitrix24Error):
                if index == 0 and not outcome.retryable:
                    raise outcome
                self.pages = 1  # go on after the last row with one plain call, which has the client's retries
                return rows
            page = self._rows(outcome)
            for row in page:
                row_id = self._row_id(row)
                if self.last_id is not None and row_id <= self.last_id:
                    raise Bitrix24ResponseError(
                        "INVALID_RESPONSE",
                        f"row id {row_id} does not follow {self.last_id}: the method does not page by id "
                        "(use list_all)",
                        status=200,
                        method=self.method,
                    )
                self.last_id = row_id
            rows.extend(page)
            if len(page) < PAGE_SIZE:
                self.done = True
                return rows
        self.pages = min(self.max_pages, max(2, self.pages * 2)) if self.max_pages > 1 else 1
        return rows


def _outcomes(items: Sequence[Any]) -> list[Any]:
    return [item.error if item.error is not None else item.result for item in items]


def iter_list(
    client: Bitrix24Client,
    method: str,
    params: Mapping[str, Any] | None = None,
    *,
    id_key: str | None = None,
    pages_per_request: int = MAX_PAGES_PER_REQUEST,
) -> Iterator[Any]:
    """
    Every row of a list method, ascending by id, in keyset mode (see :class:`KeysetPlan` for the parameters).

    Rows are yielded as their request's answer arrives; stop iterating at any time.
    """
    plan = KeysetPlan(method, params, id_key=id_key, pages_per_request=pages_per_request)
    while commands := plan.next_commands():
        if len(commands) == 1:
            outcomes: list[Any] = [client.call(*commands[0][1])]
        else:
            outcomes = _outcomes(client.batch(dict(commands), halt=True))
        yield from plan.feed(outcomes)


async def aiter_list(
    client: AsyncBitrix24Client,
    method: str,
    params: Mapping[str, Any] | None = None,
    *,
    id_key: str | None = None,
    pages_per_request: int = MAX_PAGES_PER_REQUEST,
) -> AsyncIterator[Any]:
    """:func:`iter_list` for the asynchronous client."""
    plan = KeysetPlan(method, params, id_key=id_key, pages_per_request=pages_per_request)
    while commands := plan.next_commands():
        if len(commands) == 1:
            outcomes: list[Any] = [await client.call(*commands[0][1])]
        else:
            outcomes = _outcomes(await client.batch(dict(commands), halt=True))
        for row in plan.feed(outcomes):
            yield row
