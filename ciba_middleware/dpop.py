"""DPoP proofs (RFC 9449) for service access tokens bound to a key.

A grant may bind its token to a key by the key's JWK SHA-256 thumbprint (RFC 7638),
``"dpop_jkt"``. Such a token is accepted only as ``Authorization: DPoP <token>`` with a
``DPoP`` header holding a proof that :func:`check_proof` accepts (RFC 9449 section 4.3):

- one compact JWS, at most :data:`MAX_PROOF_LENGTH` characters;
- ``typ`` ``dpop+jwt``, ``alg`` one of :data:`ALGORITHMS` (asymmetric only), ``jwk`` a
  public key (no private members) whose thumbprint is the grant's ``dpop_jkt``;
- the signature verifies with that key (joserfc does the JWS work);
- ``htm`` is the request's method, ``htu`` its URL without query and fragment, both URLs
  compared after RFC 3986 syntax- and scheme-based normalization (RFC 9449 4.3 step 9);
- ``iat`` at most :data:`MAX_AGE` seconds old and at most :data:`MAX_SKEW` ahead;
- ``ath``, when sent (or when the grant says ``dpop_require_ath``), the base64url SHA-256
  of the token;
- ``jti`` never accepted twice within :data:`REPLAY_TTL`, across every worker and host
  sharing the store (:class:`~ciba_middleware.stores.base.ReplayCache`).

Anything else raises :class:`~ciba_middleware.errors.DpopRefused`, answered 401 with
``WWW-Authenticate: DPoP error="invalid_dpop_proof"`` (RFC 9449 section 7.1).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import math
import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from .errors import DpopRefused, StoreError, StoreFailed
from .stores.base import ReplayCache

__all__ = [
    "ALGORITHMS",
    "MAX_AGE",
    "MAX_PROOF_LENGTH",
    "MAX_SKEW",
    "REPLAY_TTL",
    "challenge",
    "check_proof",
    "quoted_path",
    "thumbprint",
    "token_hash",
]

#: The JWS algorithms a proof may use: asymmetric ones only (RFC 9449 section 4.2), and for
#: Edwards curves the fully specified names of RFC 9864 (its deprecated "EdDSA" is refused).
ALGORITHMS = ("ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "RS256", "RS384", "RS512", "Ed25519", "Ed448")
#: Seconds a proof is accepted after its ``iat``.
MAX_AGE = 300.0
#: Seconds a proof's ``iat`` may lie ahead of this server's clock.
MAX_SKEW = 60.0
#: Seconds a ``jti`` is remembered: as long as a proof carrying it can be accepted.
REPLAY_TTL = MAX_AGE + MAX_SKEW
#: The longest ``DPoP`` header read (an RSA-4096 proof is about 1.5 KB).
MAX_PROOF_LENGTH = 8192
_MAX_JTI = 256

_REALM = 'realm="ciba-middleware"'
_ALGS = f'algs="{" ".join(ALGORITHMS)}"'
_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_JKT = re.compile(r"[A-Za-z0-9_-]{43}")
# JWK members that only a private key has (RFC 7518 6.2.2, 6.3.2; RFC 8037 2; oct's "k").
_PRIVATE_MEMBERS = frozenset(("d", "p", "q", "dp", "dq", "qi", "oth", "k"))
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def challenge(error: str, description: str) -> str:
    """The ``WWW-Authenticate`` value of a refusal (RFC 9449 section 7.1)."""
    return f'DPoP {_REALM}, {_ALGS}, error="{error}", error_description="{description}"'


def _refuse(detail: str, error: str = "invalid_dpop_proof") -> DpopRefused:
    # The challenge's description is fixed text: the detail may quote the caller.
    description = "Invalid DPoP proof" if error == "invalid_dpop_proof" else "Invalid DPoP key binding"
    return DpopRefused(detail, challenge(error, description))


def well_formed_jkt(value: object) -> bool:
    """Whether ``value`` can be a JWK SHA-256 thumbprint: 43 base64url characters."""
    return isinstance(value, str) and _JKT.fullmatch(value) is not None


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of a public (or private) JWK: a grant's ``dpop_jkt``."""
    from joserfc.jwk import JWKRegistry

    return str(JWKRegistry.import_key(dict(jwk)).thumbprint())


