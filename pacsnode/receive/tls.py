"""The listener's DICOM TLS: each peer's handshake runs, with a time limit, in its own
association thread, and a failed one is reported instead of vanishing.

pynetdicom's server handshakes in the accepting thread, where a failure is swallowed by
``socketserver`` and a peer that connects and stalls holds up every other sender.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

from pynetdicom import AE
from pynetdicom.transport import ThreadedAssociationServer
from pynetdicom.utils import make_target

__all__ = ["HandshakeFailed", "TlsAssociationServer", "describe_failure", "start_tls_server"]

log = logging.getLogger(__name__)

HandshakeFailed = Callable[[str, int, str], None]
"""Told the peer's address, its port and why its handshake failed."""

# OpenSSL reasons a sender's administrator can act on, in their words.
_REASONS = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the peer sent no client certificate",
    "CERTIFICATE_VERIFY_FAILED": "the peer's certificate does not chain to the configured CAs",
    "WRONG_VERSION_NUMBER": "not TLS (plain DICOM, or another protocol)",
    "HTTP_REQUEST": "not TLS (an HTTP request)",
    "UNKNOWN_PROTOCOL": "not TLS",
    "UNSUPPORTED_PROTOCOL": "the peer offers only TLS versions below the minimum",
    "NO_SHARED_CIPHER": "no cipher suite in common",
    "NO_SUITABLE_SIGNATURE_ALGORITHM": "no signature algorithm in common",
}


def describe_failure(error: BaseException, timeout: float) -> str:
    """A sentence for the audit log on why a handshake failed."""
    if isinstance(error, TimeoutError | socket.timeout):
        return f"TLS handshake not completed within {timeout:g} s"
    if isinstance(error, ssl.SSLEOFError | ConnectionError) or (
        isinstance(error, ssl.SSLError) and error.reason == "UNEXPECTED_EOF_WHILE_READING"
    ):
        return "TLS handshake failed: the peer closed the connection"
    if isinstance(error, ssl.SSLCertVerificationError):
        why = _REASONS["CERTIFICATE_VERIFY_FAILED"]
        return f"TLS handshake failed: {why} ({error.verify_message})"
    if isinstance(error, ssl.SSLError):
        reason = error.reason or type(error).__name__
        if reason.startswith("TLSV1_ALERT_") or reason.startswith("SSLV3_ALERT_"):
            # The peer refused us: usually it does not trust our certificate.
            alert = reason.split("_ALERT_", 1)[1].lower().replace("_", " ")
            return f"TLS handshake failed: the peer sent the alert '{alert}'"
        return f"TLS handshake failed: {_REASONS.get(reason, reason)}"
    if isinstance(error, OSError):
        return f"TLS handshake failed: {error.strerror or error}"
    return f"TLS handshake failed: {type(error).__name__}"


class TlsAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with the TLS handshake moved off the accept loop.

    Parameters
    ----------
    handshake_timeout
        Seconds a peer has to finish its handshake.
    on_handshake_failed
        Called in the peer's thread after a failed handshake, before the socket closes.
    """

    def __init__(
        self,
        *args: Any,
        handshake_timeout: float,
        on_handshake_failed: HandshakeFailed,
        **kwargs: Any,
    ) -> None:
        self.handshake_timeout = handshake_timeout
        self.on_handshake_failed = on_handshake_failed
        # Sockets in the middle of their handshake, cut short when the server closes:
        # socketserver joins every request thread on close.
        self._handshaking: set[ssl.SSLSocket] = set()
        self._handshaking_lock = threading.Lock()
        self._closing = False
        super().__init__(*args, **kwargs)

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        listening = cast(socket.socket, self.socket)
        context = cast(ssl.SSLContext, self.ssl_context)
        client, address = listening.accept()
        try:
            wrapped = context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        except OSError:
            client.close()
            raise
        return wrapped, address

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        address, port = str(client_address[0]), int(client_address[1])
        with self._handshaking_lock:
            closing = self._closing
            if not closing:
                self._handshaking.add(request)
        if closing:
            self.shutdown_request(request)
            return
        try:
            request.settimeout(self.handshake_timeout)
            request.do_handshake()
            # pynetdicom polls with select() and then reads: back to blocking.
            request.settimeout(None)
        except Exception as error:  # whatever it is, the peer gets no association
            try:
                if not self._closing:
                    self.on_handshake_failed(
                        address, port, describe_failure(error, self.handshake_timeout)
                    )
            finally:
                self.shutdown_request(request)
            return
        finally:
            with self._handshaking_lock:
                self._handshaking.discard(request)
        super().process_request_thread(request, client_address)

    def server_close(self) -> None:
        with self._handshaking_lock:
            self._closing = True
            pending = list(self._handshaking)
        for sock in pending:
            # The plain socket's shutdown wakes the thread blocked in do_handshake().
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
        super().server_close()


def start_tls_server(
    ae: AE,
    address: tuple[str, int],
    context: ssl.SSLContext,
    *,
    evt_handlers: list[Any],
    handshake_timeout: float,
    on_handshake_failed: HandshakeFailed,
) -> TlsAssociationServer:
    """Like ``ae.start_server(address, block=False, ssl_context=context, ...)``, with the
    handshake in each association's thread.

    Raises
    ------
    OSError
        The address cannot be bound.
    """
    server = ae.make_server(
        address,
        ssl_context=context,
        evt_handlers=evt_handlers,
        server_class=TlsAssociationServer,
        handshake_timeout=handshake_timeout,
        on_handshake_failed=on_handshake_failed,
    )
    timestamp = datetime.now().strftime("%Y%m%d%H%M%S")
    thread = threading.Thread(
        target=make_target(server.serve_forever), name=f"TlsAcceptor@{timestamp}", daemon=True
    )
    thread.start()
    # pynetdicom's AE keeps its servers so that ae.shutdown() and server.shutdown() work.
    ae._servers.append(server)
    return server
