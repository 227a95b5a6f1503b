"""Retention: received films and result objects are deleted once they have served.

A film goes ``keep_films_days`` after its job ended, a result object ``keep_results_days``
after its last delivery was sent or given up; a film whose job has not ended never goes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

from pacsnode.audit import AuditEvent, AuditLog, Outcome
from pacsnode.config.settings import StorageSettings
from pacsnode.db import Clock, utc_now
from pacsnode.jobs import ENDED, Delivery, Job, JobQueue, JobStatus, Purged

__all__ = ["SWEEP_SECONDS", "Retention", "Swept", "result_directory"]

log = logging.getLogger(__name__)

SWEEP_SECONDS: Final = 600.0
"""How often a node runs the sweep; the first runs when the node starts."""

_BATCH: Final = 200
_MIB: Final = 1024 * 1024


def result_directory(results_dir: Path, sop_instance_uid: str) -> Path:
    """Where the result objects of the film with this SOP Instance UID are written."""
    fan = hashlib.sha1(sop_instance_uid.encode("ascii")).hexdigest()[:2]
    return results_dir / fan / sop_instance_uid


@dataclass(frozen=True, slots=True)
class Swept:
    """What one sweep deleted: files and bytes."""

    films: int = 0
    results: int = 0
    bytes: int = 0


class Retention:
    """Deletes what the retention settings no longer keep, and audits every file.

    Parameters
    ----------
    queue, audit
        The node's stores.
    storage
        ``keep_films_days``, ``keep_results_days``, the spool and its free-space floor.
    results_dir
        Where the analyst writes result objects (``<data_dir>/results``).
    actor
        Who the audit entries name, e.g. ``"worker:host:123:retention"``.
    clock
        Returns the current UTC-aware time; tests pass a fake.
    """

    def __init__(
        self,
        queue: JobQueue,
        audit: AuditLog,
        storage: StorageSettings,
        results_dir: Path,
        *,
        actor: str,
        clock: Clock = utc_now,
    ) -> None:
        self.queue = queue
        self.audit = audit
        self.storage = storage
        self.results_dir = results_dir
        self.actor = actor
        self.clock = clock

    def sweep(self) -> Swept:
        """Delete every film and result object whose retention has passed.

        Returns
        -------
        Swept
            How many files and bytes went.
        """
        now = self.clock()
        films = timedelta(days=self.storage.keep_films_days)
        results = timedelta(days=self.storage.keep_results_days)
        swept = _Tally()
        self._sweep_results(now - results, swept)
        self._sweep_films(now - films, swept)
        if swept.films or swept.results:
            log.info(
                "retention: deleted %d films and %d result objects (%.1f MiB)",
                swept.films,
                swept.results,
                swept.bytes / _MIB,
            )
        else:
            log.debug("retention: nothing to delete")
        self._warn_if_full()
        return Swept(swept.films, swept.results, swept.bytes)

    def purge(
        self, statuses: Iterable[JobStatus], older_than: datetime, *, dry_run: bool = False
    ) -> Purged:
        """Delete ended jobs last changed before ``older_than`` with their deliveries and
        files (film, result objects), auditing each file; see :meth:`JobQueue.purge`."""
        reason = f"purged by an administrator (ended before {older_than.isoformat()})"
        remove = _Deleter(_Tally(), self.results_dir)
        purged = self.queue.purge(
            statuses, older_than, None if dry_run else remove, dry_run=dry_run
        )
        if dry_run:
            return purged
        by_job = {job.id: job for job in purged.jobs}
        for job in purged.jobs:
            if job.spool_path is not None:
                self._record(AuditEvent.FILM_DELETED, job, reason, path=job.spool_path)
            self._remove_untracked_results(job, reason, _Tally())
        for delivery in purged.deliveries:
            if delivery.path is not None:
                self._record_result(delivery, by_job.get(delivery.job_id), reason)
        return purged

    # --- films ---------------------------------------------------------------------------

    def _sweep_films(self, cutoff: datetime, tally: _Tally) -> None:
        reason = f"retention: ended more than {self.storage.keep_films_days:g} days ago"
        # A file newer than the cut-off was re-sent after its job ended: it waits for its
        # own turn (the job takes it over when the re-sent film is queued).
        remove = _Deleter(tally, None, not_after=cutoff)
        seen: set[int] = set()
        while True:
            found = self.queue.films_to_delete(cutoff, limit=_BATCH)
            batch = [job for job in found if job.id not in seen]
            for candidate in batch:
                seen.add(candidate.id)
                job = self.queue.delete_film(candidate.id, cutoff, remove)
                if job is None:
                    continue
                tally.films += 1
                self._record(AuditEvent.FILM_DELETED, job, reason, path=job.spool_path)
                self._remove_untracked_results(job, reason, tally)
            if len(found) < _BATCH or not batch:
                return

    def _remove_untracked_results(self, job: Job, reason: str, tally: _Tally) -> None:
        """Result objects of a job that no delivery tracks (no destination was configured;
        only an alert was queued) go with its film; tracked ones wait for their deliveries."""
        directory = result_directory(self.results_dir, job.sop_instance_uid)
        if not directory.is_dir():
            return
        tracked = {d.path for d in self.queue.list_deliveries(job_id=job.id, limit=_BATCH)}
        for path in sorted(p for p in directory.glob("*.dcm") if p not in tracked):
            size = _remove(path, self.results_dir)
            self._audit(
                AuditEvent.RESULT_DELETED,
                job_id=job.id,
                sop_instance_uid=None,
                study_instance_uid=job.study_instance_uid,
                reason=f"{reason}; never queued for sending",
                details={
                    "path": str(path),
                    "bytes": size,
                    "source_sop_instance_uid": job.sop_instance_uid,
                },
            )
            tally.results += 1
            tally.bytes += size or 0

    # --- results -------------------------------------------------------------------------

    def _sweep_results(self, cutoff: datetime, tally: _Tally) -> None:
        reason = (
            f"retention: every delivery done more than {self.storage.keep_results_days:g} days ago"
        )
        remove = _Deleter(tally, self.results_dir)
        done: set[Path] = set()
        while True:
            found = self.queue.results_to_delete(cutoff, limit=_BATCH)
            batch = [path for path in found if path not in done]
            for path in batch:
                done.add(path)
                deliveries = self.queue.delete_result(path, cutoff, remove)
                if not deliveries:
                    continue
                tally.results += 1
                self._record_result(
                    deliveries[0],
                    self.queue.get(deliveries[0].job_id),
                    reason,
                    destinations=[d.destination for d in deliveries],
                )
            if len(found) < _BATCH or not batch:
                return

    # --- helpers -------------------------------------------------------------------------

    def _warn_if_full(self) -> None:
        try:
            free = shutil.disk_usage(self.storage.spool_dir).free / _MIB
        except OSError:
            return
        if free >= self.storage.min_free_mb:
            return
        counts = self.queue.counts_by_status()
        unfinished = sum(n for status, n in counts.items() if status not in ENDED)
        log.warning(
            "spool has %.0f MiB free, below the %d MiB kept free: new films are refused; "
            "the films of %d unfinished jobs are kept until their jobs end",
            free,
            self.storage.min_free_mb,
            unfinished,
        )

    def _record(self, event: AuditEvent, job: Job, reason: str, *, path: Path | None) -> None:
        self._audit(
            event,
            job_id=job.id,
            sop_instance_uid=job.sop_instance_uid,
            study_instance_uid=job.study_instance_uid,
            reason=reason,
            details={"path": None if path is None else str(path), "job_status": job.status.value},
        )

    def _record_result(
        self,
        delivery: Delivery,
        job: Job | None,
        reason: str,
        *,
        destinations: list[str] | None = None,
    ) -> None:
        self._audit(
            AuditEvent.RESULT_DELETED,
            job_id=delivery.job_id,
            sop_instance_uid=delivery.sop_instance_uid,
            study_instance_uid=None if job is None else job.study_instance_uid,
            reason=reason,
            details={
                "path": None if delivery.path is None else str(delivery.path),
                "kind": delivery.kind,
                "destinations": destinations or [delivery.destination],
                "source_sop_instance_uid": None if job is None else job.sop_instance_uid,
            },
        )

    def _audit(self, event: AuditEvent, **fields: Any) -> None:
        try:
            self.audit.record(event, Outcome.SUCCESS, actor=self.actor, **fields)
        except Exception:
            log.exception("audit entry %s could not be written", event.value)


@dataclass
class _Tally:
    films: int = 0
    results: int = 0
    bytes: int = 0


@dataclass
class _Deleter:
    """A :data:`~pacsnode.jobs.Remover` that counts the bytes it deleted."""

    tally: _Tally
    results_root: Path | None
    not_after: datetime | None = None

    def __call__(self, path: Path) -> bool:
        root = self.results_root
        inside = root is not None and path.is_relative_to(root)
        size = _remove(path, root if inside else None, not_after=self.not_after)
        if size is None:
            return False
        self.tally.bytes += size
        return True


def _remove(
    path: Path, results_root: Path | None, *, not_after: datetime | None = None
) -> int | None:
    """Delete ``path``; its size in bytes (0 when it was already gone), or None when it is
    newer than ``not_after`` and was kept. An emptied result directory goes too.

    Raises
    ------
    OSError
        The file exists and cannot be deleted.
    """
    try:
        status = path.stat()
    except FileNotFoundError:
        return 0
    if not_after is not None and status.st_mtime > not_after.timestamp():
        return None
    path.unlink(missing_ok=True)
    if results_root is not None and path.parent != results_root:
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # only when empty; the fan-out directory stays
    return status.st_size
