"""The DICOM listener: Verification and Storage SCP that spools films and queues them.

The C-STORE handler is short on purpose: check, write durably, enqueue, answer. Analysis
runs in the worker, never in an association thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pydicom.dataset import Dataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import Verification
from sqlalchemy.exc import SQLAlchemyError

from pacsnode.audit import AuditEvent, AuditLog, Outcome, PatientScreen, screen_text, screening
from pacsnode.config.settings import (
    CR_IMAGE_STORAGE,
    DX_FOR_PRESENTATION_STORAGE,
    DX_FOR_PROCESSING_STORAGE,
    SECONDARY_CAPTURE_STORAGE,
    Settings,
    Unmatched,
)
from pacsnode.config.tls import server_context, subject_of
from pacsnode.errors import ImageReadError
from pacsnode.imaging.reader import SUPPORTED_TRANSFER_SYNTAXES, FilmHeader, inspect_film
from pacsnode.jobs import JobQueue
from pacsnode.metrics import NO_METRICS, NoMetrics
from pacsnode.receive.decodecheck import DecodeChecks
from pacsnode.receive.inflate import InflateError, TooLargeInflated, inflate_file
from pacsnode.receive.intake import Intake
from pacsnode.receive.priority import Prioritised, request_priority, rule_priority
from pacsnode.receive.spool import Spool, SpoolFullError, is_uid
from pacsnode.receive.statuses import Refusal, StoreStatus, answer, refusal_for_read_error
from pacsnode.receive.tls import start_tls_server

__all__ = ["FILM_SOP_CLASSES", "Peer", "StorageSCP"]

log = logging.getLogger(__name__)

FILM_SOP_CLASSES: Final = frozenset(
    {
        DX_FOR_PRESENTATION_STORAGE,
        DX_FOR_PROCESSING_STORAGE,
        CR_IMAGE_STORAGE,
        SECONDARY_CAPTURE_STORAGE,
    }
)
"""The SOP classes the node keeps: single-frame projection films."""

# A-ASSOCIATE-RJ (result, source, diagnostic), PS3.8 §9.3.4: rejected permanent by the
# service user, calling / called AE title not recognised, no reason given.
_REJECT_CALLING_AE: Final = (0x01, 0x01, 0x03)
_REJECT_CALLED: Final = (0x01, 0x01, 0x07)
_REJECT_NO_REASON: Final = (0x01, 0x01, 0x01)

_MIB: Final = 1024 * 1024
# A compressed film this small is decoded (in a decode-check child process, never in the
# listener's) before it is accepted; a larger one is checked from its header only
# (values over 64 KiB are not read).
_CHECKED_IN_MEMORY: Final = 16 * _MIB


@dataclass(frozen=True)
class Peer:
    """The other end of an association, as the audit log names it."""

    ae_title: str
    address: str
    port: int

    @classmethod
    def of(cls, assoc: Any) -> Peer:
        requestor = assoc.requestor
        # Before negotiation (EVT_REQUESTED) the title is only in the A-ASSOCIATE request.
        primitive = requestor.primitive
        title = primitive.calling_ae_title if primitive is not None else requestor.ae_title
        return cls(str(title).strip(), str(requestor.address), int(requestor.port))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.address}:{self.port}"


def _tls_details(assoc: Any) -> dict[str, Any]:
    """The peer's certificate subject and the TLS version, for the audit row; empty for
    an association over plain TCP."""
    # pynetdicom keeps the socket at assoc.dul.socket.socket (an internal path).
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if not isinstance(sock, ssl.SSLSocket):
        return {}
    try:
        return {"tls_subject": subject_of(sock.getpeercert()), "tls_version": sock.version()}
    except (OSError, ValueError):  # closed under us
        return {"tls_subject": None, "tls_version": None}


def _called_ae_title(assoc: Any) -> str:
    primitive = assoc.requestor.primitive
    return str(primitive.called_ae_title if primitive is not None else "").strip()


class StorageSCP:
    """The node's listener.

    Parameters
    ----------
    settings
        The node's settings: AE title, address, limits, allow-lists, filter.
    queue
        Where received films are queued.
    audit
        Where associations and instances are recorded.
    spool
        Where received files are kept; by default the configured spool directory.
    on_queued
        Called after a film is queued for analysis, to wake a worker in this process.
    metrics
        Counts each C-STORE answer by status and times the handler (stage ``receive``).

    Notes
    -----
    Every storage SOP class is negotiated, not only the films the node reads, so a
    sender that routes a CT here gets a C-STORE failure status it can log (and an audit
    row here) instead of an anonymous presentation-context rejection.

    Data sets are streamed to disk (see :mod:`pacsnode.receive.intake`), which sets
    pynetdicom's process-wide ``STORE_RECV_CHUNKED_DATASET``: another storage SCP in the
    same process then gets its data sets as files too (its ``event.dataset`` still works).

    With ``[tls]`` the port speaks DICOM TLS only (see :mod:`pacsnode.receive.tls`): a
    failed handshake is audited as ``association_rejected`` with the peer's address, and
    each association's audit row carries the peer certificate's subject.
    """

    def __init__(
        self,
        settings: Settings,
        queue: JobQueue,
        audit: AuditLog,
        spool: Spool | None = None,
        on_queued: Callable[[], None] | None = None,
        metrics: NoMetrics = NO_METRICS,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.audit = audit
        self.spool = spool or Spool(settings.storage.spool_dir, settings.storage.min_free_mb)
        self.on_queued = on_queued
        self.metrics = metrics
        self._server: Any = None
        node = settings.node
        self.decode_checks = DecodeChecks()
        self.intake = Intake(
            self.spool,
            max_pdu=node.max_pdu_kb * 1024,
            max_dataset=node.max_dataset_mb * _MIB,
            share_per_ae=settings.security.max_spool_share_per_ae,
            held_by=self._held_by,
            on_abort=self._on_abort,
        )

    def start(self) -> None:
        """Listen on the configured address; returns once the socket is bound.

        Raises
        ------
        OSError
            The port is in use or cannot be bound.
        """
        node = self.settings.node
        ae = AE(ae_title=node.ae_title)
        ae.maximum_associations = node.max_associations
        ae.maximum_pdu_size = self.intake.max_pdu
        self.spool.clear_incoming()
        self.decode_checks.start()
        self._warn_if_open()
        ae.add_supported_context(Verification)
        syntaxes = [str(uid) for uid in SUPPORTED_TRANSFER_SYNTAXES]
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, syntaxes)
        handlers = [
            (evt.EVT_CONN_OPEN, self._on_connected),
            (evt.EVT_CONN_CLOSE, self._on_disconnected),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
        ]
        tls = self.settings.tls
        if tls is None:
            self._server = ae.start_server(
                (node.host, node.port), block=False, evt_handlers=handlers
            )
        else:
            self._server = start_tls_server(
                ae,
                (node.host, node.port),
                server_context(tls),
                evt_handlers=handlers,
                handshake_timeout=tls.handshake_timeout_seconds,
                on_handshake_failed=self._on_handshake_failed,
            )
        log.info(
            "listening as %s on %s:%d%s",
            node.ae_title,
            *self.address,
            " (DICOM TLS only)" if tls is not None else "",
        )

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) bound; the port is the real one when 0 was configured."""
        if self._server is None:
            raise RuntimeError("the listener is not started")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def stop(self) -> None:
        """Stop accepting associations; those in progress are closed."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
            log.info("listener stopped")
        self.decode_checks.stop()

    def _warn_if_open(self) -> None:
        node = self.settings.node
        if not self.settings.security.allowed_calling_aets and not node.loopback_only:
            log.warning(
                "listening on %s with an empty [security] allowed_calling_aets: the node "
                "accepts any calling AE title; list the senders' titles there",
                node.host,
            )

    # --- associations ------------------------------------------------------------------

    def _on_connected(self, event: Any) -> None:
        self.intake.attach(event.assoc)

    def _on_disconnected(self, event: Any) -> None:
        self.intake.detach(event.assoc)

    def _on_abort(self, assoc: Any, reason: str) -> None:
        peer = Peer.of(assoc)
        log.warning("association from %s aborted: %s", peer, reason)
        self._record(AuditEvent.ASSOCIATION_ABORTED, Outcome.FAILURE, peer, reason=reason)

    def _held_by(self, calling_ae: str) -> int:
        held = 0
        for path in self.queue.unfinished_films(calling_ae):
            with contextlib.suppress(OSError):  # already gone: holds nothing
                held += path.stat().st_size
        return held

    def _on_requested(self, event: Any) -> None:
        peer = Peer.of(event.assoc)
        security = self.settings.security
        called, own = _called_ae_title(event.assoc), self.settings.node.ae_title
        if called != own:
            reason, rsd = f"called AE title {called!r} is not this node's ({own})", _REJECT_CALLED
        elif not security.allows_calling_ae(peer.ae_title):
            reason, rsd = f"calling AE title {peer.ae_title!r} is not allowed", _REJECT_CALLING_AE
        elif not security.allows_host(peer.address):
            reason, rsd = f"peer address {peer.address} is not allowed", _REJECT_NO_REASON
        else:
            return
        log.warning("association from %s rejected: %s", peer, reason)
        # Audited first: once the peer has its answer, the record must already exist.
        self._record(
            AuditEvent.ASSOCIATION_REJECTED,
            Outcome.FAILURE,
            peer,
            reason=reason,
            details=_tls_details(event.assoc) or None,
        )
        event.assoc.acse.send_reject(*rsd)
        # As pynetdicom does for its own rejections: wait until the A-ASSOCIATE-RJ is on
        # the wire and the DUL idle, or closing the socket races it and the peer sees an
        # abort instead of the reason.
        event.assoc.kill()

    def _on_accepted(self, event: Any) -> None:
        peer = Peer.of(event.assoc)
        contexts = sorted({str(cx.abstract_syntax) for cx in event.assoc.accepted_contexts})
        self._record(
            AuditEvent.ASSOCIATION_ACCEPTED,
            Outcome.SUCCESS,
            peer,
            details={"contexts": contexts, **_tls_details(event.assoc)},
        )

    def _on_handshake_failed(self, address: str, port: int, reason: str) -> None:
        # Called in the peer's own thread; there is no association, so no AE title.
        peer = Peer("", address, port)
        log.warning("connection from %s:%d refused: %s", address, port, reason)
        self._record(
            AuditEvent.ASSOCIATION_REJECTED,
            Outcome.FAILURE,
            peer,
            reason=reason,
            details={"tls": True},
        )

    def _on_rejected(self, event: Any) -> None:
        # pynetdicom's own rejections; the allow-lists reject in _on_requested.
        peer = Peer.of(event.assoc)
        reason = "association limit reached" if self._at_limit(event.assoc) else "rejected"
        log.warning("association from %s rejected: %s", peer, reason)
        self._record(
            AuditEvent.ASSOCIATION_REJECTED,
            Outcome.FAILURE,
            peer,
            reason=reason,
            details=_tls_details(event.assoc) or None,
        )

    def _at_limit(self, assoc: Any) -> bool:
        acceptors = [a for a in assoc.ae.active_associations if a.is_acceptor]
        return len(acceptors) > self.settings.node.max_associations

    def _on_echo(self, event: Any) -> int:
        return int(StoreStatus.SUCCESS)

    # --- C-STORE -----------------------------------------------------------------------

    def _on_store(self, event: Any) -> Dataset:
        started = time.perf_counter()
        peer = Peer.of(event.assoc)
        request = event.request
        sop_instance_uid = str(request.AffectedSOPInstanceUID or "")
        # Whatever this film makes go wrong, its patient values stay out of the log, the
        # audit reasons and the answer.
        with screening(_screen_of(event)):
            reply = self._answer(event, peer, sop_instance_uid)
        self.metrics.store_answered(int(reply.Status), time.perf_counter() - started)
        return reply

    def _answer(self, event: Any, peer: Peer, sop_instance_uid: str) -> Dataset:
        try:
            return self._receive(event, peer, sop_instance_uid)
        except Refusal as refusal:
            log.warning(
                "instance %s from %s refused (0x%04X): %s",
                sop_instance_uid,
                peer,
                refusal.status,
                refusal.comment,
            )
            self._record(
                AuditEvent.INSTANCE_REFUSED,
                Outcome.FAILURE,
                peer,
                sop_instance_uid=sop_instance_uid or None,
                reason=refusal.comment,
                details={"status": f"0x{refusal.status:04X}"},
            )
            return answer(refusal.status, screen_text(refusal.comment))
        except Exception:
            # A fault of the node itself: the sender keeps the image and may retry.
            log.exception("instance %s from %s: internal error", sop_instance_uid, peer)
            self._record(
                AuditEvent.INSTANCE_REFUSED,
                Outcome.FAILURE,
                peer,
                sop_instance_uid=sop_instance_uid or None,
                reason="internal error; see the node's log",
                details={"status": f"0x{StoreStatus.PROCESSING_FAILURE:04X}"},
            )
            return answer(StoreStatus.PROCESSING_FAILURE, "Internal error in pacsnode")

    def _receive(self, event: Any, peer: Peer, sop_instance_uid: str) -> Dataset:
        # The data set is already on disk, streamed there by the intake (see start()).
        received = Path(event.dataset_path)
        incoming = self.intake.take(received)
        if incoming is None:
            raise RuntimeError(f"{received} did not arrive through the intake")
        incoming.close()
        sop_class_uid = str(event.request.AffectedSOPClassUID or "")
        if sop_class_uid not in FILM_SOP_CLASSES:
            name = UID(sop_class_uid).name if sop_class_uid else "no SOP class"
            raise Refusal(
                StoreStatus.SOP_CLASS_NOT_SUPPORTED, f"{name}: pacsnode takes DX, CR, SC films"
            )
        if not is_uid(sop_instance_uid):
            raise Refusal(
                StoreStatus.CANNOT_UNDERSTAND, f"Affected SOP Instance UID {sop_instance_uid!r}"
            )
        if incoming.refusal is not None:
            raise incoming.refusal
        syntax = UID(str(event.context.transfer_syntax))
        header = self._checked_header(received, syntax, sop_class_uid, sop_instance_uid)
        selected = self.settings.filter.matches(
            modality=header.modality,
            body_part=header.body_part_examined,
            view_position=header.view_position,
            sop_class_uid=header.sop_class_uid,
        )
        if not selected and self.settings.filter.unmatched is Unmatched.REFUSE:
            raise Refusal(StoreStatus.NOT_AUTHORISED, "Not a film this node is set to analyse")
        try:
            path = self.spool.adopt(sop_instance_uid, received)
        except SpoolFullError as exc:
            raise Refusal(StoreStatus.OUT_OF_RESOURCES, f"Out of disk: {exc}") from exc
        except OSError as exc:
            raise Refusal(
                StoreStatus.OUT_OF_RESOURCES, f"Cannot write the spool: {exc.strerror}"
            ) from exc
        unranked = Prioritised(0, None)
        prioritised = self._priority(event, peer, header, path) if selected else unranked
        try:
            queued = self.queue.enqueue(
                sop_instance_uid=sop_instance_uid,
                study_instance_uid=header.study_instance_uid,
                series_instance_uid=header.series_instance_uid,
                sop_class_uid=sop_class_uid,
                calling_ae=peer.ae_title,
                spool_path=path,
                analyse=selected,
                priority=prioritised.priority,
            )
        except SQLAlchemyError as exc:
            log.error("queue unavailable for %s: %s", sop_instance_uid, exc)
            raise Refusal(StoreStatus.OUT_OF_RESOURCES, "Queue database unavailable") from exc
        if selected and self.on_queued is not None:
            self.on_queued()
        event_kind = AuditEvent.INSTANCE_RECEIVED if selected else AuditEvent.INSTANCE_IGNORED
        log.info(
            "instance %s from %s %s as job %d",
            sop_instance_uid,
            peer,
            "queued" if selected else "kept unanalysed",
            queued.job.id,
        )
        self._record(
            event_kind,
            Outcome.SUCCESS,
            peer,
            sop_instance_uid=sop_instance_uid,
            study_instance_uid=header.study_instance_uid,
            job_id=queued.job.id,
            reason=None if selected else "not selected by the filter",
            details={
                "sop_class_uid": sop_class_uid,
                "transfer_syntax": header.transfer_syntax_uid,
                "bytes": incoming.received,
                "resent": queued.existed,
                "requeued": queued.requeued,
                "job_status": queued.job.status.value,
                "priority": queued.job.priority,
                "priority_rule": None if prioritised.rule is None else prioritised.rule.name,
            },
        )
        return answer(StoreStatus.SUCCESS)

    def _priority(self, event: Any, peer: Peer, header: FilmHeader, path: Path) -> Prioritised:
        """The job's priority by the ``[[priority]]`` rules; 0 if they cannot be applied
        (a film is never refused for its priority)."""
        try:
            return rule_priority(
                self.settings.priority,
                path=path,
                calling_ae=peer.ae_title,
                modality=header.modality,
                request=request_priority(getattr(event.request, "Priority", None)),
            )
        except Exception:
            log.exception("priority rules failed for %s; priority 0", header.sop_instance_uid)
            return Prioritised(0, None)

    def _checked_header(
        self, path: Path, syntax: UID, sop_class_uid: str, sop_instance_uid: str
    ) -> FilmHeader:
        try:
            if syntax == DeflatedExplicitVRLittleEndian:
                header = self._inflated_header(path)
            else:
                with path.open("rb") as stream:
                    size = os.fstat(stream.fileno()).st_size
                    header = inspect_film(stream)
                if syntax.is_encapsulated and size <= _CHECKED_IN_MEMORY:
                    # A damaged codestream shows only when decoded: no 0000 for it.
                    self.decode_checks.check(path)
        except TimeoutError as exc:
            raise Refusal(
                StoreStatus.OUT_OF_RESOURCES, f"Pixel data check: {exc}; send again later"
            ) from exc
        except ImageReadError as exc:
            raise refusal_for_read_error(exc) from exc
        mismatch = StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS
        if header.sop_instance_uid != sop_instance_uid:
            raise Refusal(mismatch, "SOP Instance UID differs from the C-STORE request")
        if header.sop_class_uid != sop_class_uid:
            raise Refusal(mismatch, "SOP Class UID differs from the C-STORE request")
        for name, value in (
            ("Study Instance UID", header.study_instance_uid),
            ("Series Instance UID", header.series_instance_uid),
        ):
            if not is_uid(value):
                raise Refusal(mismatch, f"{name} missing or malformed")
        return header

    def _inflated_header(self, path: Path) -> FilmHeader:
        """The header of a deflated film, read from a copy inflated within the bound."""
        copy, stream = self.spool.open_incoming()
        try:
            with stream:
                inflate_file(path, stream, self.intake.max_dataset)
            with copy.open("rb") as inflated:
                header = inspect_film(inflated)
        except TooLargeInflated as exc:
            raise Refusal(
                StoreStatus.OUT_OF_RESOURCES,
                f"Data set larger than {exc.limit // _MIB} MiB once inflated "
                "(max_dataset_mb of this node)",
            ) from exc
        except InflateError as exc:
            raise Refusal(StoreStatus.CANNOT_UNDERSTAND, f"Deflated data set: {exc}") from exc
        except OSError as exc:
            raise Refusal(
                StoreStatus.OUT_OF_RESOURCES, f"Cannot write the spool: {exc.strerror}"
            ) from exc
        finally:
            copy.unlink(missing_ok=True)
        return dataclasses.replace(header, transfer_syntax_uid=str(DeflatedExplicitVRLittleEndian))

    # --- audit -------------------------------------------------------------------------

    def _record(self, event: AuditEvent, outcome: Outcome, peer: Peer, **fields: Any) -> None:
        # An audit failure must not turn a durably received film into a refusal, nor kill
        # the association thread: log it loudly instead.
        try:
            self.audit.record(event, outcome, actor=str(peer), **fields)
        except Exception:
            log.exception("audit entry %s for %s could not be written", event.value, peer)


def _screen_of(event: Any) -> PatientScreen:
    """The patient screen of the film a C-STORE carries, read before the file moves."""
    try:
        source: Path | bytes = Path(event.dataset_path)  # received in chunks, on disk
    except AttributeError:
        source = event.encoded_dataset()
    return PatientScreen.read(source)
