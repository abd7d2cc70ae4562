"""Log lines: JSON with the ids and trace context of where they were logged, readable in a
terminal, and without email addresses at INFO."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider

from tidings.kit import job_context, logs, tracing


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    """Where ``configure`` sends lines during the test; logging is put back after it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    try:
        yield stream
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        structlog.reset_defaults()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line]


def test_standard_logging_comes_out_as_json_lines(output: io.StringIO) -> None:
    logs.configure(json=True, stream=output)
    logging.getLogger("tidings.example").warning("job %s failed", "j-1")
    (line,) = lines(output)
    assert line["event"] == "job j-1 failed"
    assert line["level"] == "warning"
    assert line["logger"] == "tidings.example"
    assert line["timestamp"].endswith("Z")


def test_lines_carry_trace_job_and_bound_ids(output: io.StringIO) -> None:
    logs.configure(json=True, stream=output)
    provider = TracerProvider()
    tracing.use(provider)
    try:
        with (
            tracing.span("work") as span,
            job_context.running("email", 2),
            logs.bound(event_id="e-1", delivery_id="d-1", notification_id=None),
        ):
            logging.getLogger("tidings.example").info("sent")
            structlog.get_logger("tidings.other").info("also sent", provider="catcher")
        logging.getLogger("tidings.example").info("outside")
    finally:
        tracing.use(None)
    first, second, outside = lines(output)
    context = span.get_span_context()
    for line in (first, second):
        assert line["trace_id"] == format(context.trace_id, "032x")
        assert line["span_id"] == format(context.span_id, "016x")
        assert line["job"] == "email"
        assert line["attempt"] == 2
        assert line["event_id"] == "e-1"
        assert line["delivery_id"] == "d-1"
        assert "notification_id" not in line
    assert second["provider"] == "catcher"
    assert second["logger"] == "tidings.other"
    for key in ("trace_id", "job", "event_id", "delivery_id"):
        assert key not in outside


def test_extra_fields_are_kept(output: io.StringIO) -> None:
    logs.configure(json=True, stream=output)
    logging.getLogger("tidings.example").info("sent", extra={"delivery_id": "d-9"})
    (line,) = lines(output)
    assert line["delivery_id"] == "d-9"


def test_email_addresses_are_masked_at_info_but_not_at_debug(output: io.StringIO) -> None:
    logs.configure(json=True, level="debug", stream=output)
    log = logging.getLogger("tidings.example")
    log.debug("to %s", "ann.lee+x@example.co.uk")
    log.info("bounce: 550 <ann.lee+x@example.co.uk> unknown", extra={"to": "bob@example.com"})
    try:
        raise ValueError("refused bob@example.com")
    except ValueError:
        log.exception("provider failed")
    debug, info, error = lines(output)
    assert debug["event"] == "to ann.lee+x@example.co.uk"
    assert info["event"] == "bounce: 550 <<email>> unknown"
    assert info["to"] == "<email>"
    assert "bob@example.com" not in error["exception"]
    assert "ValueError: refused <email>" in error["exception"]


def test_the_level_filters(output: io.StringIO) -> None:
    logs.configure(json=True, level="warning", stream=output)
    logging.getLogger("tidings.example").info("quiet")
    logging.getLogger("tidings.example").error("loud")
    assert [line["event"] for line in lines(output)] == ["loud"]


def test_the_console_format_is_for_people(output: io.StringIO) -> None:
    logs.configure(json=False, stream=output)
    logging.getLogger("tidings.example").info("job %s done", "j-1", extra={"delivery_id": "d-1"})
    text = output.getvalue()
    assert "job j-1 done" in text
    assert "delivery_id=d-1" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


@pytest.mark.parametrize(
    ("log_format", "terminal", "expected"),
    [
        ("json", True, True),
        ("console", False, False),
        ("auto", True, False),
        ("auto", False, True),
    ],
)
def test_json_unless_a_terminal_or_asked(log_format: Any, terminal: bool, expected: bool) -> None:
    class Stream(io.StringIO):
        def isatty(self) -> bool:
            return terminal

    assert logs.wants_json(log_format, Stream()) is expected
