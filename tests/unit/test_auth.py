"""TokenVerifier / TokenIssuer / bearer_token (PROTOCOL.md §1)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from chat_server.auth import TokenIssuer, TokenVerifier, bearer_token
from chat_server.config import Settings
from chat_server.domain import Principal
from chat_server.errors import Unauthorized

SECRET = "unit-test-secret-" + "k" * 32


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"sub": "u1", "name": "Alice", "iat": now, "exp": now + 600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs256(payload: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    """A hand-made token (PyJWT refuses to make the malicious ones)."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    signature = b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[Any, str]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, pem


@pytest.fixture(scope="module")
def ec_keys() -> tuple[Any, str]:
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, pem


@pytest.fixture
def verifier() -> TokenVerifier:
    return TokenVerifier(Settings(jwt_secret=SECRET))


# --- accepted tokens -------------------------------------------------------------------


def test_valid_hs256_gives_principal(verifier):
    token = hs256(claims(sub="u1", name="Alice", avatar="https://cdn.example/a.png", role="moderator"))
    p = verifier.verify(token)
    assert isinstance(p, Principal)
    assert p.user_id == "u1"
    assert p.username == "Alice"
    assert p.avatar == "https://cdn.example/a.png"
    assert p.role == "moderator"
    assert p.is_global_moderator and not p.is_admin


def test_username_claim_is_fallback_for_name(verifier):
    p = verifier.verify(hs256(claims(name=None, username="john_doe")))
    assert p.username == "john_doe"


def test_name_defaults_to_sub(verifier):
    p = verifier.verify(hs256(claims(sub="user-42", name=None)))
    assert p.username == "user-42"
    assert p.avatar is None
    assert p.role == "user"


@pytest.mark.parametrize("role", ["superuser", "ADMIN", "", 7])
def test_unknown_role_becomes_user(verifier, role):
    assert verifier.verify(hs256(claims(role=role))).role == "user"


def test_admin_role_implies_moderator(verifier):
    p = verifier.verify(hs256(claims(role="admin")))
    assert p.role == "admin" and p.is_admin and p.is_global_moderator


def test_iss_aud_not_configured_accepts_any(verifier):
    p = verifier.verify(hs256(claims(iss="https://someone.example", aud="whatever")))
    assert p.user_id == "u1"


def test_iss_aud_configured_and_matching():
    v = TokenVerifier(Settings(jwt_secret=SECRET, jwt_issuer="https://auth.example", jwt_audience="chat"))
    assert v.verify(hs256(claims(iss="https://auth.example", aud="chat"))).user_id == "u1"


def test_rs256_valid(rsa_keys):
    private, pem = rsa_keys
    v = TokenVerifier(Settings(jwt_algorithm="RS256", jwt_public_key=pem))
    token = jwt.encode(claims(sub="rsa-user", role="admin"), private, algorithm="RS256")
    p = v.verify(token)
    assert (p.user_id, p.role) == ("rsa-user", "admin")


def test_es256_valid(ec_keys):
    private, pem = ec_keys
    v = TokenVerifier(Settings(jwt_algorithm="ES256", jwt_public_key=pem))
    p = v.verify(jwt.encode(claims(sub="ec-user"), private, algorithm="ES256"))
    assert p.user_id == "ec-user"


def test_forged_helper_makes_valid_hs256(verifier):
    # Control for the forged cases below: the helper's HS256 tokens are real ones, so a
    # refusal there is the verifier's doing, not a broken test token.
    assert verifier.verify(forge({"alg": "HS256", "typ": "JWT"}, claims(sub="forged"), SECRET.encode())).user_id == "forged"


# --- refused tokens: one generic refusal --------------------------------------------------


def refusal(v: TokenVerifier, token: Any) -> str:
    with pytest.raises(Unauthorized) as info:
        v.verify(token)
    assert info.value.code == "unauthorized"
    return str(info.value.to_dict())


