"""ProfanityFilter must censor exactly like better_profanity 0.7.0, only faster.

The reference is better-profanity itself, run on the same text: the default word list
through its module-level ``profanity`` object (never modified here), custom term sets
through fresh ``Profanity`` instances loaded the way ProfanityFilter documents.
"""

from __future__ import annotations

import pytest
from better_profanity import Profanity
from better_profanity import profanity as reference
from better_profanity.utils import get_complete_path_of_file, read_wordlist

from chat_server.services.profanity import CENSOR_REPLACEMENT, ProfanityFilter
from tests.unit.profanity_corpus import (
    CHAT_VOCABULARY,
    EMBEDDED_CLEAN,
    build_corpus,
    embedded_clean_messages,
)

DEFAULT_WORDS = list(read_wordlist(get_complete_path_of_file("profanity_wordlist.txt")))


def reference_with_terms(blocked: list[str], allowed: list[str]) -> Profanity:
    """better-profanity configured the way ProfanityFilter.with_terms is specified."""
    profanity = Profanity()
    profanity.load_censor_words(custom_words=DEFAULT_WORDS + blocked, whitelist_words=list(allowed))
    return profanity


def describe(mismatches: list[tuple[str, str, str]], limit: int = 15) -> str:
    lines = [f"{len(mismatches)} mismatching messages; first {min(limit, len(mismatches))}:"]
    for message, expected, actual in mismatches[:limit]:
        lines.append(f"  message  {message!r}\n  expected {expected!r}\n  actual   {actual!r}")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return build_corpus()


@pytest.fixture(scope="module")
def reference_output(corpus: list[str]) -> list[str]:
    # better-profanity is slow (~1 ms per word): computed once for the whole module.
    return [reference.censor(message) for message in corpus]


# -- equivalence on the generated corpus ------------------------------------------------


def test_corpus_covers_what_it_claims(corpus: list[str], reference_output: list[str]) -> None:
    assert len(corpus) >= 2000
    assert corpus == build_corpus(), "the corpus must be deterministic"
    assert sum(len(m.split()) >= 100 for m in corpus) >= 10
    assert any(not m.isascii() for m in corpus)
    assert any("😀" in m or "🔥" in m for m in corpus)
    changed = sum(out != m for m, out in zip(corpus, reference_output, strict=True))
    # Both censored and untouched messages in quantity, or the test proves little.
    assert 500 < changed < len(corpus) - 500


def test_censor_equals_better_profanity_on_corpus(corpus: list[str], reference_output: list[str]) -> None:
    profanity_filter = ProfanityFilter.default()
    mismatches = [
        (message, expected, actual)
        for message, expected in zip(corpus, reference_output, strict=True)
        if (actual := profanity_filter.censor(message)) != expected
    ]
    assert not mismatches, describe(mismatches)


def test_contains_profanity_equals_better_profanity_on_corpus(corpus: list[str], reference_output: list[str]) -> None:
    profanity_filter = ProfanityFilter.default()
    # better-profanity's contains_profanity is ``text != censor(text)``.
    wrong = [m for m, out in zip(corpus, reference_output, strict=True) if profanity_filter.contains_profanity(m) != (out != m)]
    assert not wrong, wrong[:15]


def test_profane_spans_are_what_censor_replaces(corpus: list[str], reference_output: list[str]) -> None:
    profanity_filter = ProfanityFilter.default()
    for message, expected in zip(corpus[:500], reference_output[:500], strict=True):
        rebuilt, position = [], 0
        for start, end in profanity_filter.profane_spans(message):
            rebuilt += [message[position:start], CENSOR_REPLACEMENT]
            position = end
        rebuilt.append(message[position:])
        assert "".join(rebuilt) == expected, message


