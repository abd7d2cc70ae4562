"""Rules in the catalog: parsed, checked at their line, rendered (collapsed, digest, email)."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
from pathlib import Path
from typing import Any, NamedTuple

import dkim as dkimpy  # type: ignore[import-untyped]
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings import catalog
from tidings.catalog.rules import KEY_MAX, storable_key
from tidings.email import dkim
from tidings.email.composer import EmailComposer, Sender

SHIPPED = Path(__file__).resolve().parents[3] / "catalog"

# Line numbers below refer to this text: a rules mapping starts on line 21.
BASE = """\
key: comment.created
category: comments
description: Someone commented.
schema:
  type: object
  required: [board, comment]
  properties:
    board: {type: object}
    comment: {type: object}
example:
  board: {id: b-1, name: Roadmap}
  comment: {id: c-1, text: Looks good}
channels:
  in_app:
    title: "{{ actor.name }} commented on {{ data.board.name }}"
    body: "{{ data.comment.text }}"
    action_url: "https://app.example.com/boards/{{ data.board.id }}"
  email:
    subject: "{{ actor.name }} commented"
    html: "<p>{{ data.comment.text }}</p>"
"""

FULL_RULES = """\
rules:
  dedup: {key: "  {{ data.comment.id }}  ", window: 1h}
  collapse:
    key: "{{ data.board.id }}"
    title: >-
      {{ group.actors[0].name }}{% if group.others %} and {{ group.others }} more{% endif %}
      commented on {{ data.board.name }}
  throttle: {limit: 5, window: 1h30m, per: category, over: digest}
  digest:
    key: "{{ data.board.id }}"
    window: 2h
    show: 2
    title: "{{ digest.count }} new comments on {{ digest.items[0].data.board.name }}"
    subject: "Comments on {{ digest.items[0].data.board.name }}"
  delay: 2m
  email_if_unseen: 15m
  max_age: 1d
