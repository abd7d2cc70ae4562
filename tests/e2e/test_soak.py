"""A short soak with faults (``bench/soak.py``): PostgreSQL of its own restarted the
hard way, a NATS node and two workers SIGKILLed, the SMTP server refusing for a while,
all under steady load from another process; then every acknowledged event is reconciled
against the inbox and the mail the SMTP server accepted."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from soak import SoakConfig, run_soak  # noqa: E402


async def test_a_short_soak_with_faults_loses_nothing(tmp_path: Path) -> None:
    report = await run_soak(
        SoakConfig(seconds=30, rate=20, users=60, drain_timeout=150, base_dir=tmp_path)
    )
    printed = "\n".join(report.lines())
    assert report.acknowledged == report.sent, printed
    assert report.expected_items > 0, printed
    assert report.lost_items == 0, printed
    assert report.duplicated_items == 0, printed
    assert report.lost_emails == 0, printed
    assert report.expected_emails > 0, printed
    assert report.duplicated_emails <= report.duplicate_bound, printed
    # Every fault of the schedule happened.
    assert len(report.faults) == 7, printed
    assert report.smtp_refusals > 0, printed
