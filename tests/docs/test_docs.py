"""Every example in README.md and docs/*.md runs, against a real server, as documented.

One test per page runs its blocks in order (a tutorial builds on its earlier steps),
each block a subtest, so a page reports every example that drifted from the code.
"""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from tests.docs.blocks import ROOT, collect, documents, unaccounted
from tests.docs.runners import Session

PAGES = documents()


def _page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_block_is_run_or_marked_illustrative(page: Path) -> None:
    loose = [str(block) for block in unaccounted(collect(page))]
    assert not loose, (
        "blocks the docs tests cannot run: give them a runnable language "
        f"(sh, python, yaml, http, json) or mark them `notest`: {loose}"
    )


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_examples_run_as_documented(page: Path, tmp_path: Path, subtests: pytest.Subtests) -> None:
    runnable = [b for b in collect(page) if b.runnable and not b.illustrative]
    with Session(tmp_path, runnable) as session:
        for block in runnable:
            with subtests.test(msg=str(block)):
                session.run(block)


def _broken_copy(page: Path, tmp_path: Path, old: str, new: str) -> Path:
    """A copy of ``page`` with one example changed, as a careless edit would."""
    text = page.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} is not once in {page}"
    copy = tmp_path / page.name
    copy.write_text(text.replace(old, new), encoding="utf-8")
    return copy


def _first_failure(page: Path, tmp_path: Path) -> str:
    """Run a page's blocks in order; the message of the first one that fails."""
    runnable = [b for b in collect(page) if b.runnable and not b.illustrative]
    with Session(tmp_path / "session", runnable) as session:
        for block in runnable:
            try:
                session.run(block)
            except AssertionError as failure:
                return str(failure)
    return ""


@pytest.mark.parametrize(
    ("old", "new", "said"),
    [
        # A command that no longer does what the doc says it does.
        ('"type": "comment.created"', '"type": "comment.creatd"', "the doc shows 202"),
        # An output the code no longer prints.
        (
            '# → 202 {"event_id": "...", "replayed": false}',
            '# → 202 {"event_id": "..."}',
            "'replayed' is not in the doc",
        ),
    ],
    ids=["command", "output"],
)
def test_a_broken_example_fails(tmp_path: Path, old: str, new: str, said: str) -> None:
    broken = _broken_copy(ROOT / "README.md", tmp_path, old, new)
    failure = _first_failure(broken, tmp_path / "broken")
    [block] = [b for b in collect(broken) if new in b.source]
    assert failure.startswith(f"{block}:")
    assert said in failure


def test_a_type_that_fails_its_check_fails(tmp_path: Path) -> None:
    page = ROOT / "docs/producers.md"
    lines = page.read_text(encoding="utf-8").splitlines(keepends=True)
    html = next(line for line in lines if line.startswith('    html: "<p>Hello'))
    broken = _broken_copy(page, tmp_path, html, "")
    [block] = [b for b in collect(broken) if b.language == "yaml" and "invoice.paid" in b.source]
    with pytest.raises(
        AssertionError, match=r"invoice.paid.yaml:\d+: channels.email: needs a body"
    ):
        Session(tmp_path / "session", []).run(block)


def test_an_unmarked_block_is_reported(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# A page\n\n```text\nsomething a reader might copy\n```\n", encoding="utf-8")
    assert [block.line for block in unaccounted(collect(page))] == [3]


def test_a_page_whose_port_was_taken_meanwhile_starts_on_another(tmp_path: Path) -> None:
    with Session(tmp_path / "session", []) as session, socket.socket() as taken:
        picked = session.port
        taken.bind(("127.0.0.1", picked))
        taken.listen()
        session.start()
        assert session.port != picked
        assert httpx.get(f"{session.base_url}/readyz", timeout=5).status_code == 200
