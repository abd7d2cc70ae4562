"""HTML to readable plain text, for the text part of an email that has no template of its own.

Paragraphs and headings become blocks separated by a blank line, ``<br>`` and table rows
break lines, list items get a dash, links read "text (url)", entities are decoded, and
what a reader never sees (``<head>``, styles, scripts, ``display:none`` elements such as
an MJML preview line, comments) is left out.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

_SKIPPED = frozenset({"head", "style", "script", "title", "template", "noscript", "svg"})
VOID_ELEMENTS = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
)
_PARAGRAPHS = frozenset(
    {
        "address", "article", "aside", "blockquote", "center", "dd", "div", "dl", "figure",
        "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "main", "nav",
        "ol", "p", "pre", "section", "table", "ul",
    }
)  # fmt: skip
_LINES = frozenset({"dt", "li", "tr", "caption"})
_CELLS = frozenset({"td", "th"})
_HIDDEN = re.compile(r"display\s*:\s*none", re.IGNORECASE)
_NO_URL_SCHEMES = ("#", "javascript:", "data:", "vbscript:")
_BLANK_LINES = re.compile(r"\n{3,}")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")


def html_to_text(html: str, *, keep: re.Pattern[str] | None = None) -> str:
    """The plain text a reader of ``html`` sees, tidied (see ``tidy``).

    ``keep`` matches tokens that must come out wherever they sit, even in attributes,
    comments or skipped elements, without taking any room in the text (template tags).
    """
    parser = _TextParser(keep)
    parser.feed(html)
    parser.close()
    return tidy(parser.text())


def tidy(text: str) -> str:
    """Strip trailing spaces, keep at most one blank line in a row, trim the ends."""
    text = _TRAILING_SPACE.sub("\n", text.replace("\r\n", "\n").replace("\r", "\n") + "\n")
    return _BLANK_LINES.sub("\n\n", text).strip()


class _Writer:
    """Accumulates text with HTML's whitespace rules: runs collapse, blocks break lines.

    Breaks are written as soon as a block opens or closes, never deferred to the next
    text: a template tag between them (a loop over list items) then repeats the right
    ones. ``tidy`` removes whatever extra blank lines that leaves.
    """

    def __init__(self) -> None:
        self.parts: list[str] = []
        self._newlines = 0  # line breaks written since the last text
        self._space = False
        self._started = False

    def words(self, data: str) -> None:
        words = data.split()
        if not words:
            self._space = self._space or bool(data)
            return
        if (self._space or data[0].isspace()) and self._started and not self._newlines:
            self.parts.append(" ")
        self.parts.append(" ".join(words))
        self._wrote(data[-1].isspace())

    def verbatim(self, data: str) -> None:
        if not data:
            return
        self.parts.append(data)
        trailing = len(data) - len(data.rstrip("\n"))
        if trailing == len(data):
            self._started = True
            self._newlines += trailing
        else:
            self._wrote(False)
            self._newlines = trailing

    def token(self, token: str) -> None:
        # Takes no room: the text around it is laid out as if it were not there.
        self.parts.append(token)

    def space(self) -> None:
        self._space = True

    def block(self, breaks: int) -> None:
        if self._started and self._newlines < breaks:
            self.parts.append("\n" * (breaks - self._newlines))
            self._newlines = breaks
        self._space = False

    def line_break(self) -> None:
        if self._started:
            self.parts.append("\n")
            self._newlines += 1
            self._space = False

    def _wrote(self, space_after: bool) -> None:
        self._started = True
        self._newlines = 0
        self._space = space_after


class _TextParser(HTMLParser):
    def __init__(self, keep: re.Pattern[str] | None) -> None:
        super().__init__(convert_charrefs=True)
        self._keep = keep
        self._out = _Writer()
        self._stack: list[tuple[str, bool]] = []  # (tag, whether its content is hidden)
        self._links: list[tuple[int, str | None]] = []  # (start in parts, url)
        self._lists: list[int | None] = []  # the next number of an <ol>, None for <ul>
        self._pre = 0

    def text(self) -> str:
        return "".join(self._out.parts)

    @property
    def _hidden(self) -> bool:
        return bool(self._stack) and self._stack[-1][1]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        for value in values.values():
            self._keep_tokens(value)
        hidden = self._hidden or tag in _SKIPPED or bool(_HIDDEN.search(values.get("style", "")))
        if tag not in VOID_ELEMENTS:
            self._stack.append((tag, hidden))
        if hidden:
            return
        self._open(tag, values)

    def _open(self, tag: str, values: dict[str, str]) -> None:
        out = self._out
        if tag == "br":
            out.line_break()
        elif tag == "img":
            if values.get("alt", "").strip():
                out.words(" " + values["alt"] + " ")
        elif tag in _PARAGRAPHS:
            out.block(2)
        elif tag in _LINES:
            out.block(1)
        elif tag in _CELLS:
            out.space()
        if tag == "pre":
            self._pre += 1
        elif tag in ("ul", "ol"):
            self._lists.append(1 if tag == "ol" else None)
        elif tag == "li":
            self._list_marker()
        elif tag == "a":
            self._links.append((len(out.parts), values.get("href")))

    def _list_marker(self) -> None:
        if self._lists and self._lists[-1] is not None:
            number = self._lists[-1]
            self._lists[-1] = number + 1
            self._out.words(f"{number}. ")
        else:
            self._out.words("- ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID_ELEMENTS:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID_ELEMENTS or not any(open_tag == tag for open_tag, _ in self._stack):
            return
        while self._stack:
            open_tag, hidden = self._stack.pop()
            if not hidden:
                self._close(open_tag)
            if open_tag == tag:
                break

    def _close(self, tag: str) -> None:
        out = self._out
        if tag in _PARAGRAPHS:
            out.block(2)
        elif tag in _LINES:
            out.block(1)
        elif tag in _CELLS:
            out.space()
        if tag == "pre":
            self._pre -= 1
        elif tag in ("ul", "ol") and self._lists:
            self._lists.pop()
        elif tag == "a" and self._links:
            self._close_link(*self._links.pop())

    def _close_link(self, start: int, url: str | None) -> None:
        label = "".join(self._out.parts[start:]).strip()
        url = (url or "").strip()
        if not url or url.lower().startswith(_NO_URL_SCHEMES):
            return
        if not label:
            self._out.words(url)
        elif url not in (label, f"mailto:{label}"):
            self._out.words(f" ({url})")

    def handle_data(self, data: str) -> None:
        if self._hidden:
            self._keep_tokens(data)
        elif self._keep is None:
            self._visible(data)
        else:
            position = 0
            for match in self._keep.finditer(data):
                self._visible(data[position : match.start()])
                self._out.token(match.group())
                position = match.end()
            self._visible(data[position:])

    def _visible(self, data: str) -> None:
        if self._pre:
            self._out.verbatim(data)
        else:
            self._out.words(data)

    def handle_comment(self, data: str) -> None:
        self._keep_tokens(data)

    def _keep_tokens(self, text: str) -> None:
        if self._keep is not None:
            for match in self._keep.finditer(text):
                self._out.token(match.group())
