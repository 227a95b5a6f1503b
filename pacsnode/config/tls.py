"""DICOM TLS (PS3.15 Annex B): the node's settings turned into :mod:`ssl` contexts.

The listener's context demands a client certificate from the configured CAs; a sender's
context verifies the destination's certificate and host name and may present our own.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from pacsnode.config.settings import Destination, TlsSettings

__all__ = [
    "TLS_VERSIONS",
    "check_files",
    "client_context",
    "server_context",
    "subject_of",
]

TLS_VERSIONS: Final[Mapping[str, ssl.TLSVersion]] = {
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
"""The ``minimum_version`` values allowed; older versions are broken (BCP 195)."""


def _no_passphrase() -> bytes:
    # Without a callback OpenSSL prompts on the terminal for an encrypted key, which
    # would hang a service at start-up; an empty passphrase makes it fail instead.
    return b""


def server_context(tls: TlsSettings) -> ssl.SSLContext:
    """The listener's context: our certificate, and peers verified against the CAs.

    Raises
    ------
    OSError, ssl.SSLError
        A file is missing or does not load.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = TLS_VERSIONS[tls.minimum_version]
    context.load_cert_chain(tls.certificate, tls.private_key, password=_no_passphrase)
    if tls.ca_certificates is not None:
        context.load_verify_locations(cafile=tls.ca_certificates)
    if tls.require_client_certificate:
        context.verify_mode = ssl.CERT_REQUIRED
    elif tls.ca_certificates is not None:
        # A certificate, if offered, must still chain to the CAs.
        context.verify_mode = ssl.CERT_OPTIONAL
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def client_context(destination: Destination) -> ssl.SSLContext:
    """A context for sending to ``destination`` (``Purpose.SERVER_AUTH``, host name checked).

    Its CAs are the destination's ``ca_certificates``, else the system's trust store;
    its client certificate, if any, is the destination's. (The settings have already
    filled both in from ``[tls]`` where the destination gives none.)

    Raises
    ------
    OSError, ssl.SSLError
        A file is missing or does not load.
    """
    # SERVER_AUTH: a CLIENT_AUTH context cannot open a client socket (pynetdicom #709).
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH,
        cafile=None if destination.ca_certificates is None else str(destination.ca_certificates),
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # The chain is verified either way; only the name check can be off.
    context.check_hostname = destination.check_hostname
    if destination.certificate is not None and destination.private_key is not None:
        context.load_cert_chain(
            destination.certificate, destination.private_key, password=_no_passphrase
        )
    return context


def check_files(
    *, certificate: Path | None, private_key: Path | None, ca_certificates: Path | None
) -> dict[str, str]:
    """Load the given PEM files the way the contexts will; problems keyed by setting.

    An empty answer means every given file exists and loads, and the key matches the
    certificate.
    """
    problems: dict[str, str] = {}
    given = {
        "certificate": certificate,
        "private_key": private_key,
        "ca_certificates": ca_certificates,
    }
    for key, path in given.items():
        if path is None:
            continue
        try:
            with path.open("rb"):
                pass
        except FileNotFoundError:
            problems[key] = f"{path}: no such file"
        except OSError as error:
            problems[key] = f"{path}: cannot be read ({error.strerror})"
    if problems:
        return problems
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_certificates is not None:
        try:
            context.load_verify_locations(cafile=ca_certificates)
        except (ssl.SSLError, ValueError) as error:
            problems["ca_certificates"] = f"{ca_certificates}: no PEM certificates ({error})"
    if certificate is not None and private_key is not None:
        try:
            context.load_cert_chain(certificate, private_key, password=_no_passphrase)
        except ssl.SSLError as error:
            problems["private_key"] = (
                f"{private_key} and {certificate} do not load as a PEM certificate and "
                f"its unencrypted private key ({error.reason or error})"
            )
    return problems


def subject_of(certificate: Mapping[str, Any] | None) -> str | None:
    """A peer certificate's subject as ``CN=...,O=...`` (most specific first, as RFC 4514),
    from :meth:`ssl.SSLSocket.getpeercert`; None when the peer sent none."""
    if not certificate or "subject" not in certificate:
        return None
    names = [
        f"{_SHORT.get(key, key)}={value}" for rdn in certificate["subject"] for key, value in rdn
    ]
    return ",".join(reversed(names)) or None


_SHORT: Final = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
    "emailAddress": "emailAddress",
}
