"""``tidings doctor``: the configuration with secrets masked, and a clear line for each
dependency that does not answer, with what to do."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import CATALOG, create_pg_database, drop_pg_database, pg_url
from tests.integration.test_queue import NATS_URL
from tests.smtp_sink import SmtpSink
from tidings.cli import app as cli
from tidings.kit import migrate
from tidings.kit.settings import Settings
from tidings.operations import doctor

REDIS_URL = "redis://127.0.0.1:6379/0"


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def by_name(checks: list[doctor.Check]) -> dict[str, doctor.Check]:
    return {check.name: check for check in checks}


async def test_every_dependency_of_a_scale_out_setup_answers(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    name = await create_pg_database()
    try:
        await asyncio.to_thread(migrate.upgrade, pg_url(name))
        async with SmtpSink() as sink:
            settings = make_settings(
                database_url=pg_url(name),
                queue_backend="jetstream",
                nats_url=NATS_URL,
                counters_backend="redis",
                live_backend="redis",
                redis_url=REDIS_URL,
                email_provider="smtp",
                smtp_host="127.0.0.1",
                smtp_port=sink.port,
                smtp_security="none",
                email_failover_provider="ses",
                public_url="https://tidings.example.com",
            )
            checks = by_name(await doctor.diagnose(settings))
    finally:
        await drop_pg_database(name)
    assert [c for c in checks.values() if not c.ok] == []
    assert set(checks) == {
        "data dir",
        "secret",
        "public url",
        "catalog",
        "database",
        "schema",
        "nats",
        "redis",
        "email",
        "email failover",
    }
    assert "JetStream on" in checks["nats"].message
    assert "EHLO: 250" in checks["email"].message
    assert "not contacted" in checks["email failover"].message


async def test_each_problem_says_what_failed_and_what_to_do(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    broken = tmp_path / "catalog"
    broken.mkdir()
    (broken / "bad.yaml").write_text("key: bad\n")
    settings = make_settings(
        catalog=broken,
        database_url=f"postgresql://postgres@127.0.0.1:{closed_port()}/nothing",
        live_backend="nats",
        nats_url=f"nats://127.0.0.1:{closed_port()}",
        counters_backend="redis",
        redis_url=f"redis://127.0.0.1:{closed_port()}/0",
        email_provider="smtp",
        smtp_host="127.0.0.1",
        smtp_port=closed_port(),
    )
    checks = by_name(await doctor.diagnose(settings))
    failed = {name for name, check in checks.items() if not check.ok}
    assert failed == {"catalog", "database", "nats", "redis", "email", "public url"}
    assert all(checks[name].fix for name in failed)
    assert "tidings catalog check" in (checks["catalog"].fix or "")
    assert "cannot reach" in checks["database"].message
    assert "TIDINGS_DATABASE_URL" in (checks["database"].fix or "")
    assert "TIDINGS_NATS_URL" in (checks["nats"].fix or "")
    assert "TIDINGS_REDIS_URL" in (checks["redis"].fix or "")
    assert "does not answer" in checks["email"].message
    assert checks["data dir"].ok


async def test_a_database_behind_the_code_is_told_to_upgrade(
    make_settings: Callable[..., Settings],
) -> None:
    name = await create_pg_database()
    try:
        await asyncio.to_thread(migrate.upgrade, pg_url(name), "0003")
        checks = by_name(await doctor.diagnose(make_settings(database_url=pg_url(name))))
    finally:
        await drop_pg_database(name)
    assert checks["database"].ok
    assert not checks["schema"].ok
    assert "revision 0003" in checks["schema"].message
    assert checks["schema"].fix == "run 'tidings db upgrade'"


def test_the_configuration_masks_secrets_and_passwords(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(
        database_url="postgresql://tidings:hunter2@db.internal:5432/tidings",
        smtp_password="smtp-pass",
        redis_url="redis://:redis-pass@127.0.0.1:6379/0",
    )
    shown = dict(doctor.configuration(settings))
    text = "\n".join(f"{k}={v}" for k, v in shown.items())
    for secret in ("hunter2", "smtp-pass", "redis-pass", settings.secret or "?"):
        assert secret not in text
    assert shown["secret"] == doctor.MASK
    assert shown["smtp_password"] == doctor.MASK
    assert shown["database_url"] == "postgresql://tidings:****@db.internal:5432/tidings"
    assert shown["smtp_host"] == "127.0.0.1"


def test_the_command_exits_1_on_a_problem_and_0_when_all_is_well(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIDINGS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TIDINGS_CATALOG", str(CATALOG))
    monkeypatch.setenv("TIDINGS_SECRET", "doctor-secret-" + "x" * 32)
    monkeypatch.delenv("TIDINGS_DATABASE_URL", raising=False)
    runner = CliRunner()
    healthy = runner.invoke(cli, ["doctor"])
    assert healthy.exit_code == 0, healthy.output
    assert "all checks passed" in healthy.stdout
    assert "doctor-secret" not in healthy.stdout

    monkeypatch.setenv("TIDINGS_COUNTERS_BACKEND", "redis")
    monkeypatch.setenv("TIDINGS_REDIS_URL", f"redis://127.0.0.1:{closed_port()}/0")
    sick = runner.invoke(cli, ["doctor"])
    assert sick.exit_code == 1
    assert "FAIL redis: cannot reach" in sick.stdout
    assert "to fix: start Redis, or fix TIDINGS_REDIS_URL" in sick.stdout
    assert "1 check(s) failed: redis" in sick.output


def test_a_short_secret_stops_the_command_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIDINGS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TIDINGS_CATALOG", str(CATALOG))
    monkeypatch.setenv("TIDINGS_SECRET", "hunter2-too-short")
    monkeypatch.delenv("TIDINGS_DATABASE_URL", raising=False)
    runner = CliRunner()
    for command in (["doctor"], ["keys", "list"], ["api"]):
        result = runner.invoke(cli, command)
        assert result.exit_code == 1, (command, result.output)
        assert "TIDINGS_SECRET is 17 characters long; it must have at least 32" in result.output
        assert "secrets.token_urlsafe(32)" in result.output
        assert "hunter2" not in result.output
        assert "Traceback" not in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)


async def test_a_short_generated_secret_is_reported(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "secret.key").write_text("edited-by-hand\n")
    settings = make_settings(data_dir=data, secret=None)
    check = by_name(await doctor.diagnose(settings))["secret"]
    assert not check.ok
    assert "secret.key is 14 characters long; it must have at least 32" in check.message
    assert "token_urlsafe" in check.message
    assert check.fix is not None
    assert "delete" in check.fix
