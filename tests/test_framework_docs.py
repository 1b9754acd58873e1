"""docs/django.md and docs/asgi.md: their projects, built from the pages' own code, answer as shown.

A fresh Django project (``django-admin startproject``, then the settings, views and URLs of
docs/django.md) and the FastAPI app of docs/asgi.md are served for real; the requests of
the pages get the bodies the pages show, and the configuration errors the lines they show.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import ROOT, SERVICE, LiveServer

from ciba_middleware import sha256_hex
from ciba_middleware.stores import store_from_url

DOCS = ROOT / "docs"
TOKEN = "doc-token-715948317-not-a-secret"
GRANTS = json.dumps([{"service": SERVICE, "token_sha256": sha256_hex(TOKEN)}])
FAIL = f"/api/{SERVICE}/backchannel/authentication/fail"


def python_blocks(page: str) -> list[str]:
    text = (DOCS / page).read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def documented(page: str, command_start: str) -> str:
    """The output the page shows after its ``$ <command_start>...`` line (up to the next ``$``)."""
    text = (DOCS / page).read_text(encoding="utf-8")
    match = re.search(rf"^\$ {re.escape(command_start)}.*\n((?:(?!\$ ).*\n)*?)(?=\$ |```)", text, re.MULTILINE)
    assert match, command_start
    return match.group(1).strip("\n")


def clean_env(**extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("CIBA_", "DJANGO_"))}
    env.update(extra)
    return env


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=str(cwd), env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def django_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("djangodoc")
    bin_dir = Path(sys.executable).parent
    done = run([str(bin_dir / "django-admin"), "startproject", "mysite"], base, clean_env())
    assert done.returncode == 0, done.stderr
    project = base / "mysite"
    edit_django_project(project)
    return project


def edit_django_project(project: Path) -> None:
    """What docs/django.md has the reader do to a new ``startproject``: settings, views, URLs."""
    settings_block, views, urls = python_blocks("django.md")[:3]
    settings = (project / "mysite" / "settings.py").read_text()
    settings = settings.replace("INSTALLED_APPS = [\n", "INSTALLED_APPS = [\n    'ciba_middleware.django',\n")
    settings = settings.replace("MIDDLEWARE = [\n", "MIDDLEWARE = [\n    'ciba_middleware.django.CibaMiddleware',\n")
    settings += "\n" + settings_block[settings_block.index("# The fail API.") :]
    (project / "mysite" / "settings.py").write_text(settings)
    (project / "mysite" / "views.py").write_text(views)
    (project / "mysite" / "urls.py").write_text(urls)
    # The page's snippet names the settings keys it documents.
    assert '"SERVICE_ID": "715948317"' in settings_block


def test_the_django_page_checks_as_shown(django_project: Path) -> None:
    done = run([sys.executable, "manage.py", "check"], django_project, clean_env())
    assert done.returncode == 1
    assert done.stderr.strip() == documented("django.md", "python manage.py check").split("\n$")[0].strip()
    done = run([sys.executable, "manage.py", "check"], django_project, clean_env(CIBA_TOKENS=GRANTS))
    assert (done.returncode, done.stdout.strip()) == (0, "System check identified no issues (0 silenced).")
    done = run([sys.executable, "manage.py", "ciba", "check"], django_project, clean_env(CIBA_TOKENS=GRANTS))
    # stdout: the "ok" line; the middleware's start-up line before it is on stderr.
    assert done.stdout.strip() == documented("django.md", "python manage.py ciba check").splitlines()[-1]


@pytest.fixture(scope="module")
def django_server(django_project: Path) -> Iterator[LiveServer]:
    # Explicit: Django's test client of other tests sets DJANGO_SETTINGS_MODULE in this process.
    env = {"CIBA_TOKENS": GRANTS, "PYTHONPATH": str(django_project), "DJANGO_SETTINGS_MODULE": "mysite.settings"}
    live = LiveServer("mysite.wsgi:application", env, workers=1, extra=("--chdir", str(django_project)))
    yield live
    live.stop()


def test_the_django_page_answers_as_shown(django_server: LiveServer, django_project: Path) -> None:
    check_answers("django.md", django_server.url, store_from_url(f"sqlite:///{django_project / 'tickets.sqlite3'}"))


def check_answers(page: str, url: str, store: object) -> None:
    rejected = requests.post(url + "/backchannel/authentication", data={"login_hint": "nobody"}, timeout=10)
    shown = documented(page, "curl -si -d login_hint=nobody")
    assert rejected.status_code == 400
    assert rejected.text == shown.splitlines()[-1]
    for line in shown.splitlines()[1:-2]:
        name, _, value = line.partition(": ")
        if name.lower() in ("content-type", "cache-control", "pragma", "content-length"):
            assert rejected.headers[name] == value
    accepted = requests.post(url + "/backchannel/authentication", data={"login_hint": "alice"}, timeout=10)
    assert set(accepted.json()) == set(json.loads(documented(page, "curl -s -d login_hint=alice")))
    answer = requests.post(url + FAIL, data={"reason": "ACCESS_DENIED"}, headers={"Authorization": f"Bearer {TOKEN}"},
                           timeout=10)  # fmt: skip
    assert answer.text in (DOCS / page).read_text(encoding="utf-8")
    ticket = store.issue(SERVICE)  # type: ignore[attr-defined]
    chunked = requests.post(url + FAIL, data=iter([b'{"ticket":"', ticket.encode(), b'","reason":"ACCESS_DENIED"}']),
                            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
                            timeout=10)  # fmt: skip
    assert chunked.json()["action"] == "FORBIDDEN"
    assert not store.exists(SERVICE, ticket)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def asgi_app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("asgidoc")
    (main,) = [block for block in python_blocks("asgi.md") if block.startswith("# main.py")]
    (base / "main.py").write_text(main)
    return base


def test_the_asgi_page_reports_a_bad_configuration_as_shown(asgi_app: Path) -> None:
    done = run([sys.executable, "-m", "uvicorn", "main:application", "--port", "0"], asgi_app, clean_env())
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == documented("asgi.md", "uvicorn main:application --port 8000 2>&1")


def test_the_asgi_page_answers_as_shown(asgi_app: Path) -> None:
    store_url = f"sqlite:///{asgi_app / 'tickets.sqlite3'}"
    env = {"CIBA_TOKENS": GRANTS, "CIBA_STORE_URL": store_url, "PYTHONPATH": str(asgi_app)}
    live = LiveServer("main:application", env, server="uvicorn", extra=("--app-dir", str(asgi_app)))
    try:
        check_answers("asgi.md", live.url, store_from_url(store_url))
        assert requests.get(live.url + "/docs", timeout=10).status_code == 200
    finally:
        live.stop()
