"""JWT verification (PROTOCOL.md §1), shared by Socket.IO connect, /ws and REST.

PyJWT does the cryptography and claim checks; this module only pins the accepted
algorithm (so ``alg: none`` and HS256-with-a-public-key are refused), requires ``exp``
and ``sub``, and turns every failure into one generic ``Unauthorized`` so a caller
cannot learn which check failed.

A REST client sends the same token with every request, and PyJWT's checks cost about
150 µs per call (base64, JSON, key preparation, HMAC): a tenth of a history request's CPU.
So a token PyJWT accepted is remembered, by its exact text, with the window its time claims
allow (``iat``/``nbf`` to ``exp``, compared as PyJWT does); the same text inside that window
is the same verified token.  Refusals are never remembered.

Each new connection brings a token of its own, so connects pay PyJWT's checks in full, and
a third of them was preparing the key, again on every call: for an HMAC secret PyJWT makes
sure it is not a PEM, SSH or DER key nor a JWK (two failed ``cryptography`` parses and a
failed JSON parse), for a public key it parses the PEM.  The configured key never changes,
so the verifier's own ``PyJWT`` instance gets the algorithm through PyJWS's
``register_algorithm`` with the key prepared once, at start-up (``_KeyPreparedOnce``); any
other key still goes through the algorithm's own ``prepare_key``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.algorithms import Algorithm

from .config import Settings
from .domain import ROLE_USER, ROLES, Principal
from .errors import Unauthorized

log = logging.getLogger(__name__)

MAX_TOKEN_LENGTH = 8192

#: Verified tokens remembered at most (oldest forgotten first): a few MB at most.
VERIFIED_TOKENS_KEPT = 10_000


@dataclass(frozen=True, slots=True)
class _Verified:
    principal: Principal
    valid_from: int  # PyJWT refuses it while iat or nbf > now
    valid_until: int  # ... and once exp <= now


class _KeyPreparedOnce(Algorithm):
    """``algorithm`` with ``key`` prepared once: PyJWT prepares the key on every decode."""

    def __init__(self, algorithm: Algorithm, key: Any) -> None:
        self._algorithm = algorithm
        self._key = key
        self._prepared = algorithm.prepare_key(key)  # raises if the key does not fit the algorithm

    def prepare_key(self, key: Any) -> Any:
        return self._prepared if key is self._key else self._algorithm.prepare_key(key)

    def sign(self, msg: bytes, key: Any) -> bytes:
        return self._algorithm.sign(msg, key)

    def verify(self, msg: bytes, key: Any, sig: bytes) -> bool:
        return self._algorithm.verify(msg, key, sig)

    def check_key_length(self, key: Any) -> str | None:
        return self._algorithm.check_key_length(key)

    def compute_hash_digest(self, bytestr: bytes) -> bytes:
        return self._algorithm.compute_hash_digest(bytestr)

    @staticmethod
    def to_jwk(key_obj: Any, as_dict: bool = False) -> Any:
        raise NotImplementedError("verification only")

    @staticmethod
    def from_jwk(jwk: Any) -> Any:
        raise NotImplementedError("verification only")


def _decoder_for(algorithm: str, key: Any) -> jwt.PyJWT:
    """A ``PyJWT`` of our own whose ``algorithm`` has ``key`` prepared once (the module-level
    ``jwt.decode`` keeps the library's algorithms).  Should the library no longer keep its
    PyJWS where this expects it, or the key not fit the algorithm, the plain decoder is used
    (keys prepared per call, as before)."""
    decoder = jwt.PyJWT()
    jws = getattr(decoder, "_jws", None)
    if not isinstance(jws, jwt.PyJWS):
        log.warning("PyJWT keeps its PyJWS elsewhere: JWT keys are prepared on every verification")
        return decoder
    try:
        prepared = _KeyPreparedOnce(jws.get_algorithm_by_name(algorithm), key)
    except Exception:  # a key that does not fit: every token is refused, as PyJWT decides it
        return decoder
    jws.unregister_algorithm(algorithm)
    jws.register_algorithm(algorithm, prepared)
    return decoder


class TokenVerifier:
    def __init__(self, settings: Settings, *, kept: int = VERIFIED_TOKENS_KEPT, clock: Callable[[], float] = time.time) -> None:
        self._algorithm = settings.jwt_algorithm
        self._key: Any = settings.jwt_secret if self._algorithm == "HS256" else settings.jwt_public_key
        self._decoder = _decoder_for(self._algorithm, self._key)
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._verified: dict[str, _Verified] = {}
        self._kept = kept
        self._clock = clock

    def verify(self, token: str | None) -> Principal:
        if not token or not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
            raise Unauthorized()
        known = self._verified.get(token)
        if known is not None:
            if known.valid_from <= self._clock() < known.valid_until:
                return known.principal
            del self._verified[token]  # expired (or the clock went back): PyJWT decides again
        principal, claims = self._decode(token)
        if len(self._verified) >= self._kept:
            del self._verified[next(iter(self._verified))]
        # PyJWT compares int(claim) with the float time: valid while max(iat, nbf) <= now < exp.
        valid_from = max(int(claims.get("iat", 0)), int(claims.get("nbf", 0)))
        self._verified[token] = _Verified(principal, valid_from, int(claims["exp"]))
        return principal

    def _decode(self, token: str) -> tuple[Principal, Mapping[str, Any]]:
        try:
            claims = self._decoder.decode(
                token,
                self._key,
                algorithms=[self._algorithm],
                issuer=self._issuer,
                audience=self._audience,
                options={
                    "require": ["exp", "sub"],
                    "verify_aud": self._audience is not None,
                    "verify_iss": self._issuer is not None,
                },
            )
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            # The reason is logged for operators, never the token and never to the client.
            log.info("token refused: %s", type(exc).__name__)
            raise Unauthorized() from None
        return principal_from_claims(claims), claims


def principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.strip() or len(sub) > 128:
        raise Unauthorized()
    name = claims.get("name") or claims.get("username") or sub
    role = str(claims["role"]) if claims.get("role") in ROLES else ROLE_USER
    avatar = claims.get("avatar") if isinstance(claims.get("avatar"), str) else None
    return Principal(user_id=sub, username=str(name)[:64], avatar=avatar, role=role, claims=dict(claims))


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if any."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


class TokenIssuer:
    """Mints HS256 development tokens (CLI ``token`` and the development sign-in)."""

    def __init__(self, settings: Settings) -> None:
        if settings.jwt_algorithm != "HS256":
            raise RuntimeError("tokens can only be minted with JWT_ALGORITHM=HS256 and a JWT_SECRET")
        self._secret = settings.jwt_secret
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience

    def issue(
        self,
        sub: str,
        *,
        name: str | None = None,
        role: str = ROLE_USER,
        avatar: str | None = None,
        ttl_seconds: int = 24 * 3600,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {"sub": sub, "name": name or sub, "role": role, "iat": now, "exp": now + ttl_seconds}
        if avatar:
            claims["avatar"] = avatar
        if self._issuer:
            claims["iss"] = self._issuer
        if self._audience:
            claims["aud"] = self._audience
        claims.update(extra or {})
        return jwt.encode(claims, self._secret, algorithm="HS256")
