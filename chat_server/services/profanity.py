"""Profanity filtering with better-profanity's word list and semantics, at hash-lookup speed.

``better_profanity.profanity.censor()`` (0.7.0) compares every word of a message, and
every run of up to ``MAX_NUMBER_COMBINATIONS + 1`` consecutive words, against each of its
~900 word-list entries in a Python loop: about 1 ms per input word, too slow for the
message hot path.  :class:`ProfanityFilter` produces the same output, character for
character, from an index built once:

* **One candidate string.**  better-profanity's ``VaryingString`` accepts a (lower-cased)
  string ``s`` for an entry ``w`` when ``len(s) == len(w)`` and every ``s[k]`` is one of
  the substitutes ``CHARS_MAPPING`` lists for ``w[k]`` (``a`` → ``a @ * 4``, ``i`` →
  ``i * l 1`` ...; unmapped characters stand for themselves).  Strings without substitute
  *symbols* (``@ * $ 0 1 3 4 5 7``) can only use the letter-for-letter substitutions
  (``l`` for ``i``, ``u``/``v``), so all such variants of all entries fit in a small set
  (~1,800 strings for the default list): one hash lookup decides.  Strings with symbols
  are projected onto the classes of the substitution closure (one ``str.translate``; equal
  projections are necessary for a match) and checked position by position against the
  few entries with that projection.  Enumerating every leetspeak variant instead would
  take ~500,000 strings.
* **Runs of words.**  better-profanity also joins a word with the following ones, both
  without separators (``"fu ck"`` → ``fuck``) and with them (``"gang-bang"``), and
  censors the shortest run that matches.  The index holds every prefix of every entry
  (as plain variants and as projections), so a run grows only while it can still become
  an entry, and a message none of whose words can start an entry leaves after a few
  C-level passes (regex split, ``lower``, ``set.isdisjoint``).

Everything else is better-profanity's behaviour, kept on purpose so that a message is
censored the same whichever implementation runs (see :meth:`ProfanityFilter._scan`):
words are maximal runs of its ``ALLOWED_CHARACTERS`` (letters of many scripts, combining
marks, digits and ``@ $ * " '``), so ``"fuck"`` in double quotes or ``fuck's`` is one word
that does not match; words inside longer words are never censored; a match becomes exactly
four ``*`` whatever its length; a text whose first word starts at its last character is
returned unchanged; a one-character word at the very end never joins a run.

Extra *blocked* and *allowed* (permitted) terms behave as better-profanity's
``Profanity().load_censor_words(default_words + blocked, whitelist_words=allowed)``:
blocked terms join the word list and are matched with the same leetspeak variants;
allowed terms remove the entries equal to them (case-insensitively) and win over blocked
ones.  Removing an entry does not remove other entries that also match its spelling (the
default list holds ``fvck`` as well as ``fuck``, so allowing ``fuck`` alone changes
little).  Terms are stripped of surrounding whitespace.  Filters are immutable and cached
by their term sets, so a room's filter is a dict lookup after its first use.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

__all__ = ["CENSOR_REPLACEMENT", "ProfanityFilter"]

#: What a matched word or run of words becomes: better-profanity always writes four
#: censor characters, so the length of the hidden word is not revealed.
CENSOR_REPLACEMENT: Final = "****"

_Span = tuple[int, int]
_Run = tuple[int, int]  # (first word, last word), inclusive


@dataclass(frozen=True)
class _Alphabet:
    """better-profanity's character data and what is derived from it, built once."""

    # Split text into separators and words (maximal runs of ALLOWED_CHARACTERS).  sre
    # tests a class holding characters beyond U+FFFF range by range, so every separator
    # would cost a scan of hundreds of ranges; texts without such word characters (nearly
    # all: emoji are not word characters) use the class cut to the BMP, a bitmap.
    word_split: re.Pattern[str]
    bmp_word_split: re.Pattern[str]
    astral_gate: re.Pattern[str]  # whole 4096-code-point blocks holding astral word characters
    char_map: dict[str, tuple[str, ...]]  # entry character -> accepted input characters
    symbols: frozenset[str]  # substitutes that are not letters: @ * $ 0 1 3 4 5 7
    symbol_search: re.Pattern[str]
    coarse_table: dict[int, str]  # str.translate onto the classes of the substitution closure
    default_words: tuple[str, ...]  # profanity_wordlist.txt, read the way better-profanity reads it
    allowed_chars: frozenset[str]


