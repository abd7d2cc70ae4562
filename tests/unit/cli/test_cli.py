"""The CLI on the embedded default: keys and tokens beside a server, sharing its secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tidings.auth import keys, tokens
from tidings.cli import app
from tidings.kit.settings import Settings

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TIDINGS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TIDINGS_CATALOG", str(ROOT / "catalog"))
    monkeypatch.delenv("TIDINGS_DATABASE_URL", raising=False)
    monkeypatch.delenv("TIDINGS_SECRET", raising=False)
    return tmp_path / "data"


def test_keys_create_prints_the_key_alone_on_the_last_line(env: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["keys", "create", "--name", "web", "--types", "comment.*"])
    assert result.exit_code == 0, result.output
    last = result.stdout.strip().splitlines()[-1]
    assert keys.parse_prefix(last) is not None
    listed = runner.invoke(app, ["keys", "list"])
    assert listed.exit_code == 0
    assert "web" in listed.stdout
    assert "comment.*" in listed.stdout
    assert last not in listed.stdout


def test_keys_create_needs_types(env: Path) -> None:
    result = CliRunner().invoke(app, ["keys", "create", "--name", "web", "--types", " "])
    assert result.exit_code == 1
    assert "type pattern" in result.stderr


def test_revoking_an_unknown_key_fails(env: Path) -> None:
    CliRunner().invoke(app, ["db", "upgrade"])
    result = CliRunner().invoke(app, ["keys", "revoke", "nope"])
    assert result.exit_code == 1
    assert "No active key" in result.stderr


def test_token_is_signed_with_the_data_folders_secret(env: Path) -> None:
    result = CliRunner().invoke(app, ["token", "u-bob"])
    assert result.exit_code == 0
    token = result.stdout.strip().splitlines()[-1]
    secret = Settings(data_dir=env).signing_secret
    assert (env / "secret.key").exists()
    assert tokens.verify_user_token(secret, token) == "u-bob"


def test_catalog_check_passes_on_the_example_catalog(env: Path) -> None:
    result = CliRunner().invoke(app, ["catalog", "check", str(ROOT / "catalog")])
    assert result.exit_code == 0, result.output
    assert "no errors" in result.stdout


def test_catalog_check_reports_file_and_field(tmp_path: Path, env: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.yaml").write_text(
        "key: x.y\ncategory: c\ndescription: d\nschema: {type: object}\n"
        "channels: {in_app: {title: 't', body: 'b', colour: 'red'}}\n"
    )
    result = CliRunner().invoke(app, ["catalog", "check", str(bad)])
    assert result.exit_code == 1
    assert "x.yaml" in result.stdout
    assert "channels.in_app.colour" in result.stdout


def test_email_dns_prints_the_record_of_the_generated_key(env: Path) -> None:
    result = CliRunner().invoke(app, ["email", "dns"])
    assert result.exit_code == 0, result.output
    assert "tidings._domainkey.tidings.localhost. IN TXT" in result.stdout
    record = result.stdout.strip().splitlines()[-1]
    assert record.startswith("v=DKIM1; k=rsa; p=")
    again = CliRunner().invoke(app, ["email", "dns"])
    assert again.stdout.strip().splitlines()[-1] == record  # the key is kept, not regenerated


def test_webhook_secret_is_stable_and_derived_from_the_deployment_secret(env: Path) -> None:
    first = CliRunner().invoke(app, ["email", "webhook-secret"]).stdout.strip()
    assert len(first) == 64
    assert CliRunner().invoke(app, ["email", "webhook-secret"]).stdout.strip() == first


def test_keys_create_takes_types_and_scopes_and_lists_them_apart(env: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(
        app,
        ["keys", "create", "--name", "web", "--types", "comment.*", "--scope", "users:write"],
    )
    assert made.exit_code == 0, made.output
    assert "types: comment.*; scopes: users:write" in made.stderr
    only_scopes = runner.invoke(
        app, ["keys", "create", "--name", "sync", "--scope", "users:read,users:write"]
    )
    assert only_scopes.exit_code == 0, only_scopes.output
    listed = runner.invoke(app, ["keys", "list"], terminal_width=200)
    assert listed.exit_code == 0
    web = next(line for line in listed.stdout.splitlines() if " web " in line)
    assert "comment.*" in web
    assert "users:write" in web
    assert "scopes" in listed.stdout


def test_keys_create_refuses_an_unknown_scope(env: Path) -> None:
    result = CliRunner().invoke(
        app, ["keys", "create", "--name", "web", "--types", "comment.*", "--scope", "users:wrte"]
    )
    assert result.exit_code == 1
    assert "Unknown scope 'users:wrte'" in result.stderr
    assert "users:write" in result.stderr
