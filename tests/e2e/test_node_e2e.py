"""The happy path end to end: storescu films to ``pacsnode serve``, which analyses them and
sends a valid SEG, Comprehensive SR and GSPS per film to Orthanc, once, however often a film
is re-sent."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pydicom
import pytest

from tests.e2e.conftest import (
    COMPREHENSIVE_SR_STORAGE,
    GSPS_STORAGE,
    SEG_STORAGE,
    Film,
    Node,
    NodeFactory,
    Orthanc,
    Results,
    dciodvfy_errors,
    echoscu,
    storescu,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.dcmtk]


def test_orthanc_fixture_stores_and_serves_a_film(
    orthanc: Orthanc, films: list[Film], tmp_path: Path
) -> None:
    """The harness itself, without the node: storescu to Orthanc, found again over REST."""
    assert echoscu(orthanc.dicom_port, aec=orthanc.ae_title).returncode == 0
    film = films[0]  # JPEG 2000: storescu must be told to propose it
    sent = storescu(film.path, orthanc.dicom_port, aec=orthanc.ae_title)
    assert sent.succeeded and sent.status == 0x0000, str(sent)

    (stored,) = orthanc.instances()
    assert stored.sop_instance_uid == film.sop_instance_uid
    assert stored.sop_class_uid == film.sop_class_uid
    assert stored.study_instance_uid == film.study_instance_uid
    assert stored.series_instance_uid == film.series_instance_uid
    copy = pydicom.dcmread(orthanc.download(stored, tmp_path / "copy.dcm"), stop_before_pixels=True)
    assert copy.SOPInstanceUID == film.sop_instance_uid
    assert not orthanc.results_for(film)  # the film itself is neither SEG nor SR

    # Stopped and started again, it keeps what it stored.
    orthanc.stop()
    assert echoscu(orthanc.dicom_port, aec=orthanc.ae_title).returncode != 0
    orthanc.start()
    assert [i.sop_instance_uid for i in orthanc.instances()] == [film.sop_instance_uid]


# --- the node, shared by the tests below ---------------------------------------------------


@pytest.fixture(scope="module")
def node(module_node_factory: NodeFactory, module_orthanc: Orthanc) -> Node:
    return module_node_factory(destinations=[module_orthanc])


@pytest.fixture(scope="module")
def sent_films(films: list[Film]) -> list[Film]:
    """A JPEG 2000 film and an uncompressed one."""
    return [films[0], films[2]]


@pytest.fixture(scope="module")
def delivered(node: Node, module_orthanc: Orthanc, sent_films: list[Film]) -> dict[str, Results]:
    """Send the films once and wait for their results: SOP Instance UID -> Results."""
    for film in sent_films:
        sent = storescu(film.path, node.port)
        assert sent.succeeded, f"{film.path.name}: {sent}\n{node.describe()}"
    return {
        film.sop_instance_uid: module_orthanc.wait_for_results(film, node=node)
        for film in sent_films
    }


def test_each_film_gets_one_seg_one_sr_and_one_gsps_in_its_study(
    delivered: dict[str, Results], sent_films: list[Film]
) -> None:
    for film in sent_films:
        results = delivered[film.sop_instance_uid]
        counts = (len(results.segs), len(results.srs), len(results.prs))
        assert counts == (1, 1, 1), (film.path.name, results)
        for instance in (*results.segs, *results.srs, *results.prs):
            assert instance.study_instance_uid == film.study_instance_uid
            assert instance.series_instance_uid != film.series_instance_uid
        assert results.segs[0].sop_class_uid == SEG_STORAGE
        assert results.srs[0].sop_class_uid == COMPREHENSIVE_SR_STORAGE
        assert results.prs[0].sop_class_uid == GSPS_STORAGE


def test_results_pass_dciodvfy(
    delivered: dict[str, Results], module_orthanc: Orthanc, tmp_path: Path
) -> None:
    for uid, results in delivered.items():
        kinds = (("seg", results.segs[0]), ("sr", results.srs[0]), ("pr", results.prs[0]))
        for kind, instance in kinds:
            path = module_orthanc.download(instance, tmp_path / f"{uid}.{kind}.dcm")
            assert dciodvfy_errors(path) == [], f"{kind} for {uid}"


def test_results_name_and_measure_each_vertebra(
    delivered: dict[str, Results], module_orthanc: Orthanc, sent_films: list[Film], tmp_path: Path
) -> None:
    """Segment 1 is the spine region; every further segment a vertebra, SNOMED CT coded,
    whose SR measurement groups share its tracking UID and carry its heights."""
    for film in sent_films:
        results = delivered[film.sop_instance_uid]
        seg = pydicom.dcmread(module_orthanc.download(results.segs[0], tmp_path / "s.dcm"))
        sr = pydicom.dcmread(module_orthanc.download(results.srs[0], tmp_path / "r.dcm"))
        segments = list(seg.SegmentSequence)
        assert segments[0].SegmentLabel == "Spine region"
        vertebrae = segments[1:]
        assert len(vertebrae) >= 3, (film.path.name, [s.SegmentLabel for s in segments])
        tracking = {s.TrackingUID: s.SegmentLabel for s in vertebrae}
        assert len(tracking) == len(vertebrae)
        for segment in vertebrae:
            code = segment.SegmentedPropertyTypeCodeSequence[0]
            assert code.CodingSchemeDesignator == "SCT"
        found, heights = {}, 0
        for item in _walk(sr):
            concept = item.get("ConceptNameCodeSequence")
            if not concept:
                continue
            meaning = concept[0].CodeMeaning
            if meaning == "Tracking Unique Identifier" and item.UID in tracking:
                found[item.UID] = True
            if concept[0].CodeValue == "121207":  # Height
                heights += 1
        assert set(found) == set(tracking), film.path.name
        assert heights >= 3 * len(vertebrae) - 3  # anterior, middle, posterior per body


def test_gsps_draws_on_its_film(
    delivered: dict[str, Results], module_orthanc: Orthanc, sent_films: list[Film], tmp_path: Path
) -> None:
    """The presentation state refers to the film and draws the vertebrae in their layer."""
    for film in sent_films:
        results = delivered[film.sop_instance_uid]
        pr = pydicom.dcmread(module_orthanc.download(results.prs[0], tmp_path / "p.dcm"))
        (series,) = pr.ReferencedSeriesSequence
        assert series.SeriesInstanceUID == film.series_instance_uid
        assert series.ReferencedImageSequence[0].ReferencedSOPInstanceUID == film.sop_instance_uid
        layers = [item.GraphicLayer for item in pr.GraphicLayerSequence]
        assert "OUTLINES" in layers, layers
        outlines = [a for a in pr.GraphicAnnotationSequence if a.GraphicLayer == "OUTLINES"]
        assert len(outlines[0].GraphicObjectSequence) >= 3, film.path.name


def _walk(dataset: pydicom.Dataset):
    for item in dataset.get("ContentSequence", []):
        yield item
        yield from _walk(item)


def test_audit_records_reception_analysis_and_delivery(
    delivered: dict[str, Results], node: Node, sent_films: list[Film]
) -> None:
    for film in sent_films:
        assert node.audit("instance_received", uid=film.sop_instance_uid), node.describe()
        # A job may be audited as done a moment after its results land in Orthanc.
        node.wait_for_audit("job_succeeded", uid=film.sop_instance_uid, timeout=30)
        node.wait_for_audit("result_sent", uid=film.study_instance_uid, timeout=30)
    assert node.audit("association_accepted")
    assert node.audit("node_started")
    assert not node.audit("job_dead") and not node.audit("result_failed"), node.describe()

    # The admin CLI reads the same log.
    listed = node.audit_cli("--event", "instance_received", "result_sent", "--limit", "1000")
    stored = node.audit("instance_received") + node.audit("result_sent")
    assert sorted(entry["id"] for entry in listed) == sorted(row.id for row in stored)
    assert {entry["event"] for entry in listed} == {"instance_received", "result_sent"}


def test_resending_a_film_does_not_duplicate_its_results(
    delivered: dict[str, Results], node: Node, module_orthanc: Orthanc, sent_films: list[Film]
) -> None:
    film = sent_films[0]
    before = module_orthanc.results_for(film)
    baseline = node.last_audit_id()

    sent = storescu(film.path, node.port)
    assert sent.succeeded, str(sent)
    # The node says what it did with the re-sent instance; then it gets the time an
    # analysis and a send take to make a duplicate, if it were going to.
    node.wait_for_audit("instance_received", uid=film.sop_instance_uid, after_id=baseline)
    _settle(node, baseline, film)

    after = module_orthanc.results_for(film)
    assert [i.sop_instance_uid for i in after.segs] == [i.sop_instance_uid for i in before.segs]
    assert [i.sop_instance_uid for i in after.srs] == [i.sop_instance_uid for i in before.srs]
    assert [i.sop_instance_uid for i in after.prs] == [i.sop_instance_uid for i in before.prs]


def _settle(node: Node, baseline: int, film: Film, quiet: float = 6.0) -> None:
    """Wait until the node has finished whatever the re-send started, or ``quiet`` s with
    no job activity for the film."""
    jobs = {r.job_id for r in node.audit(uid=film.sop_instance_uid) if r.job_id is not None}

    def mine(event: str) -> list[int]:
        return [
            r.id
            for r in node.audit(event)
            if r.id > baseline and (r.sop_instance_uid == film.sop_instance_uid or r.job_id in jobs)
        ]

    end = time.monotonic() + quiet
    while time.monotonic() < end:
        if mine("job_claimed"):
            # Re-analysed after all: wait for that job to finish and its sends to go.
            wait_until(
                lambda: mine("job_succeeded") or mine("job_dead"),
                timeout=60,
                message=lambda: f"the re-sent film's job did not finish\n{node.describe()}",
            )
            time.sleep(2.0)
            return
        time.sleep(0.5)


def test_no_patient_name_reaches_the_node_log_or_the_audit_log(
    delivered: dict[str, Results], node: Node, sent_films: list[Film]
) -> None:
    log = node.log_text()
    entries = json.dumps(node.audit_cli("--limit", "1000"))
    assert "instance received" in log.lower() or "queued as job" in log  # the log is not empty
    for film in sent_films:
        name = str(pydicom.dcmread(film.path, stop_before_pixels=True).PatientName)
        assert name and name not in log and name not in entries
