"""The key that signs ID tokens: ``CIBA_SIGNING_KEY_FILE``, or one made for the process.

A private JWK (RFC 7517) chooses its algorithm: EC P-256 signs with ES256, RSA with RS256
(PS256 when the JWK says ``"alg": "PS256"``), Ed25519 with EdDSA. Its public half is what
``/service/jwks/get`` answers. Needs joserfc (the ``ciba`` extra).

The JWS is put together here (RFC 7515 7.1, compact) with joserfc's algorithm objects: the
same bytes as ``joserfc.jwt.encode``, without the registry lookup that warns on every
EdDSA signature.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from typing import Any

from ..errors import ConfigurationError

__all__ = ["INSTALL_HINT", "SigningKey"]

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'ciba-middleware[ciba]'"
# (kty, crv) -> the algorithms the key may sign with, the first by default.
_ALGORITHMS: dict[tuple[str, str | None], tuple[str, ...]] = {
    ("EC", "P-256"): ("ES256",),
    ("RSA", None): ("RS256", "PS256"),
    ("OKP", "Ed25519"): ("EdDSA",),
}
_compact = json.JSONEncoder(separators=(",", ":")).encode


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class SigningKey:
    """A private key, its algorithm and ``kid``.

    >>> key = SigningKey.generate(warn=False)
    >>> key.alg, key.verify(key.sign({"sub": "alice"}))["sub"]
    ('ES256', 'alice')
    """

    def __init__(self, jwk: dict[str, Any], *, source: str = "the key") -> None:
        try:
            from joserfc.jwk import import_key
            from joserfc.jws import JWSRegistry
        except ImportError:
            raise ConfigurationError(f"signing ID tokens needs joserfc: {INSTALL_HINT}") from None
        if not isinstance(jwk, dict):
            raise ConfigurationError(f"{source} must be a JSON object (a private JWK)")
        kty = jwk.get("kty")
        crv = jwk.get("crv") if kty != "RSA" else None
        allowed = _ALGORITHMS.get((kty, crv))  # type: ignore[arg-type]
        if allowed is None:
            raise ConfigurationError(f"{source} must be an EC P-256, RSA or Ed25519 JWK, not kty={kty!r} crv={crv!r}")
        if "d" not in jwk:
            raise ConfigurationError(f"{source} is a public key; ID tokens need the private one (with 'd')")
        alg = jwk.get("alg", allowed[0])
        if alg not in allowed:
            raise ConfigurationError(f"{source} is a {kty} key, which signs with {' or '.join(allowed)}, not {alg!r}")
        try:
            self._key = import_key(jwk)
        except Exception as exc:  # joserfc's and cryptography's many errors for a bad key
            raise ConfigurationError(f"{source} is not a usable JWK: {exc}") from None
        if kty == "RSA" and self._key.raw_value.key_size < 2048:  # type: ignore[union-attr]
            raise ConfigurationError(f"{source} is an RSA key under 2048 bits")
        self.alg: str = alg
        self.kid: str = str(jwk.get("kid") or self._key.thumbprint())
        self._model = JWSRegistry.algorithms[alg]
        public = self._key.as_dict(private=False)
        public.update({"kid": self.kid, "alg": alg, "use": "sig"})
        self.public_jwk: dict[str, Any] = public
        self._header = _b64(_compact({"alg": alg, "typ": "JWT", "kid": self.kid}).encode())
        # OpenID Connect Core 3.1.3.6: the hash of the JWS algorithm; Ed25519 signs with SHA-512.
        self._hash = hashlib.sha512 if alg == "EdDSA" else hashlib.sha256

    @classmethod
    def from_file(cls, path: str) -> SigningKey:
        """The JWK in the file at ``path``, or ConfigurationError naming ``CIBA_SIGNING_KEY_FILE``."""
        try:
            with open(path, "rb") as f:
                data = json.loads(f.read().decode("utf-8"))
        except OSError as exc:
            raise ConfigurationError(f"CIBA_SIGNING_KEY_FILE: cannot read {path!r}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise ConfigurationError(f"CIBA_SIGNING_KEY_FILE {path!r} is not JSON: {exc}") from None
        return cls(data, source=f"CIBA_SIGNING_KEY_FILE {path!r}")

    @classmethod
    def generate(cls, *, warn: bool = True) -> SigningKey:
        """A new EC P-256 key for this process only: its ID tokens verify against this
        process's JWKS alone (another worker or a restart has another key)."""
        try:
            from joserfc.jwk import ECKey
        except ImportError:
            raise ConfigurationError(f"signing ID tokens needs joserfc: {INSTALL_HINT}") from None
        if warn:
            log.warning(
                "CIBA_SIGNING_KEY_FILE is not set: ID tokens are signed with a key made for this process "
                "(other workers and restarts have others); set it outside development"
            )
        return cls(ECKey.generate_key("P-256").as_dict(private=True), source="the generated key")

    def sign(self, claims: dict[str, Any]) -> str:
        """The compact JWS of ``claims`` (a JWT)."""
        signing_input = f"{self._header}.{_b64(_compact(claims).encode())}"
        signature = self._model.sign(signing_input.encode("ascii"), self._key)
        return f"{signing_input}.{_b64(signature)}"

    def verify(self, token: str) -> dict[str, Any] | None:
        """The claims of a JWT this key signed, or None (any other token, or not a JWT)."""
        try:
            header, payload, signature = token.split(".")
            head = json.loads(_unb64(header))
            if head.get("alg") != self.alg or head.get("kid", self.kid) != self.kid:
                return None
            if not self._model.verify(f"{header}.{payload}".encode("ascii"), _unb64(signature), self._key):
                return None
            claims = json.loads(_unb64(payload))
        except (ValueError, TypeError, UnicodeError, AttributeError):
            return None
        return claims if isinstance(claims, dict) else None

    def half_hash(self, value: str) -> str:
        """``at_hash``: the left half of the hash of ``value`` (OpenID Connect Core 3.1.3.6)."""
        digest = self._hash(value.encode("ascii")).digest()
        return _b64(digest[: len(digest) // 2])

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set, as ``/service/jwks/get`` answers it."""
        return {"keys": [dict(self.public_jwk)]}


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
