"""``ciba_middleware.wsgi:application`` under gunicorn."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
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
        "ciba-middleware: configuration error: CIBA_TICKET_TTL must be a number of seconds above 0 and at most "
        "31622400 (366 days), not 'forever'" in result.stderr
    )
    assert "Traceback" not in result.stderr


# Values that used to crash (exit 4, a traceback) or to pass the start and fail every
# issue; each is now one line naming the variable, from check and from gunicorn alike.
BAD_VALUES = [
    pytest.param({"CIBA_TOKENS_FILE": "{not_utf8}"},
                 "CIBA_TOKENS_FILE '{not_utf8}' is not UTF-8 text (byte 0xff at offset 1)", id="not-utf8-file"),
    pytest.param({"CIBA_TOKENS": "[" * 100_000}, "CIBA_TOKENS is nested too deeply to be a list of grants",
                 id="nested-tokens"),
    pytest.param({"CIBA_TICKET_TTL": "1e300"},
                 "CIBA_TICKET_TTL must be a number of seconds above 0 and at most 31622400 (366 days), not '1e300'",
                 id="ttl-beyond-max"),
    pytest.param({"CIBA_MAX_BODY_BYTES": "2000000"},
                 "CIBA_MAX_BODY_BYTES must be a whole number of bytes from 1 to 1048576, not '2000000'",
                 id="body-beyond-max"),
    pytest.param({"CIBA_TOKENS_RELOAD_INTERVAL": "nan"},
                 "CIBA_TOKENS_RELOAD_INTERVAL must be a number of seconds from 0 to 3600, not 'nan'",
                 id="interval-nan"),
]  # fmt: skip


def _bad_env(tmp_path: Path, env: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    not_utf8 = tmp_path / "tokens.json"
    not_utf8.write_bytes(b"[\xff]")
    values = {k: v.format(not_utf8=not_utf8) for k, v in env.items()}
    base = {"PATH": "/usr/bin:/bin", "CIBA_STORE_URL": f"sqlite:///{tmp_path / 't.sqlite3'}"}
    if not any(k.startswith("CIBA_TOKENS") and k != "CIBA_TOKENS_RELOAD_INTERVAL" for k in values):
        base["CIBA_TOKENS"] = json.dumps(GRANTS)
    return {**base, **values}, {"not_utf8": str(not_utf8)}


@pytest.mark.parametrize("preload", [pytest.param((), id="workers"), pytest.param(("--preload",), id="preload")])
@pytest.mark.parametrize(("env", "message"), BAD_VALUES)
def test_bad_values_stop_gunicorn_with_one_line(
    tmp_path: Path, env: dict[str, str], message: str, preload: tuple[str, ...]
) -> None:
    full, names = _bad_env(tmp_path, env)
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--bind", "127.0.0.1:0", *preload, "ciba_middleware.wsgi:application"],
        env=full,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3
    assert f"ciba-middleware: configuration error: {message.format(**names)}\n" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("env", "message"), BAD_VALUES)
def test_bad_values_fail_check_with_one_line(tmp_path: Path, env: dict[str, str], message: str) -> None:
    full, names = _bad_env(tmp_path, env)
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ciba-middleware"), "check"],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith(f"ciba-middleware: error: {message.format(**names)}")
    assert result.stderr.count("\n") == 1
