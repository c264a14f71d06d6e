"""PROTOCOL.md §1 and §2 "Connecting": who may open a Socket.IO connection (and call REST).

Every refusal must look the same to the client (``connect_error`` with message
``unauthorized`` / HTTP 401 ``unauthorized``), whichever check failed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import aiohttp
import jwt
import pytest
import socketio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import JWT_SECRET, ChatClient, make_token, unique


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made_token(header: dict[str, Any], claims: dict[str, Any], key: bytes | None) -> str:
    """A JWT built by hand, so that PyJWT's own guards cannot stop us minting it."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def claims_for(sub: str, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": sub, "name": sub, "role": "user", "iat": now, "exp": now + 3600, **extra}


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private_pem, public_pem


def bad_tokens(public_pem: bytes) -> dict[str, str | None]:
    now = int(time.time())
    good = make_token("mallory")
    header, payload, signature = good.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return {
        "no token": None,
        "empty token": "",
        "malformed": "not-a-jwt",
        "three garbage parts": "abc.def.ghi",
        "bad signature": f"{header}.{payload}.{flipped}",
        "wrong secret": make_token("mallory", secret="another-secret-" + "y" * 40),
        "alg none": hand_made_token({"alg": "none", "typ": "JWT"}, claims_for("mallory"), None),
        "alg none uppercase": hand_made_token({"alg": "NONE", "typ": "JWT"}, claims_for("mallory"), None),
        "HS256 signed with RSA public key": hand_made_token({"alg": "HS256", "typ": "JWT"}, claims_for("mallory"), public_pem),
        "missing exp": jwt.encode({"sub": "mallory", "name": "mallory", "iat": now}, JWT_SECRET, algorithm="HS256"),
        "missing sub": jwt.encode({"name": "mallory", "iat": now, "exp": now + 3600}, JWT_SECRET, algorithm="HS256"),
        "expired": make_token("mallory", ttl=-120),
    }


async def assert_refused(url: str, *, token: str | None = None, **connect_kwargs: Any) -> None:
    """Connect and expect a refusal whose connect_error message is 'unauthorized'."""
    client = ChatClient(url, token)
    errors: list[Any] = []
    client.sio.on("connect_error", lambda data=None: errors.append(data))
    if token is None and "auth" not in connect_kwargs:
        connect_kwargs["auth"] = {}
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(**connect_kwargs)
    try:
        assert not client.sio.connected
        assert errors, "the server refused without a connect_error packet"
        assert errors[-1] == {"message": "unauthorized"}, errors
        assert not client.events, f"a refused client received events: {dict(client.events)}"
    finally:
        await client.disconnect()


async def assert_accepted(url: str, *, token: str | None = None, user: str, **connect_kwargs: Any) -> None:
    client = ChatClient(url, token)
    try:
        await client.connect(**connect_kwargs)
        assert client.sio.connected
        # The connection is usable and belongs to the token's user.
        ack = await client.call("join_room", {"room_id": unique()})
        assert ack["ok"] is True, ack
        assert [u["user_id"] for u in ack["online_users"]] == [user]
        client.assert_valid()
    finally:
        if connect_kwargs.get("transports") == ["polling"] and client.sio.connected:
            # python-engineio's polling client waits for its pending long-poll GET on
            # disconnect, which the server only answers when its ping is due (~30 s);
            # close the way a browser does instead: say goodbye and do not wait.
            await client.sio.eio.disconnect(abort=True)
        await client.disconnect()


# --- accepted token locations ---------------------------------------------------------

async def test_token_in_auth_payload_is_accepted(node):
    await assert_accepted(node.url, token=make_token("alice"), user="alice")


async def test_token_in_query_string_is_accepted(node):
    token = make_token("bob")
    await assert_accepted(f"{node.url}?token={token}", token=None, user="bob")


async def test_token_in_authorization_header_is_accepted(node):
    token = make_token("carol")
    await assert_accepted(node.url, token=None, user="carol", headers={"Authorization": f"Bearer {token}"})


async def test_auth_payload_wins_over_query_and_header(node):
    """PROTOCOL order: auth.token, then ?token=, then the header."""
    other = make_token("not_me")
    await assert_accepted(
        f"{node.url}?token={other}", token=make_token("dave"), user="dave",
        headers={"Authorization": f"Bearer {other}"},
    )


async def test_valid_token_works_over_long_polling(node):
    await assert_accepted(node.url, token=make_token("erin"), user="erin", transports=["polling"])


# --- refusals -------------------------------------------------------------------------

BAD_CASES = [
    "no token", "empty token", "malformed", "three garbage parts", "bad signature", "wrong secret",
    "alg none", "alg none uppercase", "HS256 signed with RSA public key", "missing exp", "missing sub", "expired",
]


@pytest.mark.parametrize("case", BAD_CASES)
async def test_bad_token_in_auth_is_refused(node, rsa_keys, case):
    token = bad_tokens(rsa_keys[1])[case]
    await assert_refused(node.url, auth={"token": token} if token is not None else {})


@pytest.mark.parametrize("case", ["malformed", "bad signature", "alg none", "expired", "missing exp"])
async def test_bad_token_in_query_is_refused(node, rsa_keys, case):
    token = bad_tokens(rsa_keys[1])[case]
    await assert_refused(f"{node.url}?token={token}")


@pytest.mark.parametrize("case", ["malformed", "bad signature", "alg none", "expired"])
async def test_bad_token_in_header_is_refused(node, rsa_keys, case):
    token = bad_tokens(rsa_keys[1])[case]
    await assert_refused(node.url, headers={"Authorization": f"Bearer {token}"})


