"""WSGI apps for the fault tests under gunicorn (``hardening._fault_apps:application``).

The fail API from ``CIBA_*`` around an app that misbehaves on purpose:
``/raise`` raises, ``/raise-late`` raises while its body is iterated, ``/close`` streams a
generator whose ``close()`` writes ``CIBA_TEST_CLOSE_FILE``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ciba_middleware import from_env


class AppError(Exception):
    """The app's own error: it must reach the server as it is."""


def misbehaving_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    if path == "/raise":
        raise AppError("the app failed on its own")
    if path == "/raise-late":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _late()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return _closing()


def _late() -> Iterator[bytes]:
    yield b"first "
    raise AppError("the app failed while streaming")


def _closing() -> Iterator[bytes]:
    try:
        yield b"a"
        yield b"b"
    finally:
        marker = os.environ.get("CIBA_TEST_CLOSE_FILE")
        if marker:
            Path(marker).write_text("closed")


application = from_env(misbehaving_app)