def token_hash(token: str) -> str:
    """``ath``: the base64url SHA-256 of the access token's ASCII (RFC 9449 section 4.2)."""
    digest = hashlib.sha256(token.encode("ascii", "surrogateescape")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def quoted_path(path: str) -> str:
    """A request's path as a URL has it: ``path`` is the raw bytes decoded as latin-1
    (PEP 3333), percent-encoded again here (:func:`ciba_middleware.core.request_url`)."""
    return quote(path.encode("latin-1", "replace"), safe="/;=,@:!$&'()*+~")


def normal_url(url: str) -> str | None:
    """``url`` without query and fragment, normalized as RFC 3986 6.2.2 and 6.2.3 say; None if not an HTTP URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    if ":" in host:
        host = f"[{host}]"
    authority = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    return f"{scheme}://{authority}{_normal_path(parts.path)}"


def _normal_path(path: str) -> str:
    def one(match: re.Match[str]) -> str:
        byte = int(match.group(1), 16)
        return chr(byte) if byte in _UNRESERVED else f"%{byte:02X}"

    path = _PERCENT.sub(one, path) or "/"
    # RFC 3986 5.2.4, remove_dot_segments, on an absolute path.
    out: list[str] = []
    segments = path.split("/")[1:]
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        elif segment == ".":
            if last:
                out.append("")
        else:
            out.append(segment)
    return "/" + "/".join(out)


def check_proof(
    proof: str,
    *,
    method: str,
    url: str,
    token: str,
    jkt: str,
    replay: ReplayCache | None,
    require_ath: bool = False,
    now: float | None = None,
) -> None:
    """Accept ``proof`` for a request (``method``, ``url``) carrying ``token`` bound to ``jkt``, or raise.

    Raises :class:`~ciba_middleware.errors.DpopRefused` for a proof that RFC 9449
    section 4.3 refuses, and :class:`~ciba_middleware.errors.StoreFailed` when the
    replay check cannot be made (never accepting a proof it could not check).
    """
    from joserfc import jws
    from joserfc.errors import JoseError
    from joserfc.jwk import JWKRegistry

    if not proof:
        raise _refuse("the access token is bound to a DPoP key; a DPoP proof header is required.")
    if len(proof) > MAX_PROOF_LENGTH:
        raise _refuse(f"the DPoP proof is longer than {MAX_PROOF_LENGTH} characters.")
    if "," in proof:
        raise _refuse("more than one DPoP header was sent.")
    if not _JWS.fullmatch(proof):
        raise _refuse("the DPoP proof is not a compact JWS.")
    try:
        header = json.loads(_b64decode(proof.partition(".")[0]))
    except ValueError:
        raise _refuse("the DPoP proof's JOSE header is not base64url JSON.") from None
    except RecursionError:
        raise _refuse("the DPoP proof's JOSE header nests too deeply.") from None
    if not isinstance(header, dict):
        raise _refuse("the DPoP proof's JOSE header is not a JSON object.")
    typ = header.get("typ")
    # A media type, compared without regard to case; "application/" may be left out (RFC 7515 4.1.9).
    if not isinstance(typ, str) or typ.lower().removeprefix("application/") != "dpop+jwt":
        raise _refuse("the DPoP proof's typ must be 'dpop+jwt'.")
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise _refuse(f"the DPoP proof's alg must be one of {', '.join(ALGORITHMS)}.")
    jwk = header.get("jwk")
    if not isinstance(jwk, dict):
        raise _refuse("the DPoP proof's header has no jwk object.")
    if _PRIVATE_MEMBERS & jwk.keys():
        raise _refuse("the DPoP proof's jwk holds private key members; it must be a public key.")
    try:
        key = JWKRegistry.import_key(jwk)
        found = key.thumbprint()
    except (JoseError, ValueError, TypeError, KeyError):
        raise _refuse("the DPoP proof's jwk is not a valid public key.") from None
    if key.is_private or key.key_type == "oct":
        raise _refuse("the DPoP proof's jwk must be a public asymmetric key.")
    if not hmac.compare_digest(found.encode(), jkt.encode()):
        raise _refuse("the DPoP proof's key is not the key the access token is bound to.", "invalid_token")
    try:
        payload = jws.deserialize_compact(proof, key, algorithms=[alg], registry=_registry()).payload
    except (JoseError, ValueError, TypeError):
        raise _refuse("the DPoP proof's signature does not verify with its jwk.") from None
    try:
        claims = json.loads(payload)
    except ValueError:
        raise _refuse("the DPoP proof's payload is not JSON.") from None
    except RecursionError:
        raise _refuse("the DPoP proof's payload nests too deeply.") from None
    if not isinstance(claims, dict):
        raise _refuse("the DPoP proof's payload is not a JSON object.")
    _check_claims(claims, method=method, url=url, token=token, require_ath=require_ath, now=now)
    try:
        first = replay is not None and replay.claim(_replay_key(jkt, claims["jti"]), REPLAY_TTL)
    except StoreError as exc:
        raise StoreFailed("the ticket store failed; the DPoP proof could not be checked for replay.") from exc
    if not first:
        raise _refuse("the DPoP proof's jti was used before; send a new proof with every request.")


def _check_claims(
    claims: dict[str, Any], *, method: str, url: str, token: str, require_ath: bool, now: float | None
) -> None:
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 0 < len(jti) <= _MAX_JTI:
        raise _refuse(f"the DPoP proof needs a jti of 1 to {_MAX_JTI} characters.")
    if claims.get("htm") != method:
        raise _refuse(f"the DPoP proof's htm must be {method}.")
    htu = claims.get("htu")
    expected = normal_url(url)
    if not isinstance(htu, str) or expected is None or normal_url(htu) != expected:
        raise _refuse("the DPoP proof's htu is not this request's URL.")
    iat = claims.get("iat")
    # NaN (which Python's json reads) compares false with everything, so it would pass both
    # bounds below; infinities are no time either.
    if isinstance(iat, bool) or not isinstance(iat, int | float) or not math.isfinite(iat):
        raise _refuse("the DPoP proof needs a numeric iat.")
    current = time.time() if now is None else now
    if iat < current - MAX_AGE:
        raise _refuse(f"the DPoP proof was issued more than {MAX_AGE:g} seconds ago.")
    if iat > current + MAX_SKEW:
        raise _refuse(f"the DPoP proof's iat is more than {MAX_SKEW:g} seconds ahead.")
    ath = claims.get("ath")
    if ath is None:
        if require_ath:
            raise _refuse("the DPoP proof needs an ath (the hash of the access token).")
    elif not isinstance(ath, str) or not hmac.compare_digest(ath.encode(), token_hash(token).encode()):
        raise _refuse("the DPoP proof's ath is not the hash of the access token.")


@functools.cache
def _registry() -> Any:
    """joserfc's JWS registry, with room for a ``jwk`` header (its default 512 bytes is below an RSA key's)."""
    from joserfc.jws import JWSRegistry

    registry = JWSRegistry(algorithms=ALGORITHMS)
    registry.max_header_length = MAX_PROOF_LENGTH
    return registry


def _replay_key(jkt: str, jti: str) -> str:
    # Scoped to the key: two clients' jti values never collide. A digest: fixed length,
    # and no caller-chosen characters reach a store.
    return "dpop:" + hashlib.sha256(f"{jkt} {jti}".encode("utf-8", "surrogatepass")).hexdigest()


def _b64decode(segment: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError(str(exc)) from None
