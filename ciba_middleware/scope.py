"""An ASGI scope read into the core's :class:`~ciba_middleware.core.Request`.

One reading for every ASGI transport: the ASGI middleware (:mod:`ciba_middleware.asgi`) and
Django served under ASGI (:mod:`ciba_middleware.django`) both read a scope through
:func:`scope_paths`, :func:`scope_headers` and :func:`scope_request`, so that a path, a
repeated header or a missing ``Host`` means the same to both. Framework-free.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any
from urllib.parse import unquote_to_bytes

from .core import Request, Route
from .request import Body
from .tuples import new_tuple

__all__ = ["CONTENT_LENGTH", "CONTENT_TYPE", "TRANSFER_ENCODING", "scope_headers", "scope_paths", "scope_request"]

Scope = MutableMapping[str, Any]

# The request headers the fail API reads, by their ASGI (lower-case byte) names.
_AUTHORIZATION = b"authorization"
CONTENT_TYPE = b"content-type"
CONTENT_LENGTH = b"content-length"
TRANSFER_ENCODING = b"transfer-encoding"
_REQUEST_ID = b"request-id"
_X_REQUEST_ID = b"x-request-id"
_DPOP = b"dpop"
_HOST = b"host"
_TRACEPARENT = b"traceparent"
_ACCEPT = b"accept"
_WANTED = frozenset(
    (
        *(_AUTHORIZATION, CONTENT_TYPE, CONTENT_LENGTH, TRANSFER_ENCODING, _REQUEST_ID, _X_REQUEST_ID),
        *(_DPOP, _HOST, _TRACEPARENT, _ACCEPT),
    )
)


def scope_paths(scope: Scope) -> tuple[str, str]:
    """The mount and the path below it, as WSGI's ``SCRIPT_NAME`` and ``PATH_INFO`` have them
    (the raw bytes, percent-decoded, as latin-1), from an ASGI scope.

    ``raw_path`` (the bytes sent) is decoded here rather than ``path`` taken as given: a
    server decodes ``path`` as UTF-8, losing bytes that are not. ``root_path`` is the mount
    (a Starlette ``Mount``, ``--root-path``); servers from before ASGI put it in ``path``, and
    a proxy that strips it leaves it out of ``raw_path``: either way the path below it is the
    same, and the mount is part of the URL.
    """
    raw: bytes | None = scope.get("raw_path")
    root: str = scope.get("root_path", "")
    if not root and raw is not None and b"%" not in raw and (path := scope["path"]).isascii():
        return "", path  # the usual request: sent as ASCII without escapes, so path is the raw path
    if raw is not None:
        raw = raw.partition(b"?")[0]
        full = (unquote_to_bytes(raw) if b"%" in raw else raw).decode("latin-1")
    else:
        path = scope["path"]
        full = path if path.isascii() else path.encode("utf-8").decode("latin-1")
    if not root:
        return "", full
    if not root.isascii():
        root = root.encode("utf-8").decode("latin-1")
    if full.startswith(root) and full[len(root) : len(root) + 1] in ("", "/"):
        return root, full[len(root) :]
    return root, full


def scope_headers(scope: Scope) -> dict[bytes, bytes]:
    """The request's headers by name, the ones the API reads joined as a WSGI server joins them."""
    raw = scope["headers"]
    if type(raw) is not list:
        raw = list(raw)  # any iterable, as ASGI allows
    # All at once, in C; only when a name came twice are the ones read here joined.
    headers: dict[bytes, bytes] = dict(raw)
    if len(headers) != len(raw):
        headers = {}
        for name, value in raw:
            if name in _WANTED:
                headers[name] = headers[name] + b"," + value if name in headers else value
    return headers


def scope_request(
    scope: Scope, headers: Mapping[bytes, bytes], route: Route, root: str, path: str, body: Body
) -> Request:
    """The core's :class:`~ciba_middleware.core.Request` of an ASGI scope (``headers``:
    :func:`scope_headers`; ``root`` and ``path``: :func:`scope_paths`)."""
    get = headers.get
    client = scope.get("client")
    request_id = get(_REQUEST_ID)
    x_request_id = get(_X_REQUEST_ID)
    traceparent = get(_TRACEPARENT)
    host = get(_HOST)
    return new_tuple(
        Request,
        (
            route,
            scope["method"],
            get(_AUTHORIZATION, b"").decode("latin-1"),
            body,
            client[0] if client else None,
            None if request_id is None else request_id.decode("latin-1"),
            None if x_request_id is None else x_request_id.decode("latin-1"),
            get(_DPOP, b"").decode("latin-1"),
            None if traceparent is None else traceparent.decode("latin-1"),
            scope.get("scheme", "http"),
            "" if host is None else host.decode("latin-1"),
            scope.get("server") if host is None else None,
            root,
            path,
        ),
    )


def endpoint_headers(headers: Mapping[bytes, bytes]) -> tuple[str, str]:
    """``Authorization`` and ``Accept``, what a health or metrics endpoint reads."""
    return headers.get(_AUTHORIZATION, b"").decode("latin-1"), headers.get(_ACCEPT, b"").decode("latin-1")