def _char_class(chars: Iterable[str]) -> str:
    """A regex character class matching exactly ``chars`` (compressed into ranges)."""
    codes = sorted({ord(c) for c in chars})
    parts: list[str] = []
    i = 0
    while i < len(codes):
        j = i
        while j + 1 < len(codes) and codes[j + 1] == codes[j] + 1:
            j += 1
        lo, hi = re.escape(chr(codes[i])), re.escape(chr(codes[j]))
        parts.append(lo if i == j else f"{lo}-{hi}")
        i = j + 1
    return "[" + "".join(parts) + "]" if parts else "(?!)"


def _closure_table(pairs: Iterable[tuple[str, str]]) -> dict[int, str]:
    """A ``str.translate`` table sending each character to the representative of its
    class in the union-find closure of ``pairs``; other characters are left alone."""
    parent: dict[str, str] = {}

    def find(c: str) -> str:
        while parent.get(c, c) != c:
            c = parent[c]
        return c

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {ord(c): find(c) for c in parent if find(c) != c}


@lru_cache(maxsize=1)
def _alphabet() -> _Alphabet:
    # Imported here rather than at module level: importing better_profanity builds its
    # own default filter (~10 ms), a cost only the first filter built should pay.
    from better_profanity import profanity as reference
    from better_profanity.constants import ALLOWED_CHARACTERS
    from better_profanity.utils import get_complete_path_of_file, read_wordlist

    char_map = {k: tuple(v) for k, v in reference.CHARS_MAPPING.items()}
    accepts = [(entry_char, x) for entry_char, accepted in char_map.items() for x in accepted]
    symbols = frozenset(x for c, x in accepts if x != c and not x.isalpha())
    astral = [c for c in ALLOWED_CHARACTERS if ord(c) > 0xFFFF]
    # A cheap superset test for astral word characters: the 4096-code-point blocks they
    # live in (emoji blocks hold none).
    blocks = sorted({ord(c) >> 12 for c in astral})
    astral_gate = "".join(f"{chr(b << 12)}-{chr((b << 12) | 0xFFF)}" for b in blocks)
    return _Alphabet(
        word_split=re.compile("(" + _char_class(ALLOWED_CHARACTERS) + "+)"),
        bmp_word_split=re.compile("(" + _char_class(c for c in ALLOWED_CHARACTERS if ord(c) <= 0xFFFF) + "+)"),
        astral_gate=re.compile(f"[{astral_gate}]" if astral_gate else "(?!)"),
        char_map=char_map,
        symbols=symbols,
        symbol_search=re.compile(_char_class(symbols)),
        # '*' stands for six letters, so the vowels, l, 1, @, 0 ... share one class.
        coarse_table=_closure_table(accepts),
        default_words=tuple(read_wordlist(get_complete_path_of_file("profanity_wordlist.txt"))),
        allowed_chars=frozenset(ALLOWED_CHARACTERS),
    )


