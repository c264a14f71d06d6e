"""``load_send_message`` (the send path's payload check) answers exactly like the
marshmallow schema: the same dict for a valid payload, the same error for an invalid one."""

from __future__ import annotations

import random
from typing import Any

import pytest

from chat_server.errors import ValidationFailed
from chat_server.schemas import SendMessageIn, load, load_send_message, schema_of

_MISSING = object()
# Per field: values the schema accepts, then values it refuses.
VALUES: dict[str, tuple[list[Any], list[Any]]] = {
    "room_id": (["lobby", "a", "r" * 128, "ok_-.:@9", "room\n"], ["r" * 129, "", "bad room", "ümlaut", 7, None, ["lobby"], True]),
    "content": (["hello", "", " ", "<b>x</b>", "x" * 5000], [5, None, {"a": 1}, False]),
    "type": (["text", "encrypted"], ["TEXT", "system", "", None, 1]),
    "client_msg_id": (["c-1", "c" * 128, None], ["", "c" * 129, 12, ["c"]]),
    "reply_to": (["m1", "m" * 128, None], ["", "m" * 129, 3.5]),
}


def _outcome(load_fn: Any, payload: Any) -> tuple[str, Any]:
    try:
        return "ok", load_fn(payload)
    except ValidationFailed as exc:
        return "error", (exc.code, str(exc), exc.details)


def _schema(payload: Any) -> dict[str, Any]:
    return load(schema_of(SendMessageIn), payload)


def test_a_usual_message_loads_without_the_schema_and_gives_its_result() -> None:
    payload = {"room_id": "lobby", "content": "hi there", "client_msg_id": "b-1", "extra": "ignored"}
    assert load_send_message(payload) == _schema(payload) == {
        "room_id": "lobby", "content": "hi there", "type": "text", "client_msg_id": "b-1", "reply_to": None}


@pytest.mark.parametrize("payload", [None, [], "text", 5, {"room_id": "lobby"}, {"content": "x"}])
def test_malformed_payloads_get_the_schemas_errors(payload: Any) -> None:
    assert _outcome(load_send_message, payload) == _outcome(_schema, payload)
    assert _outcome(load_send_message, payload)[0] == "error"


def test_same_answer_as_the_schema_on_many_payloads() -> None:
    rng = random.Random(5)
    seen = {"ok": 0, "error": 0}
    for _ in range(5000):
        payload: dict[str, Any] = {}
        for key, (valid, invalid) in VALUES.items():
            value = rng.choice(valid if rng.random() < 0.85 else [*invalid, _MISSING])
            if value is not _MISSING:
                payload[key] = value
        if rng.random() < 0.2:
            payload["unknown"] = rng.choice([1, "x", None])
        fast, reference = _outcome(load_send_message, payload), _outcome(_schema, payload)
        assert fast == reference, payload
        seen[fast[0]] += 1
    assert seen["ok"] > 200 and seen["error"] > 200
