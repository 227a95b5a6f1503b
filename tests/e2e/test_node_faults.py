"""Faults end to end: crashes (kill -9) between receiving and sending, a PACS outage, a
clean SIGTERM, and what the node refuses (unknown callers, a full disk, bad datasets),
each answered with the right status and audited while the node keeps serving."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)
from pynetdicom import AE, _config

from tests.e2e.conftest import (
    Film,
    Node,
    NodeFactory,
    Orthanc,
    echoscu,
    storescu,
)

pytestmark = [pytest.mark.slow, pytest.mark.dcmtk]


def _assert_delivered_once(orthanc: Orthanc, node: Node, film: Film) -> None:
    """One SEG and one SR for ``film`` in Orthanc, still one each once the node is done."""
    orthanc.wait_for_results(film, node=node)
    node.wait_for_audit("result_sent", timeout=30)
    results = orthanc.results_for(film)
    assert len(results.segs) == 1 and len(results.srs) == 1, f"{results}\n{node.describe()}"


# --- crashes and outages -------------------------------------------------------------------


def test_film_received_before_a_crash_is_analysed_after_restart(
    node_factory: NodeFactory, orthanc: Orthanc, films: list[Film]
) -> None:
    """(a) The receiver commits the job with the C-STORE; kill -9 loses nothing."""
    film = films[0]
    node = node_factory(destinations=[orthanc], role="receiver")
    sent = storescu(film.path, node.port)
    assert sent.succeeded, f"{sent}\n{node.describe()}"
    assert node.audit("instance_received", uid=film.sop_instance_uid), node.describe()
    assert not node.audit("job_claimed"), "a receiver must not analyse"

    node.kill9()
    assert not orthanc.results_for(film)
    node.restart(role="all")
    _assert_delivered_once(orthanc, node, film)


def test_results_held_through_an_outage_and_a_crash_are_delivered_once(
    node_factory: NodeFactory, orthanc: Orthanc, films: list[Film]
) -> None:
    """(b) PACS down, the send fails, the node is killed, PACS back, node restarted."""
    film = films[0]
    orthanc.stop()
    node = node_factory(destinations=[orthanc])
    sent = storescu(film.path, node.port)
    assert sent.succeeded, f"{sent}\n{node.describe()}"
    failed = node.wait_for_audit("result_failed", timeout=90)
    assert failed[0].outcome == "failure"

    node.kill9()
    orthanc.start()
    baseline = node.last_audit_id()
    node.restart()
    orthanc.wait_for_results(film, node=node)
    node.wait_for_audit("result_sent", after_id=baseline, timeout=30)
    results = orthanc.results_for(film)
    assert len(results.segs) == 1 and len(results.srs) == 1, f"{results}\n{node.describe()}"
    # Analysed once: the restart re-sent what was made, it did not analyse again.
    assert len(node.audit("job_succeeded")) == 1, node.describe()


def test_results_are_delivered_when_the_pacs_comes_back(
    node_factory: NodeFactory, orthanc: Orthanc, films: list[Film]
) -> None:
    """(c) A plain outage: no restart, the delivery retries until Orthanc answers."""
    film = films[0]
    orthanc.stop()
    node = node_factory(destinations=[orthanc])
    sent = storescu(film.path, node.port)
    assert sent.succeeded, f"{sent}\n{node.describe()}"
    node.wait_for_audit("result_failed", timeout=90)

    orthanc.start()
    _assert_delivered_once(orthanc, node, film)
    assert node.running


def test_sigterm_finishes_or_releases_the_job_and_exits_zero(
    node_factory: NodeFactory, orthanc: Orthanc, films: list[Film]
) -> None:
    film = films[0]
    node = node_factory(destinations=[orthanc])
    sent = storescu(film.path, node.port)
    assert sent.succeeded, f"{sent}\n{node.describe()}"
    (claimed, *_) = node.wait_for_audit("job_claimed", timeout=30)

    assert node.terminate() == 0, node.describe()
    assert node.audit("node_stopped"), node.describe()
    ended = [
        r
        for r in node.audit()
        if r.id > claimed.id and r.event in ("job_succeeded", "job_released", "job_failed")
    ]
    assert ended, f"the claimed job was neither finished nor released\n{node.describe()}"

    node.restart()
    _assert_delivered_once(orthanc, node, film)
    assert node.terminate() == 0, node.describe()
    assert len(node.audit("node_stopped")) == 2


# --- refusals ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_disk_node(module_node_factory: NodeFactory) -> Node:
    """A node that believes its disk is full: any instance it would keep is refused."""
    return module_node_factory(min_free_mb=10**9)


def test_unknown_calling_ae_is_rejected(full_disk_node: Node, films: list[Film]) -> None:
    """(d) Rejected at association, audited, and the node goes on serving."""
    node = full_disk_node
    sent = storescu(films[0].path, node.port, aet="INTRUDER")
    assert sent.returncode != 0 and sent.status is None, str(sent)
    assert "Association Rejected" in sent.output, str(sent)
    assert echoscu(node.port, aet="INTRUDER").returncode != 0

    rejected = node.wait_for_audit("association_rejected", timeout=10)
    assert rejected[0].outcome == "failure"
    assert any("INTRUDER" in row.actor for row in rejected), rejected
    assert node.echo()


def test_low_disk_space_refuses_with_out_of_resources(
    full_disk_node: Node, films: list[Film]
) -> None:
    """(e) Below min_free_mb: 0xA7xx, nothing spooled, audited, still serving."""
    node = full_disk_node
    film = films[0]
    sent = storescu(film.path, node.port)
    assert sent.status is not None and 0xA700 <= sent.status <= 0xA7FF, str(sent)

    refused = node.wait_for_audit("instance_refused", timeout=10)
    assert refused[-1].outcome == "failure"
    assert not node.audit("instance_received")
    spooled = [p for p in node.spool_dir.rglob("*") if p.is_file()]
    assert spooled == [], spooled
    assert node.echo()


# --- bad datasets --------------------------------------------------------------------------


def _not_dicom_dataset(path: Path) -> Path:
    """A valid file meta (DX, Explicit VR Little Endian) followed by bytes that are not a
    DICOM data set."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    with path.open("ab") as stream:
        stream.write(b"this is not a DICOM data set\n" * 64)
    return path


