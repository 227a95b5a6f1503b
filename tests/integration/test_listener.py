"""The storage SCP against an in-process pynetdicom SCU on a free port: what it keeps,
what it refuses with which status, and what it writes to the audit log."""

from __future__ import annotations

import io
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pynetdicom._config
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from pacsnode.audit import AuditEvent, AuditLog, Outcome
from pacsnode.config import load_settings
from pacsnode.db import create_schema, make_engine
from pacsnode.durable import write_durably
from pacsnode.jobs import JobQueue, JobStatus
from pacsnode.receive import Spool, SpoolFullError, StorageSCP, StoreStatus
from tests.films import (
    NEEDS_DCMTK,
    bare_dataset_bytes,
    encode,
    film_pixels,
    make_film,
    make_secondary_capture,
    to_bytes,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Listener:
    def __init__(self, tmp_path: Path, **overrides: str) -> None:
        env = {
            "PACSNODE_STORAGE__DATA_DIR": str(tmp_path / "data"),
            "PACSNODE_STORAGE__MIN_FREE_MB": "1",
            "PACSNODE_NODE__HOST": "127.0.0.1",
            "PACSNODE_NODE__PORT": str(free_port()),
            "PACSNODE_SECURITY__ALLOWED_CALLING_AETS": "TESTSCU",
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

    def associate(self, sop_class: str, syntax: str, calling: str = "TESTSCU"):
        ae = AE(ae_title=calling)
        ae.add_requested_context(sop_class, syntax)
        ae.add_requested_context(Verification)
        return ae.associate("127.0.0.1", self.port, ae_title="PACSNODE")

    def store(self, ds: Dataset, calling: str = "TESTSCU") -> Dataset:
        syntax = ds.file_meta.TransferSyntaxUID
        assoc = self.associate(ds.SOPClassUID, syntax, calling)
        assert assoc.is_established
        try:
            return assoc.send_c_store(ds)
        finally:
            assoc.release()

    def events(self) -> list[AuditEvent]:
        return [entry.event for entry in reversed(self.audit.query(limit=1000))]

    def spool_files(self) -> list[Path]:
        return sorted(p for p in self.settings.storage.spool_dir.rglob("*") if p.is_file())


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    node = Listener(tmp_path)
    yield node
    node.scp.stop()


def _film(uid_suffix: str = "1") -> Dataset:
    ds = make_film()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = (
        f"1.2.826.0.1.3680043.8.498.7{uid_suffix}"
    )
    return ds


def test_a_film_is_spooled_byte_for_byte_and_queued(listener: Listener) -> None:
    ds = _film()
    status = listener.store(ds)
    assert status.Status == StoreStatus.SUCCESS
    job = listener.queue.find(ds.SOPInstanceUID)
    assert job is not None and job.status is JobStatus.QUEUED and job.calling_ae == "TESTSCU"
    assert job.study_instance_uid == ds.StudyInstanceUID
    kept = dcmread(job.spool_path)
    assert kept.SOPInstanceUID == ds.SOPInstanceUID
    assert kept.PixelData == ds.PixelData
    assert listener.spool_files() == [job.spool_path]  # no temporary left behind
    assert listener.events() == [
        AuditEvent.ASSOCIATION_ACCEPTED,
        AuditEvent.INSTANCE_RECEIVED,
    ]
    received = listener.audit.query(event=AuditEvent.INSTANCE_RECEIVED)[0]
    assert received.actor.startswith("TESTSCU@127.0.0.1:")
    assert received.job_id == job.id and received.study_instance_uid == ds.StudyInstanceUID


def test_a_resent_instance_is_one_job(listener: Listener) -> None:
    ds = _film()
    assert listener.store(ds).Status == 0 and listener.store(ds).Status == 0
    assert len(listener.queue.list()) == 1
    received = listener.audit.query(event=AuditEvent.INSTANCE_RECEIVED)
    assert [entry.details["resent"] for entry in reversed(received)] == [False, True]


@pytest.mark.parametrize(
    ("syntax", "bits"),
    [
        (DeflatedExplicitVRLittleEndian, 12),
        (RLELossless, 12),
        pytest.param(JPEGBaseline8Bit, 8, marks=NEEDS_DCMTK),
        pytest.param(JPEGLosslessSV1, 12, marks=NEEDS_DCMTK),
        (JPEGLSLossless, 12),
        (JPEG2000Lossless, 12),
    ],
)
def test_compressed_films_are_accepted_as_sent(listener: Listener, syntax: str, bits: int) -> None:
    film = make_film(film_pixels(bits))
    film.SOPInstanceUID = film.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.71"
    ds = dcmread(io.BytesIO(encode(film, syntax)))
    assert ds.file_meta.TransferSyntaxUID == syntax
    assert listener.store(ds).Status == StoreStatus.SUCCESS
    job = listener.queue.find(ds.SOPInstanceUID)
    assert job is not None
    assert dcmread(job.spool_path).file_meta.TransferSyntaxUID == syntax


def test_associations_beyond_the_limit_are_rejected_and_audited(tmp_path: Path) -> None:
    node = Listener(tmp_path, PACSNODE_NODE__MAX_ASSOCIATIONS="1")
    try:
        first = node.associate(Verification, ExplicitVRLittleEndian)
        assert first.is_established
        second = node.associate(Verification, ExplicitVRLittleEndian)
        assert second.is_rejected
        first.release()
        rejected = node.audit.query(event=AuditEvent.ASSOCIATION_REJECTED)
        assert [entry.reason for entry in rejected] == ["association limit reached"]
    finally:
        node.scp.stop()


def test_a_calling_ae_off_the_allow_list_is_rejected(listener: Listener) -> None:
    assoc = listener.associate(Verification, ExplicitVRLittleEndian, calling="INTRUDER")
    assert assoc.is_rejected
    rejected = listener.audit.query(event=AuditEvent.ASSOCIATION_REJECTED)
    assert len(rejected) == 1 and "INTRUDER" in (rejected[0].reason or "")
    assert rejected[0].outcome is Outcome.FAILURE
    # ... and the node still serves the allowed.
    assoc = listener.associate(Verification, ExplicitVRLittleEndian)
    assert assoc.is_established and assoc.send_c_echo().Status == 0
    assoc.release()


def test_a_peer_address_off_the_allow_list_is_rejected(tmp_path: Path) -> None:
    node = Listener(tmp_path, PACSNODE_SECURITY__ALLOWED_HOSTS="10.0.0.0/8")
    try:
        assert node.associate(Verification, ExplicitVRLittleEndian).is_rejected
        rejected = node.audit.query(event=AuditEvent.ASSOCIATION_REJECTED)
        assert "127.0.0.1 is not allowed" in (rejected[0].reason or "")
    finally:
        node.scp.stop()


def test_low_disk_refuses_with_a700_and_keeps_nothing(tmp_path: Path) -> None:
    node = Listener(tmp_path, PACSNODE_STORAGE__MIN_FREE_MB=str(10**9))
    try:
        status = node.store(_film())
        assert status.Status == StoreStatus.OUT_OF_RESOURCES
        assert "MiB free" in status.ErrorComment
        assert node.spool_files() == [] and node.queue.list() == ()
        refused = node.audit.query(event=AuditEvent.INSTANCE_REFUSED)[0]
        assert refused.details == {"status": "0xA700"}
    finally:
        node.scp.stop()


def test_a_film_without_pixel_data_gets_a900(listener: Listener) -> None:
    ds = _film()
    del ds.PixelData
    status = listener.store(ds)
    assert status.Status == StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert "Pixel Data" in status.ErrorComment
    assert listener.spool_files() == [] and listener.queue.list() == ()
    assert AuditEvent.INSTANCE_REFUSED in listener.events()


def test_a_ct_image_is_refused_as_a_sop_class_not_taken(listener: Listener) -> None:
    ds = _film()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.Modality = "CT"
    status = listener.store(ds)
    assert status.Status == StoreStatus.SOP_CLASS_NOT_SUPPORTED
    assert "CT Image Storage" in status.ErrorComment
    assert listener.queue.list() == ()


def test_non_dicom_bytes_get_c000_and_the_node_goes_on(
    listener: Listener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A valid file meta (so pynetdicom sends it) around a data set of random bytes.
    good = _film("9")
    whole = to_bytes(good)
    meta_end = len(whole) - len(bare_dataset_bytes(good, implicit_vr=False))
    assert whole[meta_end - 4 : meta_end] != b"" and whole[128:132] == b"DICM"
    path = tmp_path / "garbage.dcm"
    path.write_bytes(whole[:meta_end] + os.urandom(4096))
    # Chunked sending streams the bytes after the file meta as they are, unparsed.
    monkeypatch.setattr(pynetdicom._config, "STORE_SEND_CHUNKED_DATASET", True)
    assoc = listener.associate(good.SOPClassUID, ExplicitVRLittleEndian)
    status = assoc.send_c_store(path)
    assoc.release()
    assert StoreStatus.CANNOT_UNDERSTAND <= status.Status <= 0xCFFF
    assert listener.queue.list() == ()
    assert listener.store(_film()).Status == StoreStatus.SUCCESS


def test_unmatched_films_are_kept_unanalysed_or_refused_as_configured(tmp_path: Path) -> None:
    kept = Listener(tmp_path / "a", PACSNODE_FILTER__BODY_PARTS="CSPINE")
    try:
        assert kept.store(_film()).Status == StoreStatus.SUCCESS
        job = kept.queue.list()[0]
        assert job.status is JobStatus.IGNORED and job.spool_path.is_file()
        assert AuditEvent.INSTANCE_IGNORED in kept.events()
    finally:
        kept.scp.stop()
    refused = Listener(
        tmp_path / "b", PACSNODE_FILTER__BODY_PARTS="CSPINE", PACSNODE_FILTER__UNMATCHED="refuse"
    )
    try:
        assert refused.store(_film()).Status == StoreStatus.NOT_AUTHORISED
        assert refused.queue.list() == () and refused.spool_files() == []
    finally:
        refused.scp.stop()


def test_an_eight_bit_secondary_capture_without_spacing_is_taken(tmp_path: Path) -> None:
    # Modality OT is not in the default filter: kept unanalysed unless the site adds it.
    node = Listener(tmp_path, PACSNODE_FILTER__MODALITIES="DX,CR,OT")
    try:
        sc = make_secondary_capture(film_pixels(8))
        assert node.store(sc).Status == StoreStatus.SUCCESS
        job = node.queue.find(sc.SOPInstanceUID)
        assert job is not None and job.status is JobStatus.QUEUED
        rgb = make_secondary_capture(
            np.repeat(film_pixels(8)[..., None], 3, axis=2), photometric="RGB"
        )
        rgb.SOPInstanceUID = rgb.file_meta.MediaStorageSOPInstanceUID = (
            "1.2.826.0.1.3680043.8.498.72"
        )
        status = node.store(rgb)
        assert status.Status == StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS
        assert status.ErrorComment.startswith("Colour image")
    finally:
        node.scp.stop()


def test_spool_refuses_names_that_are_not_uids(tmp_path: Path) -> None:
    spool = Spool(tmp_path, min_free_mb=0)
    with pytest.raises(ValueError, match="not a DICOM UID"):
        spool.path_for("../../etc/passwd")
    with pytest.raises(SpoolFullError):
        Spool(tmp_path, min_free_mb=10**9).store("1.2.3", b"x")


def test_durable_write_replaces_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "file.bin"
    write_durably(target, b"first")
    write_durably(target, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]
