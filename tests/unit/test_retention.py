"""Retention: films go a set time after their job ended, result objects a set time after
their last delivery was done; nothing of a job that has not ended goes, even on a full disk.

A fake clock that starts at the real now (the files' times are real) moves days ahead.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from pacsnode.audit import AuditEvent, AuditLog
from pacsnode.config import load_settings
from pacsnode.config.settings import StorageSettings
from pacsnode.db import create_schema, make_engine
from pacsnode.errors import JobStateError
from pacsnode.jobs import DeliveryStatus, Job, JobQueue, JobStatus
from pacsnode.worker.retention import Retention, Swept, result_directory

DAY = 86_400.0


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, days: float) -> None:
        self.now += timedelta(days=days)


@dataclass
class Node:
    data: Path
    queue: JobQueue
    audit: AuditLog
    clock: FakeClock
    storage: StorageSettings

    def retention(self, **changes: object) -> Retention:
        storage = self.storage
        if changes:
            from dataclasses import replace

            storage = replace(storage, **changes)  # type: ignore[arg-type]
        return Retention(
            self.queue,
            self.audit,
            storage,
            self.data / "results",
            actor="worker:test:retention",
            clock=self.clock,
        )

    def film(self, n: int, *, analyse: bool = True) -> Job:
        path = self.data / "spool" / f"1.2.3.{n}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"film %d" % n)
        return self.queue.enqueue(
            sop_instance_uid=f"1.2.3.{n}",
            study_instance_uid="1.2.3",
            series_instance_uid="1.2.3.0",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
            calling_ae="MODALITY1",
            spool_path=path,
            analyse=analyse,
        ).job

    def result(self, job: Job, kind: str) -> Path:
        path = result_directory(self.data / "results", job.sop_instance_uid) / f"{kind}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(kind.encode())
        return path

    def deleted(self) -> list[tuple[str, int | None]]:
        events = (AuditEvent.FILM_DELETED, AuditEvent.RESULT_DELETED)
        return sorted(
            (entry.event.value, entry.job_id)
            for event in events
            for entry in self.audit.query(event=event, limit=1000)
        )


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'pacsnode.db'}")
    create_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def node(tmp_path: Path, engine: Engine) -> Node:
    clock = FakeClock()
    settings = load_settings(
        None,
        {
            "PACSNODE_STORAGE__DATA_DIR": str(tmp_path),
            "PACSNODE_STORAGE__MIN_FREE_MB": "1",
            "PACSNODE_STORAGE__KEEP_FILMS_DAYS": "2",
            "PACSNODE_STORAGE__KEEP_RESULTS_DAYS": "3",
        },
    )
    queue = JobQueue(engine, clock=clock, rng=random.Random(0))
    return Node(tmp_path, queue, AuditLog(engine, clock=clock), clock, settings.storage)


FILM = {status: n for n, status in enumerate(JobStatus)}
"""The number in each state's film's UID."""


def every_state(node: Node) -> dict[JobStatus, Job]:
    """One job in each state, each with its film in the spool."""
    # Claims take the oldest first: the four to claim are queued first.
    claimed = (JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.DEAD)
    jobs = {status: node.film(FILM[status]) for status in (*claimed, JobStatus.CANCELLED)}
    jobs[JobStatus.QUEUED] = node.film(FILM[JobStatus.QUEUED])
    jobs[JobStatus.IGNORED] = node.film(FILM[JobStatus.IGNORED], analyse=False)
    for _ in claimed:
        node.queue.claim("w", 3600)
    node.queue.succeed(jobs[JobStatus.SUCCEEDED].id, "w")
    node.queue.fail(jobs[JobStatus.FAILED].id, "w", "try again")
    node.queue.fail(jobs[JobStatus.DEAD].id, "w", "not a film", retryable=False)
    node.queue.cancel(jobs[JobStatus.CANCELLED].id)
    current = {status: node.queue.get(job.id) for status, job in jobs.items()}
    assert {status: job.status for status, job in current.items() if job} == {
        status: status for status in JobStatus
    }
    return {status: job for status, job in current.items() if job is not None}


ENDED = {JobStatus.SUCCEEDED, JobStatus.DEAD, JobStatus.CANCELLED, JobStatus.IGNORED}


def test_films_go_after_their_job_ended_and_retention_passed(node: Node) -> None:
    jobs = every_state(node)
    retention = node.retention()
    node.clock.advance(1.9)
    assert retention.sweep() == Swept()
    assert all(job.spool_path is not None and job.spool_path.exists() for job in jobs.values())

    node.clock.advance(0.2)
    swept = retention.sweep()
    assert swept.films == 4 and swept.results == 0 and swept.bytes > 0
    for status, job in jobs.items():
        after = node.queue.get(job.id)
        assert after is not None and after.status is status
        assert after.updated_at == job.updated_at  # the job's history is not rewritten
        assert job.spool_path is not None
        if status in ENDED:
            assert after.spool_path is None and not job.spool_path.exists()
        else:
            assert after.spool_path == job.spool_path and job.spool_path.exists()
    assert node.deleted() == sorted(("film_deleted", jobs[status].id) for status in ENDED)
    entry = node.audit.query(event=AuditEvent.FILM_DELETED, job_id=jobs[JobStatus.DEAD].id)[0]
    assert entry.actor == "worker:test:retention" and "2 days" in (entry.reason or "")
    assert entry.sop_instance_uid == jobs[JobStatus.DEAD].sop_instance_uid
    assert entry.details is not None and entry.details["job_status"] == "dead"
    assert retention.sweep() == Swept()  # each film once

    # A job whose film is gone cannot be retried; a re-sent film brings it back.
    with pytest.raises(JobStateError, match="deleted by retention"):
        node.queue.retry(jobs[JobStatus.DEAD].id)
    again = node.film(FILM[JobStatus.DEAD])
    assert again.status is JobStatus.QUEUED and again.spool_path is not None
    resent = node.film(FILM[JobStatus.SUCCEEDED])  # sent again
    assert resent.status is JobStatus.SUCCEEDED and resent.spool_path is not None
    node.clock.advance(0.1)
    assert retention.sweep().films == 1  # the succeeded job's copy; the re-queued stays
    assert again.spool_path.exists() and not resent.spool_path.exists()


def test_a_result_goes_after_every_delivery_of_it_is_done(node: Node) -> None:
    job = node.film(1)
    node.queue.claim("w", 60)
    node.queue.succeed(job.id, "w")
    seg, sr = node.result(job, "seg"), node.result(job, "sr")
    for path, uid in ((seg, "2.25.1"), (sr, "2.25.2")):
        for destination in ("pacs", "archive"):
            node.queue.add_delivery(
                job.id, destination=destination, kind=path.stem, sop_instance_uid=uid, path=path
            )
    # SEG: sent to both, one after a refusal; SR: sent to one, the other still retrying.
    outcomes = [("sent",), ("dead",), ("sent",), ("failed",)]
    for outcome in outcomes:
        claimed = node.queue.claim_delivery("s", 60)
        assert claimed is not None
        if outcome == ("sent",):
            node.queue.delivery_sent(claimed.id, "s")
        else:
            node.queue.delivery_failed(claimed.id, "s", "0xA700", retryable=outcome == ("failed",))
    retention = node.retention()
    node.clock.advance(2.9)
    assert retention.sweep().results == 0  # the film went at 2 days
    node.clock.advance(0.2)
    assert retention.sweep() == Swept(films=0, results=1, bytes=3)
    assert not seg.exists() and sr.exists() and seg.parent.exists()
    seg_deliveries = [d for d in node.queue.list_deliveries() if d.kind == "seg"]
    assert [d.path for d in seg_deliveries] == [None, None]
    entry = node.audit.query(event=AuditEvent.RESULT_DELETED)[0]
    assert entry.sop_instance_uid == "2.25.1" and entry.job_id == job.id
    assert entry.details is not None and sorted(entry.details["destinations"]) == [
        "archive",
        "pacs",
    ]
    dead = next(d for d in seg_deliveries if d.status is DeliveryStatus.DEAD)
    with pytest.raises(JobStateError, match="deleted by retention"):
        node.queue.retry_delivery(dead.id)

    # The SR's last delivery is sent later: its three days count from then.
    node.clock.advance(1)
    claimed = node.queue.claim_delivery("s", 60)
    assert claimed is not None and claimed.kind == "sr"
    node.queue.delivery_sent(claimed.id, "s")
    node.clock.advance(2.9)
    assert retention.sweep().results == 0 and sr.exists()
    node.clock.advance(0.2)
    assert retention.sweep().results == 1
    assert not sr.exists() and not sr.parent.exists()  # the emptied directory goes too


def test_results_never_queued_for_sending_go_with_the_film(node: Node) -> None:
    job = node.film(1)
    node.queue.claim("w", 60)
    node.queue.succeed(job.id, "w")
    seg = node.result(job, "seg")  # no destination configured: no delivery
    node.clock.advance(2.1)
    assert node.retention().sweep() == Swept(films=1, results=1, bytes=len(b"film 1") + 3)
    assert not seg.exists()


def test_results_that_only_an_alert_tracks_go_with_the_film(node: Node) -> None:
    job = node.film(1)
    node.queue.claim("w", 60)
    seg = node.result(job, "seg")  # no destination: only a [[notify]] alert was queued
    alert = seg.parent / "notify-er.json"
    alert.write_bytes(b"{}")
    node.queue.add_delivery(
        job.id, destination="er", kind="notify", sop_instance_uid=job.sop_instance_uid, path=alert
    )
    node.queue.succeed(job.id, "w")
    node.clock.advance(2.1)
    assert node.retention().sweep() == Swept(films=1, results=1, bytes=len(b"film 1") + 3)
    assert not seg.exists() and alert.exists()  # the alert is not sent yet
    delivery = node.queue.claim_delivery("sender", 60)
    assert delivery is not None
    node.queue.delivery_sent(delivery.id, "sender")
    node.clock.advance(3.1)
    assert node.retention().sweep() == Swept(results=1, bytes=2)
    assert not alert.exists()


def test_a_full_disk_never_costs_the_film_of_a_job_that_has_not_ended(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    jobs = every_state(node)
    before = {s: j.spool_path.read_bytes() for s, j in jobs.items() if j.spool_path}
    # The spool is "full" (more free space demanded than the disk has), retention is
    # as short as it gets and a century has passed: only ended jobs lose their films.
    retention = node.retention(min_free_mb=10**9, keep_films_days=0.0, keep_results_days=0.0)
    node.clock.advance(36_500)
    with caplog.at_level(logging.WARNING, logger="pacsnode.worker.retention"):
        assert retention.sweep().films == len(ENDED)
    assert "new films are refused" in caplog.text and "3 unfinished jobs" in caplog.text
    for status, job in jobs.items():
        assert job.spool_path is not None
        if status in ENDED:
            assert not job.spool_path.exists()
        else:
            assert job.spool_path.read_bytes() == before[status]
            assert node.queue.get(job.id).spool_path == job.spool_path  # type: ignore[union-attr]
    # The running job ends later; only then, and after its retention, does its film go.
    running = jobs[JobStatus.RUNNING]
    node.queue.succeed(running.id, "w")
    assert retention.sweep().films == 0
    node.clock.advance(0.001)
    assert retention.sweep().films == 1 and not running.spool_path.exists()  # type: ignore[union-attr]


def test_a_film_written_again_after_the_cut_off_is_kept(node: Node) -> None:
    job = node.film(1, analyse=False)  # IGNORED: ended at once
    node.clock.advance(3)
    assert job.spool_path is not None
    future = node.clock.now.timestamp() - 0.5 * DAY  # newer than the cut-off (now - 2 days)
    os.utime(job.spool_path, (future, future))
    assert node.retention().sweep() == Swept()
    assert job.spool_path.exists() and node.queue.get(job.id).spool_path == job.spool_path  # type: ignore[union-attr]
