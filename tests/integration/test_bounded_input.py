"""Bounded input at the listener: data set and PDU size limits, deflate bombs, the called
AE title, each sender's share of the spool, and the memory a 500 MB film costs."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pynetdicom._config
import pytest
from pydicom.dataset import Dataset
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.pdu_primitives import MaximumLengthNotification
from pynetdicom.sop_class import Verification

from pacsnode.audit import AuditEvent, Outcome
from pacsnode.receive import StoreStatus
from pacsnode.receive.spool import Spool
from tests.films import make_film
from tests.integration.test_listener import Listener, free_port

MIB = 1024 * 1024
PRIVATE_CREATOR = 0x00090010
PRIVATE_BLOB = 0x00091000
PIXEL_DATA = 0x7FE00010


def _film(suffix: str) -> Dataset:
    ds = make_film()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = (
        f"1.2.826.0.1.3680043.8.498.8{suffix}"
    )
    return ds


def write_film(
    path: Path,
    ds: Dataset,
    *,
    padding: int,
    syntax: str = ExplicitVRLittleEndian,
    pixels: tuple[int, int] | None = None,
) -> Path:
    """Write ``ds`` as a file with ``padding`` zero bytes in a private OB element,
    streaming, so that a film of hundreds of MB never sits in the test's memory.

    ``pixels`` (rows, columns) replaces the pixel data by zeros of that size; ``syntax``
    may be Deflated Explicit VR Little Endian, deflated as it is written.
    """
    ds = copy.deepcopy(ds)
    ds.file_meta.TransferSyntaxUID = syntax
    if pixels is not None:
        ds.Rows, ds.Columns = pixels
    pixel_bytes = ds.Rows * ds.Columns * (ds.BitsAllocated // 8)
    pixel_value = None if pixels is not None else bytes(ds.PixelData)
    del ds.PixelData
    ds.add_new(PRIVATE_CREATOR, "LO", "PACSNODE TEST")
    low, high = Dataset(), Dataset()
    for element in ds:
        (low if element.tag < PRIVATE_BLOB else high).add(element)

    with path.open("wb") as out:
        out.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(out, ds.file_meta)  # type: ignore[arg-type]
        sink = _Deflating(out) if syntax == DeflatedExplicitVRLittleEndian else out
        sink.write(_encode(low))
        sink.write(struct.pack("<HH2sHI", 0x0009, 0x1000, b"OB", 0, padding))
        _zeros(sink, padding)
        sink.write(_encode(high))
        sink.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, pixel_bytes))
        if pixel_value is not None:
            sink.write(pixel_value)
        else:
            _zeros(sink, pixel_bytes)
        if isinstance(sink, _Deflating):
            sink.close()
    return path


class _Deflating:
    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)

    def write(self, data: bytes) -> None:
        self.out.write(self.deflater.compress(data))

    def close(self) -> None:
        self.out.write(self.deflater.flush())


def _zeros(sink: IO[bytes] | _Deflating, count: int) -> None:
    chunk = bytes(min(count, 4 * MIB))
    while count > 0:
        sink.write(chunk[:count])
        count -= len(chunk)


def _encode(ds: Dataset) -> bytes:
    from pydicom.filebase import DicomBytesIO

    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    return buffer.getvalue()


def send_file(port: int, path: Path, sop_class: str, syntax: str, calling: str = "TESTSCU"):
    """C-STORE a file as it is on disk (pynetdicom's chunked send), return the status."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(sop_class, syntax)
    previous = pynetdicom._config.STORE_SEND_CHUNKED_DATASET
    pynetdicom._config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title="PACSNODE")
        assert assoc.is_established
        try:
            return assoc.send_c_store(path)
        finally:
            assoc.release()
    finally:
        pynetdicom._config.STORE_SEND_CHUNKED_DATASET = previous


@pytest.fixture
def small_node(tmp_path: Path) -> Iterator[Listener]:
    node = Listener(
        tmp_path,
        PACSNODE_NODE__MAX_DATASET_MB="1",
        PACSNODE_NODE__MAX_PDU_KB="16",
        PACSNODE_SECURITY__ALLOWED_CALLING_AETS="TESTSCU,OTHERSCU",
    )
    yield node
    node.scp.stop()


