"""The node in-process: a film stored by an SCU is analysed once and its result objects
(SEG, SR, GSPS, and the burned-in capture when the destination asks) reach an in-process
storage SCP; a destination that is down gets them when it returns, without
a second analysis; bad films are dead-lettered, passing faults retried."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    ComprehensiveSRStorage,
    ExplicitVRLittleEndian,
    GrayscaleSoftcopyPresentationStateStorage,
    SecondaryCaptureImageStorage,
    SegmentationStorage,
)
from pynetdicom import AE, evt

from pacsnode.audit import AuditEvent
from pacsnode.config import load_settings
from pacsnode.jobs import DeliveryStatus, JobStatus
from pacsnode.node import Node, Role
from pacsnode.training.phantom import make_phantom, write_phantom
from tests.integration.test_listener import free_port

RESULT_CLASSES = (
    SegmentationStorage,
    ComprehensiveSRStorage,
    GrayscaleSoftcopyPresentationStateStorage,
    SecondaryCaptureImageStorage,
)


class FakePacs:
    """A real storage SCP (pynetdicom) that keeps what it receives in memory."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: list[Dataset] = []
        self._lock = threading.Lock()
        self._server = None

    def start(self) -> None:
        ae = AE(ae_title="FAKEPACS")
        for sop_class in RESULT_CLASSES:
            ae.add_supported_context(sop_class, ExplicitVRLittleEndian)
        self._server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)]
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _store(self, event: evt.Event) -> int:
        with self._lock:
            self.received.append(event.dataset)
        return 0x0000


