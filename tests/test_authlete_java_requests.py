"""The exact requests authlete-java-common builds, sent to a real server, byte for byte.

Maven Central is out of reach here, so the requests are built in Python as the Java source
builds them, each step citing its line in authlete/authlete-java-common at commit
439ee13bd1d7c610273805a6f6bbea6fd3262018 (4.47-SNAPSHOT, 2026-06-15):

- ``AuthleteApiImpl.java`` (v2) 290-312 ``createServiceCredentials``: ``"DPoP " + token``
  when a DPoP key is configured (296-298), ``"Bearer " + token`` when a service access token
  is (300-302), else ``BasicCredentials(key, secret).format()`` (306-310); 1368-1376
  ``backchannelAuthenticationFail`` posts to ``BC_AUTHENTICATION_FAIL_API_PATH`` =
  ``/api/backchannel/authentication/fail`` (198).
- ``AuthleteApiImplV3.java`` 277-292 ``createCredentials``: ``DPoP`` or ``Bearer`` + the
  service access token (no Basic on v3); the path is ``/api/%d/backchannel/authentication/fail``
  (199) with the service ID.
- ``AuthleteApiBasicImpl.java`` 232-246: with a DPoP key, a ``DPoP`` header from
  ``wrapWithDpop`` (555-588: RS256, ``typ`` ``dpop+jwt``, ``jwk``, claims ``htm``, ``htu`` =
  base URL + path, ``jti`` a UUID, ``iat``; no ``ath``) is added to the call's custom headers;
  372-408 ``openConnection``: URL = base URL + path (415), the method, ``Authorization`` (389),
  ``Accept: application/json`` (393), then the custom headers (396, 515-544); 836-866
  ``writeRequestBody``: ``Content-Type: application/json`` (839) and ``Utils.toJson(request)``
  in UTF-8 (860-863).
- ``util/Utils.java`` 38-43: Gson with ``serializeNulls()``, and Gson's default HTML escaping
  (``<``, ``>``, ``&``, ``=``, ``'`` as ``\\u003c`` ...); ``dto/BackchannelAuthenticationFailRequest.java``
  202-205: the fields ``ticket``, ``reason`` (an enum: its name), ``errorDescription``,
  ``errorUri`` (a ``java.net.URI``: its string), in that order.
- ``HttpURLConnection`` itself adds ``User-Agent: Java/<version>``, ``Host``,
  ``Connection: keep-alive`` and ``Content-Length`` (it buffers the body).
"""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from _dpop import BOUND_TOKEN, RSA, grants, java_proof
from conftest import API_SECRET, GRANTS, SERVICE, SERVICE_TOKEN, LiveServer

from ciba_middleware.stores import store_from_url

PREFIX = "/authlete"
V2_PATH = "/api/backchannel/authentication/fail"
V3_PATH = f"/api/{SERVICE}/backchannel/authentication/fail"


def gson(request: dict[str, Any]) -> bytes:
    """``Utils.toJson``: Gson with serializeNulls and its default HTML-safe escaping, UTF-8."""
    text = json.dumps(request, separators=(",", ":"), ensure_ascii=False)
    for char in "<>&='":
        text = text.replace(char, f"\\u{ord(char):04x}")
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode("utf-8")


def fail_request(ticket: str | None, reason: str = "ACCESS_DENIED", **optional: str | None) -> dict[str, Any]:
    """A ``BackchannelAuthenticationFailRequest``: every field, null when unset (serializeNulls)."""
    return {
        "ticket": ticket,
        "reason": reason,
        "errorDescription": optional.get("errorDescription"),
        "errorUri": optional.get("errorUri"),
    }


