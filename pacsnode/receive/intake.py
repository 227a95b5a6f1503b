"""Bounded input: no PDU longer than the node offers, and each C-STORE's data set streamed
into the spool's incoming directory within a byte budget instead of held in memory.

pynetdicom reads a PDU's 32-bit length without checking it, and with
``STORE_RECV_CHUNKED_DATASET`` writes the data set to a temporary file with no limit;
:class:`Intake` hooks each association to bound both.
"""

from __future__ import annotations

import contextlib
import logging
import struct
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Final

from pynetdicom import _config, dimse_messages

from pacsnode.receive.spool import Spool, SpoolFullError
from pacsnode.receive.statuses import Refusal, StoreStatus

__all__ = ["MAX_CONTROL_PDU", "IncomingDataSet", "Intake"]

log = logging.getLogger(__name__)

_MIB: Final = 1024 * 1024
_P_DATA_TF: Final = 0x04
_PDU_TYPES: Final = frozenset(range(0x01, 0x08))

MAX_CONTROL_PDU: Final = _MIB
"""Longest PDU other than P-DATA-TF accepted, bytes, when ``max_pdu_kb`` is lower: an
A-ASSOCIATE-RQ with every storage context and syntax stays well below it."""

# The data set the DIMSE layer is decoding, per DUL thread: pynetdicom creates the file
# it streams into by calling ``NamedTemporaryFile`` with no way to say where or for whom.
_CURRENT = threading.local()
_ORIGINAL_TEMPORARY_FILE: Final = dimse_messages.NamedTemporaryFile

AbortReporter = Callable[[Any, str], None]
"""Told the association and why the node aborts it; writes the audit row."""

HeldBytes = Callable[[str], int]
"""Bytes the unfinished films of a calling AE hold in the spool."""


