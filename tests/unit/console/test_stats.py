"""The charts' arithmetic: minute buckets and latency percentiles."""

from __future__ import annotations

import datetime as dt

import pytest

from tidings.console import stats

NOW = dt.datetime(2026, 3, 2, 9, 30, 42, tzinfo=dt.UTC)


def test_minute_edges_end_with_the_current_minute() -> None:
    edges = stats.minute_edges(NOW, minutes=3)
    assert [e.strftime("%H:%M") for e in edges] == ["09:28", "09:29", "09:30", "09:31"]
    assert edges[-2] <= NOW < edges[-1]


@pytest.mark.parametrize(
    ("values", "fraction", "expected"),
    [
        ([], 0.5, None),
        ([3.0], 0.95, 3.0),
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.0),
        ([4.0, 1.0, 3.0, 2.0], 0.95, 4.0),
        ([float(i) for i in range(1, 101)], 0.95, 95.0),
    ],
)
def test_nearest_rank_percentile(values: list[float], fraction: float, expected: float) -> None:
    assert stats.percentile(values, fraction) == expected


def test_latency_lands_in_the_minute_the_delivery_was_done() -> None:
    edges = stats.minute_edges(NOW, minutes=2)
    at = edges[0]
    finished = [
        (at - dt.timedelta(seconds=1), at + dt.timedelta(seconds=1)),  # 2 s, first minute
        (at, at + dt.timedelta(seconds=70)),  # 70 s, second minute
        (at, at + dt.timedelta(seconds=65)),  # 65 s, second minute
        (at, at - dt.timedelta(minutes=5)),  # done before the window: left out
    ]
    found = stats.latency_per_bucket(finished, edges)
    assert found == {"p50": [2.0, 65.0], "p95": [2.0, 70.0]}
