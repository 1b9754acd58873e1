"""Keeping secrets out of what is printed or logged: store URLs and the messages that quote them.

A store URL may carry a password in its user info (``redis://:pw@host``) or in its query
(``?password=pw``, as libpq and redis-py allow). :func:`mask_url` shows such a URL with
``***`` in their place; :func:`scrub` takes them out of any text, such as a backend's error
message that quotes the URL it was given.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

__all__ = ["mask_url", "scrub"]

# Query parameters that carry a password in libpq and redis-py URLs.
_SECRET_QUERY = re.compile(r"(?i)(^|&)(password|passwd|pass|secret|token|sentinel_password)=([^&]*)")


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, fit to print or log.

    >>> mask_url("postgresql://app:s3cret@db:5432/ciba?sslmode=require")
    'postgresql://app:***@db:5432/ciba?sslmode=require'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        # Not even a URL (an unclosed "[" of an IPv6 host): show nothing that could be a secret.
        return url.partition("://")[0] + "://***"
    masked = url
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        # The netloc comes first after "scheme://", so the first occurrence is the one.
        masked = masked.replace(f"{userinfo}@", f"{userinfo.partition(':')[0]}:***@", 1)
    if parts.query:
        query = _SECRET_QUERY.sub(lambda m: f"{m.group(1)}{m.group(2)}=***", parts.query)
        masked = masked.replace(f"?{parts.query}", f"?{query}", 1)
    return masked


def scrub(text: str, url: str) -> str:
    """``text`` without the passwords of ``url``, in case a backend's message quotes one."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return text
    found = [m.group(3) for m in _SECRET_QUERY.finditer(parts.query)]
    if password:
        found.append(password)
    for secret in found:
        for form in sorted({secret, unquote(secret)}, key=len, reverse=True):
            if form:
                text = text.replace(form, "***")
    return text
