"""Message ids: time-ordered UUIDs (version 7), unique, in UUID form."""

from __future__ import annotations

import uuid

from chat_server.services.messages import _MessageIds, new_message_id


def test_an_id_is_a_version_7_uuid_whose_first_48_bits_are_the_time_in_milliseconds() -> None:
    ids = _MessageIds(clock=lambda: 1_763_769_600.1234)
    value = ids()
    parsed = uuid.UUID(hex=value)
    assert len(value) == 32 and value == value.lower() and parsed.hex == value
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert int(value[:12], 16) == 1_763_769_600_123


def test_ids_grow_with_time_so_new_rows_go_to_the_end_of_the_primary_key() -> None:
    now = [1_763_769_600.0]
    ids = _MessageIds(clock=lambda: now[0])
    made = []
    for _ in range(600):  # more than one draw of the random pool
        made.append(ids())
        now[0] += 0.002  # a later millisecond each time, whatever the float rounding
    assert made == sorted(made)
    assert len({value[:12] for value in made}) == len(made)
    assert len(set(made)) == len(made)


def test_ids_made_in_the_same_millisecond_differ() -> None:
    ids = _MessageIds(clock=lambda: 1_763_769_600.0)
    made = {ids() for _ in range(10_000)}
    assert len(made) == 10_000


def test_the_service_default_draws_from_the_real_clock() -> None:
    import time

    before = int(time.time() * 1000)
    value = new_message_id()
    after = int(time.time() * 1000)
    assert before <= int(value[:12], 16) <= after
