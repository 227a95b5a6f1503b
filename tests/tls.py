"""Certificates for the DICOM TLS tests, made with the ``openssl`` command in a folder.

A :class:`CertificateAuthority` issues leaf certificates good for both ends of a TLS
connection (server and client authentication) and naming ``localhost`` and 127.0.0.1, so
the same files serve the node, a test SCU, dcmtk and Orthanc.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

OPENSSL: Final = shutil.which("openssl")

_CA_CONFIG: Final = """\
[req]
distinguished_name = dn
x509_extensions = ca
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""

_LEAF_EXTENSIONS: Final = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


def _openssl(*args: str, cwd: Path) -> None:
    if OPENSSL is None:
        pytest.skip("openssl is not on PATH")
    done = subprocess.run(
        [OPENSSL, *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{done.stderr}")


@dataclass(frozen=True, slots=True)
class Leaf:
    """A certificate and its unencrypted key, PEM files."""

    certificate: Path
    private_key: Path
    subject: str
    """As the node writes it in the audit log: ``CN=...,O=...``."""


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """A self-signed CA in ``folder`` (``<name>-ca.pem``, ``<name>-ca.key``)."""

    folder: Path
    name: str

    @property
    def certificate(self) -> Path:
        return self.folder / f"{self.name}-ca.pem"

    @property
    def private_key(self) -> Path:
        return self.folder / f"{self.name}-ca.key"

    @classmethod
    def create(cls, folder: Path, name: str) -> CertificateAuthority:
        folder.mkdir(parents=True, exist_ok=True)
        ca = cls(folder, name)
        config = folder / f"{name}-ca.cnf"
        config.write_text(_CA_CONFIG)
        _openssl(
            *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2"),
            *("-subj", f"/O={name}/CN={name} test CA"),
            *("-keyout", str(ca.private_key), "-out", str(ca.certificate)),
            *("-config", str(config)),
            cwd=folder,
        )
        return ca

    def issue(self, common_name: str) -> Leaf:
        """A leaf certificate for ``common_name`` signed by this CA."""
        stem = f"{self.name}-{common_name}".lower()
        key, request, certificate = (
            self.folder / f"{stem}.key",
            self.folder / f"{stem}.csr",
            self.folder / f"{stem}.pem",
        )
        extensions = self.folder / f"{stem}.ext"
        extensions.write_text(_LEAF_EXTENSIONS)
        _openssl(
            *("req", "-new", "-newkey", "rsa:2048", "-nodes", "-sha256"),
            *("-subj", f"/O={self.name}/CN={common_name}"),
            *("-keyout", str(key), "-out", str(request)),
            cwd=self.folder,
        )
        _openssl(
            *("x509", "-req", "-in", str(request), "-sha256", "-days", "2"),
            *("-CA", str(self.certificate), "-CAkey", str(self.private_key)),
            *("-CAcreateserial", "-extfile", str(extensions), "-out", str(certificate)),
            cwd=self.folder,
        )
        return Leaf(certificate, key, subject=f"CN={common_name},O={self.name}")


@dataclass(frozen=True, slots=True)
class Certificates:
    """The hospital CA with the node's and a modality's certificates, and a stranger CA
    with a certificate of its own."""

    ca: CertificateAuthority
    node: Leaf
    modality: Leaf
    pacs: Leaf
    other_ca: CertificateAuthority
    stranger: Leaf


def make_certificates(folder: Path) -> Certificates:
    """Two CAs and four leaves under ``folder`` (about a second of key generation)."""
    ca = CertificateAuthority.create(folder, "Hospital")
    other = CertificateAuthority.create(folder, "Elsewhere")
    return Certificates(
        ca=ca,
        node=ca.issue("pacsnode"),
        modality=ca.issue("DX_ROOM1"),
        pacs=ca.issue("pacs"),
        other_ca=other,
        stranger=other.issue("intruder"),
    )
