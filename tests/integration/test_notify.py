"""Critical-finding alerts over real HTTP: a film whose read-out raises a flag is analysed
(by a hand-made analyst), its alert queued durably and POSTed to a local receiver; a
receiver that is down is retried on the deliveries' backoff, one that refuses (4xx) is
given up at once; every outcome is audited and the receiver's answers are screened."""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydicom import dcmread
from sqlalchemy import Engine

from pacsnode.analysis.readout import Flag, ReadOut
from pacsnode.audit import AuditEvent, AuditLog, Outcome
from pacsnode.config import NotifyTarget
from pacsnode.db import create_schema, make_engine
from pacsnode.export.notify import post_alert, write_alert
from pacsnode.jobs import Delivery, DeliveryStatus, Job, JobQueue, RetryPolicy
from pacsnode.worker import Analysis, DeliveryLoop, JobLoop, ResultFile
from pacsnode.worker.retention import result_directory
from tests.films import make_film, to_bytes
from tests.integration.test_listener import free_port
from tests.tls import Leaf, make_certificates

ACCESSION = "ACC77120"
FRACTURE = Flag("fracture_grade3", "L1", "high", "L1 grade 3 deformity (wedge)")


class Receiver:
    """An HTTP server on loopback that keeps each POST and answers from a script."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/alerts"
        self.posts: list[tuple[str, dict[str, str], bytes]] = []
        self.answers: list[tuple[int, bytes]] = []
        """(status, body) for the next POSTs in turn; 200 once they run out."""
        self.delay = 0.0
        self._server: ThreadingHTTPServer | None = None

    def start(self, tls: Leaf | None = None) -> None:
        """Serve; over TLS with ``tls``'s certificate (for ``localhost``) when given."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts.append((self.path, dict(self.headers.items()), body))
                time.sleep(receiver.delay)
                status, answer = receiver.answers.pop(0) if receiver.answers else (200, b"{}")
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                if 300 <= status < 400:
                    self.send_header("Location", "/elsewhere")
                self.end_headers()
                with contextlib.suppress(OSError):  # a client that timed out has gone
                    self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(tls.certificate, tls.private_key)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self.url = f"https://localhost:{self.port}/alerts"
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(free_port())
    yield server
    server.stop()


class HandMadeAnalyst:
    """Stands in for the stack: every film reads as a grade 3 fracture of L1."""

    def __init__(self, results_dir: Path) -> None:
        self.results_dir = results_dir
        self.algorithm = SimpleNamespace(version="stack-test")
        self.analysed = 0

    def directory_for(self, sop_instance_uid: str) -> Path:
        return result_directory(self.results_dir, sop_instance_uid)

    def analyse(self, path: Path) -> Analysis:
        self.analysed += 1
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        sr = self.directory_for(uid) / "sr.dcm"
        sr.parent.mkdir(parents=True, exist_ok=True)
        sr.write_bytes(b"not sent: no destination is configured")
        readout = ReadOut("mm", 0.15, (), (), (), (), (FRACTURE,), "L1 fracture, grade 3.")
        return Analysis((ResultFile("sr", "2.25.4242", sr),), "1 vertebra L1", 0.5, {}, readout)


class Node:
    """The queue, the audit log and the two loops, stepped by hand."""

    def __init__(self, tmp_path: Path, engine: Engine, target: NotifyTarget) -> None:
        # The node's delivery backoff, made short: the same schedule DICOM sends follow.
        self.queue = JobQueue(
            engine, delivery_policy=RetryPolicy(max_attempts=5, base=0.05, cap=0.05)
        )
        self.audit = AuditLog(engine)
        stop = threading.Event()
        self.analyst = HandMadeAnalyst(tmp_path / "results")
        self.jobs = JobLoop(
            "analysis-0",
            self.queue,
            self.audit,
            stop,
            analyst=self.analyst,  # type: ignore[arg-type]
            destinations=(),
            lease_seconds=30,
            notify=(target,),
        )
        self.deliveries = DeliveryLoop(
            "delivery",
            self.queue,
            self.audit,
            stop,
            destinations=(),
            calling_ae="PACSNODE",
            lease_seconds=30,
            notify=(target,),
        )

    def receive(self, film: Path) -> Job:
        header = dcmread(film, stop_before_pixels=True)
        return self.queue.enqueue(
            sop_instance_uid=header.SOPInstanceUID,
            study_instance_uid=header.StudyInstanceUID,
            series_instance_uid=header.SeriesInstanceUID,
            sop_class_uid=header.SOPClassUID,
            calling_ae="ER_DX1",
            spool_path=film,
        ).job

    def send_when_due(self, seconds: float = 10.0) -> Delivery:
        """Step the delivery loop until it has sent or given up once more."""
        deadline = time.monotonic() + seconds
        while not self.deliveries.step():
            assert time.monotonic() < deadline, "no delivery came due"
            time.sleep(0.02)
        (delivery,) = self.queue.list_deliveries()
        return delivery

    def entries(self, event: AuditEvent) -> list:
        return list(reversed(self.audit.query(event=event)))


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'queue.db'}")
    create_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def film(tmp_path: Path) -> Path:
    ds = make_film()
    ds.PatientName = "Quoxley^Henrietta"
    ds.PatientBirthDate = "19510407"
    ds.AccessionNumber = ACCESSION
    path = tmp_path / "spool" / "film.dcm"
    path.parent.mkdir()
    path.write_bytes(to_bytes(ds))
    return path


