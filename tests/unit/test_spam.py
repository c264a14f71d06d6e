"""Spam rules (pure) and the recent-message store contract (memory and Redis)."""

from __future__ import annotations

import asyncio
import difflib
import random
from collections.abc import AsyncIterator, Callable, Iterator
from fractions import Fraction

import pytest
from redis.asyncio import Redis

from chat_server.errors import MessageRejected
from chat_server.services.confusables import fold_confusables
from chat_server.services.spam import (
    MemoryRecentStore,
    RecentStore,
    SpamDetector,
    SpamRules,
    count_links,
    count_similar,
    normalise,
    similar,
)
from chat_server.storage.recent_redis import RedisRecentStore
from chat_server.storage.redis_pipeline import AutoPipeline
from tests.conftest import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def detector(clock: FakeClock, **rules: object) -> SpamDetector:
    return SpamDetector(SpamRules(**rules), MemoryRecentStore(clock))  # type: ignore[arg-type]


# --- normalisation and similarity ----------------------------------------------------------


def test_normalise_folds_case_space_punctuation_and_lookalikes() -> None:
    assert normalise("  Hello,   WORLD!!! ") == "hello world"
    assert normalise("hеllo world") == "hello world"  # Cyrillic е
    assert normalise("ｈｅｌｌｏ") == "hello"  # fullwidth (NFKC)
    assert normalise("!!!") == "!!!" and normalise("???") != normalise("!!!")


def test_punctuation_removal_equals_the_per_character_rule() -> None:
    import unicodedata

    from chat_server.services.spam import _without_punctuation

    rng = random.Random(11)
    for _ in range(3000):
        text = "".join(chr(rng.choice([rng.randrange(0x20, 0x250), rng.randrange(0x2000, 0x3100), rng.randrange(0xFE00, 0x10000),
                                       rng.randrange(0x10000, 0x1FAFF)])) for _ in range(rng.randint(0, 20)))
        if rng.random() < 0.5:
            text = "".join(c for c in text if c <= "\uffff")  # both paths
        assert _without_punctuation(text) == "".join(c for c in text if not unicodedata.category(c).startswith("P")), repr(text)


def test_fold_confusables_keeps_length() -> None:
    text = "fսck ѕһit Αβγ"
    assert len(fold_confusables(text)) == len(text)
    assert fold_confusables("fսck ѕһit") == "fuck shit"


@pytest.mark.parametrize(("a", "b", "expected"), [
    ("buy cheap followers now", "buy cheap followers now", True),
    ("buy cheap followers now", "buy cheap followers now1", True),
    ("buy cheap followers now", "buy cheap folowers now", True),
    ("good game everyone", "what a goal that was", False),
    ("hi", "hello there my friends", False),
])
def test_similarity(a: str, b: str, expected: bool) -> None:
    assert similar(a, b, 0.9) is expected


def _lcs(a: str, b: str) -> int:
    """The length of the longest common subsequence (the textbook dynamic programme)."""
    row = [0] * (len(b) + 1)
    for x in a:
        diagonal = 0
        for j, y in enumerate(b, 1):
            diagonal, row[j] = row[j], diagonal + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def _similar_reference(a: str, b: str, threshold: float) -> bool:
    """``similar`` by its definition, in exact fractions: 2 * LCS / (len(a) + len(b)) at
    least the decimal ``threshold``."""
    if a == b:
        return True
    if threshold >= 1.0 or not a or not b:
        return False
    return Fraction(2 * _lcs(a, b), len(a) + len(b)) >= Fraction(str(threshold))


