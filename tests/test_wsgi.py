"""``ciba_middleware.wsgi:application`` under gunicorn."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import requests
from conftest import GRANTS, ROOT, SERVICE, SERVICE_TOKEN, LiveServer


def test_serves_the_api_and_a_json_404(tmp_path: Path) -> None:
    server = LiveServer(
        "ciba_middleware.wsgi:application",
        {"CIBA_STORE_URL": f"sqlite:///{tmp_path / 't.sqlite3'}", "CIBA_TOKENS": json.dumps(GRANTS)},
        workers=2,
    )
    try:
        response = requests.get(server.url + "/", timeout=5)
        assert response.status_code == 404
        assert response.json() == {"error": "not_found"}
        response = requests.post(
            f"{server.url}/api/{SERVICE}/backchannel/authentication/fail",
            json={"reason": "ACCESS_DENIED"},
            headers={"Authorization": f"Bearer {SERVICE_TOKEN}"},
            timeout=5,
        )
        assert response.status_code == 200
        assert response.json()["action"] == "FORBIDDEN"
    finally:
        server.stop()
    assert SERVICE_TOKEN not in server.log()


def test_bad_configuration_stops_gunicorn_with_the_message(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--bind", "127.0.0.1:0", "ciba_middleware.wsgi:application"],
        env={
            "PATH": "/usr/bin:/bin",
            "CIBA_STORE_URL": "memory://",
            "CIBA_TOKENS": json.dumps(GRANTS),
            "CIBA_TICKET_TTL": "forever",
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3
    assert (
        "ciba-middleware: configuration error: CIBA_TICKET_TTL must be a positive number of seconds, not 'forever'"
        in result.stderr
    )
    assert "Traceback" not in result.stderr
