"""``[[notify]]`` receivers: their settings and validation, and the alert they are sent,
which names the study and its findings and holds no patient value but the accession."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from pacsnode.analysis.readout import FLAG_KINDS, Flag, ReadOut
from pacsnode.audit import PatientScreen
from pacsnode.config import NotifyTarget, load_settings
from pacsnode.db import create_schema, make_engine
from pacsnode.errors import ConfigError
from pacsnode.export.notify import NOTIFY_KIND, PAYLOAD_FORMAT, screened_values
from pacsnode.jobs import DeliveryStatus, JobQueue, RetryPolicy
from pacsnode.worker.alerts import queue_alerts
from pacsnode.worker.analyst import Analysis, ResultFile
from tests.films import make_film, to_bytes

STEP_OFF = Flag("malalignment", "C4/C5", "high", "step-off 4.1 mm at C4/C5")
FRACTURE = Flag("fracture_grade3", "L1", "high", "L1 grade 3 deformity (wedge)")
SLIP = Flag("listhesis_grade2", "L5/S1", "high", "L5/S1 Meyerding grade II (38 %)")


def readout(*flags: Flag) -> ReadOut:
    return ReadOut(
        unit="mm",
        mm_per_pixel=0.15,
        cobb=(),
        step_offs=(),
        slips=(),
        soft_tissue=(),
        flags=flags,
        impression="Step-off at C4/C5; L1 fracture.",
    )


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pacsnode.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(path: Path | None, environ: dict[str, str] | None = None) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ or {})
    return caught.value.problems


# --- settings ------------------------------------------------------------------------------


def test_no_receivers_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings(None, {}).notify == ()


def test_entries_from_the_file_with_their_defaults(tmp_path: Path) -> None:
    settings = load_settings(
        write(
            tmp_path,
            """
            [[notify]]
            url = "https://alerts.hospital.example/spine"

            [[notify]]
            name = "er-pager"
            url = "http://10.0.0.7:8080/hook"
            on = "fracture_grade3"
            timeout_seconds = 2.5
            max_attempts = 4
            headers = { Authorization = "Bearer s3cret", X-Source = "pacsnode" }
            """,
        ),
        {},
    )
    first, second = settings.notify
    assert first == NotifyTarget(name="notify-0", url="https://alerts.hospital.example/spine")
    assert first.on == FLAG_KINDS and first.timeout_seconds == 10.0 and first.max_attempts is None
    assert second.name == "er-pager" and second.on == ("fracture_grade3",)
    assert (second.timeout_seconds, second.max_attempts) == (2.5, 4)
    assert second.headers == (("Authorization", "Bearer s3cret"), ("X-Source", "pacsnode"))
    assert "s3cret" not in repr(second) and "s3cret" not in repr(settings)


def test_the_environment_overrides_and_adds_receivers(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [[notify]]
        name = "er"
        url = "https://alerts.example/a"
        """,
    )
    settings = load_settings(
        path,
        {
            "PACSNODE_NOTIFY__0__ON": "Fracture_Grade3, malalignment",
            "PACSNODE_NOTIFY__1__URL": "http://127.0.0.1:9000/b",
            "PACSNODE_NOTIFY__1__TIMEOUT_SECONDS": "1.5",
        },
    )
    er, added = settings.notify
    assert er.on == ("fracture_grade3", "malalignment")
    assert (added.name, added.url, added.timeout_seconds) == (
        "notify-1",
        "http://127.0.0.1:9000/b",
        1.5,
    )