async def test_non_bearer_authorization_header_is_refused(node):
    await assert_refused(node.url, headers={"Authorization": f"Basic {make_token('alice')}"})


async def test_non_string_token_is_refused(node):
    await assert_refused(node.url, auth={"token": 12345})


async def test_oversized_token_is_refused(node):
    await assert_refused(node.url, auth={"token": make_token("alice", padding="x" * 10_000)})


async def test_issuer_and_audience_are_checked_when_configured(start_node):
    node = await start_node(jwt_issuer="https://issuer.example", jwt_audience="chat")
    good = make_token("alice", iss="https://issuer.example", aud="chat")
    await assert_accepted(node.url, token=good, user="alice")
    for token in (
        make_token("alice", iss="https://evil.example", aud="chat"),
        make_token("alice", aud="chat"),  # no iss
        make_token("alice", iss="https://issuer.example", aud="other"),
        make_token("alice", iss="https://issuer.example"),  # no aud
        make_token("alice", iss="https://issuer.example", aud="chat", ttl=-60),
    ):
        await assert_refused(node.url, auth={"token": token})


async def test_rs256_node_refuses_hs256_token_signed_with_its_public_key(start_node, rsa_keys):
    """The classic key-confusion attack: the public key used as an HMAC secret."""
    private_pem, public_pem = rsa_keys
    node = await start_node(jwt_algorithm="RS256", jwt_public_key=public_pem.decode())
    good = jwt.encode(claims_for("alice"), private_pem, algorithm="RS256")
    await assert_accepted(node.url, token=good, user="alice")
    forged = hand_made_token({"alg": "HS256", "typ": "JWT"}, claims_for("mallory", role="admin"), public_pem)
    await assert_refused(node.url, auth={"token": forged})
    # and a node configured for RS256 does not accept HS256 tokens made with JWT_SECRET either
    await assert_refused(node.url, auth={"token": make_token("mallory")})


async def test_refused_connection_leaves_no_presence(node, connect):
    room = unique()
    alice = await connect("alice")
    await alice.call("join_room", {"room_id": room})
    await assert_refused(node.url, auth={"token": make_token("mallory", ttl=-60), "room_id": room})
    ack = await alice.call("join_room", {"room_id": room})
    assert [u["user_id"] for u in ack["online_users"]] == ["alice"]
    assert all(e["user_id"] == "alice" for e in alice.events["user_joined"]), alice.events["user_joined"]


# --- join_room with user_token ---------------------------------------------------------

async def test_join_room_with_user_token_of_another_user_is_unauthorized(connect):
    alice = await connect("alice")
    room = unique()
    ack = await alice.call("join_room", {"room_id": room, "user_token": make_token("bob")})
    assert ack["ok"] is False
    assert ack["error"]["code"] == "unauthorized"
    # an invalid user_token is refused the same way
    ack = await alice.call("join_room", {"room_id": room, "user_token": "garbage"})
    assert ack["ok"] is False and ack["error"]["code"] == "unauthorized"
    # ... and neither attempt joined the room
    ack = await alice.call("send_message", {"room_id": room, "content": "hi"})
    assert ack["ok"] is False and ack["error"]["code"] == "not_in_room"
    # the user's own token is fine
    ack = await alice.call("join_room", {"room_id": room, "user_token": make_token("alice")})
    assert ack["ok"] is True, ack
    assert ack["room"]["id"] == room


# --- REST: the same matrix on GET /api/rooms/{id} ----------------------------------------

async def _get_room(url: str, headers: dict[str, str]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=headers) as response:
            return response.status, await response.json()


@pytest.mark.parametrize("case", BAD_CASES)
async def test_rest_refuses_bad_tokens_with_401(node, rsa_keys, case):
    room = unique()
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{node.url}/api/rooms", json={"id": room, "name": "R"},
                                headers={"Authorization": f"Bearer {make_token('mod', role='moderator')}"}) as response:
            assert response.status == 201
    token = bad_tokens(rsa_keys[1])[case]
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    status, body = await _get_room(f"{node.url}/api/rooms/{room}", headers)
    assert status == 401, body
    assert body["error"]["code"] == "unauthorized"
    assert body["error"]["message"] == "unauthorized"  # the same generic answer for every failure
    # a good token sees the room
    status, body = await _get_room(f"{node.url}/api/rooms/{room}", {"Authorization": f"Bearer {make_token('alice')}"})
    assert status == 200 and body["id"] == room


async def test_rest_refuses_a_missing_room_and_a_bad_token_alike_before_looking(node):
    """Without a valid token, even a missing room answers 401 (no oracle on room ids)."""
    status, body = await _get_room(f"{node.url}/api/rooms/{unique()}", {"Authorization": "Bearer nope"})
    assert status == 401 and body["error"]["code"] == "unauthorized"


async def test_rest_checks_issuer_and_audience(start_node):
    node = await start_node(jwt_issuer="iss-1", jwt_audience="aud-1")
    url = f"{node.url}/api/rooms/{unique()}"
    for token in (make_token("a", iss="iss-2", aud="aud-1"), make_token("a", iss="iss-1", aud="aud-2"), make_token("a")):
        status, body = await _get_room(url, {"Authorization": f"Bearer {token}"})
        assert status == 401 and body["error"]["code"] == "unauthorized", body
    status, body = await _get_room(url, {"Authorization": f"Bearer {make_token('a', iss='iss-1', aud='aud-1')}"})
    assert status == 404 and body["error"]["code"] == "not_found"