def _random_pairs(count: int) -> Iterator[tuple[str, str, float]]:
    rng = random.Random(7)
    alphabet = "abcde fghij0123 éß😀"
    for _ in range(count):
        a = "".join(rng.choice(alphabet[:rng.randint(2, len(alphabet))]) for _ in range(rng.randint(0, 30)))
        if rng.random() < 0.5:  # a near-duplicate
            chars = list(a)
            for _ in range(rng.randint(0, 4)):
                i = rng.randint(0, len(chars))
                op = rng.random()
                if op < 0.33 and chars:
                    chars.pop(min(i, len(chars) - 1))
                elif op < 0.66:
                    chars.insert(i, rng.choice(alphabet))
                elif chars:
                    chars[min(i, len(chars) - 1)] = rng.choice(alphabet)
            b = "".join(chars)
        else:
            b = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        yield a, b, rng.choice([0.0, 0.5, 0.8, 0.9, 0.95, 1.0])


def test_similarity_is_the_lcs_ratio_on_many_pairs() -> None:
    similar_pairs = dissimilar_pairs = 0
    for a, b, threshold in _random_pairs(20_000):
        expected = _similar_reference(a, b, threshold)
        assert similar(a, b, threshold) is expected, (a, b, threshold)
        similar_pairs += expected
        dissimilar_pairs += not expected
    assert similar_pairs > 1000 and dissimilar_pairs > 1000


def test_count_similar_counts_what_the_definition_counts() -> None:
    """The batch scoring only narrows the candidates: the count is exactly the reference's,
    pairs right at the threshold included."""
    pairs = list(_random_pairs(20_000))
    counted = 0
    for k in range(0, len(pairs), 10):  # a text against ten remembered ones, as the rule does
        group = pairs[k:k + 10]
        text, threshold = group[0][0], group[0][2]
        others = [b for _, b, _ in group]
        expected = sum(_similar_reference(text, b, threshold) for b in others)
        assert count_similar(text, others, threshold) == expected, (text, others, threshold)
        counted += expected
    assert count_similar("c c", ["c ", "c c", "x"], 0.8) == 2  # 0.8 exactly, and equal
    assert count_similar("", ["", "a"], 0.9) == 1 and count_similar("abc", [], 0.9) == 0
    assert counted > 1000


def test_every_pair_difflib_finds_similar_is_similar() -> None:
    # The rule compared with difflib's ratio before; no repeat it caught may slip through now.
    for a, b, threshold in _random_pairs(20_000):
        if a and b and difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() >= threshold:
            assert similar(a, b, threshold), (a, b, threshold)


# --- stateless rules --------------------------------------------------------------------


def test_count_links_matches_what_the_renderer_links() -> None:
    assert count_links("see example.com, https://x.org/a?b=1 and www.test.io") == 3
    assert count_links("no links here, 1.5 and a.b") == 0


def test_too_many_links_is_spam(clock: FakeClock) -> None:
    spam = detector(clock, max_links=2)
    spam.check_text("a.com and b.com")
    with pytest.raises(MessageRejected) as exc:
        spam.check_text("a.com b.com c.com")
    assert exc.value.reason == "spam" and exc.value.details["rule"] == "links"


def test_long_runs_of_one_character_are_spam(clock: FakeClock) -> None:
    spam = detector(clock, max_repeated_chars=20)
    spam.check_text("wow" + "!" * 20)
    spam.check_text("ha" * 30)  # alternating characters are not a run
    for text in ("a" * 21, "so good" + "o" * 25, "😀" * 21):
        with pytest.raises(MessageRejected) as exc:
            spam.check_text(text)
        assert exc.value.reason == "spam" and exc.value.details["rule"] == "repeated_chars"


# --- repeats ------------------------------------------------------------------------------


async def test_repeats_within_the_window_are_duplicates(clock: FakeClock) -> None:
    spam = detector(clock, max_repeats=2, duplicate_window_ms=60_000)
    for _ in range(2):
        await spam.check_repeats("alice", "Buy followers at my site")
        await spam.remember("alice", "Buy followers at my site")
    for variant in ("buy followers at my site!!", "BUY  followers at my site", "Buy followers at my sight"):
        with pytest.raises(MessageRejected) as exc:
            await spam.check_repeats("alice", variant)
        assert exc.value.reason == "duplicate" and exc.value.details["rule"] == "repeated_message"
    await spam.check_repeats("bob", "Buy followers at my site")  # per user
    await spam.check_repeats("alice", "something else entirely")
    clock.advance(60)
    await spam.check_repeats("alice", "Buy followers at my site")  # the window has passed


