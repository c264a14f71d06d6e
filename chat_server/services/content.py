"""The content pipeline: pure functions from what a user typed to what is stored.

``content`` is plain text that is safe to show as text (markup removed, entities
decoded, invisible characters dropped, Unicode normalised); ``content_html`` is the same
text HTML-escaped with links made into ``rel="nofollow noopener"`` anchors, safe for
``innerHTML``.  bleach does the HTML work; nothing here parses HTML by hand.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import bleach
from bleach.linkifier import URL_RE, Linker

# C0/C1 controls except tab and newline, plus zero-width and bidi-override characters
# that can hide text from readers and filters.
_INVISIBLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\u00ad]")
_SPACES = re.compile(r"[ \t]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def _set_rel(attrs: dict, new: bool = False) -> dict:  # type: ignore[type-arg]
    href_key = (None, "href")
    href = attrs.get(href_key, "")
    if not href.lower().startswith(("http://", "https://", "mailto:")):
        return None  # type: ignore[return-value]  # bleach: drop the link, keep the text
    attrs[(None, "rel")] = "nofollow noopener"
    attrs[(None, "target")] = "_blank"
    return attrs


@lru_cache(maxsize=1)
def _linker() -> Linker:
    return Linker(callbacks=[_set_rel], skip_tags=["pre", "code"], parse_email=False)


def to_plain_text(raw: str) -> str:
    """Markup removed, entities decoded, invisible characters dropped, NFKC normalised."""
    if raw.isascii() and raw.isprintable() and "<" not in raw and "&" not in raw:
        # Printable ASCII without a tag or an entity (most chat messages): NFKC leaves it
        # as it is and it holds no invisible character, tab or line break, so only the
        # collapsing of spaces and the final strip can change it (equivalence:
        # tests/unit/test_content.py).
        return (_SPACES.sub(" ", raw) if "  " in raw else raw).strip()
    text = unicodedata.normalize("NFKC", raw)
    # Remove tags (keeping their text), then turn entities back into characters: the
    # result is text, never markup.  Loop because decoding can reveal new markup
    # (``&lt;script&gt;``) that must not survive as "text that looks like a tag" in
    # places where it could later be mis-rendered.
    for _ in range(3):
        # Drop invisible/control characters before bleach: html5lib turns some of them
        # (e.g. BEL, ESC) into a visible "?" instead of removing them.
        text = _INVISIBLE.sub("", text)
        if "<" not in text and "&" not in text:
            # Nothing bleach could strip or unescape: with neither a tag nor an entity,
            # clean() only escapes ">" and unescape() undoes it, so the text is already
            # its own result.  Most chat messages end here, without an HTML parse
            # (equivalence: tests/unit/test_content.py).
            break
        stripped = html.unescape(bleach.clean(text, tags=set(), attributes={}, strip=True, strip_comments=True))
        if stripped == text:
            break
        text = stripped
    text = _INVISIBLE.sub("", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _SPACES.sub(" ", text)
    text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


# "@name" at the start or after white space / opening punctuation, so e-mail addresses,
# "@@x" and "@" inside URLs are not mentions.
MENTION = re.compile(r"(?<![^\s(\[{\"',;!?])@([\w.\-]{1,64})")


def find_mentions(text: str) -> list[str]:
    """The distinct ``@tokens`` of ``text`` in order of appearance (without the ``@``)."""
    if "@" not in text:
        return []
    seen: dict[str, str] = {}
    for match in MENTION.finditer(text):
        token = match.group(1).rstrip(".-")
        if token:
            seen.setdefault(token.lower(), token)
    return list(seen.values())


def _linkify(text: str) -> str:
    if not text:
        return ""
    escaped = html.escape(text, quote=True)
    # ``"." not in``: every match of URL_RE has a dot before its top-level domain, so the
    # regex (slow: hundreds of alternatives) only runs on texts with a dot.
    if ("." not in escaped or URL_RE.search(escaped) is None) and "\r" not in escaped and _INVISIBLE.search(escaped) is None:
        # No link for the linker to mark up: its parse and re-serialisation give back the
        # escaped text unchanged, so skip them (the linker's own pattern decides; a match
        # anywhere sends the text through the linker).  Equivalence: tests/unit/test_content.py.
        return escaped
    return _linker().linkify(escaped)


def to_html(text: str, mentions: Mapping[str, str] | None = None) -> str:
    """``text`` escaped for HTML, with links marked up and ``@mentions`` of known users
    (``mentions``: lower-cased token -> user id) wrapped in a span."""
    if not mentions:
        return _linkify(text)
    parts: list[str] = []
    position = 0
    for match in MENTION.finditer(text):
        token = match.group(1).rstrip(".-")
        user_id = mentions.get(token.lower())
        if user_id is None:
            continue
        end = match.start() + 1 + len(token)
        parts.append(_linkify(text[position:match.start()]))
        parts.append(
            f'<span class="mention" data-user-id="{html.escape(user_id, quote=True)}">@{html.escape(token, quote=True)}</span>'
        )
        position = end
    parts.append(_linkify(text[position:]))
    return "".join(parts)


@dataclass(frozen=True)
class Rendered:
    content: str
    content_html: str | None


def render(raw: str, *, encrypted: bool = False, mentions: Mapping[str, str] | None = None) -> Rendered:
    if encrypted:
        # Opaque ciphertext: stored as sent, never rendered as HTML, never filtered.
        return Rendered(content=raw.strip(), content_html=None)
    text = to_plain_text(raw)
    return Rendered(content=text, content_html=to_html(text, mentions))
