"""``ciba-middleware check`` validates the family's variables, as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

from test_cli import PROG, cli

from ._family import CLIENTS, family_env, signing_key


def test_check_reports_the_family(tmp_path: Path) -> None:
    key_file, _ = signing_key(tmp_path)
    result = cli("check", env=family_env(tmp_path, key_file, CIBA_POLLING_INTERVAL="3"))
    assert (result.returncode, result.stderr) == (0, "")
    from ciba_middleware.ciba.keys import SigningKey

    kid = SigningKey.from_file(str(key_file)).kid
    assert result.stdout.endswith(
        f"; CIBA family: {len(CLIENTS)} clients from CIBA_CLIENTS, issuer https://op.example, "
        f"ES256 key {kid} from {key_file}, auth_req_id lifetime 600 s, interval 3 s, access tokens 3600 s\n"
    )


def test_check_refuses_a_bad_family_variable_in_one_line(tmp_path: Path) -> None:
    key_file, _ = signing_key(tmp_path)
    result = cli("check", env=family_env(tmp_path, key_file, CIBA_CLIENTS=json.dumps([{"client_id": "x"}])))
    assert result.returncode == 2
    assert result.stderr == (
        f"{PROG}: error: CIBA_CLIENTS: client #1: 'service' must be a non-empty printable string "
        "without surrounding spaces\n"
    )
    result = cli("check", env=family_env(tmp_path, key_file, CIBA_ISSUER=""))
    assert result.stderr == (
        f"{PROG}: error: CIBA_ISSUER is not set: the ID tokens of the CIBA clients need an issuer (iss)\n"
    )
