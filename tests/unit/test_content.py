"""services.content.render: what is stored as `content` and `content_html`."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from chat_server.services.content import render


class Anchors(HTMLParser):
    """Collects every tag of a fragment, so tests look at structure, not at strings."""

    def __init__(self, fragment: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(fragment)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    @property
    def anchors(self) -> list[dict[str, str | None]]:
        return [attrs for tag, attrs in self.tags if tag == "a"]

    @property
    def plain(self) -> str:
        return "".join(self.text)


def test_markup_is_stripped():
    r = render("<b>hi</b>")
    assert r.content == "hi"
    assert r.content_html == "hi"


@pytest.mark.parametrize(
    "raw",
    [
        "<script>alert(1)</script>",
        "&lt;script&gt;alert(1)&lt;/script&gt;",
        "&amp;lt;script&amp;gt;alert(1)&amp;lt;/script&amp;gt;",
        "<img src=x onerror=alert(1)>",
        "<svg onload=alert(1)>",
        "<iframe src='https://evil.example'></iframe>",
        "<<script>script>alert(1)<</script>/script>",
    ],
)
def test_script_is_inert(raw):
    r = render(raw)
    parsed = Anchors(r.content_html or "")
    # No element at all in the HTML form: nothing can execute.
    assert parsed.tags == []
    assert "<" not in (r.content_html or "")
    for needle in ("<script", "onerror=", "onload=", "<img", "<iframe", "<svg"):
        assert needle not in r.content.lower()


def test_script_text_content():
    assert render("<script>alert(1)</script>").content == "alert(1)"


def test_entities_decoded_in_content_and_escaped_in_html():
    r = render("Tom &amp; Jerry &lt;3 &quot;cheese&quot;")
    assert r.content == 'Tom & Jerry <3 "cheese"'
    assert r.content_html is not None
    assert "<3" not in r.content_html
    assert "&lt;3" in r.content_html
    assert "&amp;" in r.content_html
    assert Anchors(r.content_html).tags == []
    assert Anchors(r.content_html).plain == r.content


def test_plain_comparison_characters_survive():
    r = render("5 < 6 & 7 > 2")
    assert r.content == "5 < 6 & 7 > 2"
    assert r.content_html == "5 &lt; 6 &amp; 7 &gt; 2"


def test_links_become_safe_anchors():
    r = render("see https://example.com/x?a=1&b=2 now")
    assert r.content == "see https://example.com/x?a=1&b=2 now"
    parsed = Anchors(r.content_html or "")
    assert len(parsed.anchors) == 1
    anchor = parsed.anchors[0]
    assert anchor["href"] == "https://example.com/x?a=1&b=2"
    assert set((anchor["rel"] or "").split()) == {"nofollow", "noopener"}
    assert parsed.plain == r.content


def test_bare_domain_link():
    parsed = Anchors(render("visit www.example.com").content_html or "")
    assert [a["href"] for a in parsed.anchors] == ["http://www.example.com"]
    assert "nofollow" in (parsed.anchors[0]["rel"] or "")


def test_link_cannot_break_out_of_attribute():
    r = render('http://x.com/"onmouseover=alert(1)')
    parsed = Anchors(r.content_html or "")
    assert [tag for tag, _ in parsed.tags] == ["a"]
    for _tag, attrs in parsed.tags:
        assert set(attrs) <= {"href", "rel", "target"}, attrs


@pytest.mark.parametrize(
    "raw",
    [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(document.cookie)",
        '<a href="javascript:alert(1)">click</a>',
        "click javascript:alert(document.cookie)//example.com",
        "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
        "java\u200bscript:alert(1)",
    ],
)
def test_javascript_links_never_become_anchors(raw):
    r = render(raw)
    for anchor in Anchors(r.content_html or "").anchors:
        href = (anchor["href"] or "").strip().lower()
        assert href.startswith(("http://", "https://", "mailto:")), anchor


def test_markup_anchor_keeps_only_text():
    r = render('<a href="https://ok.example">ok</a>')
    assert r.content == "ok"


def test_zero_width_and_bidi_characters_removed():
    r = render("he\u200bllo \u202eworld\ufeff \u2066x\u2069 soft\u00adhyphen")
    assert r.content == "hello world x softhyphen"


@pytest.mark.parametrize("control", ["\x00", "\x07", "\x1b", "\x7f", "\x85", "\x9b"])
def test_control_characters_removed(control):
    r = render(f"a{control}b")
    assert r.content == "ab"
    assert r.content_html == "ab"


def test_control_characters_from_entities_removed():
    assert render("a&#7;b&#x200b;c").content == "abc"


def test_only_invisible_is_empty():
    assert render("\u200b\u200b <b></b> \x00").content == ""


def test_whitespace_collapsed_newlines_kept():
    r = render("  one   two\r\n\r\n\r\n\r\nthree\tfour  ")
    assert r.content == "one two\n\nthree four"


def test_encrypted_passthrough():
    ciphertext = "  U2FsdGVkX1+<b>abc</b>/&amp;==  "
    r = render(ciphertext, encrypted=True)
    assert r.content == ciphertext.strip()  # opaque: not sanitised, not decoded
    assert r.content_html is None


# --- the fast paths give exactly what bleach gives ------------------------------------------
# to_plain_text skips bleach when the text has neither "<" nor "&"; to_html skips the
# linker when its URL pattern finds nothing.  Both must be invisible: compare with the
# bleach path on many generated texts (tags, entities, links, controls, odd code points).

import html as _html  # noqa: E402
import random  # noqa: E402

import bleach  # noqa: E402

from chat_server.services import content as _content  # noqa: E402

_POOL = list("abcxyz ABC019_-.:/?#@!\"'()[]{}>\t\n\r\x00\x01\x0b\x0c\x1b\x7f\x85\xa0\xad\u200b\u202e\ufeff\ufffd\ufffe\uffff"
             "\ufdd0\ud800\udc00éß😀…·ｈ")
_PIECES = ["http://", "https://x.io/a?b=c", "www.", "example.com", "foo.org", ".com", "a.b", "mailto:", "@user", "<", "&",
           "&amp;", "&#39;", "&lt;b&gt;", "<b>", "</i>", "<!--", "-->", "<script>", "&nbsp;", ";", "e.g.", "x.co", "1.2.3",
           "ftp://h.net", "it's", '"quoted"', "a > b", "\r\n"]


def _texts(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = [rng.choice(_PIECES) if rng.random() < 0.25 else "".join(rng.choice(_POOL) for _ in range(rng.randint(1, 6)))
                 for _ in range(rng.randint(0, 12))]
        out.append("".join(parts))
    return out


def _plain_reference(raw: str) -> str:
    """to_plain_text as it was before the fast path: always through bleach."""
    import unicodedata

    text = unicodedata.normalize("NFKC", raw)
    for _ in range(3):
        text = _content._INVISIBLE.sub("", text)
        stripped = _html.unescape(bleach.clean(text, tags=set(), attributes={}, strip=True, strip_comments=True))
        if stripped == text:
            break
        text = stripped
    text = _content._INVISIBLE.sub("", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _content._SPACES.sub(" ", text)
    text = _content._BLANK_LINES.sub("\n\n", text)
    return text.strip()


def _linkify_reference(text: str) -> str:
    return _content._linker().linkify(_html.escape(text, quote=True)) if text else ""


@pytest.mark.parametrize("seed", range(4))
def test_plain_text_fast_path_equals_bleach(seed):
    texts = _texts(seed, 2500) + ["plain words only", "a > b and c", "it's \"fine\"", "tabs\tand\nnewlines", "😀 ünïcödé"]
    skipped = 0
    for raw in texts:
        assert _content.to_plain_text(raw) == _plain_reference(raw), repr(raw)
        skipped += "<" not in raw and "&" not in raw
    assert skipped > 500  # the fast path was exercised


@pytest.mark.parametrize("seed", range(4))
def test_linkify_fast_path_equals_the_linker(seed):
    texts = _texts(100 + seed, 2500) + ["no links here", "a.b and 1.5", "it's <b> & \"q\""]
    texts += [_content.to_plain_text(t) for t in texts[:800]]  # what to_html really gets
    for text in texts:
        assert _content._linkify(text) == _linkify_reference(text), repr(text)


@pytest.mark.parametrize("seed", range(2))
def test_printable_ascii_fast_path_equals_bleach(seed):
    """to_plain_text returns printable ASCII without "<" or "&" after collapsing spaces
    and stripping: the same as the full path."""
    rng = random.Random(200 + seed)
    alphabet = [chr(c) for c in range(0x20, 0x7F) if chr(c) not in "<&"] + [" "] * 10
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(3000)]
    texts += ["  lead and trail  ", "a  b   c", " ", "", "x" * 50, "great stream today what a play 123"]
    for raw in texts:
        assert _content.to_plain_text(raw) == _plain_reference(raw), repr(raw)
