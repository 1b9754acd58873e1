"""DPoP-bound service access tokens (RFC 9449): the proof check, the binding, the replay cache."""

from __future__ import annotations

import base64
import json
import threading
import time
from base64 import urlsafe_b64encode
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from _client import InProcess
from _dpop import ATH_TOKEN, BOUND_TOKEN, EC, EC_BOUND_TOKEN, ED, OTHER_RSA, RSA, grants, proof, public
from conftest import GRANTS, SERVICE, SERVICE_TOKEN, LiveServer, unique_name
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc.jwk import OctKey

from ciba_middleware import BackchannelFailMiddleware, StaticTokenVerifier
from ciba_middleware.dpop import MAX_AGE, MAX_SKEW, REPLAY_TTL, check_proof, normal_url, thumbprint, token_hash
from ciba_middleware.errors import ConfigurationError, DpopRefused, StoreError, StoreFailed
from ciba_middleware.stores import store_from_url
from ciba_middleware.stores.base import ReplayCache
from ciba_middleware.stores.memory import MemoryTicketStore

V3 = f"/api/{SERVICE}/backchannel/authentication/fail"
V2 = "/api/backchannel/authentication/fail"
HOST = "http://localhost:80"  # webtest's default host
URL = f"http://localhost{V3}"
PROOF_ERROR = 'error="invalid_dpop_proof"'


def check(
    token: str, value: str, *, url: str = URL, key: Any = RSA, replay: ReplayCache | None = None, **kw: Any
) -> None:
    check_proof(
        value,
        method="POST",
        url=url,
        token=token,
        jkt=key.thumbprint(),
        replay=replay if replay is not None else MemoryTicketStore(),
        **kw,
    )


def refused(value: str, *, detail: str, key: Any = RSA, token: str = BOUND_TOKEN, **kw: Any) -> DpopRefused:
    with pytest.raises(DpopRefused) as caught:
        check(token, value, key=key, **kw)
    assert detail in caught.value.detail
    ((name, challenge),) = caught.value.headers
    assert name == "WWW-Authenticate"
    assert challenge.startswith("DPoP ")
    assert caught.value.status == 401
    assert caught.value.result_code == "A185214"
    return caught.value


# -- the proof ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [RSA, EC, ED], ids=["PS256", "ES256", "Ed25519"])
def test_a_valid_proof_is_accepted_once(key: Any) -> None:
    replay = MemoryTicketStore()
    value = proof(key, URL, token=BOUND_TOKEN)
    check(BOUND_TOKEN, value, key=key, replay=replay)
    refused(value, key=key, replay=replay, detail="jti was used before")


def test_typ_is_a_media_type_compared_without_case() -> None:
    check(BOUND_TOKEN, proof(RSA, URL, header={"typ": "DPoP+JWT"}))
    check(BOUND_TOKEN, proof(RSA, URL, header={"typ": "application/dpop+jwt"}))
    refused(proof(RSA, URL, header={"typ": "text/dpop+jwt"}), detail="typ must be 'dpop+jwt'")
    refused(proof(RSA, URL, header={"typ": "dpop"}), detail="typ must be 'dpop+jwt'")


def test_the_same_jti_from_two_keys_is_two_proofs() -> None:
    replay = MemoryTicketStore()
    check(BOUND_TOKEN, proof(RSA, URL, claims={"jti": "same"}), replay=replay)
    check(BOUND_TOKEN, proof(EC, URL, claims={"jti": "same"}), key=EC, replay=replay)