class _Index:
    """The compiled form of one word list.

    * ``plain_words`` / ``plain_prefixes``: every spelling, without substitute symbols,
      that matches an entry / a prefix of an entry; exact for strings without symbols.
    * ``buckets`` / ``coarse_prefixes``: entries (as per-position sets of accepted
      characters) by their coarse projection / every prefix of those projections; for
      strings with symbols, a necessary condition followed by an exact check.
    """

    __slots__ = ("entries", "max_combinations", "plain_words", "plain_prefixes", "buckets", "coarse_prefixes", "_symbols", "_coarse")

    entries: tuple[str, ...]
    max_combinations: int
    plain_words: frozenset[str]
    plain_prefixes: frozenset[str]
    buckets: dict[str, tuple[tuple[frozenset[str], ...], ...]]
    coarse_prefixes: frozenset[str]

    def __init__(self, alphabet: _Alphabet, words: Iterable[str], base: _Index | None = None) -> None:
        """Compile ``words``; with ``base``, compile only what ``base`` lacks and share the rest.

        Adding a room's few blocked terms to the default index this way costs about a
        millisecond (copying the sets) instead of ~10 ms for a full build.
        """
        symbols = alphabet.symbols
        entries = set(words)
        if base is not None:
            new_words = sorted(entries - set(base.entries))
            entries |= set(base.entries)
            plain_words, plain_prefixes = set(base.plain_words), set(base.plain_prefixes)
            buckets = {k: list(v) for k, v in base.buckets.items()}
            coarse_prefixes = set(base.coarse_prefixes)
            max_combinations = base.max_combinations
        else:
            new_words = sorted(entries)
            plain_words, plain_prefixes, buckets, coarse_prefixes = set(), set(), {}, set()
            max_combinations = 1
        accepts_of: dict[str, frozenset[str]] = {}
        for word in new_words:
            # better-profanity looks ahead as many words as the entry with the most
            # non-word characters could need.
            max_combinations = max(max_combinations, sum(c not in alphabet.allowed_chars for c in word))
            accepted = tuple(accepts_of.get(c) or accepts_of.setdefault(c, frozenset(alphabet.char_map.get(c, (c,)))) for c in word)
            coarse = word.translate(alphabet.coarse_table)
            buckets.setdefault(coarse, []).append(accepted)
            coarse_prefixes.update(coarse[:k] for k in range(1, len(coarse) + 1))
            # Plain spellings of each prefix in turn, stopping where a position can only
            # be written with a symbol (e.g. the '0' of "wh0re").
            spellings = [""]
            for options in accepted:
                letters = sorted(options - symbols)
                if not letters:
                    break
                spellings = [s + c for s in spellings for c in letters] if len(letters) > 1 else [s + letters[0] for s in spellings]
                plain_prefixes.update(spellings)
            else:
                plain_words.update(spellings)
        self.entries = tuple(sorted(entries))
        self.max_combinations = max_combinations
        self.plain_words = frozenset(plain_words)
        self.plain_prefixes = frozenset(plain_prefixes)
        self.buckets = {k: tuple(v) for k, v in buckets.items()}
        self.coarse_prefixes = frozenset(coarse_prefixes)
        self._symbols = symbols
        self._coarse = alphabet.coarse_table

    def probe(self, lowered: str) -> tuple[bool, bool]:
        """(is an entry, can still grow into one) for a lower-cased word or run of words.

        "Is an entry" is better-profanity's ``lowered in CENSOR_WORDSET``, exactly.
        """
        if lowered in self.plain_prefixes:
            return lowered in self.plain_words, True
        if self._symbols.isdisjoint(lowered):
            return False, False
        coarse = lowered.translate(self._coarse)
        if coarse not in self.coarse_prefixes:
            return False, False
        candidates = self.buckets.get(coarse, ())
        # Equal projections imply equal lengths.
        return any(all(ch in acc for ch, acc in zip(lowered, accepted, strict=True)) for accepted in candidates), True


def _normalise_terms(terms: Iterable[str] | None) -> frozenset[str]:
    if terms is None:
        return frozenset()
    if isinstance(terms, str):
        raise TypeError("terms must be an iterable of strings, not a single string")
    return frozenset(t.strip().lower() for t in terms if t.strip())


