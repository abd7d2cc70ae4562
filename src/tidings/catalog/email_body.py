"""Compile an email body once: MJML to HTML (mrml), CSS inlined (css-inline), text derived.

Neither mrml nor css-inline knows Jinja: they reparse and reserialise the markup, which
would escape quotes inside ``{{ }}``, trip on ``<`` in ``{% if a < b %}`` and move text
out of tables. So every Jinja tag is swapped for an inert placeholder first and put back
afterwards: ``{{ … }}`` becomes a word, ``{% … %}`` and ``{# … #}`` become an HTML
comment (a comment may stand anywhere in a table). What comes out is the source of one
Jinja template for the HTML part and one for the text part; per message only Jinja runs.

Nothing is fetched, now or when a message renders: mrml includes nothing, css-inline
loads no remote stylesheet, and remote stylesheet links and ``@import`` rules (MJML's web
fonts) are removed.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass

import css_inline
import mrml

from tidings.catalog.html_text import VOID_ELEMENTS, html_to_text

_TAG_START = re.compile(r"\{[{%#]")
_RAW_START = re.compile(r"\{%[-+]?\s*raw\s*[-+]?%\}")
_RAW_END = re.compile(r"\{%[-+]?\s*endraw\s*[-+]?%\}")
_SURROGATE = re.compile("[\ud800-\udfff]")
_MRML_POSITION = re.compile(r"at position (\d+):(\d+)")
_LINK = re.compile(r"<link\b[^>]*>", re.IGNORECASE)
_STYLE = re.compile(r"(<style\b[^>]*>)(.*?)(</style>)", re.IGNORECASE | re.DOTALL)
_IMPORT = re.compile(r"@import\b[^;]*;?", re.IGNORECASE)
_ELEMENT_TAG = re.compile(r"<(/?)([A-Za-z][^\s/>]*)[^>]*?(/?)>")
# mrml recurses natively and crashes the process somewhere past 6,000 levels; no email
# comes anywhere near this.
MAX_DEPTH = 500

_PARSER_OPTIONS = mrml.ParserOptions(include_loader=mrml.noop_loader())
# No default web fonts; comments kept, since the placeholders of block tags are comments.
_RENDER_OPTIONS = mrml.RenderOptions(disable_comments=False, fonts={})
_INLINER = css_inline.CSSInliner(
    load_remote_stylesheets=False,
    keep_style_tags=True,  # media queries and client-specific rules still need them
    keep_link_tags=False,
)


class BodyError(Exception):
    """The body cannot be compiled; ``line`` is the line in its source, when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass(frozen=True)
class BodySources:
    """Jinja sources, ready to compile: the HTML part and a text part derived from it."""

    html: str
    text: str


@dataclass(frozen=True)
class _Tag:
    source: str
    start: int  # offset in the original source
    block: bool  # {% … %}: must survive exactly once to keep the template's structure
    comment: bool  # {# … #}: may vanish

    @property
    def silent(self) -> bool:
        """Whether the tag outputs nothing itself (a block tag or a comment)."""
        return self.block or self.comment


@dataclass(frozen=True)
class _Occurrence:
    """Where one placeholder stands in the protected text, and its tag in the source."""

    start: int
    length: int
    tag: _Tag


@dataclass(frozen=True)
class _Protected:
    text: str
    source: str
    tags: list[_Tag]  # by placeholder number
    prefix: str
    occurrences: list[_Occurrence]

    def locate(self, offset: int) -> tuple[int, _Tag | None]:
        """The source line of an offset in the protected text, and the tag it falls in."""
        starts = [occurrence.start for occurrence in self.occurrences]
        position = bisect_right(starts, offset) - 1
        source_offset, tag = offset, None
        if position >= 0:
            occurrence = self.occurrences[position]
            inside = offset - occurrence.start
            if inside < occurrence.length:
                tag = occurrence.tag
                source_offset = tag.start
            else:
                source_offset = occurrence.tag.start + len(occurrence.tag.source)
                source_offset += inside - occurrence.length
        return self.source.count("\n", 0, min(source_offset, len(self.source))) + 1, tag


def compile_body(source: str, *, mjml: bool) -> BodySources:
    """Turn a body template (MJML or HTML, with Jinja tags) into HTML and text sources.

    The source must already be valid Jinja. Raises ``BodyError`` when the MJML is
    invalid or when the Jinja tags cannot survive the rendering where they stand.
    """
    if _SURROGATE.search(source):
        raise BodyError("the template holds an unpaired surrogate (a \\ud800-\\udfff escape)")
    protected = _protect(source)
    html = protected.text
    if _depth(html) > MAX_DEPTH:
        raise BodyError(f"the markup is nested more than {MAX_DEPTH} levels deep")
    if mjml:
        try:
            html = mrml.to_html(html, _PARSER_OPTIONS, _RENDER_OPTIONS).content
        except OSError as exc:
            raise _mrml_error(exc, protected) from None
    html = _without_remote_styles(html)
    try:
        html = _INLINER.inline(html)
    except (css_inline.InlineError, ValueError) as exc:
        raise BodyError(f"cannot inline the CSS: {exc}") from None
    _check_survivors(html, protected)
    silent = [index for index, tag in enumerate(protected.tags) if tag.silent]
    text = html_to_text(html, keep=_placeholder_pattern(protected, silent))
    return BodySources(html=_restore(html, protected), text=_restore(text, protected))


def _depth(markup: str) -> int:
    """How deep elements nest, roughly (unclosed elements count as open)."""
    depth = deepest = 0
    for closing, name, self_closing in _ELEMENT_TAG.findall(markup):
        if closing:
            depth = max(0, depth - 1)
        elif not self_closing and name.lower() not in VOID_ELEMENTS:
            depth += 1
            deepest = max(deepest, depth)
    return deepest