def test_every_mistake_is_named(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [[destinations]]
        name = "PACS"
        ae_title = "ORTHANC"
        host = "pacs"
        port = 4242

        [[notify]]
        name = "pacs"
        url = "ftp://alerts.example/x"

        [[notify]]
        on = ["fracture", "malalignment"]

        [[notify]]
        url = "https://user:hunter2@alerts.example/"
        on = []
        timeout_seconds = 0
        max_attempts = 0

        [[notify]]
        name = "notify-4"
        url = "http://a.example"

        [[notify]]
        url = "http://b.example"
        headers = { "Content-Type" = "text/plain", "Bad Name" = "x", X-Count = 3 }

        [[notify]]
        name = "c"
        url = "http://c.example:99999/"
        colour = "red"
        """,
    )
    found = problems(path, {"PACSNODE_NOTIFY__0__HEADERS": "Authorization: x"})
    text = "\n".join(found)
    assert "notify[0].name: 'pacs' is already used by destinations[0]" in found
    assert "notify[0].url: 'ftp://alerts.example/x' is not an http or https URL" in found
    assert any(p.startswith("notify[0].headers: set in the file only") for p in found)
    assert "notify[1].url: missing" in found
    assert any(p.startswith("notify[1].on: item 1: 'fracture' is not one of") for p in found)
    assert any(p.startswith("notify[2].url: has a user name or password") for p in found)
    assert "hunter2" not in text
    assert any(p.startswith("notify[2].on: names no finding") for p in found)
    assert any(p.startswith("notify[2].timeout_seconds: must be a positive") for p in found)
    assert "notify[2].max_attempts: must be at least 1, got 0" in found
    assert "notify[4].name: 'notify-4' is already used by notify[3]" in found
    assert "notify[4].headers: 'Content-Type' is set by the node" in found
    assert any(p.startswith("notify[5].url: 'http://c.example:99999/' is not a URL") for p in found)
    assert "notify[5].colour: unknown key" in found


def test_a_receivers_own_ca_is_for_https_and_must_load(tmp_path: Path) -> None:
    from tests.tls import make_certificates

    pki = make_certificates(tmp_path / "pki")
    path = write(
        tmp_path,
        f"""
        [[notify]]
        url = "https://alerts.hospital.example/x"
        ca_certificates = "{pki.ca.certificate}"
        """,
    )
    (target,) = load_settings(path, {}).notify
    assert target.ca_certificates == pki.ca.certificate
    assert (
        load_settings(None, {"PACSNODE_NOTIFY__0__URL": "https://a.example"})
        .notify[0]
        .ca_certificates
        is None
    )  # the system's trust store

    (tmp_path / "junk.pem").write_text("not a certificate")
    path = write(
        tmp_path,
        """
        [[notify]]
        url = "http://alerts.hospital.example/x"
        ca_certificates = "pki/Hospital-ca.pem"

        [[notify]]
        url = "https://alerts.hospital.example/x"
        ca_certificates = "missing.pem"

        [[notify]]
        url = "https://alerts.hospital.example/y"
        ca_certificates = "junk.pem"
        """,
    )
    found = problems(path)
    assert "notify[0].ca_certificates: given for a URL that is not https" in found
    assert f"notify[1].ca_certificates: {tmp_path / 'missing.pem'}: no such file" in found
    assert any(p.startswith("notify[2].ca_certificates: ") and "no PEM" in p for p in found)


def test_header_values_are_checked_without_being_echoed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [[notify]]
        url = "http://a.example"
        headers = { Authorization = "Bearer abc\\r\\nX-Evil: 1" }
        """,
    )
    (problem,) = problems(path)
    assert problem.startswith("notify[0].headers: Authorization: the value has a line break")
    assert "abc" not in problem


def test_an_out_of_range_receiver_from_the_environment_is_refused(tmp_path: Path) -> None:
    found = problems(None, {"PACSNODE_NOTIFY__2__URL": "http://a.example"})
    assert any(
        p.startswith("notify[2]: no such entry; the next new one is notify[0]") for p in found
    )
    found = problems(None, {"PACSNODE_NOTIFY__URL": "http://a.example"})
    assert any("is not PACSNODE_NOTIFY__<N>__<KEY>" in p for p in found)


# --- the alert ---------------------------------------------------------------------------

PATIENT = {
    "PatientName": "Quoxley-Brandt^Henrietta",
    "PatientID": "MRN-88231",
    "PatientBirthDate": "19510407",
    "OtherPatientIDs": "ALT-5521",
    "PatientSex": "F",
    "PatientAge": "073Y",
}


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'queue.db'}")
    create_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def film(tmp_path: Path) -> Path:
    ds = make_film()
    for keyword, value in PATIENT.items():
        setattr(ds, keyword, value)
    ds.AccessionNumber = "ACC20250301"
    path = tmp_path / "film.dcm"
    path.write_bytes(to_bytes(ds))
    return path


def _queued(engine: Engine, film: Path, tmp_path: Path, *flags: Flag, targets=None):
    from pydicom import dcmread

    header = dcmread(film, stop_before_pixels=True)
    queue = JobQueue(engine, delivery_policy=RetryPolicy(max_attempts=30, base=60, cap=600))
    job = queue.enqueue(
        sop_instance_uid=header.SOPInstanceUID,
        study_instance_uid=header.StudyInstanceUID,
        series_instance_uid=header.SeriesInstanceUID,
        sop_class_uid=header.SOPClassUID,
        calling_ae="ER_DX1",
        spool_path=film,
    ).job
    results = (
        ResultFile("seg", "2.25.11", tmp_path / "seg.dcm"),
        ResultFile("sr", "2.25.22", tmp_path / "sr.dcm"),
    )
    analysis = Analysis(results, "7 vertebrae C1-C7", 1.0, readout=readout(*flags))
    targets = targets or (NotifyTarget(name="er", url="http://er.example/"),)
    names = queue_alerts(queue, job, analysis, targets, tmp_path / "results", "stack-1.0")
    return queue, job, header, names