def _all_files(node: Listener) -> list[Path]:
    # The spool with its incoming directory: nothing half-received may stay.
    return sorted(p for p in node.settings.storage.spool_dir.rglob("*") if p.is_file())


def _refusals(node: Listener) -> list[tuple[str | None, dict | None]]:
    return [
        (entry.reason, entry.details)
        for entry in node.audit.query(event=AuditEvent.INSTANCE_REFUSED)
    ]


# --- data set size ---------------------------------------------------------------------------


def test_a_data_set_over_max_dataset_mb_gets_a700_and_nothing_is_kept(
    small_node: Listener, tmp_path: Path
) -> None:
    film = write_film(tmp_path / "big.dcm", _film("1"), padding=2 * MIB)
    status = send_file(small_node.port, film, small_node_sop(), ExplicitVRLittleEndian)
    assert status.Status == StoreStatus.OUT_OF_RESOURCES
    assert "larger than 1 MiB" in status.ErrorComment
    assert _all_files(small_node) == [] and small_node.queue.list() == ()
    [(reason, details)] = _refusals(small_node)
    assert "max_dataset_mb" in (reason or "") and details == {"status": "0xA700"}
    # Just under the bound, on the same association kind: kept.
    film = write_film(tmp_path / "fits.dcm", _film("2"), padding=MIB // 2)
    assert send_file(small_node.port, film, small_node_sop(), ExplicitVRLittleEndian).Status == 0
    assert len(small_node.queue.list()) == 1


def small_node_sop() -> str:
    return str(make_film().SOPClassUID)


def test_a_deflate_bomb_is_refused_without_being_inflated(
    small_node: Listener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 MB of zeros deflate to about 200 kB; the bound is 1 MiB inflated."""
    bomb = write_film(
        tmp_path / "bomb.dcm",
        _film("3"),
        padding=200 * 1000 * 1000,
        syntax=DeflatedExplicitVRLittleEndian,
    )
    assert bomb.stat().st_size < MIB

    # Any whole-buffer inflate (pydicom's, pynetdicom's) would fail the store with 0110.
    def unbounded(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("zlib.decompress called on received data")

    monkeypatch.setattr(zlib, "decompress", unbounded)
    started = time.monotonic()
    status = send_file(small_node.port, bomb, small_node_sop(), DeflatedExplicitVRLittleEndian)
    assert status.Status == StoreStatus.OUT_OF_RESOURCES, status
    assert "once inflated" in status.ErrorComment
    assert time.monotonic() - started < 30
    assert _all_files(small_node) == [] and small_node.queue.list() == ()
    # A deflated film within the bound is taken.
    film = write_film(
        tmp_path / "small.dcm", _film("4"), padding=1000, syntax=DeflatedExplicitVRLittleEndian
    )
    status = send_file(small_node.port, film, small_node_sop(), DeflatedExplicitVRLittleEndian)
    assert status.Status == StoreStatus.SUCCESS, status
    job = small_node.queue.find(_film("4").SOPInstanceUID)
    assert job is not None and job.spool_path is not None
    # Kept as sent: deflated, the same data set after the file meta pynetdicom writes.
    sent, kept = film.read_bytes(), job.spool_path.read_bytes()
    assert kept.endswith(sent[-len(sent) + 400 :]) and b"1.2.840.10008.1.2.1.99" in kept


# --- PDU size --------------------------------------------------------------------------------


def test_a_p_data_pdu_over_max_pdu_kb_aborts_and_is_audited(small_node: Listener) -> None:
    ds = _film("5")
    ds.add_new(PRIVATE_CREATOR, "LO", "PACSNODE TEST")
    ds.add_new(PRIVATE_BLOB, "OB", bytes(100_000))
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(ds.SOPClassUID, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", small_node.port, ae_title="PACSNODE")
    assert assoc.is_established
    assert assoc.acceptor.maximum_length == 16 * 1024  # what the node offers
    # A sender that ignores it and sends PDUs of up to 1 MiB.
    for item in assoc.acceptor.user_information:
        if isinstance(item, MaximumLengthNotification):
            item.maximum_length_received = 1024 * 1024
    assert "Status" not in assoc.send_c_store(ds)  # no answer: the node aborted
    _wait_until(lambda: not assoc.is_established)
    aborted = _wait_for(small_node, AuditEvent.ASSOCIATION_ABORTED)
    assert aborted.outcome is Outcome.FAILURE and aborted.actor.startswith("TESTSCU@")
    assert "exceeds the 16384 bytes allowed (max_pdu_kb)" in (aborted.reason or "")
    # The half-received data set is gone once the association is.
    _wait_until(lambda: _all_files(small_node) == [])
    assert small_node.store(_film("6")).Status == StoreStatus.SUCCESS


def test_a_control_pdu_declaring_gigabytes_is_not_read(small_node: Listener) -> None:
    with socket.create_connection(("127.0.0.1", small_node.port), timeout=10) as sock:
        # An A-ASSOCIATE-RQ header announcing 3 GB, and then a trickle.
        sock.sendall(struct.pack(">BBL", 0x01, 0, 3_000_000_000) + b"\x00" * 1024)
        answer = sock.recv(10)
    assert answer[:1] == b"\x07"  # A-ABORT
    aborted = _wait_for(small_node, AuditEvent.ASSOCIATION_ABORTED)
    assert "3000000000 bytes (type 0x01)" in (aborted.reason or "")


# --- called AE title -------------------------------------------------------------------------


def test_an_association_to_another_called_ae_title_is_rejected(small_node: Listener) -> None:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", small_node.port, ae_title="ANOTHERNODE")
    assert assoc.is_rejected
    reply = assoc.acceptor.primitive
    # PS3.8 §9.3.4: rejected-permanent, by the service user, called AE title not recognised.
    assert (reply.result, reply.result_source, reply.diagnostic) == (0x01, 0x01, 0x07)
    [rejected] = small_node.audit.query(event=AuditEvent.ASSOCIATION_REJECTED)
    assert rejected.reason == "called AE title 'ANOTHERNODE' is not this node's (PACSNODE)"
    assert rejected.outcome is Outcome.FAILURE


# --- share of the spool ----------------------------------------------------------------------


def test_one_calling_ae_cannot_take_more_than_its_share_of_the_spool(
    tmp_path: Path,
) -> None:
    node = Listener(
        tmp_path,
        PACSNODE_SECURITY__ALLOWED_CALLING_AETS="TESTSCU,OTHERSCU",
        PACSNODE_SECURITY__MAX_SPOOL_SHARE_PER_AE="0.5",
    )
    try:
        # 4 MiB usable whatever is written: the share alone must stop the sender.
        node.scp.spool.free_mb = lambda: node.settings.storage.min_free_mb + 4.0  # type: ignore[method-assign]
        sop = small_node_sop()
        sent = []
        for number in range(4):
            film = write_film(tmp_path / f"f{number}.dcm", _film(f"2{number}"), padding=MIB)
            sent.append(send_file(node.port, film, sop, ExplicitVRLittleEndian).Status)
        # 0.5 × (4 + held) − held: 2 MiB, then 1.5, then under 1 MiB for the third film.
        assert sent == [0, 0, StoreStatus.OUT_OF_RESOURCES, StoreStatus.OUT_OF_RESOURCES]
        reason, details = _refusals(node)[-1]
        assert "Spool share of calling AE 'TESTSCU' used up" in (reason or "")
        assert details == {"status": "0xA700"}
        # Another sender still has room...
        film = write_film(tmp_path / "other.dcm", _film("30"), padding=MIB)
        assert send_file(node.port, film, sop, ExplicitVRLittleEndian, "OTHERSCU").Status == 0
        # ... and once the first sender's films are analysed, it has room again.
        for _ in range(2):
            job = node.queue.claim("test-worker", 60.0)
            assert job is not None and job.calling_ae == "TESTSCU"
            node.queue.succeed(job.id, "test-worker")
        film = write_film(tmp_path / "again.dcm", _film("31"), padding=MIB)
        assert send_file(node.port, film, sop, ExplicitVRLittleEndian).Status == 0
        assert _all_files(node) == sorted(
            j.spool_path for j in node.queue.list() if j.spool_path is not None
        )
    finally:
        node.scp.stop()


# --- safe defaults ---------------------------------------------------------------------------


def test_an_open_listener_warns_at_every_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pacsnode.receive.scp")
    open_node = Listener(
        tmp_path / "open",
        PACSNODE_NODE__HOST="0.0.0.0",
        PACSNODE_SECURITY__ALLOWED_CALLING_AETS="",
    )
    open_node.scp.stop()
    assert "accepts any calling AE title" in caplog.text
    caplog.clear()
    for name, overrides in (
        ("loopback", {"PACSNODE_SECURITY__ALLOWED_CALLING_AETS": ""}),
        ("listed", {"PACSNODE_NODE__HOST": "0.0.0.0"}),
    ):
        node = Listener(tmp_path / name, **overrides)
        node.scp.stop()
    assert "accepts any calling AE" not in caplog.text


def test_partial_data_sets_of_dead_nodes_are_cleared(tmp_path: Path) -> None:
    spool = Spool(tmp_path, min_free_mb=0)
    path, stream = spool.open_incoming()
    stream.close()
    dead = spool.incoming_dir / "999999999-abc.dcm"
    dead.write_bytes(b"partial")
    assert spool.clear_incoming() == 1
    assert sorted(spool.incoming_dir.iterdir()) == [path]  # ours: still arriving


# --- memory ----------------------------------------------------------------------------------


def _rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_receiving_a_500_mb_film_costs_under_300_mb_of_memory(tmp_path: Path) -> None:
    """The node (``pacsnode serve --role receiver``, its own process) takes a 500 MB film:
    128 MiB of pixels (8192 × 8192, 16 bit) and 372 MB in a private element."""
    film = write_film(
        tmp_path / "huge.dcm", _film("40"), padding=372 * 1000 * 1000, pixels=(8192, 8192)
    )
    assert film.stat().st_size > 500 * 1000 * 1000
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PACSNODE_")},
        "PACSNODE_STORAGE__DATA_DIR": str(tmp_path / "data"),
        "PACSNODE_STORAGE__MIN_FREE_MB": "1",
        "PACSNODE_NODE__HOST": "127.0.0.1",
        "PACSNODE_NODE__PORT": str(port),
        "PACSNODE_SECURITY__ALLOWED_CALLING_AETS": "TESTSCU",
    }
    node = subprocess.Popen(
        [sys.executable, "-m", "pacsnode", "serve", "--role", "receiver"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert node.stdout is not None
        # Start-up logs lines (the schema migration) before it listens; a node that dies
        # ends the output, so this loop ends too.
        seen = []
        while not seen or "listening" not in seen[-1]:
            line = node.stdout.readline()
            assert line, "".join(seen)
            seen.append(line)
        sop = small_node_sop()
        warm = write_film(tmp_path / "warm.dcm", _film("41"), padding=1000)
        assert send_file(port, warm, sop, ExplicitVRLittleEndian).Status == 0
        idle = _rss_kib(node.pid, "VmRSS")
        started = time.monotonic()
        status = send_file(port, film, sop, ExplicitVRLittleEndian)
        seconds = time.monotonic() - started
        assert status.Status == StoreStatus.SUCCESS, status
        peak = _rss_kib(node.pid, "VmHWM")
        above = (peak - idle) / 1024
        print(f"idle {idle / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB, {seconds:.1f} s")
        assert above < 300, f"peak {above:.0f} MiB above idle"
        kept = list((tmp_path / "data" / "spool").rglob(f"{_film('40').SOPInstanceUID}.dcm"))
        # The same data set; the file meta is pynetdicom's own, a few bytes apart.
        assert len(kept) == 1 and abs(kept[0].stat().st_size - film.stat().st_size) < 1024
    finally:
        node.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            node.wait(timeout=30)
        if node.poll() is None:
            node.kill()
            node.wait()
        if node.stdout is not None:
            node.stdout.close()


# --- helpers ---------------------------------------------------------------------------------


def _wait_until(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _wait_for(node: Listener, event: AuditEvent):  # type: ignore[no-untyped-def]
    _wait_until(lambda: bool(node.audit.query(event=event)))
    return node.audit.query(event=event)[0]