"""

RECIPIENT = {
    "id": "u-bob",
    "name": "Bob",
    "email": "bob@example.com",
    "locale": "en",
    "timezone": "Europe/Paris",
}


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "type.yaml").write_text(text, encoding="utf-8")
    return tmp_path


def load(tmp_path: Path, text: str) -> catalog.NotificationType:
    notification_type = catalog.load(write(tmp_path, text)).get("comment.created")
    assert notification_type is not None
    return notification_type


def context(**data: Any) -> dict[str, Any]:
    return {
        "data": data,
        "actor": {"id": "u-ann", "name": "Ann"},
        "recipient": RECIPIENT,
        "event": {"id": "ev-1", "type": "comment.created", "tenant": "acme"},
    }


def item(number: int, **overrides: Any) -> dict[str, Any]:
    return {
        "title": f"Ann commented on Roadmap #{number}",
        "body": f"Comment {number}",
        "action_url": f"https://app.example.com/boards/b-1#c-{number}",
        "actor": {"id": "u-ann", "name": "Ann"},
        "data": {"board": {"id": "b-1", "name": "Roadmap"}, "comment": {"id": f"c-{number}"}},
        "event_id": f"ev-{number}",
        "created_at": "2024-05-01T09:30:00Z",
        **overrides,
    }


def digest_context(items: list[dict[str, Any]], count: int | None = None) -> dict[str, Any]:
    count = len(items) if count is None else count
    return {
        "recipient": RECIPIENT,
        "digest": {
            "count": count,
            "items": items,
            "more": count - len(items),
            "key": "b-1",
            "type": "comment.created",
        },
    }


# -- parsing ---------------------------------------------------------------------------


def test_every_rule_is_compiled(tmp_path: Path) -> None:
    rules = load(tmp_path, BASE + FULL_RULES).rules

    assert rules.dedup is not None
    assert rules.dedup.window == dt.timedelta(hours=1)
    assert rules.collapse is not None
    assert rules.collapse.body is None
    assert rules.throttle == catalog.ThrottleRule(
        limit=5,
        window=dt.timedelta(hours=1, minutes=30),
        per=catalog.ThrottleScope.CATEGORY,
        over=catalog.OverLimit.DIGEST,
    )
    assert rules.digest is not None
    assert (rules.digest.window, rules.digest.show, rules.digest.body) == (
        dt.timedelta(hours=2),
        2,
        None,
    )
    assert rules.digest.key is not None
    assert rules.digest.subject is not None
    assert (rules.delay, rules.email_if_unseen, rules.max_age) == (
        dt.timedelta(minutes=2),
        dt.timedelta(minutes=15),
        dt.timedelta(days=1),
    )


def test_a_type_without_rules_has_none(tmp_path: Path) -> None:
    assert load(tmp_path, BASE).rules == catalog.Rules()


def test_defaults_of_throttle_and_digest(tmp_path: Path) -> None:
    text = BASE + (
        "rules:\n"
        "  throttle: {limit: 1, window: 10m}\n"
        "  digest: {window: 1d, title: '{{ digest.count }} comments'}\n"
    )
    rules = load(tmp_path, text).rules

    assert rules.throttle is not None
    assert (rules.throttle.per, rules.throttle.over) == (
        catalog.ThrottleScope.CHANNEL,
        catalog.OverLimit.DROP,
    )
    assert rules.digest is not None
    assert (rules.digest.key, rules.digest.show, rules.digest.subject) == (None, 5, None)


class Expected(NamedTuple):
    field: str
    message: str  # a fragment of the message
    line: int | None


def rules(text: str) -> str:
    return BASE + "rules:\n" + text


ERROR_CASES: dict[str, tuple[str, list[Expected]]] = {
    "a window that is not a duration": (
        rules("  dedup: {key: '{{ data.comment.id }}', window: soon}\n"),
        [
            Expected(
                "rules.dedup.window",
                "expected a duration such as 30s, 10m, 1h or 1d, largest unit first (1h30m), "
                "got 'soon'",
                22,
            )
        ],
    ),
    "a number is not a duration": (
        rules("  delay: 90\n"),
        [Expected("rules.delay", "expected a duration such as 30s", 22)],
    ),
    "a zero duration": (
        rules("  max_age: 0s\n"),
        [Expected("rules.max_age", "longer than zero", 22)],
    ),
    "a rule's missing field": (
        rules("  dedup: {key: '{{ data.comment.id }}'}\n"),
        [Expected("rules.dedup.window", "required field is missing", 22)],
    ),
    "an unknown rule": (
        rules("  colapse: {key: x, title: y}\n"),
        [Expected("rules.colapse", "unknown field", 22)],
    ),
    "a throttle limit below one": (
        rules("  throttle: {limit: 0, window: 1h}\n"),
        [Expected("rules.throttle.limit", "greater than or equal to 1", 22)],
    ),
    "a throttle limit that is text": (
        rules("  throttle: {limit: '5', window: 1h}\n"),
        [Expected("rules.throttle.limit", "valid integer", 22)],
    ),
    "an unknown throttle scope": (
        rules("  throttle: {limit: 5, window: 1h, per: user}\n"),
        [Expected("rules.throttle.per", "'channel' or 'category'", 22)],
    ),
    "an unknown over-limit choice": (
        rules("  throttle: {limit: 5, window: 1h, over: queue}\n"),
        [Expected("rules.throttle.over", "'drop' or 'digest'", 22)],
    ),
    "a digest showing too many items": (
        rules("  digest: {window: 1h, show: 51, title: x}\n"),
        [Expected("rules.digest.show", "less than or equal to 50", 22)],
    ),
    "a digest showing no item": (
        rules("  digest: {window: 1h, show: 0, title: x}\n"),
        [Expected("rules.digest.show", "greater than or equal to 1", 22)],
    ),
    "a blank template": (
        rules("  collapse: {key: '  ', title: x}\n"),
        [Expected("rules.collapse.key", "must not be blank", 22)],
    ),
    "collapse without the in_app channel": (
        BASE.replace("  in_app:", "  in_ap:").split("  in_ap:")[0]
        + "  email: {subject: Hi, html: '<p>x</p>'}\n"
        + "rules:\n  collapse: {key: '{{ data.board.id }}', title: x}\n",
        [Expected("rules.collapse", "needs the in_app channel", 16)],
    ),
    "email_if_unseen without the email channel": (
        BASE.split("  email:")[0] + "rules:\n  email_if_unseen: 15m\n",
        [Expected("rules.email_if_unseen", "needs both the in_app and email channels", 19)],
    ),
    "a max_age no longer than the delay": (
        rules("  delay: 1h\n  max_age: 60m\n"),
        [Expected("rules.max_age", "every notification would be stale", 23)],
    ),
    "a max_age no longer than email_if_unseen": (
        rules("  email_if_unseen: 2h\n  max_age: 1h\n"),
        [Expected("rules.max_age", "every email would be stale", 23)],
    ),
    "a syntax error in an inline key": (
        rules("  dedup: {key: '{{ data.comment.id }', window: 1h}\n"),
        [Expected("rules.dedup.key", "unexpected '}'", 22)],
    ),
    "a syntax error inside a block scalar": (
        rules(
            "  digest:\n"
            "    window: 1h\n"
            "    title: x\n"
            "    body: |\n"
            "      {% for item in digest.items %}\n"
            "      {{ item.title }\n"
            "      {% endfor %}\n"
        ),
        [Expected("rules.digest.body", "unexpected '}'", 27)],
    ),
    "a key failing on the example": (
        rules("  dedup: {key: '{{ data.comment.id | format_date }}', window: 1h}\n"),
        [
            Expected(
                "rules.dedup.key",
                "fails to render the example: ValueError: 'c-1' is not an ISO 8601 date",
                22,
            )
        ],
    ),
    "a key empty for the example": (
        rules("  collapse: {key: '{{ data.thread.id }}', title: x}\n"),
        [Expected("rules.collapse.key", "renders empty for the example", 22)],
    ),
    "a collapse title failing with a group": (
        rules(
            "  collapse:\n"
            "    key: '{{ data.board.id }}'\n"
            "    title: |\n"
            "      {{ group.actors[0].name }}\n"
            "      and {{ group.others // 0 }} others\n"
        ),
        [
            Expected(
                "rules.collapse.title",
                "fails to render the example: ZeroDivisionError",
                26,
            )
        ],
    ),
    "a digest title failing on the example's items": (
        rules(
            "  digest:\n"
            "    window: 1h\n"
            "    title: '{{ digest.items[0].data.comment.text | format_number }}'\n"
        ),
        [Expected("rules.digest.title", "fails to render the example: ValueError", 24)],
    ),
    "a digest subject empty for the example": (
        rules("  digest: {window: 1h, title: x, subject: '{{ digest.items[5].title }}'}\n"),
        [Expected("rules.digest.subject", "renders empty for the example", 22)],
    ),
}


@pytest.mark.parametrize("name", ERROR_CASES)
def test_problems_are_reported_at_their_field_and_line(tmp_path: Path, name: str) -> None:
    text, expected = ERROR_CASES[name]

    problems = catalog.check(write(tmp_path, text))

    found = [(p.field, p.line) for p in problems]
    assert found == [(e.field, e.line) for e in expected], [str(p) for p in problems]
    for problem, wanted in zip(problems, expected, strict=True):
        assert wanted.message in problem.message, str(problem)
        assert problem.file == str(tmp_path / "type.yaml")


def test_a_rule_problem_keeps_the_type_from_loading(tmp_path: Path) -> None:
    with pytest.raises(catalog.CatalogInvalid, match=r"rules\.delay"):
        catalog.load(write(tmp_path, rules("  delay: soon\n")))


def test_the_shipped_catalog_declares_harmless_rules() -> None:
    shipped = catalog.load(SHIPPED)
    rules = {t.key: t.rules for t in shipped}

    assert catalog.check(SHIPPED) == []
    mention = rules["mention.created"].dedup
    assert mention is not None
    assert mention.window == dt.timedelta(hours=1)
    assert rules["auth.password_reset"].max_age == dt.timedelta(minutes=30)
    assert rules["comment.created"].max_age == dt.timedelta(days=7)
    # Likes collapse, to show the rule: one item per comment, "Ann and 3 others …".
    liked = rules.pop("comment.liked").collapse
    assert liked is not None
    # Nothing that would hold back, merge or drop what the other shipped types deliver.
    for declared in rules.values():
        assert declared.collapse is None
        assert declared.throttle is None
        assert declared.digest is None
        assert declared.delay is None
        assert declared.email_if_unseen is None


# -- keys ------------------------------------------------------------------------------


def test_a_key_renders_stripped(tmp_path: Path) -> None:
    ntype = load(tmp_path, BASE + FULL_RULES)
    assert ntype.rules.dedup is not None

    assert ntype.rule_key(ntype.rules.dedup.key, context(comment={"id": "c-9"})) == "c-9"


def test_an_empty_key_is_a_render_error_naming_the_rule(tmp_path: Path) -> None:
    ntype = load(tmp_path, BASE + FULL_RULES)
    assert ntype.rules.collapse is not None

    with pytest.raises(catalog.RenderError) as raised:
        ntype.rule_key(ntype.rules.collapse.key, context(board={}))

    assert raised.value.field == "rules.collapse.key"
    assert "empty" in raised.value.message


def test_a_failing_key_names_the_rule(tmp_path: Path) -> None:
    text = rules("  digest: {key: '{{ data.n // 1 }}', window: 1h, title: x}\n")
    ntype = load(tmp_path, text.replace("example:\n", "example:\n  n: 3\n"))
    assert ntype.rules.digest is not None
    assert ntype.rules.digest.key is not None

    with pytest.raises(catalog.RenderError) as raised:
        ntype.rule_key(ntype.rules.digest.key, context(n="three"))

    assert raised.value.field == "rules.digest.key"
    assert "TypeError" in raised.value.message


def test_a_long_key_is_stored_as_a_prefix_and_a_digest(tmp_path: Path) -> None:
    ntype = load(tmp_path, BASE + FULL_RULES)
    assert ntype.rules.dedup is not None
    long_id = "x" * 1000

    key = ntype.rule_key(ntype.rules.dedup.key, context(comment={"id": long_id}))

    assert len(key) <= KEY_MAX
    assert key.startswith("xxxx")
    assert key != ntype.rule_key(ntype.rules.dedup.key, context(comment={"id": long_id + "y"}))


@given(st.text(max_size=300), st.text(max_size=300))
def test_stored_keys_stay_equal_or_different(first: str, second: str) -> None:
    stored_first, stored_second = storable_key(first), storable_key(second)

    assert (stored_first == stored_second) == (first == second)
    for stored in (stored_first, stored_second):
        assert len(stored) <= KEY_MAX
        assert "\x00" not in stored
        stored.encode("utf-8")  # no unpaired surrogate left


# -- collapsed items -------------------------------------------------------------------


def group(*names: str, count: int | None = None) -> dict[str, Any]:
    actors = [{"id": f"u-{name.lower()}", "name": name} for name in names]
    return {"count": count or len(names), "actors": actors, "others": len(names) - 1}


def test_a_collapsed_item_has_the_rule_title_and_the_in_app_body_and_link(tmp_path: Path) -> None:
    ntype = load(tmp_path, BASE + FULL_RULES)
    values = {
        **context(board={"id": "b-1", "name": "Roadmap"}, comment={"text": "Ship it"}),
        "group": group("Cy", "Bob", "Ann", count=5),
    }

    assert ntype.render_collapsed(values) == catalog.InAppContent(
        title="Cy and 2 more commented on Roadmap",
        body="Ship it",
        action_url="https://app.example.com/boards/b-1",
    )


def test_a_collapse_body_replaces_the_in_app_body(tmp_path: Path) -> None:
    text = rules(
        "  collapse:\n"
        "    key: '{{ data.board.id }}'\n"
        "    title: '{{ group.count }} comments'\n"
        "    body: 'Latest: {{ data.comment.text }}'\n"
    )
    ntype = load(tmp_path, text)
    values = {**context(board={"id": "b-1"}, comment={"text": "Ship it"}), "group": group("Ann")}

    content = ntype.render_collapsed(values)

    assert (content.title, content.body) == ("1 comments", "Latest: Ship it")


def test_a_failing_collapse_title_names_the_rule(tmp_path: Path) -> None:
    text = rules("  collapse: {key: '{{ data.board.id }}', title: '{{ group.count // 1 }}'}\n")
    ntype = load(tmp_path, text)
    values = {**context(board={"id": "b-1"}), "group": {"count": "two"}}

    with pytest.raises(catalog.RenderError) as raised:
        ntype.render_collapsed(values)

    assert raised.value.field == "rules.collapse.title"


def test_a_type_without_a_collapse_rule_cannot_render_collapsed(tmp_path: Path) -> None:
    ntype = load(tmp_path, BASE)

    with pytest.raises(catalog.RenderError) as raised:
        ntype.render_collapsed({**context(), "group": group("Ann", "Bob")})

    assert raised.value.field == "rules.collapse"


# -- digests in the inbox ----------------------------------------------------------------


def test_a_digest_item_lists_the_first_titles_then_how_many_more(tmp_path: Path) -> None:
    ntype = load(tmp_path, BASE + FULL_RULES)
    assert ntype.rules.digest is not None

    content = ntype.render_digest(digest_context([item(1), item(2)], count=7), ntype.rules.digest)

    assert content == catalog.InAppContent(
        title="7 new comments on Roadmap",
        body="Ann commented on Roadmap #1\nAnn commented on Roadmap #2\nand 5 more",
        action_url="https://app.example.com/boards/b-1#c-1",
    )


def test_a_digest_body_template_and_no_link_without_one(tmp_path: Path) -> None:
    text = rules(
        "  digest:\n"
        "    window: 1h\n"
        "    title: '{{ digest.count }} comments'\n"
        "    body: '{% for i in digest.items %}{{ i.body }};{% endfor %} +{{ digest.more }}'\n"
    )
    ntype = load(tmp_path, text)
    assert ntype.rules.digest is not None
    items = [item(1, action_url=None), item(2)]

    content = ntype.render_digest(digest_context(items, count=3), ntype.rules.digest)

    assert content == catalog.InAppContent(
        title="3 comments", body="Comment 1;Comment 2; +1", action_url=None
    )


def test_a_digest_title_is_cut_to_the_inbox_limit(tmp_path: Path) -> None:
    text = rules("  digest: {window: 1h, title: \"{{ 'a' * 600 }}\"}\n")
    ntype = load(tmp_path, text)
    assert ntype.rules.digest is not None

    content = ntype.render_digest(digest_context([item(1)]), ntype.rules.digest)

    assert content.title == "a" * 499 + "…"


@pytest.mark.parametrize(
    ("count", "title"), [(1, "1 new notification"), (4, "4 new notifications")]
)
def test_the_fallback_digest_counts_notifications(tmp_path: Path, count: int, title: str) -> None:
    ntype = load(tmp_path, BASE)

    content = ntype.render_digest(digest_context([item(1)], count=count), catalog.FALLBACK_DIGEST)

    assert content.title == title
    assert catalog.FALLBACK_DIGEST.window == dt.timedelta(hours=1)
    assert catalog.FALLBACK_DIGEST.show == 5


# -- digest emails ---------------------------------------------------------------------


def test_a_digest_email_lists_the_items_escaped_with_their_links(tmp_path: Path) -> None:
    ntype = load(tmp_path, BASE + FULL_RULES)
    assert ntype.rules.digest is not None
    items = [
        item(1, title="Ann <script>alert(1)</script>", body='He said "hi" & left'),
        item(2, action_url="/boards/b-1#c-2"),
    ]

    rendered = ntype.render_digest_email(
        digest_context(items, count=5), ntype.rules.digest, "en-GB"
    )

    assert rendered.subject == "Comments on Roadmap"
    assert rendered.locale == "default"
    html = rendered.html
    assert "<title>Comments on Roadmap</title>" in html
    assert "5 new comments on Roadmap" in html
    assert "Ann &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>" not in html
    assert "He said &#34;hi&#34; &amp; left" in html
    assert 'href="https://app.example.com/boards/b-1#c-1"' in html
    # A link relative to the app means nothing in a mail client: the title stays plain.
    assert 'href="/boards/b-1#c-2"' not in html
    assert "Ann commented on Roadmap #2" in html
    assert "and 3 more" in html
    assert "01/05/2024, 11:30" in html  # en-GB, in the recipient's Paris time
    assert "fonts.googleapis" not in html
    assert 'style="' in html  # CSS inlined


def test_a_digest_email_has_a_text_part_listing_the_items(tmp_path: Path) -> None:
    ntype = load(tmp_path, BASE + FULL_RULES)
    assert ntype.rules.digest is not None
    items = [item(1, body="line one\nline two"), item(2, action_url="/boards/b-1#c-2")]

    rendered = ntype.render_digest_email(
        digest_context(items, count=3), ntype.rules.digest, "en-GB"
    )

    assert rendered.text == (
        "3 new comments on Roadmap\n"
        "\n"
        "- Ann commented on Roadmap #1\n"
        "  line one\n"
        "  line two\n"
        "  01/05/2024, 11:30\n"
        "  https://app.example.com/boards/b-1#c-1\n"
        "\n"
        "- Ann commented on Roadmap #2\n"
        "  Comment 2\n"
        "  01/05/2024, 11:30\n"
        "\n"
        "and 1 more"
    )


def test_a_digest_email_subject_defaults_to_the_title_on_one_line(tmp_path: Path) -> None:
    text = rules('  digest: {window: 1h, title: "{{ digest.count }}\\nnew {{ digest.type }}"}\n')
    ntype = load(tmp_path, text)
    assert ntype.rules.digest is not None

    rendered = ntype.render_digest_email(digest_context([item(1)]), ntype.rules.digest, None)

    assert rendered.subject == "1 new comment.created"
    assert "and 0 more" not in rendered.text + rendered.html


def test_a_failing_digest_subject_names_the_rule(tmp_path: Path) -> None:
    text = rules("  digest: {window: 1h, title: x, subject: '{{ digest.count // 1 }}'}\n")
    ntype = load(tmp_path, text)
    assert ntype.rules.digest is not None
    values = digest_context([item(1)])
    values["digest"]["count"] = "one"

    with pytest.raises(catalog.RenderError) as raised:
        ntype.render_digest_email(values, ntype.rules.digest, None)

    assert raised.value.field == "rules.digest.subject"


# -- composing a rendered email ----------------------------------------------------------

DOMAIN = "mail.example.com"
SELECTOR = "digest"


@pytest.fixture(scope="module")
def private_key() -> bytes:
    return dkim.generate_key()


def composer(private_key: bytes | None) -> EmailComposer:
    signer = None
    if private_key is not None:
        signer = dkim.DkimSigner(domain=DOMAIN, selector=SELECTOR, private_key_pem=private_key)
    return EmailComposer(
        sender=Sender(address=f"notifications@{DOMAIN}", name="Tidings", domain=DOMAIN),
        signer=signer,
        unsubscribe_secret="s" * 40,
        base_url="https://tidings.example.com/",
        unsubscribe_mailto=f"unsubscribe@{DOMAIN}",
    )


NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def test_a_digest_email_is_composed_signed_and_unsubscribable(
    tmp_path: Path, private_key: bytes
) -> None:
    ntype = load(tmp_path, BASE + FULL_RULES)
    assert ntype.rules.digest is not None
    rendered = ntype.render_digest_email(digest_context([item(1)]), ntype.rules.digest, None)
    record = dkim.dns_record(private_key).encode("ascii")

    def dns(name: bytes, timeout: float = 5) -> bytes | None:
        return record if name == f"{SELECTOR}._domainkey.{DOMAIN}.".encode() else None

    outgoing = composer(private_key).compose_rendered(
        delivery_id="d-digest-1",
        rendered=rendered,
        category=catalog.Category("comments", "Comments.", mandatory=False),
        to_address="bob@example.com",
        to_name="Bob",
        user_id="u-bob",
        now=NOW,
    )

    assert dkimpy.verify(outgoing.raw, dnsfunc=dns)
    message = email.message_from_bytes(outgoing.raw, policy=email.policy.default)
    assert message["Subject"] == "Comments on Roadmap"
    assert message["List-Unsubscribe"].startswith("<https://tidings.example.com/v1/unsubscribe/")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert (outgoing.delivery_id, outgoing.recipient, outgoing.subject) == (
        "d-digest-1",
        "bob@example.com",
        "Comments on Roadmap",
    )


def test_compose_is_compose_rendered_of_the_type_email(tmp_path: Path) -> None:
    ntype = load(tmp_path, BASE)
    values = context(board={"id": "b-1", "name": "Roadmap"}, comment={"text": "Ship it"})
    mandatory = catalog.Category("security", "Security.", mandatory=True)
    common: dict[str, Any] = {
        "delivery_id": "d-1",
        "category": mandatory,
        "to_address": "bob@example.com",
        "to_name": "Bob",
        "user_id": "u-bob",
        "now": NOW,
    }
    unsigned = composer(None)

    composed = unsigned.compose(ntype=ntype, context=values, locale=None, **common)
    direct = unsigned.compose_rendered(rendered=ntype.render_email(values, None), **common)

    assert composed == direct
    assert b"List-Unsubscribe" not in composed.raw  # a mandatory category has no opt-out