def _target(receiver: Receiver, **overrides: object) -> NotifyTarget:
    values: dict[str, object] = {
        "name": "er-pager",
        "url": receiver.url,
        "on": ("fracture_grade3",),
        "timeout_seconds": 5.0,
        "headers": (("Authorization", "Bearer t0ken"),),
    }
    return NotifyTarget(**(values | overrides))  # type: ignore[arg-type]


def test_a_flagged_film_is_posted_to_the_receiver(
    tmp_path: Path, engine: Engine, film: Path, receiver: Receiver
) -> None:
    receiver.start()
    node = Node(tmp_path, engine, _target(receiver))
    job = node.receive(film)
    assert node.jobs.step()
    delivery = node.send_when_due()

    assert delivery.status is DeliveryStatus.SENT and delivery.attempts == 1
    assert (delivery.kind, delivery.destination) == ("notify", "er-pager")
    ((path, headers, body),) = receiver.posts
    assert path == "/alerts"
    assert headers["Content-Type"] == "application/json"
    assert headers["Authorization"] == "Bearer t0ken"
    payload = json.loads(body)
    assert payload["sop_instance_uid"] == job.sop_instance_uid
    assert payload["study_instance_uid"] == job.study_instance_uid
    assert payload["series_instance_uid"] == job.series_instance_uid
    assert payload["accession_number"] == ACCESSION
    assert payload["findings"] == [
        {"kind": "fracture_grade3", "level": "L1", "severity": "high", "text": FRACTURE.text}
    ]
    assert payload["impression"] == "L1 fracture, grade 3."
    assert payload["results"] == {"sr": "2.25.4242"}
    assert b"Quoxley" not in body and b"19510407" not in body
    # The payload lies durably beside the film's results, where retention finds it.
    assert (
        delivery.path == node.analyst.directory_for(job.sop_instance_uid) / "notify-er-pager.json"
    )

    (succeeded,) = node.entries(AuditEvent.JOB_SUCCEEDED)
    assert succeeded.details["alerts"] == ["er-pager"]
    (sent,) = node.entries(AuditEvent.RESULT_SENT)
    assert sent.outcome is Outcome.SUCCESS and sent.job_id == job.id
    assert sent.details["kind"] == "notify" and sent.details["destination"] == "er-pager"
    assert "HTTP 200" in (sent.reason or "")


def test_a_receiver_that_is_down_gets_the_alert_when_it_is_back(
    tmp_path: Path, engine: Engine, film: Path, receiver: Receiver
) -> None:
    node = Node(tmp_path, engine, _target(receiver))  # nothing listens on its port yet
    node.receive(film)
    assert node.jobs.step()
    failed = node.send_when_due()
    assert failed.status is DeliveryStatus.FAILED and failed.attempts == 1
    assert "not reached" in (failed.last_error or "")

    receiver.answers = [(503, b"overloaded")]
    receiver.start()
    again = node.send_when_due()  # after the backoff: up, but answering 503
    assert again.status is DeliveryStatus.FAILED and "HTTP 503" in (again.last_error or "")
    sent = node.send_when_due()
    assert sent.status is DeliveryStatus.SENT and sent.attempts == 3
    assert len(receiver.posts) == 2  # the refused connection never reached it
    assert node.analyst.analysed == 1  # the outage did not re-run the analysis

    failures = node.entries(AuditEvent.RESULT_FAILED)
    assert [e.details["attempt"] for e in failures] == [1, 2]
    assert all(e.outcome is Outcome.FAILURE and not e.details["dead"] for e in failures)
    assert len(node.entries(AuditEvent.RESULT_SENT)) == 1


def test_a_refusal_is_final_audited_and_screened(
    tmp_path: Path, engine: Engine, film: Path, receiver: Receiver
) -> None:
    receiver.answers = [(400, f"unknown accession {ACCESSION}".encode())]
    receiver.start()
    node = Node(tmp_path, engine, _target(receiver))
    job = node.receive(film)
    assert node.jobs.step()
    dead = node.send_when_due()

    assert dead.status is DeliveryStatus.DEAD and dead.attempts == 1
    assert "HTTP 400 Bad Request" in (dead.last_error or "")
    assert ACCESSION not in (dead.last_error or "")  # the receiver quoted it back
    (refused,) = node.entries(AuditEvent.RESULT_FAILED)
    assert refused.outcome is Outcome.FAILURE and refused.job_id == job.id
    assert refused.details["dead"] is True and refused.details["kind"] == "notify"
    assert ACCESSION not in (refused.reason or "")
    assert not node.deliveries.step()  # nothing is tried again
    assert len(receiver.posts) == 1


