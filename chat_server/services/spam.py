"""Spam rules: pure checks on one message, plus repeats against a user's recent messages.

Rules (each refusal is ``MessageRejected(reason)`` with ``details.rule``):

* ``links``  (reason ``spam``): more than ``max_links`` links in one message.  A link is
  whatever ``content_html`` would turn into an anchor (bleach's URL pattern, bare domains
  included), so the rule and the rendering agree.
* ``repeated_chars`` (reason ``spam``): a run of more than ``max_repeated_chars`` copies of
  one character (``"!!!!!!…"``, ``"aaaaaaaa…"``).
* ``repeated_message`` (reason ``duplicate``): the user already sent ``max_repeats``
  identical or near-identical messages within ``duplicate_window_ms`` (any room).  Texts
  are compared in :func:`normalise`\\ d form (case, white space, punctuation and lookalike
  letters folded); near-identical means an Indel similarity (:func:`similar`) ≥ ``similarity``.
* mention floods stay the one ``MAX_MENTIONS`` rule of ``services.messages`` (reason
  ``spam``, rule ``mentions``); it is not repeated here.

The recent-message store is a small protocol with an in-memory implementation here and a
Redis one in ``storage.recent_redis`` (shared by every node).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
import unicodedata
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Generic, Protocol, TypeVar

from bleach.linkifier import URL_RE
from rapidfuzz import process
from rapidfuzz.distance import Indel

from ..errors import MessageRejected
from .confusables import fold_confusables

T = TypeVar("T")


class _TextCache(Generic[T]):
    """``build(text)``, remembered for the last ``size`` texts (the oldest is forgotten).

    The send path normalises each message text twice (to check it, then to remember it).
    Not ``functools.lru_cache``: it keeps one list per entry, a container the garbage
    collector tracks, and with thousands of new texts a second those entries (each alive
    for about a second) were most of what the collector walked, and paused for.  Here the
    texts and values are strings, which the collector does not track.
    """

    __slots__ = ("_build", "_size", "_values", "_order")

    def __init__(self, build: Callable[[str], T], size: int = 4096) -> None:
        self._build = build
        self._size = size
        self._values: dict[str, T] = {}
        self._order: deque[str] = deque()

    def __call__(self, text: str) -> T:
        value = self._values.get(text)
        if value is None:
            value = self._values[text] = self._build(text)
            self._order.append(text)
            if len(self._order) > self._size:
                del self._values[self._order.popleft()]
        return value


def _normalise(text: str) -> str:
    # ``" ".join(s.split())`` is ``re.sub(r"\s+", " ", s).strip()`` without the regex
    # (both split on what ``str.isspace`` calls white space).  ASCII needs neither NFKC
    # nor lookalike folding (both leave it as it is), and its case folding is ``lower``.
    if text.isascii():
        folded = text.lower()
        stripped = folded.encode("ascii").translate(None, _ASCII_PUNCTUATION).decode("ascii")  # C table, no dict per char
        return " ".join(stripped.split()) or " ".join(folded.split())
    folded = fold_confusables(unicodedata.normalize("NFKC", text)).casefold()
    stripped = _without_punctuation(folded)
    return " ".join(stripped.split()) or " ".join(folded.split())


#: The form duplicates are compared in: NFKC, lookalikes folded, case-folded,
#: punctuation removed, white space collapsed.  A text that is nothing but punctuation
#: keeps its punctuation (so ``"!!!"`` and ``"???"`` still differ).
normalise: Callable[[str], str] = _TextCache(_normalise)


@lru_cache(maxsize=1)
def _bmp_punctuation() -> dict[int, None]:
    # Every punctuation code point (Unicode category P*) of the Basic Multilingual Plane,
    # for str.translate (built once, in ~30 ms).
    return {cp: None for cp in range(0x10000) if unicodedata.category(chr(cp)).startswith("P")}


#: ASCII punctuation (category P*: not ``$+<=>^`|~``, which are symbols), for ASCII texts.
_ASCII_PUNCTUATION = bytes(cp for cp in range(0x80) if unicodedata.category(chr(cp)).startswith("P"))


def _without_punctuation(text: str) -> str:
    """``text`` without its punctuation (category P*): one C-level translate for the usual
    text, the per-character loop when it has characters beyond the BMP."""
    if not text or max(text) <= "\uffff":
        return text.translate(_bmp_punctuation())
    return "".join(c for c in text if not unicodedata.category(c).startswith("P"))


def count_links(text: str) -> int:
    if "." not in text:
        return 0  # every link URL_RE matches has a dot before its top-level domain
    return sum(1 for _ in URL_RE.finditer(text))


def similar(a: str, b: str, threshold: float) -> bool:
    """Whether two normalised texts are identical or at least ``threshold`` similar.

    Similarity is ``2 * LCS / (len(a) + len(b))`` (LCS: the longest common subsequence).
    It is never below difflib's ``SequenceMatcher.ratio`` (whose matching blocks are one
    common subsequence), so every pair difflib calls similar still is.  rapidfuzz computes
    the Indel distance (``len(a) + len(b) - 2 * LCS``) in C and stops once it passes the
    allowed distance; the bound is integer arithmetic, so a pair exactly at the threshold
    counts as similar (rapidfuzz's own float ``score_cutoff`` can miss it by one rounding).
    """
    if a == b:
        return True
    if threshold >= 1.0 or not a or not b:
        return False
    total = len(a) + len(b)
    # 2 * LCS must reach ``needed`` (the 1e-9 absorbs the float rounding of a decimal
    # threshold such as 0.9 times the total).
    needed = math.ceil(threshold * total - 1e-9)
    if 2 * min(len(a), len(b)) < needed:
        return False  # the LCS is at most the shorter text: most pairs end here
    allowed = total - needed
    return Indel.distance(a, b, score_cutoff=allowed) <= allowed


def count_similar(text: str, others: list[str], threshold: float) -> int:
    """How many of ``others`` are ``similar`` to ``text``: one C call scores them all
    (rapidfuzz's normalised Indel similarity is the same ratio, as a float), and only the
    few that come within rounding of the threshold are decided by ``similar``'s exact
    bound.  A fifth of the cost of calling ``similar`` on each of ten remembered texts."""
    if not others:
        return 0
    near = process.extract(text, others, scorer=Indel.normalized_similarity, score_cutoff=max(0.0, threshold - 1e-6),
                           limit=None)
    return sum(1 for _, _, i in near if similar(text, others[i], threshold))


@dataclass(frozen=True)
class SpamRules:
    max_links: int = 3
    max_repeated_chars: int = 20
    duplicate_window_ms: int = 60_000
    max_repeats: int = 2  # near-identical messages a user may send within the window
    similarity: float = 0.9
    remembered: int = 10  # recent messages kept per user for the comparison


class RecentStore(Protocol):
    """Recent texts per key (a user, a room), newest last, forgotten after a window."""

    async def recent(self, key: str, window_ms: int) -> list[str]: ...
    async def add(self, key: str, text: str, window_ms: int, keep: int) -> None: ...

    async def claim(self, key: str, text: str, window_ms: int, keep: int) -> object | None:
        """``add``, unless ``text`` is already among the key's texts of the window, as one
        atomic step (of two nodes claiming the same text at once, one wins): a handle for
        ``release``, or None when the text was there."""

    async def release(self, key: str, claim: object) -> None:
        """Take back a claim whose message was not stored after all."""


class MemoryRecentStore:
    def __init__(self, clock: Callable[[], float] = time.time, *, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._items: dict[str, tuple[int, deque[tuple[float, str]]]] = {}
        self._max_keys = max_keys

    async def recent(self, key: str, window_ms: int) -> list[str]:
        return self.recent_now(key, window_ms)

    def recent_now(self, key: str, window_ms: int) -> list[str]:
        """``recent`` without a coroutine (nothing here waits)."""
        entry = self._items.get(key)
        if entry is None:
            return []
        horizon = self._clock() - window_ms / 1000
        return [text for at, text in entry[1] if at > horizon]

    async def add(self, key: str, text: str, window_ms: int, keep: int) -> None:
        now = self._clock()
        entry = self._items.get(key)
        if entry is None or entry[0] < window_ms:
            entry = (window_ms, entry[1] if entry else deque())
            self._items[key] = entry
        items = entry[1]
        items.append((now, text))
        while len(items) > keep or (items and items[0][0] <= now - entry[0] / 1000):
            items.popleft()
        if len(self._items) > self._max_keys:
            self._items = {k: v for k, v in self._items.items() if v[1] and v[1][-1][0] > now - v[0] / 1000}

    async def claim(self, key: str, text: str, window_ms: int, keep: int) -> object | None:
        if text in self.recent_now(key, window_ms):
            return None  # nothing awaits between the look and the add: atomic on this node
        await self.add(key, text, window_ms, keep)
        return self._items[key][1][-1]  # the (time, text) entry just added

    async def release(self, key: str, claim: object) -> None:
        entry = self._items.get(key)
        if entry is not None:
            with contextlib.suppress(ValueError):
                entry[1].remove(claim)  # type: ignore[arg-type]


class SpamDetector:
    def __init__(self, rules: SpamRules, recent: RecentStore) -> None:
        self._rules = rules
        self._recent = recent
        repeat = rules.max_repeated_chars
        self._repeated = re.compile(rf"(.)\1{{{repeat},}}", re.DOTALL) if repeat > 0 else None

    @property
    def rules(self) -> SpamRules:
        return self._rules

    def check_text(self, text: str) -> None:
        """The rules that need nothing but the text."""
        rules = self._rules
        links = count_links(text)
        if links > rules.max_links:
            raise MessageRejected("spam", f"Too many links (at most {rules.max_links})",
                                  details={"rule": "links", "max_links": rules.max_links})
        if self._repeated is not None and self._repeated.search(text):
            raise MessageRejected("spam", f"Too many repeated characters (at most {rules.max_repeated_chars} in a row)",
                                  details={"rule": "repeated_chars", "max_repeated_chars": rules.max_repeated_chars})

    @staticmethod
    def _key(user_id: str) -> str:
        return f"dup:{user_id}"

    async def recent_texts(self, user_id: str) -> list[str]:
        """The user's remembered texts within the window (what ``check_repeats`` compares
        with), for a caller that reads them ahead of time."""
        return await self._recent.recent(self._key(user_id), self._rules.duplicate_window_ms)

    def prefetch_recent(self, user_id: str) -> asyncio.Future[list[str]] | None:
        """``recent_texts`` started now, for a caller with other work to do meanwhile: a
        shared store's read goes out with that work's commands (one pipelined round trip).
        None for the in-memory store, which ``check_repeats`` reads at once itself (a task
        per message would cost more than the read)."""
        if isinstance(self._recent, MemoryRecentStore):
            return None
        return asyncio.ensure_future(self.recent_texts(user_id))

    async def check_repeats(self, user_id: str, text: str, *, recent: list[str] | None = None,
                            unsaved: Sequence[str] = ()) -> None:
        """Refuse a message the user already sent ``max_repeats`` times in the window
        (``recent``: the result of ``recent_texts``, when already read; ``unsaved``: the
        normalised texts of the user's messages accepted but not remembered yet)."""
        rules = self._rules
        current = normalise(text)
        if recent is None:
            if isinstance(self._recent, MemoryRecentStore):
                recent = self._recent.recent_now(self._key(user_id), rules.duplicate_window_ms)
            else:
                recent = await self.recent_texts(user_id)
        if unsaved:
            recent = [*recent, *unsaved]
        if count_similar(current, recent, rules.similarity) >= rules.max_repeats:
            raise MessageRejected("duplicate", "You already sent this message",
                                  details={"rule": "repeated_message", "window_ms": rules.duplicate_window_ms})

    async def remember(self, user_id: str, text: str) -> None:
        rules = self._rules
        await self._recent.add(self._key(user_id), normalise(text), rules.duplicate_window_ms, rules.remembered)
