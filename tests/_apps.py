"""WSGI apps that tests serve under gunicorn (importable as ``_apps`` from tests/)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from flask import Flask, Response

from ciba_middleware import from_env

flask_app = Flask(__name__)


@flask_app.get("/hello")
def hello() -> Response:
    return Response("hello from the app", status=201, headers={"X-App": "yes"}, mimetype="text/plain")


@flask_app.route("/api/other/backchannel/authentication/fail/extra", methods=["GET", "POST"])
def near_miss() -> Response:
    return Response("the app's own route", mimetype="text/plain")


@flask_app.get("/stream")
def stream() -> Response:
    def chunks() -> Iterator[str]:
        for i in range(5):
            yield f"chunk {i}\n"

    response = Response(chunks(), mimetype="text/plain")
    marker = os.environ.get("CIBA_TEST_CLOSE_FILE")
    if marker:
        response.call_on_close(lambda: Path(marker).write_text("closed"))
    return response


flask_app.wsgi_app = from_env(flask_app.wsgi_app)  # type: ignore[method-assign]
application = flask_app