@pytest.mark.parametrize(
    ("kwargs", "detail"),
    [
        ({"header": {"typ": "JWT"}}, "typ must be 'dpop+jwt'"),
        ({"header": {"typ": None}}, "typ must be 'dpop+jwt'"),
        ({"alg": "RS256", "header": {"alg": "ES256K"}}, "alg must be one of"),
        ({"claims": {"htm": "GET"}}, "htm must be POST"),
        ({"claims": {"htu": "http://localhost/api/42/backchannel/authentication/fail"}}, "htu is not"),
        ({"claims": {"htu": f"https://localhost{V3}"}}, "htu is not"),
        ({"claims": {"htu": f"http://evil.example{V3}"}}, "htu is not"),
        ({"claims": {"htu": 5}}, "htu is not"),
        ({"drop": ("htu",)}, "htu is not"),
        ({"iat_offset": -MAX_AGE - 5}, "more than 300 seconds ago"),
        ({"iat_offset": MAX_SKEW + 5}, "ahead"),
        ({"claims": {"iat": "now"}}, "numeric iat"),
        ({"claims": {"iat": True}}, "numeric iat"),
        # NaN compares false with both bounds: without a check it passes forever.
        ({"claims": {"iat": float("nan")}}, "numeric iat"),
        ({"claims": {"iat": float("inf")}}, "numeric iat"),
        ({"claims": {"iat": float("-inf")}}, "numeric iat"),
        ({"drop": ("iat",)}, "numeric iat"),
        ({"drop": ("jti",)}, "needs a jti"),
        ({"claims": {"jti": ""}}, "needs a jti"),
        ({"claims": {"jti": "x" * 257}}, "needs a jti"),
        ({"claims": {"jti": 7}}, "needs a jti"),
        ({"claims": {"ath": token_hash("another token")}}, "ath is not the hash"),
        ({"claims": {"ath": 1}}, "ath is not the hash"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_wrong_member_is_refused(kwargs: dict[str, Any], detail: str) -> None:
    kwargs = dict(kwargs)
    if "iat_offset" in kwargs:  # relative to when the test runs, not to when it was collected
        kwargs["claims"] = {"iat": int(time.time() + kwargs.pop("iat_offset"))}
    error = refused(proof(RSA, URL, **kwargs), detail=detail)
    assert PROOF_ERROR in error.headers[0][1]


def test_a_deeply_nested_jose_header_is_refused_not_an_error() -> None:
    """1,500 levels: Python's JSON reader raises RecursionError, which was a 500."""
    nested = "[" * 1500 + "]" * 1500
    _, body, signature = proof(RSA, URL).split(".")
    deep = urlsafe_b64encode(f'{{"typ":"dpop+jwt","x":{nested}}}'.encode()).decode().rstrip("=")
    refused(f"{deep}.{body}.{signature}", detail="nests too deeply")


def test_expired_and_future_proofs_are_refused_at_the_edges() -> None:
    now = time.time()
    check(BOUND_TOKEN, proof(RSA, URL, claims={"iat": now - MAX_AGE + 2}), now=now)
    check(BOUND_TOKEN, proof(RSA, URL, claims={"iat": now + MAX_SKEW - 2}), now=now)
    refused(proof(RSA, URL, claims={"iat": now - MAX_AGE - 1}), now=now, detail="ago")
    refused(proof(RSA, URL, claims={"iat": now + MAX_SKEW + 1}), now=now, detail="ahead")
    assert REPLAY_TTL >= MAX_AGE + MAX_SKEW  # a jti is remembered while its proof can pass


def test_a_proof_by_another_key_is_refused_as_a_binding_error() -> None:
    error = refused(proof(OTHER_RSA, URL), detail="not the key the access token is bound to")
    assert 'error="invalid_token"' in error.headers[0][1]


def test_a_forged_signature_is_refused() -> None:
    # Signed by another key, carrying the bound key's public JWK.
    forged = proof(OTHER_RSA, URL, jwk=public(RSA))
    refused(forged, detail="signature does not verify")
    header, _, signature = proof(RSA, URL).split(".")
    other_payload = proof(RSA, URL, claims={"htu": "http://localhost/x"}).split(".")[1]
    refused(f"{header}.{other_payload}.{signature}", detail="signature does not verify")


def test_symmetric_and_unsigned_proofs_are_refused() -> None:
    secret = OctKey.generate_key(256)
    refused(proof(secret, URL, alg="HS256", jwk=public(RSA)), detail="alg must be one of")
    unsigned = _segment({"typ": "dpop+jwt", "alg": "none", "jwk": public(RSA)}) + "." + _segment({"htm": "POST"})
    refused(unsigned + ".", detail="not a compact JWS")
    refused(unsigned + ".AAAA", detail="alg must be one of")
    refused(proof(RSA, URL, header={"jwk": secret.as_dict()}), detail="private key members")


def test_a_private_jwk_in_the_header_is_refused() -> None:
    refused(proof(RSA, URL, jwk=RSA.as_dict(private=True)), detail="private key members")
    refused(proof(EC, URL, jwk=EC.as_dict(private=True)), key=EC, detail="private key members")


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ("", "a DPoP proof header is required"),
        ("a.b.c, d.e.f", "more than one DPoP header"),
        ("x" * 9000, "longer than 8192"),
        ("not-a-jws", "not a compact JWS"),
        ("a.b.c.d.e", "not a compact JWS"),
        ("!!!.b.c", "not a compact JWS"),
        ("e30.e30.e30", "typ must be"),
        ("bm90IGpzb24.e30.e30", "not base64url JSON"),
        (base64.urlsafe_b64encode(b"[1]").decode().rstrip("=") + ".e30.e30", "not a JSON object"),
    ],
)
def test_malformed_proofs_are_refused(value: str, detail: str) -> None:
    refused(value, detail=detail)


def test_jwk_problems_are_refused() -> None:
    refused(proof(RSA, URL, header={"jwk": None}), detail="no jwk object")
    refused(proof(RSA, URL, jwk={}), detail="not a valid public key")
    refused(proof(RSA, URL, header={"jwk": "a string"}), detail="no jwk object")
    refused(proof(RSA, URL, jwk={"kty": "RSA", "n": "AQAB"}), detail="not a valid public key")
    refused(proof(RSA, URL, jwk={"kty": "XYZ"}), detail="not a valid public key")


def test_ath_is_checked_when_sent_and_required_when_the_grant_says_so() -> None:
    check(BOUND_TOKEN, proof(RSA, URL, token=BOUND_TOKEN))
    check(BOUND_TOKEN, proof(RSA, URL))  # authlete-java-common sends none
    refused(proof(RSA, URL), require_ath=True, detail="needs an ath")
    check(BOUND_TOKEN, proof(RSA, URL, token=BOUND_TOKEN), require_ath=True)


def test_a_failing_replay_cache_refuses_with_500() -> None:
    class Down(MemoryTicketStore):
        def claim(self, key: str, ttl: float) -> bool:
            raise StoreError("down")

    with pytest.raises(StoreFailed, match="could not be checked for replay"):
        check(BOUND_TOKEN, proof(RSA, URL), replay=Down())


@pytest.mark.parametrize(
    ("sent", "received"),
    [
        (f"HTTP://LOCALHOST{V3}", URL),
        (f"http://localhost:80{V3}", URL),
        (f"http://localhost{V3}?query=1#fragment", URL),
        (f"http://localhost/api/./{SERVICE}/x/../backchannel/authentication/fail", URL),
        ("http://localhost/api/%7e%41", "http://localhost/api/~A"),
        ("http://localhost/api/%2f", "http://localhost/api/%2F"),
        ("https://h:443", "https://h/"),
        ("http://[::1]:8080/a", "http://[::1]:8080/a"),
    ],
)
def test_htu_is_compared_after_normalization(sent: str, received: str) -> None:
    assert normal_url(sent) == normal_url(received)
    check(BOUND_TOKEN, proof(RSA, sent), url=received)


@pytest.mark.parametrize("url", ["ftp://h/a", "http:///a", "http://h:99999/a", "not a url", "http://[::1/a"])
def test_a_url_that_is_not_http_never_matches(url: str) -> None:
    assert normal_url(url) is None


def test_thumbprint_is_rfc_7638() -> None:
    # RFC 7638 section 3.1's example key and thumbprint.
    jwk = {
        "kty": "RSA",
        "n": (
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjB"
            "ZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8"
            "KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_"
            "xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
        ),
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


# -- hypothesis: whatever arrives, a refusal and nothing else --------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _segment(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.text(max_size=300))
def test_arbitrary_text_is_refused(value: str) -> None:
    with pytest.raises(DpopRefused):
        check(BOUND_TOKEN, value)


@settings(max_examples=200, deadline=None)
@given(header=_JSON, payload=_JSON, signature=st.binary(max_size=300))
def test_arbitrary_json_segments_are_refused(header: Any, payload: Any, signature: bytes) -> None:
    value = f"{_segment(header)}.{_segment(payload)}.{base64.urlsafe_b64encode(signature).decode().rstrip('=') or 'A'}"
    with pytest.raises(DpopRefused):
        check(BOUND_TOKEN, value)


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(["typ", "alg", "jwk"]),
    replacement=_JSON,
)
def test_a_header_member_replaced_by_anything_is_refused(name: str, replacement: Any) -> None:
    good = {"typ": "dpop+jwt", "alg": "PS256", "jwk": public(RSA)}
    if good[name] == replacement or (
        name == "typ"
        and isinstance(replacement, str)
        and replacement.lower().removeprefix("application/") == "dpop+jwt"
    ):
        return
    with pytest.raises(DpopRefused):
        check(BOUND_TOKEN, proof(RSA, URL, header={name: replacement}))


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(["htm", "htu", "iat", "jti", "ath"]), replacement=_JSON)
def test_a_claim_replaced_by_anything_is_refused(name: str, replacement: Any) -> None:
    valid = {
        "jti": isinstance(replacement, str) and 0 < len(replacement) <= 256,
        "htm": replacement == "POST",
        "htu": isinstance(replacement, str) and normal_url(replacement) == normal_url(URL),
        "iat": isinstance(replacement, int | float)
        and not isinstance(replacement, bool)
        and abs(replacement - time.time()) < MAX_SKEW,
        "ath": replacement == token_hash(BOUND_TOKEN),
    }
    if valid[name]:
        return
    with pytest.raises(DpopRefused):
        check(BOUND_TOKEN, proof(RSA, URL, token=BOUND_TOKEN, claims={name: replacement}), require_ath=True)