# --- recent store contract ------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis", "redis-pipelined"])
async def make_recent(request: pytest.FixtureRequest, clock: FakeClock, redis_scratch: tuple[Redis, str]) -> AsyncIterator[Callable[[], RecentStore]]:
    if request.param == "memory":
        shared = MemoryRecentStore(clock)
        yield lambda: shared
        return
    client, prefix = redis_scratch
    pipeline = AutoPipeline(client) if request.param == "redis-pipelined" else None
    yield lambda: RedisRecentStore(client, prefix=prefix, clock=clock, pipeline=pipeline)


async def test_recent_store_keeps_the_newest_within_the_window(make_recent: Callable[[], RecentStore], clock: FakeClock) -> None:
    first, second = make_recent(), make_recent()
    await first.add("k", "one", 10_000, 3)
    clock.advance(1)
    await second.add("k", "two", 10_000, 3)
    await second.add("k", "two", 10_000, 3)  # equal texts are kept apart
    assert sorted(await first.recent("k", 10_000)) == ["one", "two", "two"]
    await first.add("k", "three: with a colon", 10_000, 3)
    assert sorted(await second.recent("k", 10_000)) == ["three: with a colon", "two", "two"]
    assert await first.recent("other", 10_000) == []
    clock.advance(9.5)
    assert sorted(await first.recent("k", 10_000)) == ["three: with a colon", "two", "two"]  # "one" was past `keep`
    clock.advance(1)
    assert await first.recent("k", 10_000) == []


async def test_recent_store_claims_a_text_once_within_the_window(make_recent: Callable[[], RecentStore], clock: FakeClock) -> None:
    first, second = make_recent(), make_recent()
    claim = await first.claim("room", "same: words", 10_000, 3)
    assert claim is not None
    assert await second.claim("room", "same: words", 10_000, 3) is None  # held, on any node
    assert await second.claim("room", "words", 10_000, 3) is not None  # only the whole text counts
    assert await first.claim("other", "same: words", 10_000, 3) is not None  # per key
    assert "same: words" in await second.recent("room", 10_000)  # a claim is a remembered text
    await first.release("room", claim)
    assert "same: words" not in await second.recent("room", 10_000)
    again = await second.claim("room", "same: words", 10_000, 3)
    assert again is not None
    clock.advance(10)  # the window has passed
    assert await first.claim("room", "same: words", 10_000, 3) is not None


async def test_concurrent_claims_of_one_text_give_it_to_one(make_recent: Callable[[], RecentStore]) -> None:
    stores = [make_recent() for _ in range(8)]
    claims = await asyncio.gather(*(store.claim("room", "first!", 60_000, 100) for store in stores))
    assert sum(c is not None for c in claims) == 1


def test_normalise_equals_its_definition_on_many_texts() -> None:
    """``normalise`` (ASCII fast path, white space split instead of a regex) against the
    rule as first written: NFKC, lookalikes folded, case-folded, punctuation removed,
    white space collapsed; punctuation kept when nothing else is left."""
    import re
    import unicodedata

    from chat_server.services.spam import _without_punctuation

    white = re.compile(r"\s+")

    def reference(text: str) -> str:
        folded = fold_confusables(unicodedata.normalize("NFKC", text)).casefold()
        collapsed = white.sub(" ", _without_punctuation(folded)).strip()
        return collapsed or white.sub(" ", folded).strip()

    rng = random.Random(13)
    pool = [chr(c) for c in range(0x80)] + list("éßẞ😀…·ｈ\u00a0\u2028\u3000\u0130ΑаІ¡¿") + [" "] * 20
    for _ in range(20_000):
        text = "".join(rng.choice(pool) for _ in range(rng.randint(0, 30)))
        assert normalise(text) == reference(text), repr(text)