class JavaClient:
    """The headers and body ``AuthleteApiImpl`` / ``AuthleteApiImplV3`` send, for one configuration."""

    def __init__(
        self,
        base_url: str,
        version: str,
        *,
        service_access_token: str | None = None,
        api_key: str | None = None,
        api_secret: str | None = None,
        dpop: bool = False,
    ) -> None:
        self.base_url, self.version, self.dpop = base_url, version, dpop
        if service_access_token is not None:
            self.auth = ("DPoP " if dpop else "Bearer ") + service_access_token
        elif version == "V3":
            raise ValueError("V3 API requires an access token, not a key and secret")
        else:
            pair = f"{api_key or ''}:{api_secret or ''}".encode()
            self.auth = "Basic " + base64.b64encode(pair).decode()

    def path(self) -> str:
        return V3_PATH if self.version == "V3" else V2_PATH

    def headers(self, body: bytes) -> list[tuple[str, str]]:
        url = urlsplit(self.base_url)
        headers = [("Authorization", self.auth), ("Accept", "application/json")]
        if self.dpop:
            headers.append(("DPoP", java_proof(RSA, "POST", self.base_url + self.path())))
        headers += [
            ("Content-Type", "application/json"),
            ("User-Agent", "Java/17.0.13"),
            ("Host", url.netloc),
            ("Connection", "keep-alive"),
            ("Content-Length", str(len(body))),
        ]
        return headers

    def send(self, request: dict[str, Any], headers: list[tuple[str, str]] | None = None) -> tuple[int, Any, Any]:
        body = gson(request)
        url = urlsplit(self.base_url)
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        try:
            connection.putrequest("POST", url.path + self.path(), skip_host=True, skip_accept_encoding=True)
            for name, value in headers if headers is not None else self.headers(body):
                connection.putheader(name, value)
            connection.endheaders(body)
            response = connection.getresponse()
            return response.status, response.headers, json.loads(response.read())
        finally:
            connection.close()


@pytest.fixture(scope="module")
def store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('java') / 'tickets.sqlite3'}"


@pytest.fixture(scope="module")
def server(store_url: str) -> Iterator[LiveServer]:
    live = LiveServer(
        "ciba_middleware.wsgi:application",
        {
            "CIBA_STORE_URL": store_url,
            "CIBA_TOKENS": json.dumps([*GRANTS, *grants(SERVICE)]),
            "CIBA_PATH_PREFIX": PREFIX,
        },
    )
    yield live
    live.stop()


CONFIGURATIONS = [
    pytest.param("V2", {"service_access_token": SERVICE_TOKEN}, id="v2-bearer"),
    pytest.param("V2", {"service_access_token": BOUND_TOKEN, "dpop": True}, id="v2-dpop"),
    pytest.param("V2", {"api_key": SERVICE, "api_secret": API_SECRET}, id="v2-basic"),
    pytest.param("V2", {"api_key": SERVICE, "api_secret": API_SECRET, "dpop": True}, id="v2-basic-with-dpop-key"),
    pytest.param("V3", {"service_access_token": SERVICE_TOKEN}, id="v3-bearer"),
    pytest.param("V3", {"service_access_token": BOUND_TOKEN, "dpop": True}, id="v3-dpop"),
]


@pytest.mark.parametrize(("version", "config"), CONFIGURATIONS)
def test_each_java_configuration_fails_the_ticket(
    server: LiveServer, store_url: str, version: str, config: dict[str, Any]
) -> None:
    store = store_from_url(store_url)
    ticket = store.issue(SERVICE)
    client = JavaClient(server.url + PREFIX, version, **config)
    status, headers, body = client.send(fail_request(ticket))
    assert status == 200, body
    assert body == {
        "resultCode": "A185001",
        "resultMessage": "[A185001] Successfully generated an error response for the backchannel"
        " authentication request.",
        "action": "FORBIDDEN",
        "responseContent": '{"error":"access_denied"}',
    }
    assert not store.exists(SERVICE, ticket)
    # ApiResponse.getResponseHeaders() (4.23) is there for this header.
    assert len(headers["Request-Id"]) == 32


