"""Critical-finding alerts, queued beside a film's results: one for each ``[[notify]]``
receiver whose ``on`` names a flag of the film's read-out, sent by the delivery loop."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pacsnode.config.settings import NotifyTarget
from pacsnode.export.notify import (
    NOTIFY_KIND,
    alert_file,
    alert_payload,
    read_accession_number,
    write_alert,
)
from pacsnode.jobs import Job, JobQueue
from pacsnode.worker.analyst import Analysis

__all__ = ["queue_alerts"]


def queue_alerts(
    queue: JobQueue,
    job: Job,
    analysis: Analysis,
    targets: Sequence[NotifyTarget],
    directory: Path,
    model_version: str,
) -> tuple[str, ...]:
    """Write the alert of each receiver that wants one of the film's flags to
    ``directory`` and queue its delivery; the names of those receivers.

    The delivery is keyed on the film's SOP Instance UID, so a receiver is alerted once a
    film: analysing it again (a retry, a new model version) rewrites an alert not yet
    sent, and does not repeat one that was.

    Raises
    ------
    OSError
        The film's header or the alert file cannot be read or written.
    """
    readout = analysis.readout
    if readout is None or not targets or job.spool_path is None:
        return ()
    wanted = [(target, readout.flagged(target.on)) for target in targets]
    wanted = [(target, flags) for target, flags in wanted if flags]
    if not wanted:
        return ()
    accession_number = read_accession_number(job.spool_path)
    results = {result.kind: result.sop_instance_uid for result in analysis.results}
    for target, flags in wanted:
        path = alert_file(directory, target.name)
        payload = alert_payload(
            study_instance_uid=job.study_instance_uid,
            series_instance_uid=job.series_instance_uid,
            sop_instance_uid=job.sop_instance_uid,
            accession_number=accession_number,
            readout=readout,
            flags=flags,
            results=results,
            model_version=model_version,
        )
        write_alert(path, payload)
        queue.add_delivery(
            job.id,
            destination=target.name,
            kind=NOTIFY_KIND,
            sop_instance_uid=job.sop_instance_uid,
            path=path,
            max_attempts=target.max_attempts,
        )
    return tuple(target.name for target, _ in wanted)