def wait_for(condition: Callable[[], bool], seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the node")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("films")
    return write_phantom(make_phantom(424_243, 0, "lumbar"), out, preview=False)["dicom"]


@pytest.fixture
def pacs() -> Iterator[FakePacs]:
    server = FakePacs(free_port())
    yield server
    server.stop()


def _node(tmp_path: Path, pacs_port: int, role: Role = Role.ALL, send: str | None = None) -> Node:
    environ = {
        "PACSNODE_STORAGE__DATA_DIR": str(tmp_path / "data"),
        "PACSNODE_STORAGE__MIN_FREE_MB": "1",
        "PACSNODE_NODE__HOST": "127.0.0.1",
        "PACSNODE_NODE__PORT": str(free_port()),
        "PACSNODE_WORKER__BACKOFF_BASE_SECONDS": "0.2",
        "PACSNODE_WORKER__BACKOFF_MAX_SECONDS": "0.2",
        "PACSNODE_WORKER__DELIVERY_BACKOFF_BASE_SECONDS": "0.2",
        "PACSNODE_WORKER__DELIVERY_BACKOFF_MAX_SECONDS": "0.5",
        "PACSNODE_DESTINATIONS__0__NAME": "pacs",
        "PACSNODE_DESTINATIONS__0__AE_TITLE": "FAKEPACS",
        "PACSNODE_DESTINATIONS__0__HOST": "127.0.0.1",
        "PACSNODE_DESTINATIONS__0__PORT": str(pacs_port),
    }
    if send is not None:
        environ["PACSNODE_DESTINATIONS__0__SEND"] = send
    node = Node(load_settings(None, environ), role)
    node.start()
    return node


def _send(node: Node, path: Path) -> int:
    ds = dcmread(path)
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assert node.address is not None
    assoc = ae.associate("127.0.0.1", node.address[1], ae_title="PACSNODE")
    assert assoc.is_established
    status = assoc.send_c_store(ds)
    assoc.release()
    return int(status.Status)


def _events(node: Node) -> list[AuditEvent]:
    return [entry.event for entry in reversed(node.audit.query(limit=1000))]


def test_a_film_comes_back_as_every_result_object_in_its_study(
    tmp_path: Path, film: Path, pacs: FakePacs
) -> None:
    pacs.start()
    node = _node(tmp_path, pacs.port, send="seg,sr,gsps,sc")
    try:
        assert _send(node, film) == 0
        wait_for(lambda: len(pacs.received) == 4)
    finally:
        node.stop()
    source = dcmread(film, stop_before_pixels=True)
    kinds = sorted(str(ds.SOPClassUID) for ds in pacs.received)
    assert kinds == sorted(RESULT_CLASSES)
    for ds in pacs.received:
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID
    events = _events(node)
    assert events[0] is AuditEvent.NODE_STARTED and events[-1] is AuditEvent.NODE_STOPPED
    for expected in (
        AuditEvent.INSTANCE_RECEIVED,
        AuditEvent.JOB_CLAIMED,
        AuditEvent.JOB_SUCCEEDED,
    ):
        assert events.count(expected) == 1
    assert events.count(AuditEvent.RESULT_SENT) == 4
    job = node.queue.find(source.SOPInstanceUID)
    assert job is not None and job.status is JobStatus.SUCCEEDED


def test_results_wait_for_a_destination_that_is_down_without_a_second_analysis(
    tmp_path: Path, film: Path, pacs: FakePacs
) -> None:
    node = _node(tmp_path, pacs.port)  # the PACS is not listening yet
    try:
        assert _send(node, film) == 0
        wait_for(lambda: _events(node).count(AuditEvent.RESULT_FAILED) >= 2)
        failed = node.queue.list_deliveries()
        assert {d.status for d in failed} <= {DeliveryStatus.FAILED, DeliveryStatus.PENDING}
        pacs.start()
        wait_for(lambda: len(pacs.received) == 3)  # SEG, SR and GSPS: the default
        wait_for(lambda: _events(node).count(AuditEvent.RESULT_SENT) == 3)
    finally:
        node.stop()
    events = _events(node)
    assert events.count(AuditEvent.JOB_CLAIMED) == 1  # the outage did not re-run inference
    assert {d.status for d in node.queue.list_deliveries()} == {DeliveryStatus.SENT}


def test_an_unreadable_spooled_film_is_dead_lettered_at_once(
    tmp_path: Path, pacs: FakePacs
) -> None:
    node = _node(tmp_path, pacs.port, Role.WORKER)
    try:
        poison = tmp_path / "poison.dcm"
        poison.write_bytes(b"\0" * 1000)
        job = node.queue.enqueue(
            sop_instance_uid="1.2.3.4",
            study_instance_uid="1.2.3",
            series_instance_uid="1.2.3.5",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
            calling_ae="TESTSCU",
            spool_path=poison,
        ).job
        wait_for(lambda: node.queue.get(job.id).status is JobStatus.DEAD)  # type: ignore[union-attr]
    finally:
        node.stop()
    dead = node.audit.query(event=AuditEvent.JOB_DEAD)
    assert len(dead) == 1 and "ImageReadError" in (dead[0].reason or "")
    assert node.queue.get(job.id).attempts == 1  # type: ignore[union-attr]


def test_a_missing_spool_file_is_retried_then_dead_lettered(tmp_path: Path, pacs: FakePacs) -> None:
    node = _node(tmp_path, pacs.port, Role.WORKER)
    try:
        job = node.queue.enqueue(
            sop_instance_uid="1.2.3.4",
            study_instance_uid="1.2.3",
            series_instance_uid="1.2.3.5",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
            calling_ae="TESTSCU",
            spool_path=tmp_path / "gone.dcm",
        ).job
        wait_for(lambda: node.queue.get(job.id).status is JobStatus.DEAD)  # type: ignore[union-attr]
    finally:
        node.stop()
    events = _events(node)
    assert events.count(AuditEvent.JOB_FAILED) == 2 and events.count(AuditEvent.JOB_DEAD) == 1
    assert node.queue.get(job.id).attempts == 3  # type: ignore[union-attr]


def test_a_job_claimed_while_stopping_is_released_not_run(tmp_path: Path) -> None:
    from pacsnode.audit import AuditLog
    from pacsnode.config.settings import SHIPPED_MODELS_DIR
    from pacsnode.db import create_schema, make_engine
    from pacsnode.jobs import JobQueue
    from pacsnode.worker import Analyst, JobLoop

    engine = make_engine(f"sqlite:///{tmp_path / 'q.db'}")
    create_schema(engine)
    queue, audit = JobQueue(engine), AuditLog(engine)
    job = queue.enqueue(
        sop_instance_uid="1.2.3.4",
        study_instance_uid="1.2.3",
        series_instance_uid="1.2.3.5",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
        calling_ae="TESTSCU",
        spool_path=tmp_path / "film.dcm",
    ).job
    stop = threading.Event()
    stop.set()  # SIGTERM arrived between the claim and the analysis
    loop = JobLoop(
        "analysis-0",
        queue,
        audit,
        stop,
        analyst=Analyst.load(SHIPPED_MODELS_DIR, tmp_path / "results"),
        destinations=(),
        lease_seconds=60,
    )
    assert loop.step() is True
    after = queue.get(job.id)
    assert after is not None and after.status is JobStatus.QUEUED and after.lease_owner is None
    assert [e.event for e in audit.query()] == [AuditEvent.JOB_RELEASED]
    assert not (tmp_path / "results").exists()  # nothing was analysed
    engine.dispose()