@settings(max_examples=150, deadline=None)
@given(position=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
def test_any_changed_character_is_refused(position: int, flip: int) -> None:
    value = proof(EC, URL)
    index = position % len(value)
    changed = value[:index] + chr((ord(value[index]) + flip) % 128 or 1) + value[index + 1 :]
    if changed == value:
        return
    try:
        check(BOUND_TOKEN, changed, key=EC)
    except DpopRefused:
        return
    # base64url's last character can carry unused bits: the decoded bytes are the same.
    assert base64.urlsafe_b64decode(_padded(changed.split(".")[-1])) == base64.urlsafe_b64decode(
        _padded(value.split(".")[-1])
    )


def _padded(segment: str) -> str:
    return segment + "=" * (-len(segment) % 4)


# -- the grants -------------------------------------------------------------------------------


def test_grant_binding_is_checked() -> None:
    jkt = RSA.thumbprint()
    with pytest.raises(ConfigurationError, match="43 base64url"):
        StaticTokenVerifier([{"service": SERVICE, "token": "t", "dpop_jkt": "short"}])
    with pytest.raises(ConfigurationError, match="API secret cannot be bound"):
        StaticTokenVerifier([{"service": SERVICE, "api_secret": "s", "dpop_jkt": jkt}])
    with pytest.raises(ConfigurationError, match="needs 'dpop_jkt'"):
        StaticTokenVerifier([{"service": SERVICE, "token": "t", "dpop_require_ath": True}])
    with pytest.raises(ConfigurationError, match="true or false"):
        StaticTokenVerifier([{"service": SERVICE, "token": "t", "dpop_jkt": jkt, "dpop_require_ath": "yes"}])
    verifier = StaticTokenVerifier([{"organization": "acme", "services": [SERVICE], "token": "t", "dpop_jkt": jkt}])
    assert verifier.dpop_bound
    principal = verifier.verify_bearer("t")
    assert principal is not None
    assert principal.dpop_jkt == jkt
    assert not StaticTokenVerifier(GRANTS).dpop_bound


def test_a_store_without_claim_makes_bound_grants_a_configuration_error() -> None:
    class NoReplay:
        def __init__(self) -> None:
            self.inner = MemoryTicketStore()

        def issue(self, service_id: str, ttl: float | None = None) -> str:
            return self.inner.issue(service_id, ttl)

        def exists(self, service_id: str, ticket: str) -> bool:
            return self.inner.exists(service_id, ticket)

        def delete(self, service_id: str, ticket: str) -> bool:
            return self.inner.delete(service_id, ticket)

        def ping(self) -> None:
            return None

        def close(self) -> None:
            return None

    with pytest.raises(ConfigurationError, match="cannot remember DPoP proofs"):
        BackchannelFailMiddleware(None, store=NoReplay(), verifier=StaticTokenVerifier(grants(SERVICE)))  # type: ignore[arg-type]
    # Unbound grants do not need it.
    BackchannelFailMiddleware(None, store=NoReplay(), verifier=StaticTokenVerifier(GRANTS))  # type: ignore[arg-type]


# -- over WSGI --------------------------------------------------------------------------------


@pytest.fixture
def client() -> tuple[InProcess, MemoryTicketStore]:
    store = MemoryTicketStore()
    middleware = BackchannelFailMiddleware(
        None,  # type: ignore[arg-type]
        store=store,
        verifier=StaticTokenVerifier([*GRANTS, *grants(SERVICE)]),
    )
    return InProcess(middleware), store


def _post(client: InProcess, headers: dict[str, str], ticket: str, path: str = V3) -> Any:
    body = json.dumps({"ticket": ticket, "reason": "ACCESS_DENIED"}).encode()
    return client.request("POST", path, headers={"Content-Type": "application/json", **headers}, body=body)


@pytest.mark.parametrize("path", [V3, V2])
def test_a_bound_token_with_its_proof_fails_the_ticket(client: tuple[InProcess, MemoryTicketStore], path: str) -> None:
    app, store = client
    ticket = store.issue(SERVICE)
    answer = _post(
        app, {"Authorization": f"DPoP {BOUND_TOKEN}", "DPoP": proof(RSA, f"http://localhost{path}")}, ticket, path
    )
    assert answer.status == 200, answer.body
    assert answer.json()["action"] == "FORBIDDEN"
    assert not store.exists(SERVICE, ticket)


def test_ath_required_by_the_grant(client: tuple[InProcess, MemoryTicketStore]) -> None:
    app, store = client
    ticket = store.issue(SERVICE)
    without = _post(app, {"Authorization": f"DPoP {ATH_TOKEN}", "DPoP": proof(ED, URL)}, ticket)
    assert without.status == 401
    assert "needs an ath" in without.json()["resultMessage"]
    with_ath = _post(app, {"Authorization": f"DPoP {ATH_TOKEN}", "DPoP": proof(ED, URL, token=ATH_TOKEN)}, ticket)
    assert with_ath.status == 200
    assert not store.exists(SERVICE, ticket)


@pytest.mark.parametrize(
    ("headers", "detail", "error"),
    [
        ({"Authorization": f"Bearer {BOUND_TOKEN}"}, "send it as 'Authorization: DPoP'", "invalid_token"),
        ({"Authorization": f"Bearer {BOUND_TOKEN}", "DPoP": "x"}, "send it as 'Authorization: DPoP'", "invalid_token"),
        ({"Authorization": f"DPoP {BOUND_TOKEN}"}, "a DPoP proof header is required", "invalid_dpop_proof"),
        ({"Authorization": f"DPoP {EC_BOUND_TOKEN}", "DPoP": "e30.e30.e30"}, "typ must be", "invalid_dpop_proof"),
        ({"Authorization": f"DPoP {SERVICE_TOKEN}", "DPoP": "x"}, "not bound to a DPoP key", "invalid_token"),
    ],
)
def test_refusals_over_wsgi(
    client: tuple[InProcess, MemoryTicketStore], headers: dict[str, str], detail: str, error: str
) -> None:
    app, store = client
    ticket = store.issue(SERVICE)
    answer = _post(app, headers, ticket)
    assert answer.status == 401
    body = answer.json()
    assert body["resultCode"] == "A185214"
    assert detail in body["resultMessage"]
    challenge = answer.headers["WWW-Authenticate"]
    assert challenge.startswith('DPoP realm="ciba-middleware", algs="')
    assert f'error="{error}"' in challenge
    assert answer.headers["Request-Id"]
    assert store.exists(SERVICE, ticket)


def test_an_unbound_token_keeps_working_as_bearer(client: tuple[InProcess, MemoryTicketStore]) -> None:
    app, store = client
    ticket = store.issue(SERVICE)
    assert _post(app, {"Authorization": f"Bearer {SERVICE_TOKEN}", "DPoP": "ignored"}, ticket).status == 200
    assert not store.exists(SERVICE, ticket)


def test_wrong_htu_and_method_over_wsgi(client: tuple[InProcess, MemoryTicketStore]) -> None:
    app, store = client
    ticket = store.issue(SERVICE)
    for value in (
        proof(RSA, f"https://localhost{V3}"),
        proof(RSA, f"http://localhost:8080{V3}"),
        proof(RSA, URL, htm="PUT"),
    ):
        answer = _post(app, {"Authorization": f"DPoP {BOUND_TOKEN}", "DPoP": value}, ticket)
        assert answer.status == 401
        assert PROOF_ERROR in answer.headers["WWW-Authenticate"]
    assert store.exists(SERVICE, ticket)


# -- the replay cache, in each backend --------------------------------------------------------

BACKENDS = ["memory", "sqlite", "redis", "postgresql"]


@pytest.fixture(params=BACKENDS)
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Any]]:
    name = unique_name("ciba_dpop")
    kind = request.param
    if kind == "memory":
        url = "memory://"
    elif kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'tickets.sqlite3'}"
    elif kind == "redis":
        url = f"{request.getfixturevalue('redis_url')}?key_prefix={name}:"
    else:
        url = f"{request.getfixturevalue('postgres_url')}?table={name}"
    store = store_from_url(url)
    try:
        yield url, store
    finally:
        if kind == "redis":
            client = store.client
            keys = list(client.scan_iter(match=f"{name}:*", count=1000))
            if keys:
                client.delete(*keys)
        elif kind == "postgresql":
            import psycopg

            with psycopg.connect(request.getfixturevalue("postgres_url"), autocommit=True) as conn:
                conn.execute(f'DROP TABLE IF EXISTS "{name}"')
                conn.execute(f'DROP TABLE IF EXISTS "{name}_replay"')
        store.close()