@pytest.fixture(scope="module")
def refused_cases(rsa_keys: tuple[Any, str]) -> list[tuple[str, TokenVerifier, Any]]:
    private, pem = rsa_keys
    hs = TokenVerifier(Settings(jwt_secret=SECRET))
    rs = TokenVerifier(Settings(jwt_algorithm="RS256", jwt_public_key=pem))
    checked = TokenVerifier(Settings(jwt_secret=SECRET, jwt_issuer="https://auth.example", jwt_audience="chat"))
    now = int(time.time())
    other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return [
        ("none", hs, None),
        ("empty", hs, ""),
        ("garbage", hs, "not-a-jwt"),
        ("three garbage parts", hs, "a.b.c"),
        ("non-string", hs, 12345),
        ("huge", hs, "a" * 10_000),
        ("bad signature", hs, hs256(claims(), secret="another-secret-" + "z" * 32)),
        ("tampered payload", hs, hs256(claims())[:-4] + "AAAA"),
        ("alg none", hs, forge({"alg": "none", "typ": "JWT"}, claims(), None)),
        ("alg none with sig", hs, forge({"alg": "none", "typ": "JWT"}, claims(), SECRET.encode())),
        ("alg none to RS256 server", rs, forge({"alg": "none", "typ": "JWT"}, claims(), None)),
        ("HS256 signed with the RSA public key", rs, forge({"alg": "HS256", "typ": "JWT"}, claims(), pem.encode())),
        ("HS256 with secret to RS256 server", rs, hs256(claims())),
        ("RS256 by another key", rs, jwt.encode(claims(), other_rsa, algorithm="RS256")),
        ("RS256 to HS256 server", hs, jwt.encode(claims(), private, algorithm="RS256")),
        ("missing exp", hs, hs256(claims(exp=None))),
        ("expired", hs, hs256(claims(iat=now - 7200, exp=now - 3600))),
        ("missing sub", hs, hs256(claims(sub=None))),
        ("empty sub", hs, hs256(claims(sub=""))),
        ("blank sub", hs, hs256(claims(sub="   "))),
        ("non-string sub", hs, forge({"alg": "HS256", "typ": "JWT"}, claims(sub=123), SECRET.encode())),
        ("wrong iss", checked, hs256(claims(iss="https://evil.example", aud="chat"))),
        ("missing iss", checked, hs256(claims(aud="chat"))),
        ("wrong aud", checked, hs256(claims(iss="https://auth.example", aud="other"))),
        ("missing aud", checked, hs256(claims(iss="https://auth.example"))),
    ]


def test_every_refusal_is_the_same(refused_cases):
    messages = {}
    for label, v, token in refused_cases:
        try:
            messages[label] = refusal(v, token)
        except pytest.fail.Exception as exc:  # name the case that got through
            raise AssertionError(f"{label}: token was accepted") from exc
    assert len(set(messages.values())) == 1, messages
    assert "unauthorized" in next(iter(messages.values()))


@pytest.mark.parametrize("label", [
    "none", "empty", "garbage", "bad signature", "alg none", "HS256 signed with the RSA public key",
    "missing exp", "expired", "missing sub", "wrong iss", "wrong aud",
])
def test_refused(refused_cases, label):
    cases = {name: (v, token) for name, v, token in refused_cases}
    v, token = cases[label]
    refusal(v, token)


def test_refusal_does_not_log_the_token(verifier, caplog):
    token = hs256(claims(exp=None))
    with caplog.at_level("DEBUG"):
        with pytest.raises(Unauthorized):
            verifier.verify(token)
    assert token not in caplog.text
    assert token.split(".")[1] not in caplog.text


# --- TokenIssuer ---------------------------------------------------------------------------


def test_issuer_round_trip():
    s = Settings(jwt_secret=SECRET)
    token = TokenIssuer(s).issue("bob", name="Bob", role="admin", avatar="https://cdn.example/b.png", ttl_seconds=120)
    p = TokenVerifier(s).verify(token)
    assert (p.user_id, p.username, p.role, p.avatar) == ("bob", "Bob", "admin", "https://cdn.example/b.png")
    raw = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert 110 <= raw["exp"] - int(time.time()) <= 121


def test_issuer_round_trip_with_iss_aud():
    s = Settings(jwt_secret=SECRET, jwt_issuer="https://auth.example", jwt_audience="chat")
    p = TokenVerifier(s).verify(TokenIssuer(s).issue("carol"))
    assert (p.user_id, p.username, p.role) == ("carol", "carol", "user")


def test_issued_token_refused_by_other_secret():
    token = TokenIssuer(Settings(jwt_secret=SECRET)).issue("dave")
    with pytest.raises(Unauthorized):
        TokenVerifier(Settings(jwt_secret="different-" + "q" * 32)).verify(token)


def test_expired_issued_token_refused():
    s = Settings(jwt_secret=SECRET)
    token = TokenIssuer(s).issue("erin", ttl_seconds=-10)
    with pytest.raises(Unauthorized):
        TokenVerifier(s).verify(token)


# --- remembered verifications ---------------------------------------------------------


