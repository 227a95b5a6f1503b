"""DICOM TLS end to end: dcmtk's ``storescu``/``echoscu +tls`` to ``pacsnode serve`` with
``[tls]`` set, and the node's results to an Orthanc with DICOM TLS on and client
certificates required. Certificates come from openssl in a temporary folder.

The bars: a certificate from the hospital CA is accepted and the film's SEG and SR reach
the PACS; plain TCP, anonymous TLS (``+tla``) and a certificate from another CA are
refused, each with an audit row.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    ECHOSCU,
    NODE_AE,
    Film,
    Node,
    Orthanc,
    storescu,
)
from tests.tls import Certificates, Leaf, make_certificates

pytestmark = [pytest.mark.slow, pytest.mark.dcmtk]


def tls_args(ca: Path, leaf: Leaf | None) -> list[str]:
    """dcmtk's options: ``+tls KEY CERT`` (or ``+tla``, anonymous), and the CA that the
    node's certificate must chain to (``-rc``, the default, requires it)."""
    # -pw: the key has no passphrase (dcmtk would prompt); it is refused with +tla.
    who = ["+tls", str(leaf.private_key), str(leaf.certificate), "-pw"] if leaf else ["+tla"]
    return [*who, "+cf", str(ca)]


def tls_echoscu(
    port: int, extra_args: Sequence[str], aet: str = "ECHOSCU"
) -> subprocess.CompletedProcess[str]:
    command = [str(ECHOSCU), "-to", "5", "-ta", "5", "-td", "10", *extra_args]
    command += ["-aet", aet, "-aec", NODE_AE, "127.0.0.1", str(port)]
    return subprocess.run(
        command, capture_output=True, text=True, errors="replace", check=False, timeout=30
    )


class TlsOrthanc(Orthanc):
    """Orthanc with DICOM TLS on its DICOM port, requiring client certificates."""

    def __init__(self, root: Path, certs: Certificates) -> None:
        super().__init__(root)
        config = json.loads(self.config_path.read_text())
        config.update(
            {
                "DicomTlsEnabled": True,
                "DicomTlsCertificate": str(certs.pacs.certificate),
                "DicomTlsPrivateKey": str(certs.pacs.private_key),
                "DicomTlsTrustedCertificates": str(certs.ca.certificate),
                "DicomTlsRemoteCertificateRequired": True,
            }
        )
        self.config_path.write_text(json.dumps(config, indent=2))


class TlsNode(Node):
    """``pacsnode serve`` with ``[tls]`` and a TLS destination; its readiness check is an
    ``echoscu +tls`` with the modality's certificate."""

    def __init__(self, root: Path, certs: Certificates, destination: Orthanc) -> None:
        self.certs = certs
        super().__init__(root, destinations=[destination])
        with self.config_path.open("a") as config:
            # The last table written is the destination's [[destinations]].
            config.write(
                "tls = true\n\n[tls]\n"
                f'certificate = "{certs.node.certificate}"\n'
                f'private_key = "{certs.node.private_key}"\n'
                f'ca_certificates = "{certs.ca.certificate}"\n'
                "handshake_timeout_seconds = 5\n"
            )

    def echo(self, aet: str = "ECHOSCU") -> bool:
        args = tls_args(self.certs.ca.certificate, self.certs.modality)
        return tls_echoscu(self.port, args, aet).returncode == 0


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_orthanc(
    tmp_path_factory: pytest.TempPathFactory, certs: Certificates, dcmtk: None
) -> Iterator[TlsOrthanc]:
    server = TlsOrthanc(tmp_path_factory.mktemp("orthanc-tls"), certs)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tls_node(
    tmp_path_factory: pytest.TempPathFactory, certs: Certificates, tls_orthanc: TlsOrthanc
) -> Iterator[TlsNode]:
    node = TlsNode(tmp_path_factory.mktemp("node-tls"), certs, tls_orthanc)
    try:
        node.start()
        yield node
    finally:
        node.kill9()


def test_a_hospital_certificate_is_accepted_and_results_reach_the_tls_pacs(
    tls_node: TlsNode, tls_orthanc: TlsOrthanc, certs: Certificates, films: list[Film]
) -> None:
    modality = tls_args(certs.ca.certificate, certs.modality)
    assert tls_echoscu(tls_node.port, modality).returncode == 0
    film = films[2]  # uncompressed
    sent = storescu(film.path, tls_node.port, extra_args=modality)
    assert sent.succeeded, f"{sent}\n{tls_node.describe()}"

    results = tls_orthanc.wait_for_results(film, node=tls_node)
    assert len(results.segs) == 1 and len(results.srs) == 1
    # Orthanc's DICOM port speaks TLS only: the results can have come no other way.
    sent_rows = tls_node.wait_for_audit("result_sent", count=2)
    assert all(row.outcome == "success" for row in sent_rows)

    accepted = [r for r in tls_node.audit("association_accepted") if r.actor.startswith("STORESCU")]
    assert accepted and accepted[-1].details["tls_subject"] == certs.modality.subject
    assert accepted[-1].details["tls_version"] in ("TLSv1.2", "TLSv1.3")

    # The admin CLI's echo goes over TLS too: to the node itself and to the PACS.
    done = subprocess.run(
        [sys.executable, "-m", "pacsnode", "echo", "--config", str(tls_node.config_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=Node.environment(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "this node: ok" in done.stdout and "pacs: ok" in done.stdout, done.stdout
    done = subprocess.run(
        [sys.executable, "-m", "pacsnode", "status", "--config", str(tls_node.config_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=Node.environment(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "DICOM TLS only, TLSv1.2 or later, client certificates required" in done.stdout


@pytest.mark.parametrize(
    "how",
    ["plain TCP", "anonymous TLS", "another CA"],
)
def test_peers_without_a_hospital_certificate_are_refused(
    tls_node: TlsNode, certs: Certificates, films: list[Film], how: str
) -> None:
    args = {
        "plain TCP": [],
        "anonymous TLS": tls_args(certs.ca.certificate, None),
        "another CA": tls_args(certs.ca.certificate, certs.stranger),
    }[how]
    before = tls_node.last_audit_id()
    sent = storescu(films[2].path, tls_node.port, extra_args=args)
    assert not sent.succeeded and sent.status is None, str(sent)
    assert tls_echoscu(tls_node.port, args).returncode != 0

    rows = tls_node.wait_for_audit("association_rejected", after_id=before, count=2)
    expected = {
        "plain TCP": "not TLS",
        "anonymous TLS": "no client certificate",
        "another CA": "does not chain to the configured CAs",
    }[how]
    assert all(expected in (row.reason or "") for row in rows), [r.reason for r in rows]
    assert all(row.actor.startswith("@127.0.0.1:") for row in rows)
    # No association got as far as being accepted, and the node still serves the
    # hospital's modalities.
    assert not [r for r in tls_node.audit("association_accepted") if r.id > before]
    assert tls_node.echo()
