"""No patient data in logs: films whose headers make the listener and the worker fail with
a patient value in the exception, then a search of the data directory, the log (at DEBUG)
and the audit table for every patient value.

Excluded from the search, because they carry patient data by design: the spooled film the
node accepted (the received object itself) and result objects (``results/**/*.dcm``, whose
Patient module the standard requires; none is written here, the export fails). Everything
else must be clean: the SQLite database with its journal, the spool but for that film,
every other file under the data directory, and the log.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import pynetdicom._config
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE

from pacsnode.audit import AuditEvent
from pacsnode.cli.serve import configure_logging
from pacsnode.config import load_settings
from pacsnode.jobs import JobStatus
from pacsnode.node import Node
from pacsnode.receive import StoreStatus
from pacsnode.training.phantom import make_phantom, write_phantom
from tests.films import make_film, set_raw, to_bytes
from tests.integration.test_listener import free_port
from tests.integration.test_worker import wait_for
from tests.unit.test_screen import restore_logging, save_logging

PATIENT = {
    "PatientName": "QUOXLEY-BRANDT^ZEPHYRINE",
    "PatientID": "PID77341Q",
    "PatientBirthDate": "19640229",
    "OtherPatientIDs": "OPX55123",
    "AccessionNumber": "ACC99417Z",
}
SEARCHED = [*PATIENT.values(), "QUOXLEY", "BRANDT", "ZEPHYRINE", "1964-02-29"]


def with_patient(ds: Dataset) -> Dataset:
    for keyword, value in PATIENT.items():
        setattr(ds, keyword, value)
    return ds


def found_in(data: bytes) -> list[str]:
    return [v for v in SEARCHED if re.search(re.escape(v.encode()), data, re.IGNORECASE)]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("phantom")
    return write_phantom(make_phantom(424_243, 0, "lumbar"), out, preview=False)["dicom"]


@pytest.fixture
def films(tmp_path: Path, phantom: Path) -> tuple[Path, Path]:
    """Two films, written before the log is captured (pydicom logs the malformed values
    it writes, and the test's own process is not the node)."""
    # The listener quotes a malformed Number of Frames: here, the patient's ID.
    refused = with_patient(make_film())
    set_raw(refused, "NumberOfFrames", PATIENT["PatientID"].encode())
    # The worker's export chokes on a Patient's Sex that holds the patient's name.
    accepted = with_patient(dcmread(phantom))
    set_raw(accepted, "PatientSex", PATIENT["PatientName"].encode())
    paths = tmp_path / "refused.dcm", tmp_path / "accepted.dcm"
    for ds, path in zip((refused, accepted), paths, strict=True):
        path.write_bytes(to_bytes(ds))
    return paths


@pytest.fixture
def log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    saved = save_logging()
    try:
        configure_logging("DEBUG", stream=stream)  # as `pacsnode serve --log-level DEBUG`
        yield stream
    finally:
        restore_logging(saved)


def store(port: int, path: Path) -> Dataset:
    """Send the file as it is, malformed values included (a chunked send)."""
    ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSNODE")
    assert assoc.is_established
    try:
        return assoc.send_c_store(path)
    finally:
        assoc.release()


def test_patient_values_reach_no_log_audit_entry_or_file(
    tmp_path: Path,
    films: tuple[Path, Path],
    log: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pynetdicom._config, "STORE_SEND_CHUNKED_DATASET", True)
    data = tmp_path / "data"
    settings = load_settings(
        None,
        {
            "PACSNODE_STORAGE__DATA_DIR": str(data),
            "PACSNODE_STORAGE__MIN_FREE_MB": "1",
            "PACSNODE_NODE__HOST": "127.0.0.1",
            "PACSNODE_NODE__PORT": str(free_port()),
            "PACSNODE_WORKER__MAX_ATTEMPTS": "1",
        },
    )
    node = Node(settings)
    node.start()
    try:
        assert node.address is not None
        answer = store(node.address[1], films[0])
        assert answer.Status == StoreStatus.CANNOT_UNDERSTAND
        assert answer.ErrorComment.startswith("Rows/Columns out of range for a film")
        assert store(node.address[1], films[1]).Status == StoreStatus.SUCCESS
        job = node.queue.find(dcmread(films[1], stop_before_pixels=True).SOPInstanceUID)
        assert job is not None and job.spool_path is not None
        wait_for(lambda: node.queue.get(job.id).status is JobStatus.DEAD)  # type: ignore[union-attr]
    finally:
        node.stop()

    # The failures happened, with the patient values where the exceptions put them.
    dead = node.queue.get(job.id)
    assert dead is not None and "'***' is not a valid" in (dead.last_error or "")
    refusal = node.audit.query(event=AuditEvent.INSTANCE_REFUSED)[0]
    assert "Number of Frames (0028,0008) is '***'" in (refusal.reason or "")
    text = log.getvalue()
    assert "refused (0xC000): Rows/Columns out of range for a film: Number of Frames" in text
    assert "is not a valid" in text and "Traceback" in text
    assert found_in(text.encode()) == []

    entries = node.audit.query(limit=10_000)
    assert {AuditEvent.INSTANCE_REFUSED, AuditEvent.JOB_DEAD} <= {e.event for e in entries}
    for entry in entries:
        assert found_in(repr(entry).encode()) == [], entry

    # The spooled film does carry them (the search works), and is the only file that does.
    assert set(found_in(job.spool_path.read_bytes())) >= set(PATIENT.values())
    searched = [
        path
        for path in sorted(data.rglob("*"))
        if path.is_file()
        and path != job.spool_path
        and not (path.is_relative_to(data / "results") and path.suffix == ".dcm")
    ]
    assert data / "pacsnode.db" in searched
    assert {path: found_in(path.read_bytes()) for path in searched} == {
        path: [] for path in searched
    }