class IncomingDataSet:
    """One C-STORE data set arriving in the spool's incoming directory.

    pynetdicom writes to it as to the temporary file it would make itself (``write``,
    ``file.flush``, ``close``, ``name``). Past ``limit`` bytes, or when writing fails, it
    keeps counting but writes no more and empties its file; :attr:`refusal` says why.

    Parameters
    ----------
    path
        Its file.
    stream
        The file open for writing, unbuffered; None when it could not be created.
    calling_ae
        The sender, for the per-AE share of the spool.
    limit
        Bytes accepted, file meta included.
    over_limit
        The refusal once more than ``limit`` bytes arrive.
    refusal
        A refusal decided before any byte arrived.
    """

    def __init__(
        self,
        path: Path,
        stream: IO[bytes] | None,
        calling_ae: str,
        limit: int,
        over_limit: Refusal,
        refusal: Refusal | None = None,
    ) -> None:
        self.path = path
        self.name = str(path)
        self.calling_ae = calling_ae
        self.limit = limit
        self.received = 0
        self.refusal = refusal
        self._stream = stream
        self._over_limit = over_limit
        self.assoc: Any = None

    @property
    def file(self) -> IncomingDataSet:
        # pynetdicom flushes ``_data_set_file.file`` after each fragment.
        return self

    @property
    def held(self) -> int:
        """Bytes it occupies on disk."""
        return 0 if self.refusal is not None else self.received

    def write(self, data: bytes | bytearray | memoryview) -> int:
        size = len(data)
        self.received += size
        if self.refusal is not None:
            return size
        if self.received > self.limit:
            self._drop(self._over_limit)
        elif self._stream is not None:
            try:
                self._stream.write(data)
            except OSError as exc:
                self._drop(
                    Refusal(StoreStatus.OUT_OF_RESOURCES, f"Cannot write the spool: {exc.strerror}")
                )
        return size

    def flush(self) -> None:
        """Nothing to flush: the file is unbuffered."""

    def close(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(OSError):
                self._stream.close()

    def discard(self) -> None:
        """Close and remove the file."""
        self.close()
        with contextlib.suppress(OSError):
            self.path.unlink()

    def _drop(self, refusal: Refusal) -> None:
        # Keep reading to the end of the message, so the sender gets a status, but give
        # the disk back now.
        self.refusal = refusal
        if self._stream is not None:
            with contextlib.suppress(OSError):
                self._stream.truncate(0)


class Intake:
    """Bounds what the listener's associations may send.

    Parameters
    ----------
    spool
        Where data sets arrive.
    max_pdu
        Longest P-DATA-TF PDU accepted, bytes (the maximum receive length offered).
    max_dataset
        Largest data set accepted, bytes.
    share_per_ae
        The largest part of the spool's usable space that one calling AE's unfinished
        films may hold; 1 sets no limit.
    held_by
        Bytes a calling AE's unfinished films hold in the spool.
    on_abort
        Told when an association is aborted for a PDU over the limit.
    """

    def __init__(
        self,
        spool: Spool,
        *,
        max_pdu: int,
        max_dataset: int,
        share_per_ae: float,
        held_by: HeldBytes,
        on_abort: AbortReporter,
    ) -> None:
        self.spool = spool
        self.max_pdu = max_pdu
        self.max_dataset = max_dataset
        self.share_per_ae = share_per_ae
        self.held_by = held_by
        self.on_abort = on_abort
        self._arriving: dict[str, IncomingDataSet] = {}
        self._lock = threading.Lock()
        _install()

    # --- per association -----------------------------------------------------------

    def attach(self, assoc: Any) -> None:
        """Bound an association's PDUs and stream its data sets here; call before it
        starts (``EVT_CONN_OPEN``)."""
        dul = assoc.dul
        dul._read_pdu_data = lambda: _read_bounded_pdu(dul, self.pdu_limit, self._too_long)
        receive = assoc.dimse.receive_primitive

        def receive_primitive(primitive: Any) -> None:
            _CURRENT.target = (self, assoc)
            try:
                receive(primitive)
            finally:
                _CURRENT.target = None

        assoc.dimse.receive_primitive = receive_primitive

    def detach(self, assoc: Any) -> None:
        """Remove what an ended association left half-received (``EVT_CONN_CLOSE``)."""
        with self._lock:
            left = [item for item in self._arriving.values() if item.assoc is assoc]
            for item in left:
                del self._arriving[item.name]
        for item in left:
            item.discard()

    def take(self, path: Path | str) -> IncomingDataSet | None:
        """The data set received at ``path``, now the caller's to keep or remove."""
        with self._lock:
            return self._arriving.pop(str(path), None)

    def pdu_limit(self, pdu_type: int) -> int:
        """Longest PDU of this type accepted, bytes."""
        return self.max_pdu if pdu_type == _P_DATA_TF else max(self.max_pdu, MAX_CONTROL_PDU)

    def _too_long(self, dul: Any, pdu_type: int, length: int) -> None:
        reason = (
            f"PDU of {length} bytes (type 0x{pdu_type:02X}) exceeds the "
            f"{self.pdu_limit(pdu_type)} bytes allowed (max_pdu_kb)"
        )
        self.on_abort(dul.assoc, reason)

    # --- data sets -------------------------------------------------------------------

    def open(self, assoc: Any) -> IncomingDataSet:
        """A data set about to arrive on ``assoc``, with the budget it may use."""
        ae = str(assoc.requestor.ae_title or "").strip()
        try:
            path, stream = self.spool.open_incoming()
        except OSError as exc:
            log.error("cannot create an incoming file in %s: %s", self.spool.incoming_dir, exc)
            path = self.spool.incoming_dir / f"unwritable-{uuid.uuid4().hex}.dcm"  # never made
            refusal = Refusal(StoreStatus.OUT_OF_RESOURCES, f"Cannot write the spool: {exc}")
            return self._register(IncomingDataSet(path, None, ae, 0, refusal, refusal), assoc)
        limit, over_limit, refusal = self._budget(ae)
        return self._register(IncomingDataSet(path, stream, ae, limit, over_limit, refusal), assoc)

    def _register(self, item: IncomingDataSet, assoc: Any) -> IncomingDataSet:
        item.assoc = assoc
        with self._lock:
            self._arriving[item.name] = item
        return item

    def _budget(self, ae: str) -> tuple[int, Refusal, Refusal | None]:
        """(limit, refusal past it, refusal now) for a data set from ``ae``."""
        mib = self.max_dataset // _MIB
        limit = self.max_dataset
        over = Refusal(
            StoreStatus.OUT_OF_RESOURCES,
            f"Data set larger than {mib} MiB (max_dataset_mb of this node)",
        )
        try:
            room = self.spool.check_free()
        except SpoolFullError as exc:
            return 0, over, Refusal(StoreStatus.OUT_OF_RESOURCES, f"Out of disk: {exc}")
        except OSError as exc:
            return 0, over, Refusal(StoreStatus.OUT_OF_RESOURCES, f"Cannot write the spool: {exc}")
        if room < limit:
            limit = room
            over = Refusal(
                StoreStatus.OUT_OF_RESOURCES,
                f"Out of disk: the data set would leave less than {self.spool.min_free_mb} "
                "MiB free",
            )
        if self.share_per_ae < 1.0:
            held = self._held(ae)
            allowance = int(self.share_per_ae * (room + held)) - held
            share = Refusal(
                StoreStatus.OUT_OF_RESOURCES,
                f"Spool share of calling AE {ae!r} used up ({held // _MIB} MiB waiting, "
                f"max_spool_share_per_ae {self.share_per_ae:g}); retry later",
            )
            if allowance <= 0:
                return 0, share, share
            if allowance < limit:
                limit, over = allowance, share
        return limit, over, None

    def _held(self, ae: str) -> int:
        with self._lock:
            arriving = sum(item.held for item in self._arriving.values() if item.calling_ae == ae)
        try:
            waiting = self.held_by(ae)
        except Exception:
            # The queue's database decides later whether the film can be kept at all.
            log.exception("cannot sum the spool files of calling AE %r", ae)
            waiting = 0
        return arriving + waiting


def _install() -> None:
    """Make pynetdicom stream C-STORE data sets into a hooked association's intake."""
    _config.STORE_RECV_CHUNKED_DATASET = True
    dimse_messages.NamedTemporaryFile = _temporary_file


def _temporary_file(*args: Any, **kwargs: Any) -> Any:
    target = getattr(_CURRENT, "target", None)
    if target is None:  # an association not hooked (another SCP in this process)
        return _ORIGINAL_TEMPORARY_FILE(*args, **kwargs)
    intake, assoc = target
    return intake.open(assoc)


def _read_bounded_pdu(
    dul: Any, limit_for: Callable[[int], int], too_long: Callable[[Any, int, int], None]
) -> None:
    """pynetdicom 3.0's ``DULServiceProvider._read_pdu_data``, with the length bounded.

    A PDU longer than allowed is not read: the state machine gets Evt19 (invalid PDU),
    which aborts the association (PS3.8 §9.2, AA-8).
    """
    sock = dul.socket
    if getattr(dul, "_pacsnode_refused", False):
        # What follows a refused PDU is its unread body, not PDUs: reading it as headers
        # would refuse (and audit) garbage. The abort is sent; end the transport.
        dul.event_queue.put("Evt17")
        return
    try:
        header = sock.recv(6)
    except (OSError, TimeoutError):
        dul.event_queue.put("Evt17")  # transport closed
        return
    if len(header) != 6:
        dul.event_queue.put("Evt17")
        return
    pdu_type, _, length = struct.unpack(">BBL", header)
    if pdu_type not in _PDU_TYPES:
        log.error("unknown PDU type 0x%02X received", pdu_type)
        dul.event_queue.put("Evt19")
        return
    if length > limit_for(pdu_type):
        log.error("PDU of %d bytes (type 0x%02X) is over the limit; aborting", length, pdu_type)
        dul._pacsnode_refused = True
        too_long(dul, pdu_type, length)
        dul.event_queue.put("Evt19")
        return
    try:
        body = sock.recv(length)
    except (OSError, TimeoutError):
        dul.event_queue.put("Evt17")
        return
    if len(body) != length:
        dul.event_queue.put("Evt17")  # the peer closed mid-PDU
        return
    try:
        pdu, event = dul._decode_pdu(header + body)
    except Exception:
        log.exception("unable to decode a received PDU")
        dul.event_queue.put("Evt19")
        return
    dul.event_queue.put(event)
    dul._recv_pdu.put(pdu)
