"""Apps that tests/test_adapters.py serves (importable as ``_adapter_apps`` from tests/).

Each has the same three routes of its own, beside what the adapter serves: ``/echo`` (what
the app received), ``POST /issue`` (a new ticket) and ``POST /reject`` (raises
:class:`BackchannelFail` with the form's ``reason`` and ``ticket``). All configured from the
``CIBA_*`` environment.

``wsgi``: a plain WSGI app inside :func:`ciba_middleware.from_env`; ``flask_app``: Flask with
the extension (its ``app.config`` filled from the environment's ``CIBA_*``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from flask import Flask, request

from ciba_middleware import BackchannelFail, from_env
from ciba_middleware.config import VARIABLES
from ciba_middleware.flask import CibaMiddleware

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment


def _inner(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    if path == "/issue":
        answer = wsgi.store.issue(wsgi.service_id).encode()
    elif path == "/reject":
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        raise BackchannelFail(form["reason"], ticket=form.get("ticket") or None)
    else:
        answer = json.dumps({"path": path, "body": body.decode("latin-1"), "app": "wsgi"}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))])
    return [answer]


wsgi = from_env(_inner)

flask_app = Flask(__name__)
# The settings from the environment, as from_env reads them (the test run's own CIBA_TEST_*,
# CIBA_SDIST_DIR ... are not settings, and the extension refuses unknown CIBA_* keys).
flask_app.config.update({k: v for k, v in os.environ.items() if k in VARIABLES})
ciba = CibaMiddleware(flask_app)


@flask_app.route("/echo", methods=["GET", "POST"])
def echo() -> Any:
    return {"path": request.path, "body": request.get_data().decode("latin-1"), "app": "flask"}


@flask_app.post("/issue")
def issue() -> str:
    return ciba.issue_ticket()


@flask_app.post("/reject")
def reject() -> str:
    raise BackchannelFail(request.form["reason"], ticket=request.form.get("ticket") or None)
