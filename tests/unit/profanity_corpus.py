"""A deterministic corpus of chat messages for checking the profanity filter.

Shared by ``tests/unit/test_profanity.py`` (equivalence with better-profanity) and
``benchmarks/profanity_bench.py`` (timing), so both look at the same text.  Built from a
seeded ``random.Random``: the same seed always gives the same messages.

The mix is chosen to exercise better-profanity's corners, not just to look like chat:
leetspeak spellings made with its own character map, punctuation and quotes glued to
words, mixed case, words split across separators (``"fu ck"``), multi-word entries with
every separator, words embedded in longer words, one-letter words at the end of the text,
non-Latin scripts, combining marks, emoji and digits.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from better_profanity import profanity as _reference
from better_profanity.utils import get_complete_path_of_file, read_wordlist

DEFAULT_SEED = 20240611
DEFAULT_SIZE = 2400

# better-profanity's own data, read the way it reads it.
LISTED_WORDS: tuple[str, ...] = tuple(sorted({w.lower() for w in read_wordlist(get_complete_path_of_file("profanity_wordlist.txt"))}))
SINGLE_WORDS: tuple[str, ...] = tuple(w for w in LISTED_WORDS if w.isalnum())
MULTI_WORDS: tuple[str, ...] = tuple(w for w in LISTED_WORDS if not w.isalnum())
CHARS_MAPPING: dict[str, tuple[str, ...]] = dict(_reference.CHARS_MAPPING)

# Words that contain listed words and must come through unchanged.
EMBEDDED_CLEAN: tuple[str, ...] = tuple(
    """
    assassin classic passage grasshopper bass scunthorpe cocktail shitake analysis therapist
    assume butterfly hello shell cumulative document titles dickens sussex penistone arsenal
    spice hancock raccoon cockpit pushover sextant middlesex essex circumstances
    """.split()
)

CHAT_VOCABULARY: tuple[str, ...] = tuple(
    """
    hi hello hey everyone chat stream streamer nice play great game gg wp lol lmao omg
    that was amazing what a shot did you see it no way yes maybe tomorrow tonight when
    is the next stream mods please ban this bot thanks for the raid welcome back first
    time here love the music what song is this can you turn up the volume audio is out
    of sync lag again my internet is fine I think it's the server patch notes when
    new season starts soon hype clip it someone clip that replay please the boss fight
    was insane easy mode hard mode speedrun world record pb nice try almost had it
    who is winning score is two to one overtime penalty referee goal what a save
    keeper defender striker midfield coach tactics subscribe follow donate emotes
    pog kappa sadge copium based cringe ratio take the L W chat vibes cozy
    """.split()
)

UNICODE_WORDS: tuple[str, ...] = (
    "café", "naïve", "Straße", "İstanbul", "ΣΟΦΙΑ", "σοφία", "Москва", "привет", "日本語",
    "中文", "한국어", "مرحبا", "שלום", "हिन्दी", "ǅemal", "ﬁsh", "Ｆｕｌｌｗｉｄｔｈ", "e\u0301",
    "Ω", "ß", "\u212a", "naïveté", "Ελλάδα", "ΟΔΟΣ",
)  # fmt: skip
EMOJI: tuple[str, ...] = ("😀", "🔥", "👍", "😂", "🎮", "❤️", "🤬", "👀", "🇫🇷", "👨‍👩‍👧", "💯", "🙏🏽")
NUMBERS: tuple[str, ...] = ("0", "1", "7", "42", "100", "2024", "3.14", "1,000", "#1", "10%", "$5", "@2", "4ever", "l33t", "1st")
SEPARATORS: tuple[str, ...] = (" ", " ", " ", " ", "  ", ", ", ". ", "! ", "? ", "\n", "\t", " - ", "...", " / ", " | ")
GLUE: tuple[str, ...] = (
    ".", ",", "!", "?", "!!", "?!", "...", ":", ";", "-", "_", "(", ")", "[", "]", "<", ">",
    "#", "%", "&", "+", "=", "~", "^", "/", "\\", "`", "'", '"', "*", "@", "$", "“", "”", "…",
    "\u200b", "中", "😀",
)  # fmt: skip
WORD_SPLITTERS: tuple[str, ...] = (" ", "-", "_", ".", "+", " . ", "!", "  ", "/")


class _Generator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    # -- words -----------------------------------------------------------------

    def listed(self) -> str:
        return self.rng.choice(SINGLE_WORDS)

    def leet(self, word: str) -> str:
        """A spelling better-profanity should still catch: substitutes from its map."""
        out = []
        for ch in word:
            subs = CHARS_MAPPING.get(ch)
            out.append(self.rng.choice(subs) if subs and self.rng.random() < 0.5 else ch)
        return "".join(out)

    def cased(self, word: str) -> str:
        r = self.rng.random()
        if r < 0.25:
            return word.upper()
        if r < 0.4:
            return word.capitalize()
        if r < 0.55:
            return "".join(c.upper() if self.rng.random() < 0.5 else c for c in word)
        return word

    def glued(self, word: str) -> str:
        r = self.rng.random()
        if r < 0.4:
            return word + self.rng.choice(GLUE)
        if r < 0.7:
            return self.rng.choice(GLUE) + word
        return self.rng.choice(GLUE) + word + self.rng.choice(GLUE)

    def split(self, word: str) -> str:
        """A listed word broken by separators: better-profanity rejoins such pieces."""
        if len(word) < 3:
            return word
        k = self.rng.randrange(1, len(word))
        return word[:k] + self.rng.choice(WORD_SPLITTERS) + word[k:]

    def multi(self) -> str:
        """A multi-word entry, with its own separators or different ones."""
        word = self.rng.choice(MULTI_WORDS)
        r = self.rng.random()
        if r < 0.5:
            return word
        parts = [p for p in "".join(c if c.isalnum() else " " for c in word).split() if p]
        return self.rng.choice(WORD_SPLITTERS).join(parts) if r < 0.8 else "".join(parts)

    def chat_word(self) -> str:
        return self.rng.choice(CHAT_VOCABULARY)

    def any_word(self) -> str:
        r = self.rng.random()
        if r < 0.55:
            return self.chat_word()
        if r < 0.67:
            return self.cased(self.listed())
        if r < 0.74:
            return self.leet(self.listed())
        if r < 0.8:
            return self.glued(self.listed())
        if r < 0.84:
            return self.rng.choice(EMBEDDED_CLEAN)
        if r < 0.88:
            return self.rng.choice(UNICODE_WORDS)
        if r < 0.92:
            return self.rng.choice(EMOJI)
        if r < 0.96:
            return self.rng.choice(NUMBERS)
        return self.multi()

    def join(self, words: list[str]) -> str:
        out = []
        for i, word in enumerate(words):
            if i:
                out.append(self.rng.choice(SEPARATORS))
            out.append(word)
        return "".join(out)

    # -- message kinds -------------------------------------------------------------

    def ordinary(self) -> str:
        return self.join([self.chat_word() for _ in range(self.rng.randint(1, 14))])

    def with_listed(self) -> str:
        words = [self.chat_word() for _ in range(self.rng.randint(0, 10))]
        words.insert(self.rng.randint(0, len(words)), self.cased(self.listed()))
        return self.join(words)

    def leetspeak(self) -> str:
        words = [self.chat_word() for _ in range(self.rng.randint(0, 6))]
        words.insert(self.rng.randint(0, len(words)), self.cased(self.leet(self.listed())))
        return self.join(words)

    def punctuated(self) -> str:
        words = [self.glued(self.any_word()) for _ in range(self.rng.randint(1, 8))]
        return self.join(words)

    def repeated(self) -> str:
        word = self.rng.choice((self.listed(), self.leet(self.listed()), self.chat_word()))
        sep = self.rng.choice(SEPARATORS + ("", "!", "-"))
        return sep.join([self.cased(word) for _ in range(self.rng.randint(2, 12))])

    def long(self) -> str:
        return self.join([self.any_word() for _ in range(self.rng.randint(100, 140))])

    def unicode_mix(self) -> str:
        pool = (self.rng.choice(UNICODE_WORDS), self.rng.choice(EMOJI), self.any_word(), self.listed())
        words = [self.rng.choice(pool) for _ in range(self.rng.randint(1, 8))]
        if self.rng.random() < 0.3:  # emoji or ideographs glued to a listed word
            words.append(self.rng.choice(EMOJI + ("中", "日本")) + self.listed() + self.rng.choice(EMOJI))
        return self.join(words)

    def numbers(self) -> str:
        words = [self.rng.choice(NUMBERS + CHAT_VOCABULARY) for _ in range(self.rng.randint(1, 8))]
        if self.rng.random() < 0.5:
            words.append(self.leet(self.listed()))
        return self.join(words)

    def embedded(self) -> str:
        return self.join([self.cased(self.rng.choice(EMBEDDED_CLEAN + CHAT_VOCABULARY)) for _ in range(self.rng.randint(1, 8))])

    def multi_word(self) -> str:
        words = [self.chat_word() for _ in range(self.rng.randint(0, 5))]
        words.insert(self.rng.randint(0, len(words)), self.cased(self.multi()))
        return self.join(words)

    def split_word(self) -> str:
        words = [self.chat_word() for _ in range(self.rng.randint(0, 5))]
        words.insert(self.rng.randint(0, len(words)), self.split(self.cased(self.listed())))
        return self.join(words)

    def edge(self) -> str:
        """Tiny or odd texts: one-letter words at the end, only separators, quotes."""
        r = self.rng.random()
        if r < 0.2:
            return self.rng.choice(GLUE) * self.rng.randint(0, 4)
        if r < 0.4:
            return self.listed() + self.rng.choice(SEPARATORS) + self.rng.choice("abcsxyz1*")
        if r < 0.6:
            return "".join(self.rng.choice("ab*@$1!. sS'\"-") for _ in range(self.rng.randint(1, 10)))
        if r < 0.8:
            return self.rng.choice(SEPARATORS) + self.split(self.listed())
        return self.rng.choice(GLUE) + self.listed()


_KINDS: tuple[tuple[str, int], ...] = (
    # (method, weight)
    ("ordinary", 20),
    ("with_listed", 14),
    ("leetspeak", 10),
    ("punctuated", 8),
    ("repeated", 5),
    ("long", 2),
    ("unicode_mix", 7),
    ("numbers", 5),
    ("embedded", 8),
    ("multi_word", 8),
    ("split_word", 7),
    ("edge", 6),
)


def build_corpus(size: int = DEFAULT_SIZE, seed: int = DEFAULT_SEED) -> list[str]:
    """``size`` messages, always the same ones for the same ``seed``.

    Every kind appears at least once (the first messages cycle through all kinds), so
    the corpus covers long messages even when ``size`` is small.
    """
    gen = _Generator(seed)
    names = [name for name, _ in _KINDS]
    weights = [weight for _, weight in _KINDS]
    messages: list[str] = []
    for i in range(size):
        name = names[i] if i < len(names) else gen.rng.choices(names, weights)[0]
        make: Callable[[], str] = getattr(gen, name)
        messages.append(make())
    return messages


def embedded_clean_messages() -> list[str]:
    """Messages made only of words that contain listed words but are not listed."""
    return [f"{word} {word.upper()} ({word.capitalize()})!" for word in EMBEDDED_CLEAN]
