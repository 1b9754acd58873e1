"""docs/build-a-ciba-server.md: its files, written out as the page shows them, serve a whole CIBA flow
in Flask, Django and FastAPI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT

from ciba_middleware import sha256_hex

PAGE = ROOT / "docs" / "build-a-ciba-server.md"

#: Drives one app in process (each framework's own test client, or raw ASGI): starts a request,
#: polls, approves on the device route, polls again; then a denial. Prints what it saw.
FLOW = """
import base64, json, sys
from urllib.parse import urlencode
BASIC = "Basic " + base64.b64encode(b"app:app-secret").decode()
FORM = "application/x-www-form-urlencoded"
GRANT = "urn:openid:params:grant-type:ciba"

def flow(post):
    seen = []
    status, body = post("/backchannel/authentication", {"scope": "openid", "login_hint": "alice",
                        "binding_message": "Pay 20 EUR"}, BASIC)
    seen.append(status)
    auth_req_id = json.loads(body)["auth_req_id"]
    status, body = post("/token", {"grant_type": GRANT, "auth_req_id": auth_req_id}, BASIC)
    seen.append((status, json.loads(body)["error"]))
    import hooks
    (short_id,) = hooks.WAITING
    seen.append(post(f"/device/{short_id}", {"decision": "approve"}, "")[0])
    status, body = post("/token", {"grant_type": GRANT, "auth_req_id": auth_req_id}, BASIC)
    seen.append((status, sorted(json.loads(body))))
    status, body = post("/backchannel/authentication", {"scope": "openid", "login_hint": "nobody"}, BASIC)
    seen.append((status, json.loads(body)["error"]))
    status, body = post("/backchannel/authentication", {"scope": "openid", "login_hint": "bob"}, BASIC)
    auth_req_id = json.loads(body)["auth_req_id"]
    (short_id,) = hooks.WAITING
    post(f"/device/{short_id}", {"decision": "deny"}, "")
    status, body = post("/token", {"grant_type": GRANT, "auth_req_id": auth_req_id}, BASIC)
    seen.append((status, json.loads(body)["error"]))
    print(json.dumps(seen))
"""

DRIVERS = {
    "flask": """
from flask_app import app
client = app.test_client()
def post(path, form, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    answer = client.post(path, data=urlencode(form), content_type=FORM, headers=headers)
    return answer.status_code, answer.get_data(as_text=True)
flow(post)
""",
    "django": """
import django
from django.conf import settings
settings.configure(ALLOWED_HOSTS=["testserver"], ROOT_URLCONF="django_urls",
                   MIDDLEWARE=["django.middleware.csrf.CsrfViewMiddleware"])
django.setup()
from django.test import Client
client = Client(enforce_csrf_checks=True)
def post(path, form, authorization):
    extra = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    answer = client.post("/" + path.lstrip("/"), data=urlencode(form), content_type=FORM, **extra)
    return answer.status_code, answer.content.decode()
flow(post)
""",
    "fastapi": """
import asyncio
from fastapi_app import app
def post(path, form, authorization):
    sent = []
    chunks = [{"type": "http.request", "body": urlencode(form).encode(), "more_body": False}]
    async def receive():
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}
    async def send(message):
        sent.append(message)
    headers = [(b"content-type", FORM.encode())]
    if authorization:
        headers.append((b"authorization", authorization.encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": headers, "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 5000)}
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]).decode()
flow(post)
""",
}

EXPECTED = [
    200,
    [400, "authorization_pending"],
    204,
    [200, ["access_token", "expires_in", "id_token", "scope", "token_type"]],
    [400, "unknown_user_id"],
    [400, "access_denied"],
]


def files() -> dict[str, str]:
    """The page's python blocks, by the file name on their first line."""
    text = PAGE.read_text(encoding="utf-8")
    found = {}
    for block in re.findall(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        first, _, rest = block.partition("\n")
        assert re.fullmatch(r"# \w+\.py", first), first
        found[first[2:]] = rest
    return found


def test_the_page_has_its_files() -> None:
    assert set(files()) == {"hooks.py", "flask_app.py", "django_urls.py", "fastapi_app.py", "policy.py"}


@pytest.mark.parametrize("framework", sorted(DRIVERS))
def test_the_guide_serves_a_whole_flow(tmp_path: Path, framework: str) -> None:
    for name, source in files().items():
        (tmp_path / name).write_text(source, encoding="utf-8")
    env = {name: value for name, value in os.environ.items() if not name.startswith(("CIBA_", "DJANGO_"))}
    env.update(
        PYTHONPATH=str(tmp_path),
        CIBA_STORE_URL=f"sqlite:///{tmp_path / 'ciba.sqlite3'}",
        CIBA_ISSUER="https://op.example.com",
        CIBA_CLIENTS=json.dumps([{"client_id": "app", "service": "715948317", "client_secret": "app-secret"}]),
        CIBA_TOKENS=json.dumps([{"service": "715948317", "token_sha256": sha256_hex("guide-api-token")}]),
        CIBA_AUDIT_LOG="off",
    )
    script = FLOW + textwrap.dedent(DRIVERS[framework])
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == EXPECTED


def test_the_strict_policy_of_the_page(tmp_path: Path) -> None:
    namespace: dict[str, object] = {}
    exec(files()["policy.py"], namespace)
    policy = namespace["StrictHooks"].binding_message_policy  # type: ignore[attr-defined]
    assert policy.allows("Pay-20-EUR")
    assert not policy.allows("Pay 20 EUR")
    assert not policy.allows("x" * 21)


def test_the_page_is_in_the_nav() -> None:
    assert "build-a-ciba-server.md" in (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