# -- documented semantics, each checked against the reference as well -------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fuck", "****"),
        ("FuCk you", "**** you"),
        ("you f*ck", "you ****"),  # '*' may stand for a vowel
        ("sh1t happens", "**** happens"),
        ("what the $h1t", "what the ****"),
        ("fu ck this", "**** this"),  # words are rejoined across separators
        ("f.u.c.k off", "**** off"),
        ("gang-bang", "****"),  # multi-word entries, with their separator ...
        ("gang bang tonight", "**** tonight"),  # ... or another
        ("2 girls 1 cup", "****"),
        ("son-of-a-bitch!", "****!"),
        ("motherfuckingshit", "motherfuckingshit"),  # words inside words stay
        ("assassin class passage", "assassin class passage"),
        ('"fuck"', '"fuck"'),  # quotes are word characters in better-profanity
        ("fuck's sake", "fuck's sake"),
        ("(fuck)", "(****)"),
        ("fuckfuck fuck fuck", "fuckfuck **** ****"),
        ("shitshitshitshitshitshitshitshit", "shitshitshitshitshitshitshitshit"),
        ("x", "x"),
        ("   a", "   a"),  # first word at the last character: returned as is
        ("sh!t", "sh!t"),  # a one-letter word at the end never joins a run ...
        ("sh!t now", "**** now"),  # ... anywhere else it does
        ("Straße café 日本語 😀 fuck 🔥", "Straße café 日本語 😀 **** 🔥"),
        ("中fuck中", "中****中"),  # ideographs are not word characters
        ("", ""),
        ("\n\t ", "\n\t "),
    ],
)
def test_semantics(text: str, expected: str) -> None:
    assert reference.censor(text) == expected, "the expectation must describe better-profanity"
    assert ProfanityFilter.default().censor(text) == expected
    assert ProfanityFilter.default().contains_profanity(text) == (text != expected)


def test_words_containing_listed_words_are_untouched() -> None:
    profanity_filter = ProfanityFilter.default()
    for message in embedded_clean_messages():
        assert profanity_filter.censor(message) == message
        assert reference.censor(message) == message
    assert {w.lower() for w in EMBEDDED_CLEAN}.isdisjoint(profanity_filter.words)


def test_uses_better_profanity_word_list_and_character_map() -> None:
    profanity_filter = ProfanityFilter.default()
    assert profanity_filter.words == tuple(sorted({str(w) for w in reference.CENSOR_WORDSET}))
    assert profanity_filter._alphabet.char_map == {k: tuple(v) for k, v in reference.CHARS_MAPPING.items()}
    assert profanity_filter._index.max_combinations == reference.MAX_NUMBER_COMBINATIONS


def test_non_string_input_is_censored_as_its_str() -> None:
    assert ProfanityFilter.default().censor(12345) == reference.censor(12345) == "12345"  # type: ignore[arg-type]


def test_greek_final_sigma_is_lowered_word_by_word() -> None:
    # str.lower picks final or non-final sigma from context; the filter lowers whole
    # messages at once and must still see each word as better-profanity does.
    terms = ["σκατας", "σκατασ", "ας"]
    texts = ["ΣΚΑΤΑΣ", "ΣΚΑΤΑΣ.x", "ΑΣ ΣΚΑΤΑ", "x:ΣΚΑΤΑΣ y", "ΑΣ\x00ΑΣ", "σκατας σκατασ"]
    expected = reference_with_terms(terms, [])
    actual = ProfanityFilter.with_terms(blocked=terms)
    assert [actual.censor(t) for t in texts] == [expected.censor(t) for t in texts]


# -- extra blocked terms and allowed terms ----------------------------------------------


def test_blocked_terms_are_censored_with_leetspeak_and_case() -> None:
    room = ProfanityFilter.with_terms(blocked=["zork", "Bad Word", "  frell "])
    assert room.censor("you zork") == "you ****"
    assert room.censor("Z0RK! z*rk") == "****! ****"
    assert room.censor("such a bad word here") == "such a **** here"
    assert room.censor("FRELL it") == "**** it"
    assert room.censor("zorking") == "zorking"
    assert room.censor("fuck") == "****", "the default list still applies"
    assert ProfanityFilter.default().censor("you zork") == "you zork", "terms never leak into other filters"
    assert {"zork", "bad word", "frell"} <= set(room.words)


