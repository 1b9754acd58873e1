"""Keeping secrets out of what is printed or logged: store URLs and the messages that quote them.

A store URL may carry a password in its user info (``redis://:pw@host``) or in its query
(``?password=pw``, ``?sentinel_password=pw``, as libpq and redis-py allow). :func:`mask_url`
shows such a URL with ``***`` in their place; :func:`scrub` takes them out of any text, such
as a backend's error message that quotes the URL it was given.

URLs are split by hand, not with :func:`urllib.parse.urlsplit`: that refuses some URLs the
stores accept or must reject readably (a list of hosts with an IPv6 address in it, an
unclosed ``[``), and a message about a bad URL must still hide its password.
"""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import unquote

__all__ = ["mask_url", "scrub"]

# Query parameters that carry a password in libpq and redis-py URLs (``*password`` covers
# sentinel_password and ssl_password).
_SECRET_QUERY = re.compile(r"(?i)(^|&)(\w*password|passwd|pass|secret|token)=([^&#]*)")


class _Url(NamedTuple):
    head: str  # "scheme://", or "" for a URL without one
    user: str
    password: str | None
    hosts: str
    path: str
    query: str
    #: The user info could not be told from the rest (an unencoded "/", "?" or "#" in it).
    ambiguous: bool


def _split(url: str) -> _Url:
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    userinfo, at, hosts = netloc.rpartition("@")
    path, _, query = tail.partition("?")
    user, colon, password = userinfo.partition(":")
    return _Url(
        f"{scheme}{sep}", user, password if colon else None, hosts, path, query, ambiguous=not at and "@" in tail
    )


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, fit to print or log.

    >>> mask_url("postgresql://app:s3cret@db:5432/ciba?sslmode=require")
    'postgresql://app:***@db:5432/ciba?sslmode=require'
    >>> mask_url("redis+sentinel://s1,[::1]:26379/main?sentinel_password=pw")
    'redis+sentinel://s1,[::1]:26379/main?sentinel_password=***'
    """
    parts = _split(url)
    if parts.ambiguous:
        return f"{parts.head}***"
    netloc = parts.hosts
    if parts.password is not None:
        netloc = f"{parts.user}:***@{netloc}"
    elif parts.user:
        netloc = f"{parts.user}@{netloc}"
    query = _SECRET_QUERY.sub(lambda m: f"{m.group(1)}{m.group(2)}=***", parts.query)
    return f"{parts.head}{netloc}{parts.path}{'?' if '?' in url else ''}{query}"


def scrub(text: str, url: str) -> str:
    """``text`` without the passwords of ``url``, in case a backend's message quotes one."""
    parts = _split(url)
    found = [m.group(3) for m in _SECRET_QUERY.finditer(parts.query)]
    if parts.password:
        found.append(parts.password)
    for secret in found:
        for form in sorted({secret, unquote(secret)}, key=len, reverse=True):
            if form:
                text = text.replace(form, "***")
    return text
