"""The auth matrix: every credential case x both routes x a ticket of the addressed service
and of another one, over real HTTP against gunicorn, checked in the store.

Whatever the status, the store must show that an unauthorized call deleted nothing, and that
an authorized call deleted its own service's ticket and nothing else.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
import requests
from _stores import opened_store
from conftest import API_SECRET, GRANTS, ORG_TOKEN, OTHER_SERVICE, OTHER_TOKEN, SERVICE, SERVICE_TOKEN, LiveServer

from ciba_middleware import TicketStore

from ._support import STORE_KINDS, SUFFIX, basic

ORG_ONLY = "1001"  # covered by the organization token only
OTHER_SECRET = "api-secret-42"


def near_miss(secret: str) -> str:
    return secret[:-1] + chr(ord(secret[-1]) ^ 1)


# (id, Authorization header, service in the v3 path,
#  expected status on v3, expected status on v2, the service the v2 call addresses: the
#  Basic user name, or the one service a service access token names; an organization
#  token names none and is refused on v2)
CREDENTIALS = [
    ("none", None, SERVICE, 401, 401, SERVICE),
    ("empty-header", "", SERVICE, 401, 401, SERVICE),
    ("scheme-only-bearer", "Bearer", SERVICE, 401, 401, SERVICE),
    ("wrong-scheme-digest", f"Digest {SERVICE_TOKEN}", SERVICE, 401, 401, SERVICE),
    ("wrong-scheme-token", f"Token {SERVICE_TOKEN}", SERVICE, 401, 401, SERVICE),
    ("malformed-bearer-space", "Bearer abc def", SERVICE, 401, 401, SERVICE),
    ("malformed-bearer-chars", 'Bearer "abc"', SERVICE, 401, 401, SERVICE),
    ("malformed-bearer-latin1", "Bearer tok\xe9n", SERVICE, 401, 401, SERVICE),
    ("unknown-token", "Bearer unknown-token", SERVICE, 401, 401, SERVICE),
    ("near-miss-token", f"Bearer {near_miss(SERVICE_TOKEN)}", SERVICE, 401, 401, SERVICE),
    ("token-prefix", f"Bearer {SERVICE_TOKEN[:-1]}", SERVICE, 401, 401, SERVICE),
    ("own-service-token", f"Bearer {SERVICE_TOKEN}", SERVICE, 200, 200, SERVICE),
    ("own-token-lowercase-scheme", f"bearer {SERVICE_TOKEN}", SERVICE, 200, 200, SERVICE),
    ("other-service-token", f"Bearer {OTHER_TOKEN}", SERVICE, 403, 200, OTHER_SERVICE),
    ("other-token-on-its-service", f"Bearer {OTHER_TOKEN}", OTHER_SERVICE, 200, 200, OTHER_SERVICE),
    ("own-token-on-other-service", f"Bearer {SERVICE_TOKEN}", OTHER_SERVICE, 403, 200, SERVICE),
    ("org-token-inside", f"Bearer {ORG_TOKEN}", SERVICE, 200, 401, SERVICE),
    ("org-token-inside-org-only", f"Bearer {ORG_TOKEN}", ORG_ONLY, 200, 401, SERVICE),
    ("org-token-outside", f"Bearer {ORG_TOKEN}", OTHER_SERVICE, 403, 401, SERVICE),
    ("v2-right", basic(SERVICE, API_SECRET), SERVICE, 401, 200, SERVICE),
    ("v2-lowercase-scheme", "basic " + basic(SERVICE, API_SECRET)[6:], SERVICE, 401, 200, SERVICE),
    ("v2-other-service-right", basic(OTHER_SERVICE, OTHER_SECRET), SERVICE, 401, 200, OTHER_SERVICE),
    ("v2-wrong-secret", basic(SERVICE, "wrong"), SERVICE, 401, 401, SERVICE),
    ("v2-near-miss-secret", basic(SERVICE, near_miss(API_SECRET)), SERVICE, 401, 401, SERVICE),
    ("v2-empty-secret", basic(SERVICE, ""), SERVICE, 401, 401, SERVICE),
    ("v2-unknown-key", basic("999", API_SECRET), SERVICE, 401, 401, SERVICE),
    ("v2-other-key-own-secret", basic(OTHER_SERVICE, API_SECRET), SERVICE, 401, 401, OTHER_SERVICE),
    ("v2-own-key-other-secret", basic(SERVICE, OTHER_SECRET), SERVICE, 401, 401, SERVICE),
    ("v2-org-as-key", basic("acme", ORG_TOKEN), SERVICE, 401, 401, SERVICE),
    ("v2-token-as-secret", basic(SERVICE, SERVICE_TOKEN), SERVICE, 401, 401, SERVICE),
    ("v2-malformed-base64", "Basic !!notbase64!!", SERVICE, 401, 401, SERVICE),
    ("v2-base64-no-colon", "Basic " + base64.b64encode(SERVICE.encode()).decode(), SERVICE, 401, 401, SERVICE),
    ("v2-empty-key", basic("", API_SECRET), SERVICE, 401, 401, SERVICE),
    ("v2-not-utf8", "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(), SERVICE, 401, 401, SERVICE),
]

CASES = [
    pytest.param(
        auth,
        route,
        (f"/api/{v3_service}{SUFFIX}" if route == "v3" else f"/api{SUFFIX}"),
        (v3_service if route == "v3" else v2_service),
        owner,
        (v3_status if route == "v3" else v2_status),
        id=f"{case}-{route}-{owner}-ticket",
    )
    for case, auth, v3_service, v3_status, v2_status, v2_service in CREDENTIALS
    for route in ("v3", "v2")
    for owner in ("own", "other")
]

SERVICES = [SERVICE, OTHER_SERVICE, ORG_ONLY]


@pytest.fixture(scope="module", params=STORE_KINDS)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, TicketStore]]:
    """gunicorn (two workers) serving the fail API on a store this test also opens."""
    with opened_store(request.param, request, tmp_path_factory.mktemp("auth")) as (url, store):
        server = LiveServer(
            "ciba_middleware.wsgi:application",
            {"CIBA_STORE_URL": url, "CIBA_TOKENS": json.dumps(GRANTS)},
            workers=2,
        )
        try:
            yield server, store
        finally:
            server.stop()


@pytest.mark.parametrize(("authorization", "route", "path", "addressed", "owner", "status"), CASES)
def test_auth_matrix(
    served: tuple[LiveServer, TicketStore],
    authorization: str | None,
    route: str,
    path: str,
    addressed: str,
    owner: str,
    status: int,
) -> None:
    server, store = served
    ticket_owner = addressed if owner == "own" else next(s for s in SERVICES if s != addressed)
    sent = store.issue(ticket_owner)
    bystanders = {service: store.issue(service) for service in SERVICES}

    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    body = json.dumps({"ticket": sent, "reason": "ACCESS_DENIED"}).encode()
    response = requests.post(server.url + path, data=body, headers=headers, timeout=10)

    assert response.status_code == status, response.text
    data = response.json()
    if status == 200:
        assert data["resultCode"] == "A185001"
        assert data["action"] == "FORBIDDEN"
    else:
        # A missing header has Authlete's own code; v2 answers a token with the Bearer challenge.
        expected_code = "A001202" if not authorization else "A185211"
        assert data["resultCode"] == {401: expected_code, 403: "A185212"}[status]
        assert "action" not in data
        challenge = response.headers.get("WWW-Authenticate")
        if status == 401:
            assert challenge is not None
            token_scheme = (authorization or "").partition(" ")[0].lower() == "bearer"
            assert challenge.startswith("Bearer " if route == "v3" or token_scheme else "Basic ")
        else:
            assert challenge is None
    # The store, not the answer, says what happened.
    deleted = status == 200 and ticket_owner == addressed
    assert store.exists(ticket_owner, sent) is not deleted, "the sent ticket's fate is wrong"
    for service, ticket in bystanders.items():
        assert store.exists(service, ticket), f"a bystander ticket of {service} was deleted"
        store.delete(service, ticket)
    store.delete(ticket_owner, sent)