def test_claim_is_first_caller_only_and_expires(shared_store: tuple[str, Any]) -> None:
    _, store = shared_store
    assert isinstance(store, ReplayCache)
    key = "dpop:" + "a" * 64
    assert store.claim(key, 0.5) is True
    assert store.claim(key, 0.5) is False
    assert store.claim("dpop:" + "b" * 64, 0.5) is True
    time.sleep(0.6)
    assert store.claim(key, 10) is True
    assert store.claim(key, 10) is False
    with pytest.raises(ValueError, match="ttl"):
        store.claim(key, 0)


def test_claim_races_have_one_winner(shared_store: tuple[str, Any]) -> None:
    url, store = shared_store
    stores = [store] + ([store_from_url(url) for _ in range(3)] if not url.startswith("memory") else [])
    try:
        for round_ in range(5):
            key = f"dpop:race-{round_}-{unique_name()}"
            barrier = threading.Barrier(8)

            def claim(index: int, key: str = key, barrier: threading.Barrier = barrier) -> bool:
                barrier.wait()
                return bool(stores[index % len(stores)].claim(key, 30))

            with ThreadPoolExecutor(8) as pool:
                results = list(pool.map(claim, range(8)))
            assert results.count(True) == 1
    finally:
        for other in stores[1:]:
            other.close()