def test_an_alert_names_the_study_and_its_findings(
    engine: Engine, film: Path, tmp_path: Path
) -> None:
    queue, job, header, names = _queued(engine, film, tmp_path, STEP_OFF, FRACTURE)
    assert names == ("er",)
    (delivery,) = queue.list_deliveries()
    assert (delivery.destination, delivery.kind) == ("er", NOTIFY_KIND)
    assert delivery.sop_instance_uid == job.sop_instance_uid
    assert delivery.status is DeliveryStatus.PENDING and delivery.max_attempts == 30
    assert delivery.path == tmp_path / "results" / "notify-er.json"
    payload = json.loads(delivery.path.read_text(encoding="utf-8"))
    assert payload == {
        "format": PAYLOAD_FORMAT,
        "study_instance_uid": header.StudyInstanceUID,
        "series_instance_uid": header.SeriesInstanceUID,
        "sop_instance_uid": header.SOPInstanceUID,
        "accession_number": "ACC20250301",
        "findings": [
            {"kind": "malalignment", "level": "C4/C5", "severity": "high",
             "text": "step-off 4.1 mm at C4/C5"},
            {"kind": "fracture_grade3", "level": "L1", "severity": "high",
             "text": "L1 grade 3 deformity (wedge)"},
        ],
        "impression": "Step-off at C4/C5; L1 fracture.",
        "results": {"seg": "2.25.11", "sr": "2.25.22"},
        "model_version": "stack-1.0",
    }  # fmt: skip


def test_an_alert_holds_no_patient_value_but_the_accession(
    engine: Engine, film: Path, tmp_path: Path
) -> None:
    queue, *_ = _queued(engine, film, tmp_path, STEP_OFF)
    (delivery,) = queue.list_deliveries()
    assert delivery.path is not None
    text = delivery.path.read_text(encoding="utf-8")
    # The screen the node keeps its logs with, less the accession that the alert carries
    # on purpose, finds nothing to hide.
    everything = PatientScreen.read(film)
    assert "ACC20250301" in everything.values
    others = PatientScreen(v for v in everything.values if v != "ACC20250301")
    assert others(text) == text
    for value in (
        "Quoxley",
        "Brandt",
        "Henrietta",
        "MRN-88231",
        "19510407",
        "1951-04-07",
        "ALT-5521",
        "073Y",
    ):
        assert value.lower() not in text.lower()
    assert "patient" not in text.lower()
    # The delivery loop screens what a receiver quotes back with the accession.
    assert tuple(screened_values(delivery.path)) == ("ACC20250301",)


def test_only_receivers_whose_findings_were_flagged_are_alerted(
    engine: Engine, film: Path, tmp_path: Path
) -> None:
    targets = (
        NotifyTarget(name="spine-surgery", url="http://a.example/", on=("listhesis_grade2",)),
        NotifyTarget(name="er", url="http://b.example/", on=("fracture_grade3",), max_attempts=5),
        NotifyTarget(name="all", url="http://c.example/"),
    )
    queue, *_, names = _queued(engine, film, tmp_path, STEP_OFF, FRACTURE, targets=targets)
    assert names == ("er", "all")
    by_name = {d.destination: d for d in queue.list_deliveries()}
    assert set(by_name) == {"er", "all"}
    assert by_name["er"].max_attempts == 5 and by_name["all"].max_attempts == 30
    er = json.loads(by_name["er"].path.read_text(encoding="utf-8"))  # type: ignore[union-attr]
    assert [f["kind"] for f in er["findings"]] == ["fracture_grade3"]


def test_no_flag_no_alert_and_a_film_alerts_a_receiver_once(
    engine: Engine, film: Path, tmp_path: Path
) -> None:
    queue, *_, names = _queued(engine, film, tmp_path)
    assert names == () and queue.list_deliveries() == ()
    assert not (tmp_path / "results").exists()
    _queued(engine, film, tmp_path, FRACTURE)
    _queued(engine, film, tmp_path, FRACTURE, SLIP)  # the film analysed again
    (delivery,) = queue.list_deliveries()
    payload = json.loads(delivery.path.read_text(encoding="utf-8"))  # type: ignore[union-attr]
    assert len(payload["findings"]) == 2  # the unsent alert says what the last reading found