class CountingDecode:
    """PyJWT's decode, counted: how often the verifier really checked a token."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = jwt.PyJWT.decode

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(jwt.PyJWT, "decode", counted)


def test_a_token_sent_again_is_not_decoded_again(verifier, monkeypatch):
    decode = CountingDecode(monkeypatch)
    token = hs256(claims(sub="u1", name="Alice"))
    first, again = verifier.verify(token), verifier.verify(token)
    assert again == first and again.username == "Alice"
    assert decode.calls == 1
    other = hs256(claims(sub="u2"))
    assert verifier.verify(other).user_id == "u2"
    assert decode.calls == 2


def test_a_remembered_token_is_refused_once_it_expires(verifier):
    exp = int(time.time()) + 1
    token = hs256(claims(exp=exp))
    assert verifier.verify(token).user_id == "u1"
    while time.time() < exp:
        time.sleep(0.05)
    with pytest.raises(Unauthorized):
        verifier.verify(token)


def test_a_remembered_token_follows_its_time_claims(monkeypatch):
    """The remembered window is PyJWT's: from max(iat, nbf) until before exp."""
    now = [1_000.0]
    verifier = TokenVerifier(Settings(jwt_secret=SECRET), clock=lambda: now[0])
    decode = CountingDecode(monkeypatch)
    real_now = int(time.time())
    token = hs256(claims(iat=real_now - 100, nbf=real_now - 50, exp=real_now + 600))
    now[0] = real_now
    verifier.verify(token)
    for moment in (real_now - 50, real_now + 599.9):
        now[0] = moment
        verifier.verify(token)
    assert decode.calls == 1
    for moment in (real_now - 51, real_now + 600):  # outside: PyJWT (real time) checks it again
        now[0] = moment
        verifier.verify(token)
    assert decode.calls == 3


def test_refusals_are_not_remembered(verifier, monkeypatch):
    decode = CountingDecode(monkeypatch)
    bad = hs256(claims(), secret="another-secret-" + "z" * 32)
    for _ in range(2):
        with pytest.raises(Unauthorized):
            verifier.verify(bad)
    assert decode.calls == 2


def test_remembered_tokens_are_bounded(monkeypatch):
    verifier = TokenVerifier(Settings(jwt_secret=SECRET), kept=2)
    decode = CountingDecode(monkeypatch)
    tokens = [hs256(claims(sub=f"u{i}")) for i in range(3)]
    for token in tokens:
        verifier.verify(token)
    verifier.verify(tokens[2])
    assert decode.calls == 3
    verifier.verify(tokens[0])  # the oldest was forgotten
    assert decode.calls == 4


def test_issuer_refuses_asymmetric_configuration(rsa_keys):
    with pytest.raises(RuntimeError):
        TokenIssuer(Settings(jwt_algorithm="RS256", jwt_public_key=rsa_keys[1]))


# --- bearer_token ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer abc", "abc"),
        ("BEARER   abc  ", "abc"),
        (None, None),
        ("", None),
        ("Bearer", None),
        ("Bearer    ", None),
        ("Basic dXNlcjpwYXNz", None),
        ("abc.def.ghi", None),
    ],
)
def test_bearer_token(header, expected):
    assert bearer_token(header) == expected


# --- the key, prepared once ----------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["HS256", "RS256", "ES256"])
def test_the_configured_key_is_prepared_once(algorithm, rsa_keys, ec_keys, monkeypatch):
    """PyJWT prepares the key on every decode; the verifier's decoder does it at start-up
    only, and tokens are accepted and refused exactly as before."""
    private, pem = {"HS256": (SECRET, None), "RS256": rsa_keys, "ES256": ec_keys}[algorithm]
    settings = Settings(jwt_secret=SECRET) if algorithm == "HS256" else Settings(jwt_algorithm=algorithm, jwt_public_key=pem)
    verifier = TokenVerifier(settings)
    library = type(jwt.PyJWS().get_algorithm_by_name(algorithm))
    other_private = "x" * 40 if algorithm == "HS256" else (
        rsa.generate_private_key(public_exponent=65537, key_size=2048) if algorithm == "RS256" else ec.generate_private_key(ec.SECP256R1()))
    tokens = [jwt.encode(claims(sub=f"user{n}"), private, algorithm=algorithm) for n in range(5)]
    forged = jwt.encode(claims(), other_private, algorithm=algorithm)
    foreign = jwt.encode(claims(), "y" * 40, algorithm="HS256")
    prepared = []
    real = library.prepare_key
    monkeypatch.setattr(library, "prepare_key", lambda self, key: prepared.append(key) or real(self, key))
    for n, token in enumerate(tokens):
        assert verifier.verify(token).user_id == f"user{n}"
    with pytest.raises(Unauthorized):
        verifier.verify(forged)
    with pytest.raises(Unauthorized):  # another algorithm is still refused
        verifier.verify(forge({"alg": "none", "typ": "JWT"}, claims(), None))
    assert prepared == []
    assert jwt.decode(foreign, "y" * 40, algorithms=["HS256"])["sub"] == "u1"
    assert prepared or algorithm != "HS256"  # the library's own decode still prepares its keys
