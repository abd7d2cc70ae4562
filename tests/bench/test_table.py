"""The table of ``make bench`` (``bench/table.py``) and what ``bench/suite.py`` decides to
run: ratios, aims, losses in percentiles, layout, selection. No timing is measured here."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import suite  # noqa: E402
from table import (  # noqa: E402
    Aim,
    Row,
    exit_status,
    fmt_cpu,
    fmt_ratio,
    mean_reference,
    percentile_with_losses,
    ratio,
    render_markdown,
    render_text,
)


def test_ratio_is_none_without_both_figures_or_with_a_zero_reference() -> None:
    assert ratio(3_000.0, 60_000.0) == pytest.approx(0.05)
    assert ratio(None, 60_000.0) is None
    assert ratio(3_000.0, None) is None
    assert ratio(3_000.0, 0.0) is None
    assert ratio(math.nan, 1.0) is None


def test_reference_is_the_mean_of_the_runs_beside_the_figure() -> None:
    assert mean_reference([800.0, 1_000.0]) == pytest.approx(900.0)
    assert mean_reference([800.0, None, math.nan]) == pytest.approx(800.0)
    assert mean_reference([None]) is None


@pytest.mark.parametrize(
    ("aim", "value", "verdict"),
    [
        (Aim("≥ 0.15x", at_least=0.15), 0.15, "met"),
        (Aim("≥ 0.15x", at_least=0.15), 0.149, "not met"),
        (Aim("≤ 5 s", at_most=5.0), 5.0, "met"),
        (Aim("≤ 5 s", at_most=5.0), 5.01, "not met"),
        (Aim("< 50 ms", below=50.0), 49.9, "met"),
        (Aim("< 50 ms", below=50.0), 50.0, "not met"),
        (Aim("< 50 ms", below=50.0), math.inf, "not met"),
        (Aim("≥ 0.6x (0.75x)", at_least=0.6, stretch=0.75), 0.7, "met (stretch not)"),
        (Aim("≥ 0.6x (0.75x)", at_least=0.6, stretch=0.75), 0.8, "met"),
        (Aim("≥ 0.6x (0.75x)", at_least=0.6, stretch=0.75), 0.5, "not met"),
        (Aim("< 50 ms", below=50.0), None, "n/a"),
        (Aim("< 50 ms", below=50.0), math.nan, "n/a"),
    ],
)
def test_aims_are_judged_on_their_bound(aim: Aim, value: float | None, verdict: str) -> None:
    assert aim.verdict(value) == verdict


def test_a_row_is_judged_on_its_ratio_unless_it_names_another_value() -> None:
    by_ratio = Row("W1", ratio=0.2, aim=Aim("≥ 0.15x", at_least=0.15))
    assert by_ratio.verdict == "met"
    by_value = Row("W5", ratio=0.5, aim=Aim("p99 ≤ 3.4 ms", at_most=3.4), aim_value=7.0)
    assert by_value.verdict == "not met"


def test_lost_samples_count_as_infinitely_late() -> None:
    values = [float(v) for v in range(1, 100)]  # 99 arrived
    assert percentile_with_losses(values, 0, 50) == 50.0
    assert percentile_with_losses(values, 1, 99) == 99.0  # 1 lost of 100: p99 still finite
    assert math.isinf(percentile_with_losses(values, 2, 99))
    assert math.isnan(percentile_with_losses([], 0, 99))
    assert math.isinf(percentile_with_losses([], 3, 50))


def test_a_failed_workload_shows_its_error_and_fails_the_run() -> None:
    ok = Row("W1 direct", figure="3,000 events/s", ratio=0.05, aim=Aim("≥ 0.15x", at_least=0.15))
    failed = Row("W6 steady", aim=Aim("p99 < 50 ms", below=50.0), error="server exited")
    assert exit_status([ok]) == 0
    assert exit_status([ok, failed]) == 1
    assert failed.verdict == "failed"
    cells = failed.cells()
    assert cells[1] == "FAILED: server exited"
    assert cells[4] == "p99 < 50 ms: failed"
    assert ok.cells()[3] == "0.05x"
    assert ok.cells()[4] == "≥ 0.15x: not met"


def test_cpu_lists_each_process_and_leaves_out_what_was_not_measured() -> None:
    text = fmt_cpu({"server": [0.9, 0.25, 0.05], "PostgreSQL": 0.6, "sink": None})
    assert text == "server 120 % (3 processes: 90 + 25 + 5), PostgreSQL 60 %"
    assert fmt_cpu({"server": [0.5]}) == "server 50 %"


def test_ratio_formatting() -> None:
    assert fmt_ratio(None) == "-"
    assert fmt_ratio(0.0512) == "0.05x"
    assert fmt_ratio(18.24) == "18.2x"
    assert fmt_ratio(1234.0) == "1,234x"


def test_markdown_has_the_header_and_a_line_per_row_with_pipes_escaped() -> None:
    rows = [
        Row("W1 direct", figure="a | b", reference="COPY", ratio=0.2, aim=Aim("≥ 0.15x", 0.15)),
        Row("W2 fan-out: inbox", error="boom\nsecond line"),
    ]
    text = render_markdown(["date: today", "machine: 2 cores"], rows)
    lines = text.splitlines()
    assert lines[:2] == ["- date: today", "- machine: 2 cores"]
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 2 + len(rows)
    assert "a \\| b" in table[2]
    assert "≥ 0.15x: **met**" in table[2]
    assert "FAILED: boom second line" in table[3]
    # Every line of the table has as many cells as the header.
    widths = {line.replace("\\|", "").count("|") for line in table}
    assert len(widths) == 1


def test_text_wraps_long_cells_and_keeps_every_row() -> None:
    long = "word " * 40
    rows = [Row("W5 inbox read", figure=long.strip()), Row("W6", figure="short")]
    text = render_text(["header"], rows)
    assert text.splitlines()[0] == "header"
    assert all(len(line) < 400 for line in text.splitlines())
    assert text.count("word") == 40
    assert "W6" in text


def test_only_chooses_workloads_in_run_order_and_refuses_unknown_ones() -> None:
    assert suite.selection("w6,W1") == ["W1", "W6"]
    assert suite.selection("single,ceilings") == ["single", "ceilings"]
    with pytest.raises(Exception, match="unknown workload"):
        suite.selection("W7")


def test_a_workloads_ceiling_runs_with_it_and_before_it() -> None:
    names = [name for name, _ in suite.steps(["W1"])]
    assert names == ["COPY ceiling", "W1"]
    assert [name for name, _ in suite.steps(["W6"])] == ["W6"]
    everything = [name for name, _ in suite.steps(["ceilings"])]
    assert everything == ["COPY ceiling", "W4 + SMTP ceilings", "single + bare"]


def test_full_gives_the_standard_sizes_and_an_explicit_size_wins() -> None:
    small = suite.parse_args([])
    assert (small.w1_events, small.w2_subscribers, small.w5_items) == (20_000, 20_000, 100_000)
    full = suite.parse_args(["--full", "--w2-subscribers", "50000"])
    assert full.w1_events == 100_000
    assert full.w5_items == 1_000_000
    assert full.w2_subscribers == 50_000
