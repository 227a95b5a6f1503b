"""deploy/: the hospital sample configuration loads, and the systemd unit runs the node
the way the README says."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from pacsnode.cli.main import build_parser
from pacsnode.config import load_settings
from tests.tls import make_certificates

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_hospital_sample_config_is_valid(tmp_path: Path) -> None:
    sample = DEPLOY / "pacsnode.hospital.toml"
    with sample.open("rb") as stream:
        tls = tomllib.load(stream)["tls"]
    assert tls["certificate"].startswith("/etc/pacsnode/")
    assert tls["require_client_certificate"] is True
    # Its /etc/pacsnode files do not exist here: the operator's way round, the environment.
    certs = make_certificates(tmp_path)
    environ = {
        "PACSNODE_TLS__CERTIFICATE": str(certs.node.certificate),
        "PACSNODE_TLS__PRIVATE_KEY": str(certs.node.private_key),
        "PACSNODE_TLS__CA_CERTIFICATES": str(certs.ca.certificate),
    }
    settings = load_settings(sample, environ)
    assert settings.storage.data_dir == Path("/var/lib/pacsnode")
    assert settings.security.allowed_calling_aets  # a hospital sample must not allow anyone
    assert settings.security.allowed_hosts
    assert [d.name for d in settings.destinations] == ["pacs"]
    assert settings.tls is not None and settings.tls.require_client_certificate
    assert all(d.tls and d.certificate == certs.node.certificate for d in settings.destinations)


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


def _template() -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "pacsnode@.service")
    return unit


@pytest.mark.parametrize("role", ["receiver", "worker", "all"])
def test_template_unit_starts_each_role_with_the_etc_config(role: str) -> None:
    unit = _template()
    service = unit["Service"]
    command = service["ExecStart"].replace("%i", role).split()
    assert command[0].endswith("/.venv/bin/pacsnode")
    args = build_parser().parse_args(command[1:])
    assert args.command == "serve" and args.role == role
    assert args.config == Path("/etc/pacsnode/pacsnode.toml")
    assert service["EnvironmentFile"] == "-/etc/pacsnode/%i.env"  # per-role overrides
    assert service["KillSignal"] == "SIGTERM" and service["User"] == "pacsnode"
    assert "/var/lib/pacsnode" in service["ReadWritePaths"]
    # One host runs either the single-process unit or the roles, never both.
    assert "pacsnode.service" in unit["Unit"]["Conflicts"]
    # Metrics files on local tmpfs, fresh at each start (the last Environment= line).
    runtime = service["RuntimeDirectory"]
    assert service["Environment"] == f"PROMETHEUS_MULTIPROC_DIR=/run/{runtime}"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_template_unit_syntax(tmp_path: Path) -> None:
    unit = tmp_path / "pacsnode@.service"
    unit.write_text((DEPLOY / "pacsnode@.service").read_text())
    out = subprocess.run(
        ["systemd-analyze", "verify", f"{unit.parent}/pacsnode@worker.service"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    problems = [
        line
        for line in out.stderr.splitlines()
        if "pacsnode@" in line
        and "is not executable" not in line
        and "No such file" not in line
        and "does not exist" not in line
    ]
    assert problems == []
