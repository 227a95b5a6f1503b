"""DICOM TLS on the listener and in the sender: an in-process pynetdicom SCU against the
node's SCP on a free port, with certificates made by openssl for the module.

What must hold: a certificate from the configured CA is accepted and its subject audited;
plain TCP, a certificate from another CA and (by default) no certificate are refused,
each with an audit row; a peer that connects and stalls holds up nobody else.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification

from pacsnode.audit import AuditEntry, AuditEvent, AuditLog, Outcome
from pacsnode.config import Destination, load_settings
from pacsnode.db import create_schema, make_engine
from pacsnode.export.sender import echo
from pacsnode.jobs import JobQueue
from pacsnode.receive import StorageSCP, StoreStatus
from tests.films import make_film
from tests.tls import Certificates, Leaf, make_certificates


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TlsListener:
    """The node's listener with ``[tls]`` set from the environment, as an operator would."""

    def __init__(self, tmp_path: Path, certs: Certificates, **overrides: str) -> None:
        env = {
            "PACSNODE_STORAGE__DATA_DIR": str(tmp_path / "data"),
            "PACSNODE_STORAGE__MIN_FREE_MB": "1",
            "PACSNODE_NODE__HOST": "127.0.0.1",
            "PACSNODE_NODE__PORT": str(_free_port()),
            "PACSNODE_SECURITY__ALLOWED_CALLING_AETS": "TESTSCU",
            "PACSNODE_TLS__CERTIFICATE": str(certs.node.certificate),
            "PACSNODE_TLS__PRIVATE_KEY": str(certs.node.private_key),
            "PACSNODE_TLS__CA_CERTIFICATES": str(certs.ca.certificate),
            **overrides,
        }
        self.settings = load_settings(None, env)
        self.settings.storage.data_dir.mkdir(parents=True)
        engine = make_engine(self.settings.database.url)
        create_schema(engine)
        self.queue = JobQueue(engine)
        self.audit = AuditLog(engine)
        self.scp = StorageSCP(self.settings, self.queue, self.audit)
        self.scp.start()
        self.port = self.scp.address[1]

    def associate(
        self,
        ca: Path | None,
        leaf: Leaf | None,
        *,
        calling: str = "TESTSCU",
        tls: bool = True,
        sop_class: str = Verification,
    ) -> Association:
        ae = AE(ae_title=calling)
        ae.acse_timeout = ae.network_timeout = ae.connection_timeout = 10
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
        ae.add_requested_context(Verification)
        tls_args = None
        if tls:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
            if leaf is not None:
                context.load_cert_chain(leaf.certificate, leaf.private_key)
            tls_args = (context, "localhost")
        return ae.associate("127.0.0.1", self.port, ae_title="PACSNODE", tls_args=tls_args)

    def rejected(self, count: int = 1, timeout: float = 10.0) -> list[AuditEntry]:
        """The association_rejected rows, oldest first, once ``count`` are there."""
        deadline = time.monotonic() + timeout
        while True:
            rows = list(reversed(self.audit.query(event=AuditEvent.ASSOCIATION_REJECTED)))
            if len(rows) >= count or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)


@pytest.fixture
def listener(tmp_path: Path, certs: Certificates) -> Iterator[TlsListener]:
    node = TlsListener(tmp_path, certs)
    yield node
    node.scp.stop()


