"""
Request parameters the way PHP sees them.

The portal accepts a query string, a JSON body, an ``application/x-www-form-urlencoded`` body and a
``multipart/form-data`` body, and merges the query with the body (body wins, key by key at the top level). Form and
query names use PHP bracket syntax: ``fields[PHONE][0][VALUE]=1`` nests, ``select[]=ID`` appends. Nested maps whose
keys are exactly ``0..n-1`` become lists, as PHP arrays do when they reach JSON.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote_plus

_NAME = re.compile(r"^([^\[]+)((?:\[[^\]]*\])*)")
_KEY = re.compile(r"\[([^\]]*)\]")
_TRUE = {"1", "true", "y", "yes", "on"}


def parse_query(query: str) -> dict[str, Any]:
    """Parse a query string or form body with PHP bracket names."""
    result: dict[str, Any] = {}
    for pair in query.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        assign(result, unquote_plus(name), unquote_plus(value))
    return _normalize_top(result)


def assign(target: dict[str, Any], name: str, value: Any) -> None:
    """Store ``value`` under the PHP-style ``name`` (``a[b][]``) inside ``target``."""
    match = _NAME.match(name)
    path = [match.group(1), *_KEY.findall(match.group(2))] if match else [name]
    if match and match.group(2) == "" and "[" in name[len(match.group(1)) :]:
        path = [name]
    current = target
    for position, key in enumerate(path):
        if key == "" and position > 0:
            key = _next_index(current)
        if position == len(path) - 1:
            current[key] = value
            return
        child = current.get(key)
        if not isinstance(child, dict):
            child = {}
            current[key] = child
        current = child


def parse_body(body: bytes, content_type: str) -> dict[str, Any]:
    """Parse a request body by its content type; an unreadable body yields no parameters."""
    if not body:
        return {}
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "multipart/form-data":
        return parse_multipart(body, content_type)
    text = body.decode("utf-8", "replace")
    if "json" in kind or (not kind and text.lstrip().startswith("{")):
        try:
            data = json.loads(text)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}
    if kind in ("application/x-www-form-urlencoded", ""):
        return parse_query(text.strip())
    return {}


def parse_multipart(body: bytes, content_type: str) -> dict[str, Any]:
    """
    Parse ``multipart/form-data``; file parts become ``{"name", "size", "content_type"}``.

    Only the structure the portal needs is read: the part's ``name``, optional ``filename`` and content.
    """
    boundary = _header_param(content_type, "boundary")
    if not boundary:
        return {}
    result: dict[str, Any] = {}
    for part in body.split(b"--" + boundary.encode("latin-1"))[1:]:
        if part.startswith(b"--"):
            break
        if part.startswith(b"\r\n"):
            part = part[2:]
        raw_headers, _, content = part.partition(b"\r\n\r\n")
        if content.endswith(b"\r\n"):
            content = content[:-2]
        headers = _part_headers(raw_headers.decode("utf-8", "replace"))
        disposition = headers.get("content-disposition", "")
        name = _header_param(disposition, "name")
        if name is None:
            continue
        filename = _header_param(disposition, "filename")
        value: Any
        if filename is not None:
            value = {
                "name": filename,
                "size": len(content),
                "content_type": headers.get("content-type", "application/octet-stream"),
            }
        else:
            value = content.decode("utf-8", "replace")
        assign(result, name, value)
    return _normalize_top(result)


def merge(query: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """Query parameters overridden by body parameters, key by key at the top level."""
    merged = dict(query)
    merged.update(body)
    return merged


def to_int(value: Any) -> int:
    """An integer parameter the way PHP's ``(int)`` reads it: garbage and absence are 0."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, str):
        match = re.match(r"^\s*([+-]?\d+)", value)
        return int(match.group(1)) if match else 0
    return 0


def is_true(value: Any) -> bool:
    """A boolean flag sent as ``true``/``1``/``Y`` (and their JSON forms)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        return value.strip().lower() in _TRUE
    return False


def upper_keys(params: dict[str, Any]) -> dict[str, Any]:
    """Top-level keys upper-cased (what ``imopenlines.dialog.get`` does to its input)."""
    return {str(k).upper(): v for k, v in params.items()}


def normalize(value: Any) -> Any:
    """Maps keyed exactly ``0..n-1`` (in order) become lists, recursively."""
    if isinstance(value, dict):
        items = {k: normalize(v) for k, v in value.items()}
        if items and list(items) == [str(i) for i in range(len(items))]:
            return list(items.values())
        return items
    if isinstance(value, list):
        return [normalize(v) for v in value]
    return value


def _normalize_top(params: dict[str, Any]) -> dict[str, Any]:
    return {k: normalize(v) for k, v in params.items()}


def _next_index(container: dict[str, Any]) -> str:
    numbers = [int(k) for k in container if k.lstrip("-").isdigit()]
    return str(max(numbers) + 1 if numbers else 0)


def _part_headers(raw: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in raw.split("\r\n"):
        key, sep, value = line.partition(":")
        if sep:
            headers[key.strip().lower()] = value.strip()
    return headers


def _header_param(header: str, name: str) -> str | None:
    match = re.search(rf'(?:^|;)\s*{name}=(?:"((?:[^"\\]|\\.)*)"|([^;]*))', header, re.IGNORECASE)
    if not match:
        return None
    return match.group(1) if match.group(1) is not None else match.group(2).strip()
