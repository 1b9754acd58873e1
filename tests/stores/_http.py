"""Fail calls over HTTP and the exact answers expected, for the node and outage tests."""

from __future__ import annotations

import json

import requests
from conftest import API_HEADERS, LiveServer

SUCCESS_MESSAGE = "[A185001] Successfully generated an error response for the backchannel authentication request."


def fail(server: LiveServer, service: str, token: str, ticket: str, reason: str) -> requests.Response:
    return requests.post(
        f"{server.url}/api/{service}/backchannel/authentication/fail",
        json={"ticket": ticket, "reason": reason},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def assert_success(response: requests.Response, action: str, error: str) -> None:
    assert response.status_code == 200
    assert {name: response.headers[name] for name in API_HEADERS} == API_HEADERS
    assert response.json() == {
        "resultCode": "A185001",
        "resultMessage": SUCCESS_MESSAGE,
        "action": action,
        "responseContent": json.dumps({"error": error}, separators=(",", ":")),
    }