def _ct_image(path: Path) -> Path:
    """A small but complete CT image: a SOP class the node does not read."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.PatientName = "E2E^CT"
    ds.PatientID = "E2E-CT"
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Rows = ds.Columns = 16
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = np.full((16, 16), 1000, dtype=np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _without_pixel_data(film: Film, path: Path) -> Path:
    """The film's header as a new instance with no Pixel Data."""
    ds = pydicom.dcmread(film.path, stop_before_pixels=True)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return path


def _send_raw(path: Path, port: int, monkeypatch: pytest.MonkeyPatch) -> int | None:
    """C-STORE a file's data set bytes exactly as they are, with pynetdicom.

    With STORE_SEND_CHUNKED_DATASET pynetdicom reads only the file meta and streams
    the rest unparsed; storescu would refuse to send a file it cannot parse.
    """
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSNODE")
    assert assoc.is_established, "the node did not accept TESTSCU's association"
    try:
        response = assoc.send_c_store(path)
    finally:
        assoc.release()
    return int(response.Status) if "Status" in response else None


def test_bad_datasets_are_refused_and_the_node_goes_on(
    node_factory: NodeFactory,
    orthanc: Orthanc,
    films: list[Film],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(f) Each bad instance gets its failure status and an audit row; a good film after
    them is analysed and delivered as usual."""
    node = node_factory(destinations=[orthanc])

    baseline = node.last_audit_id()
    status = _send_raw(_not_dicom_dataset(tmp_path / "garbage.dcm"), node.port, monkeypatch)
    assert status is not None and 0xC000 <= status <= 0xCFFF, f"status {status!r}"
    node.wait_for_audit("instance_refused", after_id=baseline, timeout=10)

    baseline = node.last_audit_id()
    ct = _ct_image(tmp_path / "ct.dcm")
    sent = storescu(ct, node.port)
    assert sent.status == 0x0122, str(sent)  # SOP class not supported
    refused = node.wait_for_audit("instance_refused", after_id=baseline, timeout=10)
    assert refused[0].outcome == "failure"

    baseline = node.last_audit_id()
    bare = _without_pixel_data(films[2], tmp_path / "no-pixels.dcm")
    sent = storescu(bare, node.port)
    assert sent.status is not None and 0xA900 <= sent.status <= 0xA9FF, str(sent)
    node.wait_for_audit("instance_refused", after_id=baseline, timeout=10)

    assert not node.audit("instance_received"), node.describe()
    assert node.echo()
    film = films[0]
    sent = storescu(film.path, node.port)
    assert sent.succeeded, f"{sent}\n{node.describe()}"
    _assert_delivered_once(orthanc, node, film)
    assert not orthanc.results_for(Film.read(bare))