@pytest.mark.parametrize("shared_store", ["sqlite", "redis", "postgresql"], indirect=True)
def test_a_proof_replayed_across_two_server_processes_is_accepted_once(shared_store: tuple[str, Any]) -> None:
    url, store = shared_store
    env = {"CIBA_STORE_URL": url, "CIBA_TOKENS": json.dumps([*GRANTS, *grants(SERVICE)])}
    servers = [LiveServer("ciba_middleware.wsgi:application", env) for _ in range(2)]
    HOST_0 = servers[0].url.removeprefix("http://")
    try:
        for _ in range(3):
            tickets = [store.issue(SERVICE) for _ in servers]
            # The same proof to both, at once. htu names the first server; the second gets a
            # Host header naming it too, as a replaying attacker would send.
            value = proof(RSA, f"{servers[0].url}{V3}")
            barrier = threading.Barrier(2)

            def send(
                index: int, value: str = value, tickets: list[str] = tickets, barrier: threading.Barrier = barrier
            ) -> requests.Response:
                barrier.wait()
                return requests.post(
                    servers[index].url + V3,
                    json={"ticket": tickets[index], "reason": "ACCESS_DENIED"},
                    headers={"Authorization": f"DPoP {BOUND_TOKEN}", "DPoP": value, "Host": HOST_0},
                    timeout=10,
                )

            with ThreadPoolExecutor(2) as pool:
                answers = list(pool.map(send, range(2)))
            statuses = sorted(answer.status_code for answer in answers)
            assert statuses == [200, 401], [a.text for a in answers]
            loser = next(a for a in answers if a.status_code == 401)
            assert "jti was used before" in loser.json()["resultMessage"]
            assert PROOF_ERROR in loser.headers["WWW-Authenticate"]
            # Exactly the winner's ticket is gone.
            assert [store.exists(SERVICE, t) for t in tickets].count(False) == 1
    finally:
        for server in servers:
            server.stop()