def test_a_certificate_from_the_configured_ca_is_accepted_and_its_subject_audited(
    listener: TlsListener, certs: Certificates
) -> None:
    film = make_film()
    assoc = listener.associate(certs.ca.certificate, certs.modality, sop_class=film.SOPClassUID)
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0
        assert assoc.send_c_store(film).Status == StoreStatus.SUCCESS
    finally:
        assoc.release()
    assert listener.queue.find(film.SOPInstanceUID) is not None
    (accepted,) = listener.audit.query(event=AuditEvent.ASSOCIATION_ACCEPTED)
    assert accepted.details is not None
    assert accepted.details["tls_subject"] == certs.modality.subject == "CN=DX_ROOM1,O=Hospital"
    assert accepted.details["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert listener.rejected(count=0) == []


def test_plain_tcp_is_refused_and_audited(listener: TlsListener) -> None:
    assoc = listener.associate(None, None, tls=False)
    assert not assoc.is_established
    (row,) = listener.rejected()
    assert row.outcome is Outcome.FAILURE
    assert row.actor.startswith("@127.0.0.1:")  # no AE title: no association was read
    assert row.reason is not None and "not TLS" in row.reason, row.reason
    assert listener.audit.query(event=AuditEvent.ASSOCIATION_ACCEPTED) == ()


def test_a_certificate_from_another_ca_is_refused(
    listener: TlsListener, certs: Certificates
) -> None:
    # The stranger trusts our node's CA; only its own certificate is wrong.
    assoc = listener.associate(certs.ca.certificate, certs.stranger)
    assert not assoc.is_established
    (row,) = listener.rejected()
    assert row.reason is not None and "does not chain to the configured CAs" in row.reason


def test_no_client_certificate_is_refused_by_default(
    listener: TlsListener, certs: Certificates
) -> None:
    assert listener.settings.tls is not None
    assert listener.settings.tls.require_client_certificate
    assoc = listener.associate(certs.ca.certificate, None)
    assert not assoc.is_established
    (row,) = listener.rejected()
    assert row.reason is not None and "no client certificate" in row.reason, row.reason


def test_without_required_client_certificates_an_anonymous_peer_is_taken(
    tmp_path: Path, certs: Certificates
) -> None:
    node = TlsListener(tmp_path, certs, PACSNODE_TLS__REQUIRE_CLIENT_CERTIFICATE="false")
    try:
        assoc = node.associate(certs.ca.certificate, None)
        assert assoc.is_established
        assoc.release()
        # A certificate offered must still chain to the CAs.
        assert not node.associate(certs.ca.certificate, certs.stranger).is_established
        (accepted,) = node.audit.query(event=AuditEvent.ASSOCIATION_ACCEPTED)
        assert accepted.details is not None and accepted.details["tls_subject"] is None
        assert len(node.rejected()) == 1
    finally:
        node.scp.stop()


def test_the_calling_ae_allow_list_still_applies_and_names_the_certificate(
    listener: TlsListener, certs: Certificates
) -> None:
    assoc = listener.associate(certs.ca.certificate, certs.modality, calling="INTRUDER")
    assert assoc.is_rejected
    (row,) = listener.rejected()
    assert "INTRUDER" in (row.reason or "")
    assert row.details is not None and row.details["tls_subject"] == certs.modality.subject


def test_a_peer_that_stalls_the_handshake_holds_up_nobody(
    tmp_path: Path, certs: Certificates
) -> None:
    node = TlsListener(tmp_path, certs, PACSNODE_TLS__HANDSHAKE_TIMEOUT_SECONDS="2")
    try:
        with socket.create_connection(("127.0.0.1", node.port)) as staller:
            started = time.monotonic()
            assoc = node.associate(certs.ca.certificate, certs.modality)
            assert assoc.is_established
            assert assoc.send_c_echo().Status == 0
            assoc.release()
            served_in = time.monotonic() - started
            assert served_in < 1.5, f"the second peer waited {served_in:.1f} s"
            (row,) = node.rejected(timeout=10)
            assert row.reason == "TLS handshake not completed within 2 s"
            # ... and the staller was dropped.
            staller.settimeout(5)
            assert staller.recv(1) == b""
    finally:
        node.scp.stop()


def test_the_sender_speaks_tls_with_the_node_certificate(
    tmp_path: Path, certs: Certificates
) -> None:
    # The node echoes itself: a TLS destination takes [tls]'s CA and certificate.
    node = TlsListener(
        tmp_path,
        certs,
        PACSNODE_SECURITY__ALLOWED_CALLING_AETS="PACSNODE",
        PACSNODE_DESTINATIONS__0__NAME="self",
        PACSNODE_DESTINATIONS__0__AE_TITLE="PACSNODE",
        PACSNODE_DESTINATIONS__0__HOST="127.0.0.1",
        PACSNODE_DESTINATIONS__0__PORT="104",
        PACSNODE_DESTINATIONS__0__TLS="true",
    )
    try:
        configured = node.settings.destination("self")
        assert configured.certificate == certs.node.certificate
        assert configured.ca_certificates == certs.ca.certificate
        destination = Destination(
            "self",
            "PACSNODE",
            "127.0.0.1",
            node.port,
            tls=True,
            ca_certificates=configured.ca_certificates,
            certificate=configured.certificate,
            private_key=configured.private_key,
        )
        result = echo(destination, "PACSNODE", timeout=10)
        assert result.ok, result.detail
        (accepted,) = node.audit.query(event=AuditEvent.ASSOCIATION_ACCEPTED)
        assert accepted.details is not None
        assert accepted.details["tls_subject"] == certs.node.subject

        # A destination whose certificate we cannot verify is not spoken to.
        wrong_ca = Destination(
            "self",
            "PACSNODE",
            "127.0.0.1",
            node.port,
            tls=True,
            ca_certificates=certs.other_ca.certificate,
            certificate=certs.node.certificate,
            private_key=certs.node.private_key,
        )
        result = echo(wrong_ca, "PACSNODE", timeout=10)
        assert not result.ok and "over TLS" in result.detail
        # Plain TCP to a TLS port: refused as well.
        assert not echo(Destination("self", "PACSNODE", "127.0.0.1", node.port), "PACSNODE").ok
    finally:
        node.scp.stop()


def test_a_peer_below_the_minimum_tls_version_is_refused(
    tmp_path: Path, certs: Certificates
) -> None:
    node = TlsListener(tmp_path, certs, PACSNODE_TLS__MINIMUM_VERSION="TLSv1.3")
    try:
        ae = AE(ae_title="TESTSCU")
        ae.acse_timeout = ae.network_timeout = ae.connection_timeout = 10
        ae.add_requested_context(Verification)
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=certs.ca.certificate)
        context.load_cert_chain(certs.modality.certificate, certs.modality.private_key)
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        assoc = ae.associate(
            "127.0.0.1", node.port, ae_title="PACSNODE", tls_args=(context, "localhost")
        )
        assert not assoc.is_established
        (row,) = node.rejected()
        assert row.reason is not None and "below the minimum" in row.reason, row.reason
    finally:
        node.scp.stop()


