"""The node as a DICOM client: C-STORE of result objects to a destination, and C-ECHO.

One association per call, so a destination that restarts between sends costs nothing but
that send; the caller (the delivery loop) decides whether and when to try again. A
destination with ``tls = true`` is reached over DICOM TLS, its certificate verified.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    ComprehensiveSRStorage,
    ExplicitVRLittleEndian,
    GrayscaleSoftcopyPresentationStateStorage,
    ImplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    SegmentationStorage,
)
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification

from pacsnode.config.settings import Destination
from pacsnode.config.tls import client_context

__all__ = ["DEFAULT_TIMEOUT", "EchoResult", "SendResult", "echo", "send_file"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
"""Seconds to wait for the connection, the association and each DIMSE answer."""

# The result objects the node writes, all stored Explicit VR Little Endian.
_RESULT_SOP_CLASSES = (
    SegmentationStorage,
    ComprehensiveSRStorage,
    GrayscaleSoftcopyPresentationStateStorage,
    SecondaryCaptureImageStorage,
)
_TRANSFER_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]

# C-STORE answers that mean the destination kept the object (PS3.4 B.2.3): success, and
# the warnings "coercion of data elements", "elements discarded", "does not match SOP class".
_STORED = frozenset({0x0000, 0xB000, 0xB006, 0xB007})


@dataclass(frozen=True)
class SendResult:
    """How one C-STORE went.

    Attributes
    ----------
    ok
        The destination answered with success or a warning: it has the object.
    status
        The DIMSE status it answered, or None when there was no answer (no connection,
        association rejected or aborted, timeout).
    detail
        A sentence for the audit log and the administrator.
    retryable
        Worth trying again later: everything but a refusal that a re-send cannot change
        (the destination does not take this SOP class).
    """

    ok: bool
    status: int | None
    detail: str
    retryable: bool = True


@dataclass(frozen=True)
class EchoResult:
    """How one C-ECHO went; ``status`` is None without an answer."""

    ok: bool
    status: int | None
    detail: str
    seconds: float


def _client(calling_ae: str, timeout: float, contexts: list[tuple[str, list[str]]]) -> AE:
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.connection_timeout = timeout
    for sop_class, syntaxes in contexts:
        ae.add_requested_context(sop_class, syntaxes)
    return ae


def _associate(ae: AE, destination: Destination) -> Association:
    """Open the association, over TLS when the destination says so.

    Raises
    ------
    OSError, ssl.SSLError
        A TLS file of the destination no longer loads (it did at start-up).
    """
    tls_args = None
    if destination.tls:
        # The host name is checked against the destination's certificate.
        tls_args = (client_context(destination), destination.host)
    return ae.associate(
        destination.host, destination.port, ae_title=destination.ae_title, tls_args=tls_args
    )


def _where(destination: Destination) -> str:
    return f"{destination.ae_title}@{destination.host}:{destination.port}"


def _no_association(destination: Destination, assoc: object) -> str:
    if getattr(assoc, "is_rejected", False):
        return f"{_where(destination)} rejected the association (is our AE title known to it?)"
    if destination.tls:
        # pynetdicom logs the TLS error itself and reports an abort, like a refusal.
        return (
            f"no association with {_where(destination)} over TLS: not listening, unreachable, "
            "TLS handshake failed (certificates, host name, CA) or it aborted"
        )
    # pynetdicom marks a refused connection as aborted too, so the two read alike.
    return f"no association with {_where(destination)}: not listening, unreachable, or it aborted"


def echo(destination: Destination, calling_ae: str, timeout: float = 10.0) -> EchoResult:
    """C-ECHO ``destination`` as ``calling_ae``; never raises for network trouble."""
    started = time.monotonic()
    ae = _client(calling_ae, timeout, [(Verification, [ImplicitVRLittleEndian])])
    try:
        assoc = _associate(ae, destination)
    except OSError as error:
        return EchoResult(
            False, None, f"{_where(destination)}: TLS files: {error}", time.monotonic() - started
        )
    if not assoc.is_established:
        return EchoResult(
            False, None, _no_association(destination, assoc), time.monotonic() - started
        )
    try:
        answer = assoc.send_c_echo()
    finally:
        assoc.release()
    seconds = time.monotonic() - started
    status = getattr(answer, "Status", None)
    if status is None:
        return EchoResult(False, None, f"{_where(destination)} did not answer the C-ECHO", seconds)
    if status == 0x0000:
        return EchoResult(
            True, 0, f"{_where(destination)} answered in {seconds * 1000:.0f} ms", seconds
        )
    return EchoResult(False, int(status), f"{_where(destination)} answered 0x{status:04X}", seconds)


def send_file(
    path: Path, destination: Destination, calling_ae: str, timeout: float = DEFAULT_TIMEOUT
) -> SendResult:
    """C-STORE the DICOM file at ``path`` (a result object the node wrote) to ``destination``.

    Never raises for network trouble or a refusal: the answer says what happened.

    Raises
    ------
    OSError, InvalidDicomError
        The file cannot be read: the node's own results directory is damaged, which no
        retry of the send will mend.
    """
    dataset = dcmread(path)
    sop_class = str(dataset.SOPClassUID)
    if sop_class not in _RESULT_SOP_CLASSES:
        raise InvalidDicomError(f"{path} is not a result object the node sends ({sop_class})")
    ae = _client(calling_ae, timeout, [(sop_class, _TRANSFER_SYNTAXES)])
    try:
        assoc = _associate(ae, destination)
    except OSError as error:
        return SendResult(False, None, f"{_where(destination)}: TLS files: {error}")
    if not assoc.is_established:
        return SendResult(False, None, _no_association(destination, assoc))
    try:
        if not assoc.accepted_contexts:
            return SendResult(
                False,
                None,
                f"{_where(destination)} does not accept {dataset.SOPClassUID.name}",
                retryable=False,
            )
        answer = assoc.send_c_store(dataset)
    finally:
        if assoc.is_established:
            assoc.release()
    status = getattr(answer, "Status", None)
    if status is None:
        return SendResult(False, None, f"{_where(destination)} did not answer the C-STORE")
    comment = getattr(answer, "ErrorComment", None)
    said = f"{_where(destination)} answered 0x{status:04X}" + (f": {comment}" if comment else "")
    if status in _STORED:
        return SendResult(True, int(status), said)
    # 0x0122 SOP class not supported: a configuration matter, not a passing fault.
    return SendResult(False, int(status), said, retryable=status != 0x0122)
