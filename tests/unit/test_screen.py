"""The patient screen: which values it hides and where (log records, audit reasons, a
job's last error), from a well-formed header, a malformed one and a deflated one."""

from __future__ import annotations

import io
import logging
import threading
import warnings
from pathlib import Path

import pytest

from pacsnode.audit import AuditEvent, AuditLog, PatientScreen, ScreeningFilter, screening
from pacsnode.audit.screen import SCREENED, patient_values, screen_text
from pacsnode.cli.serve import configure_logging
from pacsnode.db import create_schema, make_engine
from pacsnode.jobs import JobQueue
from tests.films import encode, make_film, set_raw, to_bytes

NAME = "Quoxley-Brandt^Zephyrine Ann=山田^太郎"
VALUES = {
    "PatientName": NAME,
    "PatientID": "PID77341Q",
    "PatientBirthDate": "19640229",
    "AccessionNumber": "ACC99417Z",
}


def save_logging() -> tuple[list[logging.Handler], int]:
    root = logging.getLogger()
    return root.handlers[:], root.level


def restore_logging(saved: tuple[list[logging.Handler], int]) -> None:
    """Undo :func:`configure_logging`: the root's handlers, the libraries' levels."""
    from pynetdicom import _config

    root = logging.getLogger()
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for library in ("pynetdicom", "pydicom", "highdicom"):
        logging.getLogger(library).setLevel(logging.NOTSET)
    logging.captureWarnings(False)
    logging.getLogger("pydicom").setLevel(logging.WARNING)  # pydicom's own default
    _config.LOG_REQUEST_IDENTIFIERS = _config.LOG_RESPONSE_IDENTIFIERS = True


def film_bytes(**raw: bytes) -> bytes:
    ds = make_film()
    ds.SpecificCharacterSet = "ISO_IR 192"
    for keyword, value in VALUES.items():
        setattr(ds, keyword, value)
    ds.OtherPatientIDs = ["OPX55123", "Q7"]
    for keyword, value in raw.items():
        set_raw(ds, keyword, value)
    return to_bytes(ds)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Quoxley-Brandt, zephyrine ann", f"{SCREENED}, {SCREENED}"),
        ("name 'Quoxley-Brandt^Zephyrine Ann=山田^太郎'", f"name '{SCREENED}'"),
        ("山田 太郎, 太郎", f"{SCREENED}, {SCREENED}"),
        (
            "born 1964-02-29 or 19640229 or 1964.02.29",
            f"born {SCREENED} or {SCREENED} or {SCREENED}",
        ),
        (
            "id pid77341q, acc ACC99417Z, other OPX55123",
            f"id {SCREENED}, acc {SCREENED}, other {SCREENED}",
        ),
        # A short value goes only where it stands alone.
        ("Q7 but not Q75 nor AQ7", f"{SCREENED} but not Q75 nor AQ7"),
        (
            "b'Quoxley-Brandt^Zephyrine Ann=\\xe5\\xb1\\xb1\\xe7\\x94\\xb0^"
            "\\xe5\\xa4\\xaa\\xe9\\x83\\x8e'",
            f"b'{SCREENED}'",
        ),
        ("ImageReadError: Rows is 12", "ImageReadError: Rows is 12"),
    ],
)
def test_values_and_their_forms_are_screened(text: str, expected: str) -> None:
    assert PatientScreen.of(film_bytes())(text) == expected


def test_a_malformed_or_deflated_header_is_still_screened(tmp_path: Path) -> None:
    # A value pydicom cannot convert, where the reader quotes it.
    broken = film_bytes(NumberOfFrames=b"PID77341Q", PatientBirthDate=b"1964-02-29xyz")
    screen = PatientScreen.of(broken)
    assert screen("Number of Frames is 'PID77341Q'") == f"Number of Frames is '{SCREENED}'"
    assert screen("bad date 1964-02-29xyz") == f"bad date {SCREENED}"
    # Bytes pydicom cannot parse at all: the raw scan finds the values.
    assert "PID77341Q" in patient_values(b"\xff" * 7 + broken[140:])
    # Deflated: inflated (bounded) and scanned, never handed to pydicom.
    ds = make_film()
    ds.PatientName, ds.PatientID = "QUOXLEY^ZEPHYRINE", "PID77341Q"
    path = tmp_path / "deflated.dcm"
    path.write_bytes(encode(ds, "1.2.840.10008.1.2.1.99"))
    assert set(patient_values(path)) >= {"QUOXLEY^ZEPHYRINE", "PID77341Q"}
    # Nothing readable: an empty screen, not an error.
    assert PatientScreen.of(tmp_path / "missing.dcm")("PID77341Q") == "PID77341Q"