class ProfanityFilter:
    """Censors text exactly like ``better_profanity.profanity.censor()``, much faster.

    Get instances through :meth:`default` and :meth:`with_terms` (both cached): building
    one compiles its word list (a few milliseconds); using one only reads it, so one
    instance is safely shared by all tasks and threads.
    """

    __slots__ = ("_alphabet", "_index", "blocked_terms", "allowed_terms")

    def __init__(self, blocked: Iterable[str] | None = None, allowed: Iterable[str] | None = None) -> None:
        """A filter for the default word list plus ``blocked`` minus ``allowed``.

        Prefer :meth:`with_terms`, which caches; this compiles what the terms change
        (nothing without terms, ~1 ms for blocked terms, ~10 ms when allowed terms
        remove default entries).
        """
        self.blocked_terms: frozenset[str] = _normalise_terms(blocked)
        self.allowed_terms: frozenset[str] = _normalise_terms(allowed)
        self._alphabet = _alphabet()
        default_index = _default_index()
        removed = self.allowed_terms.intersection(default_index.entries)
        extra = self.blocked_terms - self.allowed_terms
        if removed:
            # Entries go away: prefix sets cannot be edited, so compile from scratch.
            words = [w for w in (*default_index.entries, *extra) if w not in self.allowed_terms]
            self._index = _Index(self._alphabet, words)
            # better-profanity never lowers MAX_NUMBER_COMBINATIONS below what its default
            # list needed, even when the entries that needed it are allowed.
            self._index.max_combinations = max(self._index.max_combinations, default_index.max_combinations)
        elif extra:
            self._index = _Index(self._alphabet, extra, base=default_index)
        else:
            self._index = default_index  # immutable, shared

    # -- construction -------------------------------------------------------------

    @classmethod
    def default(cls) -> ProfanityFilter:
        """The filter for better-profanity's default word list (built once per process)."""
        return _cached_filter(frozenset(), frozenset())

    @classmethod
    def with_terms(cls, blocked: Iterable[str] | None = None, allowed: Iterable[str] | None = None) -> ProfanityFilter:
        """The filter for the default list plus ``blocked`` minus ``allowed``, cached.

        Rooms may call this with their configured terms for every message: the cache is
        keyed by the normalised term sets, so order, case and duplicates do not matter.
        """
        if (blocked is None or type(blocked) is tuple) and (allowed is None or type(allowed) is tuple):
            # Tuples (what room settings hold) are hashable as given: skip normalising.
            return _filter_for_tuples(blocked or (), allowed or ())
        return _cached_filter(_normalise_terms(blocked), _normalise_terms(allowed))

    def extended(self, blocked: Iterable[str] | None = None, allowed: Iterable[str] | None = None) -> ProfanityFilter:
        """This filter's terms plus more blocked and allowed terms (cached)."""
        extra_blocked, extra_allowed = _normalise_terms(blocked), _normalise_terms(allowed)
        if not extra_blocked and not extra_allowed:
            return self
        return _cached_filter(self.blocked_terms | extra_blocked, self.allowed_terms | extra_allowed)

    @property
    def words(self) -> tuple[str, ...]:
        """The effective word list (lower-cased entries, sorted)."""
        return self._index.entries

    # -- use ----------------------------------------------------------------------

    def censor(self, text: str, *, blocked: Iterable[str] | None = None, allowed: Iterable[str] | None = None) -> str:
        """``text`` with every profane word or run of words replaced by ``****``.

        ``blocked`` / ``allowed`` add terms for this call only (see :meth:`extended`).
        """
        if blocked is not None or allowed is not None:
            return self.extended(blocked, allowed).censor(text)
        if not isinstance(text, str):  # better-profanity censors str(anything)
            text = str(text)
        scan = self._scan(text)
        if scan is None:
            return text
        parts, runs = scan
        # parts alternates separators and words: sep, word 0, sep, word 1, ..., sep.
        for first, last in runs:
            parts[2 * first + 1] = CENSOR_REPLACEMENT
            for k in range(2 * first + 2, 2 * last + 2):
                parts[k] = ""
        return "".join(parts)

    def contains_profanity(self, text: str, *, blocked: Iterable[str] | None = None, allowed: Iterable[str] | None = None) -> bool:
        """Whether :meth:`censor` changes ``text`` (better-profanity's definition)."""
        if blocked is not None or allowed is not None:
            return self.extended(blocked, allowed).contains_profanity(text)
        if not isinstance(text, str):
            text = str(text)
        scan = self._scan(text)
        if scan is None:
            return False
        parts, runs = scan
        # A run that already reads "****" is replaced by itself and changes nothing.
        return any("".join(parts[2 * first + 1 : 2 * last + 2]) != CENSOR_REPLACEMENT for first, last in runs)

    def profane_spans(self, text: str) -> list[_Span]:
        """The ``(start, end)`` slices of ``text`` that :meth:`censor` replaces, in order.

        For moderation tools that highlight rather than hide.
        """
        scan = self._scan(text)
        if scan is None:
            return []
        parts, runs = scan
        offsets = [0, *itertools.accumulate(len(p) for p in parts)]
        return [(offsets[2 * first + 1], offsets[2 * last + 2]) for first, last in runs]

    # -- the scan ---------------------------------------------------------------------

    def _scan(self, text: str) -> tuple[list[str], list[_Run]] | None:
        """better-profanity's ``_hide_swear_words``, restated over words instead of chars.

        Returns ``None`` when nothing is replaced; else the text split into alternating
        separators and words (``parts[2k + 1]`` is word ``k``) and the ``(first, last)``
        word indices of the replaced runs, in order.

        Its character loop (0.7.0), read closely, does this:

        * words are maximal runs of allowed characters; all else is a separator and is
          copied through;
        * if the first word starts at the text's last character (or there is none), the
          text is returned as it is;
        * at the separator after word ``i`` it takes the next words ``i+1 ...
          i+MAX_NUMBER_COMBINATIONS`` (a word starting at the text's last character is no
          next word) and grows two strings: the lower-cased words joined without
          separators, and the lower-cased text with its separators.  The first (shortest)
          run for which either string is an entry is replaced, from the start of word
          ``i`` to the end of the run's last word, and scanning resumes after it;
        * otherwise word ``i`` alone is replaced if it is an entry;
        * a last word running to the end of the text is checked alone.

        Its sliding window of next words equals recomputing them for every word as long
        as MAX_NUMBER_COMBINATIONS >= 2, which always holds here (the default list needs
        5), so no window state is kept.
        """
        alphabet = self._alphabet
        index = self._index
        if text.isascii() or alphabet.astral_gate.search(text) is None:
            parts: list[str] = alphabet.bmp_word_split.split(text)
        else:
            parts = alphabet.word_split.split(text)
        tokens = parts[1::2]
        count = len(tokens)
        if not count:
            return None
        # Lower-case all words in one call.  "\x00" is neither cased nor case-ignorable,
        # so it stops Greek final-sigma context exactly at word boundaries: each piece
        # equals better-profanity's word.lower().
        lowered_words = "\x00".join(tokens).lower()
        keys = lowered_words.split("\x00")
        plain_prefixes = index.plain_prefixes
        with_symbols = alphabet.symbol_search.search(lowered_words) is not None
        if not with_symbols and plain_prefixes.isdisjoint(keys):
            return None  # no word can begin an entry: the common case

        ends_with_word = parts[-1] == ""
        if count == 1 and ends_with_word and len(tokens[0]) == 1:
            return None  # the only word starts at the last character
        # Words that may continue a run: all but a one-character word at the very end.
        visible = count - 1 if ends_with_word and len(tokens[-1]) == 1 else count
        lookahead = index.max_combinations
        probe = index.probe
        symbols = alphabet.symbols
        runs: list[_Run] = []
        i = 0
        while i < count:
            key = keys[i]
            if key not in plain_prefixes:
                # A word that is no plain prefix and holds no symbol cannot start an entry
                # (``probe``'s own first test, without the call: a number elsewhere in the
                # message makes ``with_symbols`` true for every word).
                if not with_symbols or symbols.isdisjoint(key):
                    i += 1
                    continue
                is_entry, alive = probe(key)
                if not alive:
                    i += 1
                    continue
            if i + 1 < count or not ends_with_word:  # a separator follows: try runs first
                last = self._match_run(parts, keys, i, min(i + lookahead, visible - 1))
                if last >= 0:
                    runs.append((i, last))
                    i = last + 1
                    continue
            if probe(key)[0]:
                runs.append((i, i))
            i += 1
        return (parts, runs) if runs else None

    def _match_run(self, parts: list[str], keys: list[str], i: int, last: int) -> int:
        """The last word of the shortest run from word ``i`` that is an entry, or -1."""
        probe = self._index.probe
        joined = with_separators = keys[i]
        joined_alive = separated_alive = True
        for j in range(i + 1, last + 1):
            if joined_alive:
                joined += keys[j]
                is_entry, joined_alive = probe(joined)
                if is_entry:
                    return j
            if separated_alive:
                # better-profanity lowers "separators + word" as one piece; ASCII
                # separators hold no letters, so that is the separators + the word's key.
                separators = parts[2 * j]
                with_separators += separators + keys[j] if separators.isascii() else (separators + parts[2 * j + 1]).lower()
                is_entry, separated_alive = probe(with_separators)
                if is_entry:
                    return j
            if not (joined_alive or separated_alive):
                break
        return -1


@lru_cache(maxsize=1)
def _default_index() -> _Index:
    alphabet = _alphabet()
    return _Index(alphabet, (w.lower() for w in alphabet.default_words))


@lru_cache(maxsize=1024)
def _cached_filter(blocked: frozenset[str], allowed: frozenset[str]) -> ProfanityFilter:
    # Bounded: beyond this many distinct term sets, filters are rebuilt on use (a few ms).
    return ProfanityFilter(blocked, allowed)


@lru_cache(maxsize=1024)
def _filter_for_tuples(blocked: tuple[str, ...], allowed: tuple[str, ...]) -> ProfanityFilter:
    return _cached_filter(_normalise_terms(blocked), _normalise_terms(allowed))
