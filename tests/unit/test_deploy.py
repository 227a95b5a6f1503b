"""deploy/: the hospital sample configuration loads, and the systemd unit runs the node
the way the README says."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from pacsnode.cli.main import build_parser
from pacsnode.config import load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_hospital_sample_config_is_valid() -> None:
    settings = load_settings(DEPLOY / "pacsnode.hospital.toml", {})
    assert settings.storage.data_dir == Path("/var/lib/pacsnode")
    assert settings.security.allowed_calling_aets  # a hospital sample must not allow anyone
    assert settings.security.allowed_hosts
    assert [d.name for d in settings.destinations] == ["pacs"]


def _unit() -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "pacsnode.service")
    return unit


def test_systemd_unit_starts_serve_with_the_etc_config() -> None:
    service = _unit()["Service"]
    command = service["ExecStart"].split()
    assert command[0].endswith("/.venv/bin/pacsnode")
    args = build_parser().parse_args(command[1:])
    assert args.command == "serve" and args.config == Path("/etc/pacsnode/pacsnode.toml")
    assert service["KillSignal"] == "SIGTERM" and service["User"] == "pacsnode"
    assert "/var/lib/pacsnode" in service["ReadWritePaths"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_unit_syntax(tmp_path: Path) -> None:
    unit = tmp_path / "pacsnode.service"
    unit.write_text((DEPLOY / "pacsnode.service").read_text())
    out = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    # The ExecStart binary does not exist here; only syntax complaints count.
    problems = [
        line
        for line in out.stderr.splitlines()
        if "pacsnode.service" in line
        and "is not executable" not in line
        and "No such file" not in line
        and "does not exist" not in line
    ]
    assert problems == []
