"""Tracing's switch and the headers a job carries."""

from __future__ import annotations

import pytest

from tidings.kit import tracing

FIRST = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
SECOND = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, False),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console,none"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_tracing_is_off_unless_an_exporter_is_named(
    environ: dict[str, str], expected: bool
) -> None:
    assert tracing.enabled(environ) is expected


def test_an_unknown_exporter_is_refused() -> None:
    with pytest.raises(ValueError, match="zipkin"):
        tracing._sdk_provider({"OTEL_TRACES_EXPORTER": "zipkin"})


def test_a_job_for_several_traces_continues_the_first_and_lists_the_others() -> None:
    merged = tracing.merged_headers(
        [None, {"traceparent": FIRST}, {"traceparent": SECOND}, {"traceparent": FIRST}]
    )
    assert merged == {"traceparent": FIRST, tracing.LINKS_HEADER: SECOND}
    assert tracing.merged_headers([None, None]) is None


def test_no_headers_outside_a_span() -> None:
    assert tracing.current_headers() is None
