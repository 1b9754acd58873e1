"""Every adapter serves the family, with no change of its own: ASGI under uvicorn, Django and
Flask (WSGI middleware) under gunicorn, the Flask extension, each driven by authlete-python."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from authlete.dto.backchannel_authentication_complete_action import BackchannelAuthenticationCompleteAction
from authlete.dto.token_action import TokenAction
from conftest import SERVICE, LiveServer

from ._family import family_env, signing_key
from .test_http_authlete import api, complete, started, token


@pytest.fixture(scope="module", params=["asgi-uvicorn", "django-gunicorn", "flask-gunicorn"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("adapter")
    env = family_env(tmp, signing_key(tmp)[0], CIBA_PATH_PREFIX="/authlete")
    if request.param == "asgi-uvicorn":
        live = LiveServer("ciba_middleware.asgi:application", env, server="uvicorn")
    elif request.param == "django-gunicorn":
        env["CIBA_TEST_DJANGO_SETTINGS"] = json.dumps(
            {"PATH_PREFIX": env.pop("CIBA_PATH_PREFIX"), "SERVICE_ID": SERVICE}
        )
        live = LiveServer("djangoproject.wsgi:application", env)
    else:
        live = LiveServer("_apps:application", env)
    yield live
    live.stop()


def test_the_family_through_the_adapter(server: LiveServer) -> None:
    client = api(server)
    ticket, auth_req_id = started(client)
    assert complete(client, ticket, "AUTHORIZED", subject="alice").action is (
        BackchannelAuthenticationCompleteAction.NO_ACTION
    )
    assert token(client, auth_req_id).action is TokenAction.OK


def test_the_flask_extension(tmp_path: Path) -> None:
    from flask import Flask
    from werkzeug.test import Client

    from ciba_middleware.flask import EXTENSION_KEY, CibaMiddleware

    from .test_routes import Family

    app = Flask(__name__)
    app.config.update(family_env(tmp_path, signing_key(tmp_path)[0], CIBA_AUDIT_LOG="off", CIBA_SERVICE_ID=SERVICE))
    CibaMiddleware(app)
    try:
        family = Family(Client(app))
        ticket, auth_req_id = family.start()
        family.post("backchannel/authentication/complete", {"ticket": ticket, "result": "AUTHORIZED", "subject": "a"})
        assert family.token_call(auth_req_id)["action"] == "OK"
    finally:
        app.extensions[EXTENSION_KEY].store.close()