@pytest.mark.parametrize("version", ["V2", "V3"])
def test_gson_escapes_and_nulls_are_read_as_java_means_them(server: LiveServer, store_url: str, version: str) -> None:
    store = store_from_url(store_url)
    ticket = store.issue(SERVICE)
    client = JavaClient(server.url + PREFIX, version, service_access_token=BOUND_TOKEN, dpop=True)
    request = fail_request(
        ticket,
        "INVALID_TARGET",
        errorDescription="It's not there",
        errorUri="https://as.example.com/errors?code=invalid_target&lang=en",
    )
    assert b"\\u0027" in gson(request)
    assert b"\\u003d" in gson(request)
    assert b"\\u0026" in gson(request)
    status, _, body = client.send(request)
    assert status == 200, body
    assert json.loads(body["responseContent"]) == {
        "error": "invalid_target",
        "error_description": "It's not there",
        "error_uri": "https://as.example.com/errors?code=invalid_target&lang=en",
    }
    assert not store.exists(SERVICE, ticket)
    # A null ticket: the call succeeds and deletes nothing, as Authlete's does.
    status, _, body = client.send(fail_request(None, "SERVER_ERROR"))
    assert (status, body["action"]) == (200, "INTERNAL_SERVER_ERROR")


def test_the_java_proof_replayed_is_refused(server: LiveServer, store_url: str) -> None:
    store = store_from_url(store_url)
    tickets = [store.issue(SERVICE), store.issue(SERVICE)]
    client = JavaClient(server.url + PREFIX, "V3", service_access_token=BOUND_TOKEN, dpop=True)
    body = gson(fail_request(tickets[0]))
    headers = client.headers(body)
    assert client.send(fail_request(tickets[0]), headers)[0] == 200
    # The same DPoP header again, with a body of the same length.
    status, response_headers, answer = client.send(fail_request(tickets[1]), headers)
    assert status == 401
    assert answer["resultCode"] == "A185214"
    assert "jti was used before" in answer["resultMessage"]
    assert 'error="invalid_dpop_proof"' in response_headers["WWW-Authenticate"]
    assert store.exists(SERVICE, tickets[1])


@pytest.mark.parametrize(
    ("version", "config", "detail"),
    [
        # A bound token configured without the DPoP key: the Java client sends Bearer.
        ("V3", {"service_access_token": BOUND_TOKEN}, "send it as 'Authorization: DPoP'"),
        ("V2", {"service_access_token": BOUND_TOKEN}, "send it as 'Authorization: DPoP'"),
        # A DPoP key configured for a token that is not bound to it.
        ("V3", {"service_access_token": SERVICE_TOKEN, "dpop": True}, "not bound to a DPoP key"),
    ],
)
def test_a_java_configuration_that_does_not_match_the_grant_is_refused(
    server: LiveServer, store_url: str, version: str, config: dict[str, Any], detail: str
) -> None:
    store = store_from_url(store_url)
    ticket = store.issue(SERVICE)
    status, headers, body = JavaClient(server.url + PREFIX, version, **config).send(fail_request(ticket))
    assert status == 401
    assert body["resultCode"] == "A185214"
    assert detail in body["resultMessage"]
    assert headers["WWW-Authenticate"].startswith("DPoP ")
    assert store.exists(SERVICE, ticket)


def test_a_proof_for_another_base_url_is_refused(server: LiveServer, store_url: str) -> None:
    # The client's baseUrl names another host than the one the request reached.
    store = store_from_url(store_url)
    ticket = store.issue(SERVICE)
    client = JavaClient(server.url + PREFIX, "V3", service_access_token=BOUND_TOKEN, dpop=True)
    body = gson(fail_request(ticket))
    headers = [
        (name, java_proof(RSA, "POST", "https://authlete.example.com" + V3_PATH) if name == "DPoP" else value)
        for name, value in client.headers(body)
    ]
    status, response_headers, answer = client.send(fail_request(ticket), headers)
    assert status == 401
    assert "htu is not this request's URL" in answer["resultMessage"]
    assert 'error="invalid_dpop_proof"' in response_headers["WWW-Authenticate"]
    assert store.exists(SERVICE, ticket)