def test_allowed_terms_remove_entries() -> None:
    assert ProfanityFilter.default().censor("what the hell") == "what the ****"
    room = ProfanityFilter.with_terms(allowed=["Hell", "damn"])
    assert room.censor("what the hell, damn") == "what the hell, damn"
    assert room.censor("what the fuck") == "what the ****"
    assert "hell" not in room.words


def test_allowed_wins_over_blocked() -> None:
    room = ProfanityFilter.with_terms(blocked=["zork", "hell"], allowed=["ZORK", "hell"])
    assert room.censor("zork hell") == "zork hell"


def test_allowed_removes_only_that_entry_like_better_profanity() -> None:
    # The list also holds "fvck", whose 'v' accepts 'u': allowing "fuck" alone does not
    # let it through.  Documented, and what better-profanity does.
    room = ProfanityFilter.with_terms(allowed=["fuck"])
    assert room.censor("fuck") == reference_with_terms([], ["fuck"]).censor("fuck") == "****"


TERM_CONFIGS: list[tuple[list[str], list[str]]] = [
    (["zork", "bad word", "x-y-z-w-v-u-t", "straße", "foo'bar", "g g"], []),  # 6 separators: longer look-ahead
    ([], ["hell", "damn", "ass", "gang bang", "2 girls 1 cup", "son-of-a-bitch"]),
    (["streamer", "lag", "play"], ["shit", "fuck"]),  # blocks everyday words: many matches
    ([w for w in DEFAULT_WORDS if not w.isalnum()][:3], [w for w in DEFAULT_WORDS if not w.isalnum()]),
]


@pytest.mark.parametrize(("blocked", "allowed"), TERM_CONFIGS)
def test_terms_equal_better_profanity(corpus: list[str], blocked: list[str], allowed: list[str]) -> None:
    expected_filter = reference_with_terms(blocked, allowed)
    room = ProfanityFilter.with_terms(blocked=blocked, allowed=allowed)
    extra = [f"{t} {t.upper()}, {t}! x {t}-{t}" for t in blocked + allowed] + [" ".join(CHAT_VOCABULARY[:40])]
    messages = corpus[::8] + extra
    mismatches = [(m, e, a) for m in messages if (e := expected_filter.censor(m)) != (a := room.censor(m))]
    assert not mismatches, describe(mismatches)


def test_terms_per_call_equal_terms_per_instance() -> None:
    messages = ["zork you", "what the hell", "bad word", "fuck zork hell"]
    room = ProfanityFilter.with_terms(blocked=["zork"], allowed=["hell"])
    default = ProfanityFilter.default()
    for m in messages:
        assert default.censor(m, blocked=["zork"], allowed=["hell"]) == room.censor(m)
        assert default.contains_profanity(m, blocked=["zork"], allowed=["hell"]) == room.contains_profanity(m)
    assert default.extended(blocked=["zork"]).extended(allowed=["hell"]) is room


def test_filters_are_cached_by_normalised_terms() -> None:
    assert ProfanityFilter.default() is ProfanityFilter.with_terms()
    assert ProfanityFilter.with_terms(blocked=["Zork", "frell"]) is ProfanityFilter.with_terms(blocked=("frell ", "zork", "ZORK"))
    assert ProfanityFilter.with_terms(blocked=["zork"]) is not ProfanityFilter.with_terms(blocked=["zork"], allowed=["zork"])
    assert ProfanityFilter.default().extended() is ProfanityFilter.default()


def test_a_single_string_is_not_a_term_list() -> None:
    with pytest.raises(TypeError):
        ProfanityFilter.with_terms(blocked="zork")
