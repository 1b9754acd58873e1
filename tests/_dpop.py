"""DPoP proofs for the tests, built with joserfc: RFC 9449's, and authlete-java-common's."""

from __future__ import annotations

import json
import time
import uuid
from base64 import urlsafe_b64encode
from typing import Any

from joserfc import jws
from joserfc.jwk import ECKey, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

from ciba_middleware import sha256_hex
from ciba_middleware.dpop import token_hash

RSA = RSAKey.generate_key(2048)
EC = ECKey.generate_key("P-256")
ED = OKPKey.generate_key("Ed25519")
OTHER_RSA = RSAKey.generate_key(2048)

#: A token bound to RSA's key, and one bound to EC's: test values, never real secrets.
BOUND_TOKEN = "dpop-bound-token-715948317"
EC_BOUND_TOKEN = "dpop-bound-ec-token-715948317"
ATH_TOKEN = "dpop-bound-ath-token-715948317"


def public(key: Any, **extra: Any) -> dict[str, Any]:
    """The public JWK of ``key``, with extra members (``alg``, ``kid``) as a client would add."""
    return {**key.as_dict(private=False), **extra}


def grants(service: str) -> list[dict[str, Any]]:
    return [
        {"service": service, "token_sha256": sha256_hex(BOUND_TOKEN), "dpop_jkt": RSA.thumbprint()},
        {"service": service, "token_sha256": sha256_hex(EC_BOUND_TOKEN), "dpop_jkt": EC.thumbprint()},
        {
            "service": service,
            "token_sha256": sha256_hex(ATH_TOKEN),
            "dpop_jkt": ED.thumbprint(),
            "dpop_require_ath": True,
        },
    ]


def proof(
    key: Any,
    htu: str,
    *,
    htm: str = "POST",
    token: str | None = None,
    alg: str | None = None,
    header: dict[str, Any] | None = None,
    claims: dict[str, Any] | None = None,
    drop: tuple[str, ...] = (),
    jwk: dict[str, Any] | None = None,
) -> str:
    """An RFC 9449 proof signed by ``key``: ``header`` and ``claims`` add to or replace its members."""
    alg = alg or {"RSA": "PS256", "EC": "ES256", "OKP": "Ed25519"}[key.key_type]
    head = {"typ": "dpop+jwt", "alg": alg, "jwk": jwk if jwk is not None else public(key), **(header or {})}
    body: dict[str, Any] = {"jti": uuid.uuid4().hex, "htm": htm, "htu": htu, "iat": int(time.time())}
    if token is not None:
        body["ath"] = token_hash(token)
    body.update(claims or {})
    for name in drop:
        body.pop(name, None)
    # Signed by hand around joserfc's algorithm, so that a test can send headers joserfc's
    # serializer would refuse to build (a null typ, a private jwk, ...).
    signing_input = f"{_segment(head)}.{_segment(body)}".encode()
    signature = JWSRegistry.algorithms[alg].sign(signing_input, key)
    return f"{signing_input.decode()}.{urlsafe_b64encode(signature).decode().rstrip('=')}"


def _segment(value: Any) -> str:
    return urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def java_proof(key: RSAKey, method: str, htu: str) -> str:
    """The proof authlete-java-common signs in ``AuthleteApiBasicImpl.wrapWithDpop`` (nimbus-jose-jwt).

    Built as its source does (src/main/java/com/authlete/common/api/AuthleteApiBasicImpl.java,
    ``wrapWithDpop``, lines 555-588 at the version read)::

        String htu = mBaseUrl + path;
        JWSHeader header = new JWSHeader.Builder(JWSAlgorithm.RS256)
                .type(new JOSEObjectType("dpop+jwt")).jwk(mDpopJwk).build();
        JWTClaimsSet claims = new JWTClaimsSet.Builder()
                .claim("htm", method.name()).claim("htu", htu)
                .jwtID(UUID.randomUUID().toString()).issueTime(new Date()).build();

    RS256 always (so an RSA key: nimbus' RSASSASigner), ``typ`` ``dpop+jwt``, the
    configured JWK in ``jwk`` (its ``alg`` member is required by ``extractDpop``), claims in
    that order, ``jti`` a UUID in its 36-character form, ``iat`` whole seconds, and no
    ``ath``. nimbus' ``JWSHeader.Builder.jwk`` takes a public JWK only, so the header
    carries the public half of the configured key.
    """
    header = {"alg": "RS256", "typ": "dpop+jwt", "jwk": public(key, alg="RS256")}
    claims = {"htm": method, "htu": htu, "jti": str(uuid.uuid4()), "iat": int(time.time())}
    # JWTClaimsSet.toString(): compact JSON, as json.dumps with these separators.
    return jws.serialize_compact(header, json.dumps(claims, separators=(",", ":")), key, algorithms=["RS256"])