def _protect(source: str) -> _Protected:
    prefix = "tidingsjinja"
    while prefix in source.lower():
        prefix += "x"
    tags: list[_Tag] = []
    numbers: dict[str, int] = {}  # the same expression, the same placeholder
    pieces: list[str] = []
    occurrences: list[_Occurrence] = []
    length = 0
    position = 0
    for start, end in _tag_spans(source):
        pieces.append(source[position:start])
        length += start - position
        text = source[start:end]
        kind = text[1]
        raw = kind == "%" and _RAW_START.match(text) is not None
        tag = _Tag(text, start, block=kind == "%" and not raw, comment=kind == "#")
        number = numbers.get(text) if not tag.silent else None
        if number is None:
            number = len(tags)
            tags.append(tag)
            if not tag.silent:
                numbers[text] = number
        placeholder = f"{prefix}{number}q"
        if tag.silent:
            placeholder = f"<!--{placeholder}-->"
        occurrences.append(_Occurrence(length, len(placeholder), tag))
        pieces.append(placeholder)
        length += len(placeholder)
        position = end
    pieces.append(source[position:])
    return _Protected("".join(pieces), source, tags, prefix, occurrences)


def _tag_spans(source: str) -> list[tuple[int, int]]:
    """Where each Jinja tag is; a ``{% raw %}…{% endraw %}`` block is one (inert) span."""
    spans: list[tuple[int, int]] = []
    position = 0
    while (found := _TAG_START.search(source, position)) is not None:
        start = found.start()
        kind = source[start + 1]
        if kind == "#":
            close = source.find("#}", start + 2)
            end = len(source) if close < 0 else close + 2
        elif kind == "%" and _RAW_START.match(source, start):
            raw_end = _RAW_END.search(source, start)
            end = len(source) if raw_end is None else raw_end.end()
        else:
            end = _tag_end(source, start + 2, "}}" if kind == "{" else "%}")
        spans.append((start, end))
        position = end
    return spans


def _tag_end(source: str, position: int, closer: str) -> int:
    # As Jinja's lexer does: skip string literals, and close only outside brackets.
    depth = 0
    while position < len(source):
        character = source[position]
        if character in "'\"":
            position += 1
            while position < len(source) and source[position] != character:
                position += 2 if source[position] == "\\" else 1
        elif depth == 0 and source.startswith(closer, position):
            return position + 2
        elif character in "([{":
            depth += 1
        elif character in ")]}":
            depth = max(0, depth - 1)
        position += 1
    return len(source)


def _mrml_error(exc: OSError, protected: _Protected) -> BodyError:
    message = str(exc)
    found = _MRML_POSITION.search(message)
    message = _MRML_POSITION.sub("", message).replace(" in root template", "").strip()
    if found is None:
        return BodyError(f"invalid MJML: {message}")
    line, tag = protected.locate(int(found.group(1)))
    if tag is not None:
        return BodyError(
            f"{_shorten(tag.source)} cannot stand here: mj-title, mj-preview and mj-style "
            "hold text only (see docs/catalog.md, MJML and Jinja)",
            line,
        )
    return BodyError(f"invalid MJML: {message}", line)


def _without_remote_styles(html: str) -> str:
    # In an email, <link> only ever loads a stylesheet (MJML's web fonts): nothing remote.
    html = _LINK.sub("", html)
    return _STYLE.sub(lambda match: match[1] + _IMPORT.sub("", match[2]) + match[3], html)


def _placeholder_pattern(protected: _Protected, indexes: list[int]) -> re.Pattern[str] | None:
    if not indexes:
        return None
    numbers = "|".join(str(index) for index in indexes)
    return re.compile(f"{protected.prefix}(?:{numbers})q")


def _occurrences(html: str, protected: _Protected) -> list[int]:
    counts = [0] * len(protected.tags)
    for found in re.finditer(f"{protected.prefix}(\\d+)q", html):
        index = int(found.group(1))
        if index < len(counts):
            counts[index] += 1
    return counts


def _check_survivors(html: str, protected: _Protected) -> None:
    for tag, count in zip(protected.tags, _occurrences(html, protected), strict=True):
        if tag.comment:
            continue
        if count == 0 or (tag.block and count > 1):
            what = "dropped" if count == 0 else f"repeated {count} times"
            raise BodyError(
                f"{_shorten(tag.source)} is {what} when the HTML is rendered: "
                "Jinja tags cannot stand there (see docs/catalog.md, MJML and Jinja)",
                protected.source.count("\n", 0, tag.start) + 1,
            )


def _restore(text: str, protected: _Protected) -> str:
    """Put the Jinja tags back; any other ``{{``, ``{%`` or ``{#`` is made literal first.

    Such text can only come from mrml, css-inline or a decoded entity (``&#123;``): what
    the author wrote inside tags is in the placeholders.
    """
    placeholder = f"(<!--|&lt;!--)?{protected.prefix}(\\d+)q(-->|--&gt;)?"
    # A "{" right before a placeholder would join the tag put back there: "{{{ x }}".
    text = re.sub(f"\\{{(?=[{{%#]|{placeholder})", "{{ '{' }}", text)
    pattern = re.compile(placeholder)

    def tag(found: re.Match[str]) -> str:
        restored = protected.tags[int(found.group(2))]
        if restored.silent:
            return restored.source
        # An expression inside an author's own comment: the comment stays.
        return (found.group(1) or "") + restored.source + (found.group(3) or "")

    return pattern.sub(tag, text)


def _shorten(text: str) -> str:
    return text if len(text) <= 60 else text[:59] + "…"
