"""html_to_text: what a reader of the HTML sees, as plain text."""

from __future__ import annotations

import pytest

from tidings import catalog

CASES: dict[str, tuple[str, str]] = {
    "paragraphs": ("<p>one</p><p>two</p>", "one\n\ntwo"),
    "whitespace collapses": ("<p>  a \n\t b  </p>", "a b"),
    "inline elements": ("<p>Hello <b>Ann</b>, <i>hi</i>!</p>", "Hello Ann, hi!"),
    "line breaks": ("<div>a<br>b<br/><br>c</div>", "a\nb\n\nc"),
    "entities": ("<p>&lt;b&gt; &amp; &quot;q&quot; &#233;&nbsp;x &euro;</p>", '<b> & "q" é x €'),
    "link": ('<p>See <a href="https://x.example/a?b=1&amp;c=2">the board</a>.</p>',
             "See the board (https://x.example/a?b=1&c=2)."),
    "link to itself": ('<a href="https://x.example">https://x.example</a>', "https://x.example"),
    "mailto link": ('<a href="mailto:ann@example.com">ann@example.com</a>', "ann@example.com"),
    "anchor and script links": ('<a href="#top">top</a> <a href="javascript:x()">run</a>',
                                "top run"),
    "image link": ('<a href="https://x.example"><img alt="Logo" src="l.png"></a>',
                   "Logo (https://x.example)"),
    "empty link": ('<a href="https://x.example"></a>', "https://x.example"),
    "lists": ("<ul><li>one</li><li>two</li></ul><ol><li>a</li><li>b</li></ol>",
              "- one\n- two\n\n1. a\n2. b"),
    "headings": ("<h1>Title</h1><p>body</p>", "Title\n\nbody"),
    "table": ("<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>", "a b\nc"),
    "head, style and script": (
        "<html><head><title>T</title><style>p {}</style></head>"
        "<body><script>alert(1)</script><p>x</p></body></html>",
        "x",
    ),
    "hidden element": ('<div style="display: none;">preview</div><p>x</p>', "x"),
    "comments": ("<p>a<!-- note -->b</p><!--[if mso]><p>outlook</p><![endif]-->", "ab"),
    "preformatted": ("<pre>a\n  b</pre><p>c</p>", "a\n  b\n\nc"),
    "no tags stay": ("<p>a</p><unknown-tag>b</unknown-tag>", "a\n\nb"),
    "unclosed tags": ("<p>a<p>b<div>c", "a\n\nb\n\nc"),
    "escaped markup stays text": ("&lt;script&gt;x&lt;/script&gt;", "<script>x</script>"),
    "blank lines collapse": ("<p>a</p><p></p><p></p><br><br><p>b</p>", "a\n\nb"),
}  # fmt: skip


@pytest.mark.parametrize(("html", "text"), CASES.values(), ids=CASES.keys())
def test_html_to_text(html: str, text: str) -> None:
    assert catalog.html_to_text(html) == text