def test_log_records_audit_reasons_and_last_errors_are_screened(tmp_path: Path) -> None:
    stream = io.StringIO()
    saved = save_logging()
    try:
        configure_logging("DEBUG", stream=stream)
        engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
        create_schema(engine)
        queue, audit = JobQueue(engine), AuditLog(engine)
        job = queue.enqueue(
            sop_instance_uid="1.2.3",
            study_instance_uid="1.2",
            series_instance_uid="1.2.4",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
            calling_ae="MOD",
            spool_path=tmp_path / "film.dcm",
        ).job
        queue.claim("w", 60)
        with screening(PatientScreen.of(film_bytes())):
            try:
                raise ValueError("'PID77341Q' is not a valid PatientSexValues")
            except ValueError as exc:
                logging.getLogger("pacsnode.test").exception("failed for %s", "Zephyrine")
                failed = queue.fail(job.id, "w", f"{type(exc).__name__}: {exc}")
                entry = audit.record(
                    AuditEvent.JOB_FAILED,
                    actor="worker",
                    reason=str(exc),
                    details={"note": "ACC99417Z"},
                )
            assert screen_text("Quoxley") == SCREENED
            with warnings.catch_warnings():  # as pydicom warns of a value it cannot convert
                warnings.simplefilter("always")
                warnings.warn("Invalid value for VR DA: 'ACC99417Z'", UserWarning, stacklevel=1)
        logging.getLogger("pacsnode.test").info("after: Quoxley")  # no screen active
        engine.dispose()
    finally:
        restore_logging(saved)
    log = stream.getvalue()
    assert "failed for ***" in log and "'***' is not a valid" in log  # the traceback too
    assert "PID77341Q" not in log and "Zephyrine" not in log
    assert "after: Quoxley" in log
    assert "UserWarning: Invalid value for VR DA: '***'" in log
    assert failed.last_error == "ValueError: '***' is not a valid PatientSexValues"
    assert entry.reason == "'***' is not a valid PatientSexValues"
    assert entry.details == {"note": "***"}
    assert screen_text("Quoxley") == "Quoxley"


def test_pynetdicom_and_pydicom_stay_quiet_unless_phi_is_asked_for() -> None:
    saved = save_logging()
    try:
        for level, log_phi, library in [
            ("INFO", False, logging.WARNING),
            ("DEBUG", False, logging.INFO),
            ("DEBUG", True, logging.DEBUG),
        ]:
            handler = configure_logging(level, log_phi=log_phi, stream=io.StringIO())
            assert logging.getLogger("pynetdicom").level == library
            assert logging.getLogger("pydicom").level == library
            assert any(isinstance(f, ScreeningFilter) for f in handler.filters) != log_phi
    finally:
        restore_logging(saved)


def test_a_screen_that_logs_while_reading_its_values_does_not_deadlock() -> None:
    # pydicom logs as it parses a malformed header: that record comes back through the
    # filter to the screen still reading. Found by benchmarks/fuzz.py as a node that hung.
    stream = io.StringIO()
    saved = save_logging()

    def values() -> list[str]:
        logging.getLogger("pydicom").warning("Expected explicit VR, PID77341Q")
        return ["PID77341Q"]

    def log_under_screen() -> None:
        with screening(PatientScreen(loader=values)):
            logging.getLogger("pacsnode.test").warning("job failed: PID77341Q")

    try:
        configure_logging("INFO", stream=stream)
        worker = threading.Thread(target=log_under_screen, daemon=True)
        worker.start()
        worker.join(timeout=10)
        assert not worker.is_alive(), "the screen deadlocked"
    finally:
        restore_logging(saved)
    assert "PID77341Q" not in stream.getvalue()
    assert "text withheld" in stream.getvalue() and "job failed: ***" in stream.getvalue()
