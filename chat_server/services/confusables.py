"""Fold lookalike letters onto the Latin letters they imitate, one character for one.

Content filters (the profanity filter, spam duplicate detection) look at this folded form
so that ``fսck`` (Armenian ``ս``) or ``ѕһit`` (Cyrillic ``ѕ``, ``һ``) cannot smuggle a word
past them.  The stored message keeps what the user typed (NFKC-normalised, which already
folds fullwidth and other compatibility forms such as ``ｆｕｃｋ`` and ``𝐟𝐮𝐜𝐤``); only the
filter's view is folded.

The map is deliberately small: Cyrillic, Greek and a few Armenian/Latin-extension letters
whose usual glyphs are indistinguishable from a Latin letter (a subset of Unicode's
confusables.txt, single characters only).  Folding is length-preserving, so a span found
in the folded text is the same span in the original: a censor can replace exactly the
characters the user typed.
"""

from __future__ import annotations

# lookalike -> Latin letter it imitates (lower and upper case listed separately because
# filters lower-case after folding and some capitals only resemble a Latin capital).
_PAIRS = {
    # Cyrillic lower case
    "а": "a", "в": "b", "е": "e", "ё": "e", "һ": "h", "і": "i", "ї": "i", "ј": "j", "к": "k",
    "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "ѕ": "s", "т": "t", "у": "y", "х": "x",
    "ԁ": "d", "ԛ": "q", "ԝ": "w", "ӏ": "l", "ь": "b", "ɡ": "g",
    # Cyrillic upper case
    "А": "A", "В": "B", "Е": "E", "Ё": "E", "Һ": "H", "І": "I", "Ї": "I", "Ј": "J", "К": "K",
    "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Ѕ": "S", "Т": "T", "У": "Y", "Х": "X",
    "Ԁ": "D", "Ԛ": "Q", "Ԝ": "W", "Ӏ": "l",
    # Greek
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
    "τ": "t", "υ": "u", "χ": "x", "ϳ": "j",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N",
    "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    # Armenian and Latin extensions
    "ս": "u", "օ": "o", "ց": "g", "ո": "n", "հ": "h", "ɑ": "a", "ı": "i", "ȷ": "j", "ʋ": "u",
}

CONFUSABLES: dict[str, str] = dict(_PAIRS)
_TABLE = str.maketrans(CONFUSABLES)


def fold_confusables(text: str) -> str:
    """``text`` with every listed lookalike replaced by its Latin letter (same length)."""
    return text.translate(_TABLE)