def test_max_attempts_of_the_receiver_bound_the_retries(
    tmp_path: Path, engine: Engine, film: Path, receiver: Receiver
) -> None:
    receiver.answers = [(500, b"")] * 5
    receiver.start()
    node = Node(tmp_path, engine, _target(receiver, max_attempts=2))
    node.receive(film)
    assert node.jobs.step()
    assert node.send_when_due().status is DeliveryStatus.FAILED
    dead = node.send_when_due()
    assert dead.status is DeliveryStatus.DEAD and (dead.attempts, dead.max_attempts) == (2, 2)
    assert len(receiver.posts) == 2


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(500, True), (502, True), (503, True), (429, True), (408, True),
     (400, False), (401, False), (404, False), (422, False), (301, False), (307, False)],
)  # fmt: skip
def test_how_each_answer_is_taken(
    tmp_path: Path, receiver: Receiver, status: int, retryable: bool
) -> None:
    receiver.answers = [(status, b"")]
    receiver.start()
    alert = tmp_path / "alert.json"
    write_alert(alert, {"format": "test"})
    result = post_alert(alert, _target(receiver))
    assert (result.ok, result.status, result.retryable) == (False, status, retryable)
    assert len(receiver.posts) == 1  # a redirect is not followed


def test_a_receiver_too_slow_to_answer_is_retried(tmp_path: Path, receiver: Receiver) -> None:
    receiver.delay = 1.0
    receiver.start()
    alert = tmp_path / "alert.json"
    write_alert(alert, {"format": "test"})
    started = time.monotonic()
    result = post_alert(alert, _target(receiver, timeout_seconds=0.2))
    assert time.monotonic() - started < 0.9
    assert (result.ok, result.status, result.retryable) == (False, None, True)
    assert "not reached" in result.detail and "timed out" in result.detail


def test_an_https_receiver_is_verified_against_the_configured_ca(
    tmp_path: Path, receiver: Receiver
) -> None:
    pki = make_certificates(tmp_path / "pki")
    leaf = pki.ca.issue("localhost")
    receiver.start(tls=leaf)
    alert = tmp_path / "alert.json"
    write_alert(alert, {"format": "test"})

    result = post_alert(alert, _target(receiver, ca_certificates=pki.ca.certificate))
    assert (result.ok, result.status) == (True, 200)
    assert len(receiver.posts) == 1

    # The system's trust store, or another CA, does not know the hospital's CA: not sent,
    # and retried (the administrator may fix the configuration).
    for ca in (None, pki.other_ca.certificate):
        result = post_alert(alert, _target(receiver, ca_certificates=ca))
        assert (result.ok, result.status, result.retryable) == (False, None, True)
        assert "certificate verify failed" in result.detail
    assert len(receiver.posts) == 1

    gone = tmp_path / "gone.pem"
    result = post_alert(alert, _target(receiver, ca_certificates=gone))
    assert (result.ok, result.retryable) == (False, True)
    assert f"CA certificates {gone} cannot be loaded" in result.detail


def test_the_admin_cli_shows_and_resends_an_alert(
    tmp_path: Path,
    engine: Engine,
    film: Path,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pacsnode.cli.main import main

    receiver.answers = [(404, b"no such hook")]
    receiver.start()
    node = Node(tmp_path, engine, _target(receiver, max_attempts=3))
    job = node.receive(film)
    assert node.jobs.step()
    dead = node.send_when_due()
    assert dead.status is DeliveryStatus.DEAD and dead.max_attempts == 3
    for name in [n for n in os.environ if n.upper().startswith("PACSNODE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PACSNODE_STORAGE__DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PACSNODE_DATABASE__URL", f"sqlite:///{tmp_path / 'queue.db'}")
    # The node's configuration names the receiver, with its own bound on attempts.
    monkeypatch.setenv("PACSNODE_NOTIFY__0__NAME", "er-pager")
    monkeypatch.setenv("PACSNODE_NOTIFY__0__URL", receiver.url)
    monkeypatch.setenv("PACSNODE_NOTIFY__0__MAX_ATTEMPTS", "3")
    capsys.readouterr()

    assert main(["queue", "show", str(job.id)]) == 0
    out = capsys.readouterr().out
    deliveries = out[out.index("deliveries (1)") :]
    assert "er-pager" in deliveries and "notify" in deliveries and "dead" in deliveries
    assert "HTTP 404" in deliveries

    assert main(["queue", "retry", "--delivery", str(dead.id)]) == 0
    out = capsys.readouterr().out
    assert "(notify of job" in out and "pending again, 3 attempts" in out
    sent = node.send_when_due()
    assert sent.status is DeliveryStatus.SENT and len(receiver.posts) == 2
