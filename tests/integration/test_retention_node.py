"""The node runs the retention sweep itself: on start, with ``keep_films_days = 0``, the
film of an ended job goes (audited) and the film of a queued one stays."""

from __future__ import annotations

from pathlib import Path

from pacsnode.audit import AuditEvent
from pacsnode.config import load_settings
from pacsnode.db import create_schema, make_engine
from pacsnode.jobs import JobQueue, JobStatus
from pacsnode.node import Node, Role
from tests.integration.test_worker import wait_for


class AlmostOne:
    def random(self) -> float:
        return 0.99


def test_the_worker_sweeps_on_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = load_settings(
        None,
        {
            "PACSNODE_STORAGE__DATA_DIR": str(data),
            "PACSNODE_STORAGE__MIN_FREE_MB": "1",
            "PACSNODE_STORAGE__KEEP_FILMS_DAYS": "0",
        },
    )
    data.mkdir()
    engine = make_engine(settings.database.url)
    create_schema(engine)
    queue = JobQueue(engine, rng=AlmostOne())
    films = {}
    for n, analyse in ((1, False), (2, True)):  # IGNORED (ended), and one to fail
        path = settings.storage.spool_dir / f"1.2.3.{n}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not really a film")
        films[n] = queue.enqueue(
            sop_instance_uid=f"1.2.3.{n}",
            study_instance_uid="1.2.3",
            series_instance_uid="1.2.3.0",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
            calling_ae="MODALITY1",
            spool_path=path,
            analyse=analyse,
        ).job
    # FAILED, its next attempt about 30 s away: not ended, so its film must stay.
    assert queue.claim("w", 60) is not None and queue.claim("w", 60) is None
    failed = queue.fail(films[2].id, "w", "a passing fault")
    assert failed.status is JobStatus.FAILED
    engine.dispose()

    node = Node(settings, Role.WORKER)
    node.start()
    try:
        wait_for(lambda: bool(node.audit.query(event=AuditEvent.FILM_DELETED)), seconds=30)
    finally:
        node.stop()
    (entry,) = node.audit.query(event=AuditEvent.FILM_DELETED)
    assert entry.job_id == films[1].id and entry.actor.startswith("worker:")
    assert not films[1].spool_path.exists()  # type: ignore[union-attr]
    ignored = node.queue.get(films[1].id)
    assert ignored is not None and ignored.status is JobStatus.IGNORED
    assert ignored.spool_path is None
    assert films[2].spool_path.exists()  # type: ignore[union-attr]
    assert node.queue.get(films[2].id).spool_path == films[2].spool_path  # type: ignore[union-attr]