def test_stopping_does_not_wait_for_a_stalled_handshake(
    tmp_path: Path, certs: Certificates
) -> None:
    node = TlsListener(tmp_path, certs)  # handshake timeout 10 s
    with socket.create_connection(("127.0.0.1", node.port)) as staller:
        time.sleep(0.3)  # its handshake thread is waiting
        started = time.monotonic()
        node.scp.stop()
        assert time.monotonic() - started < 2.0
        staller.settimeout(5)
        assert staller.recv(1) == b""
    # A shutdown is not a peer's failure: nothing audited.
    assert node.audit.query(event=AuditEvent.ASSOCIATION_REJECTED) == ()


def test_every_association_row_names_the_certificate(tmp_path: Path, certs: Certificates) -> None:
    # The association limit: pynetdicom's own rejection, after the handshake.
    node = TlsListener(tmp_path, certs, PACSNODE_NODE__MAX_ASSOCIATIONS="1")
    try:
        first = node.associate(certs.ca.certificate, certs.modality)
        assert first.is_established
        second = node.associate(certs.ca.certificate, certs.pacs)
        assert second.is_rejected
        first.release()
        (row,) = node.rejected()
        assert row.reason == "association limit reached"
        assert row.details is not None and row.details["tls_subject"] == certs.pacs.subject
    finally:
        node.scp.stop()


def test_a_peer_that_does_not_trust_the_node_is_audited_with_its_alert(
    listener: TlsListener, certs: Certificates
) -> None:
    # The modality's certificate is good, but it trusts another CA than the node's.
    assoc = listener.associate(certs.other_ca.certificate, certs.modality)
    assert not assoc.is_established
    (row,) = listener.rejected()
    assert row.reason == "TLS handshake failed: the peer sent the alert 'unknown ca'"
