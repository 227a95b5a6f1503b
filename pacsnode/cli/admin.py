"""Administration commands: inspect and mend the job queue, read the audit log, check the node.

The parser is built on every ``pacsnode`` run, so SQLAlchemy, pynetdicom (and with it
numpy) are imported inside the commands, never at module level.
"""

from __future__ import annotations

import argparse
import getpass
import json
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, is_dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from pacsnode.cli._args import config_parent, int_at_least
from pacsnode.errors import JobStateError, PacsnodeError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from pacsnode.audit import AuditLog
    from pacsnode.config.settings import Destination, Settings
    from pacsnode.jobs import DeliveryStatus, Job, JobQueue

__all__ = ["add_admin_commands"]

# The same codes as pacsnode.cli.main, which imports this module and so cannot be imported.
EXIT_OK, EXIT_ERROR = 0, 1

DEFAULT_ECHO_TIMEOUT: Final = 5.0
"""Seconds an admin waits for each C-ECHO: a healthy peer answers in milliseconds."""

_ERROR_WIDTH: Final = 48
_E = TypeVar("_E", bound=Enum)


def add_admin_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``queue``, ``audit``, ``status`` and ``echo`` to the ``pacsnode`` parser.

    Parameters
    ----------
    sub
        The subparsers of the top-level ``pacsnode`` parser.
    """
    config = config_parent()
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument(
        "--json", action="store_true", help="machine-readable JSON (times ISO 8601 UTC)"
    )
    _add_queue(sub, config, as_json)

    au = sub.add_parser(
        "audit",
        parents=[config, as_json],
        help="read the audit log",
        description="Audit entries matching every filter given, newest first.",
    )
    au.add_argument(
        "--since",
        type=_since,
        metavar="DURATION|TIME",
        help="a duration back from now (30m, 12h, 7d) or an ISO 8601 time (UTC if no offset)",
    )
    au.add_argument(
        "--event",
        type=_audit_event,
        nargs="+",
        action="extend",
        help="only these events, e.g. admin_action job_dead",
    )
    au.add_argument("--uid", help="a SOP Instance UID or Study Instance UID")
    au.add_argument("--job", type=int_at_least(1), metavar="ID", help="a job id")
    au.add_argument("--limit", type=int_at_least(1), default=50, metavar="N", help="at most N (50)")
    au.set_defaults(func=_cmd_audit)

    st = sub.add_parser(
        "status",
        parents=[config, as_json],
        help="queue depth, oldest waiting job, C-ECHO of every destination",
        description=(
            "Jobs and deliveries by state, the longest-waiting job, and a C-ECHO to each "
            "configured destination. The exit status is 1 if any destination fails the echo."
        ),
    )
    st.add_argument(
        "--timeout", type=_seconds, default=DEFAULT_ECHO_TIMEOUT, metavar="S", help="per echo (5)"
    )
    st.set_defaults(func=_cmd_status)

    ec = sub.add_parser(
        "echo",
        parents=[config],
        help="C-ECHO destinations, or this node's own listener",
        description=(
            "C-ECHO each TARGET, calling as the node's AE title. A TARGET is a configured "
            "destination's name or AE@HOST:PORT; with none, the node's own listener and every "
            "destination are echoed. The exit status is 1 if any fails."
        ),
    )
    ec.add_argument("targets", nargs="*", metavar="TARGET", help="destination name or AE@HOST:PORT")
    ec.add_argument(
        "--timeout", type=_seconds, default=DEFAULT_ECHO_TIMEOUT, metavar="S", help="per echo (5)"
    )
    ec.set_defaults(func=_cmd_echo)


def _add_queue(
    sub: argparse._SubParsersAction,
    config: argparse.ArgumentParser,
    as_json: argparse.ArgumentParser,
) -> None:
    parent = sub.add_parser("queue", help="list, inspect, retry, cancel and purge jobs")
    verbs = parent.add_subparsers(dest="queue_command", metavar="ACTION")
    verbs.required = True

    ls = verbs.add_parser(
        "list", parents=[config, as_json], help="jobs, most recently queued first"
    )
    ls.add_argument("--status", type=_job_status, help="only jobs in this state, e.g. dead")
    ls.add_argument("--limit", type=int_at_least(1), default=50, metavar="N", help="at most N (50)")
    ls.set_defaults(func=_cmd_list)

    sh = verbs.add_parser(
        "show", parents=[config, as_json], help="one job with its deliveries and audit entries"
    )
    sh.add_argument("job_id", type=int_at_least(1), metavar="JOB_ID")
    sh.set_defaults(func=_cmd_show)

    rt = verbs.add_parser(
        "retry",
        parents=[config],
        help="queue a dead, failed or cancelled job again, or resend a delivery",
        description="Fresh attempts, due now. The change is recorded in the audit log.",
    )
    which = rt.add_mutually_exclusive_group(required=True)
    which.add_argument("job_id", type=int_at_least(1), nargs="?", metavar="JOB_ID")
    which.add_argument(
        "--delivery", type=int_at_least(1), metavar="ID", help="a dead or failed delivery"
    )
    rt.set_defaults(func=_cmd_retry)

    ca = verbs.add_parser(
        "cancel",
        parents=[config],
        help="withdraw a job that is not running and has not succeeded",
        description="The job is not analysed; its deliveries, if any, are left alone. "
        "Recorded in the audit log; 'queue retry' undoes it.",
    )
    ca.add_argument("job_id", type=int_at_least(1), metavar="JOB_ID")
    ca.set_defaults(func=_cmd_cancel)

    pu = verbs.add_parser(
        "purge",
        parents=[config],
        help="delete ended jobs with their files",
        description=(
            "Delete ended jobs (succeeded, dead, cancelled, ignored) with their deliveries, "
            "their received film and their result objects. A job with a result still to "
            "send is kept; jobs that have not ended (queued, running, failed) are never "
            "touched. The audit log keeps its entries and gains one per deleted file. "
            "Without --yes, only says what would be deleted."
        ),
    )
    pu.add_argument(
        "--status",
        type=_job_status,
        action="append",
        help="only jobs in this ended state, e.g. succeeded; repeat for more "
        "(default: every ended state)",
    )
    when = pu.add_mutually_exclusive_group(required=True)
    when.add_argument(
        "--older-than",
        type=_duration,
        metavar="DURATION",
        help="ended (last changed) this long ago or more: 30m, 12h, 7d, 2w",
    )
    when.add_argument("--all-ended", action="store_true", help="every ended job, however recent")
    pu.add_argument("--yes", action="store_true", help="really delete")
    pu.set_defaults(func=_cmd_purge)


# --- argument types ----------------------------------------------------------------------


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < 3600:
        raise argparse.ArgumentTypeError(f"must be between 0 and 3600 s, got {text}")
    return value


_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def _duration(text: str) -> timedelta:
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: a number and s, m, h, d or w, e.g. 12h or 7d"
        )
    return timedelta(seconds=float(match[1]) * _UNIT_SECONDS[match[2]])


def _since(text: str) -> datetime:
    if _DURATION.fullmatch(text.strip().lower()):
        return datetime.now(UTC) - _duration(text)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration (12h, 7d) nor an ISO 8601 time"
        ) from None
    # The node stores and shows UTC, so a time without an offset is read as UTC too.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _member(kind: type[_E], text: str, what: str) -> _E:
    try:
        return kind(text.strip().lower())
    except ValueError:
        known = ", ".join(member.value for member in kind)
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}; one of: {known}") from None


def _job_status(text: str) -> Any:
    # Imported here: the jobs package pulls in SQLAlchemy, slow for `pacsnode --help`.
    from pacsnode.jobs import JobStatus

    return _member(JobStatus, text, "a job status")


def _audit_event(text: str) -> Any:
    from pacsnode.audit import AuditEvent

    return _member(AuditEvent, text, "an audit event")


# --- the database ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Node:
    """The node's settings and stores, for the length of one command."""

    settings: Settings
    queue: JobQueue
    audit: AuditLog
    sessions: sessionmaker[Session]


def _settings(args: argparse.Namespace) -> Settings:
    from pacsnode.config.settings import load_settings

    return load_settings(args.config)


@contextmanager
def _open(args: argparse.Namespace, *, write: bool) -> Iterator[_Node]:
    """The node's queue and audit log, the schema created where it is missing.

    A fresh node has no database file yet. Reading commands then see an empty stand-in
    in memory rather than create a file (in the wrong place, if the configuration is
    not the node's); changing commands refuse with an error naming the path.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from pacsnode.audit import AuditLog
    from pacsnode.db import create_schema, make_engine, make_sessionmaker
    from pacsnode.jobs import JobQueue

    settings = _settings(args)
    url = settings.database.url
    missing = _missing_sqlite_file(url)
    if missing is not None:
        hint = "has the node run with this configuration? see --config and PACSNODE_*"
        if write:
            raise PacsnodeError(f"no database at {missing} ({hint})")
        print(f"note: no database at {missing} yet; nothing to show ({hint})", file=sys.stderr)
        url = "sqlite://"
    w = settings.worker
    engine = make_engine(url)
    try:
        create_schema(engine)
        yield _Node(
            settings=settings,
            queue=JobQueue.configured(engine, w),
            audit=AuditLog(engine),
            sessions=make_sessionmaker(engine),
        )
    except SQLAlchemyError as exc:
        shown = make_url(url).render_as_string(hide_password=True)
        cause = getattr(exc, "orig", None) or exc
        raise PacsnodeError(f"database {shown}: {cause}") from exc
    finally:
        engine.dispose()


def _missing_sqlite_file(url: str) -> Path | None:
    """The file of a file-based SQLite URL when it does not exist, else None."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:"):  # URI form: let SQLite interpret it
        return None
    path = Path(database)
    return None if path.exists() else path


def _delivery_counts(node: _Node) -> dict[DeliveryStatus, int]:
    from sqlalchemy import func, select

    from pacsnode.db import read_session
    from pacsnode.jobs import DeliveryStatus
    from pacsnode.jobs.models import DeliveryRecord

    # JobQueue has no delivery counts; a GROUP BY spares loading every sent delivery.
    counts = dict.fromkeys(DeliveryStatus, 0)
    with read_session(node.sessions) as session:
        rows = session.execute(
            select(DeliveryRecord.status, func.count()).group_by(DeliveryRecord.status)
        )
        for status, count in rows.tuples():
            counts[status] = count
    return counts


def _actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError, ImportError):  # no login name: a container without passwd
        user = "unknown"
    return f"cli:{user}"


def _administer(
    node: _Node,
    action: str,
    change: Callable[[], Any],
    *,
    job: Job | None,
    job_id: int | None,
    details: Mapping[str, Any],
    outcome: Callable[[Any], Mapping[str, Any]] | None = None,
) -> Any:
    """Run ``change`` and record it in the audit log, failed or done.

    A refused change (a missing job, a job in the wrong state) is audited as a failure
    and raised again for the CLI to report. ``outcome`` turns the change's result into
    further details of a successful entry.
    """
    from pacsnode.audit import AuditEvent, Outcome

    about: dict[str, Any] = {
        "actor": _actor(),
        "job_id": job_id,
        "sop_instance_uid": None if job is None else job.sop_instance_uid,
        "study_instance_uid": None if job is None else job.study_instance_uid,
    }
    facts = {"action": action, **details}
    try:
        result = change()
    except JobStateError as exc:
        node.audit.record(
            AuditEvent.ADMIN_ACTION, Outcome.FAILURE, reason=str(exc), details=facts, **about
        )
        raise
    if outcome is not None:
        facts.update(outcome(result))
    node.audit.record(AuditEvent.ADMIN_ACTION, Outcome.SUCCESS, details=facts, **about)
    return result


# --- queue -------------------------------------------------------------------------------


def _cmd_list(args: argparse.Namespace) -> int:
    with _open(args, write=False) as node:
        jobs = node.queue.list(args.status, limit=args.limit)
    if args.json:
        _print_json(jobs)
        return EXIT_OK
    rows = [
        [
            str(job.id),
            job.status.value,
            str(job.priority),
            f"{job.attempts}/{job.max_attempts}",
            job.sop_instance_uid,
            job.calling_ae,
            _when(job.updated_at),
            _short(job.last_error),
        ]
        for job in jobs
    ]
    header = [
        "ID",
        "STATUS",
        "PRIORITY",
        "ATTEMPTS",
        "SOP INSTANCE UID",
        "CALLING AE",
        "UPDATED",
        "LAST ERROR",
    ]
    print(_table(header, rows))
    if not jobs:
        print("(no jobs)")
    return EXIT_OK


def _cmd_show(args: argparse.Namespace) -> int:
    with _open(args, write=False) as node:
        job = node.queue.get(args.job_id)
        if job is None:
            raise JobStateError(f"job {args.job_id} does not exist")
        # One job has a handful of deliveries and entries; the limits only bound a freak.
        deliveries = node.queue.list_deliveries(job_id=job.id, limit=1000)
        entries = node.audit.query(job_id=job.id, limit=1000)
    if args.json:
        _print_json({"job": job, "deliveries": deliveries, "audit": entries})
        return EXIT_OK
    print(f"job {job.id}")
    values = {f.name: getattr(job, f.name) for f in fields(job)}
    values["attempts"] = f"{job.attempts}/{job.max_attempts}"
    del values["id"], values["max_attempts"]
    width = max(len(name) for name in values)
    for name, value in values.items():
        print(f"  {name.ljust(width)}  {_text(value)}")
    print(f"\ndeliveries ({len(deliveries)})")
    rows = [
        [
            str(d.id),
            d.destination,
            d.kind,
            d.status.value,
            f"{d.attempts}/{d.max_attempts}",
            d.sop_instance_uid,
            _when(d.updated_at),
            _short(d.last_error),
        ]
        for d in deliveries
    ]
    header = ["ID", "DESTINATION", "KIND", "STATUS", "ATTEMPTS", "SOP INSTANCE UID", "UPDATED"]
    print(_table([*header, "LAST ERROR"], rows))
    print(f"\naudit ({len(entries)})")
    print(_audit_table(entries, with_job=False))
    return EXIT_OK


def _cmd_retry(args: argparse.Namespace) -> int:
    from pacsnode.export.notify import NOTIFY_KIND

    with _open(args, write=True) as node:
        if args.delivery is not None:
            delivery = node.queue.get_delivery(args.delivery)
            job_id = None if delivery is None else delivery.job_id
            job = None if job_id is None else node.queue.get(job_id)
            # An alert keeps its receiver's own bound on attempts, as when it was queued;
            # the receiver is found by name, as the delivery loop finds it.
            bound = None
            if delivery is not None and delivery.kind == NOTIFY_KIND:
                receivers = {t.name: t for t in node.settings.notify}
                receiver = receivers.get(delivery.destination)
                bound = None if receiver is None else receiver.max_attempts
            sent = _administer(
                node,
                "retry",
                lambda: node.queue.retry_delivery(args.delivery, max_attempts=bound),
                job=job,
                job_id=job_id,
                details={"delivery_id": args.delivery},
            )
            print(
                f"delivery {sent.id} ({sent.kind} of job {sent.job_id} to {sent.destination}) "
                f"is {sent.status.value} again, {sent.max_attempts} attempts"
            )
            return EXIT_OK
        before = node.queue.get(args.job_id)
        job = _administer(
            node,
            "retry",
            lambda: node.queue.retry(args.job_id),
            job=before,
            job_id=args.job_id,
            details={} if before is None else {"from": before.status.value},
        )
    print(f"job {job.id} is {job.status.value} again, {job.max_attempts} attempts")
    return EXIT_OK


def _cmd_cancel(args: argparse.Namespace) -> int:
    with _open(args, write=True) as node:
        before = node.queue.get(args.job_id)
        job = _administer(
            node,
            "cancel",
            lambda: node.queue.cancel(args.job_id),
            job=before,
            job_id=args.job_id,
            details={} if before is None else {"from": before.status.value},
        )
    print(f"job {job.id} is {job.status.value}")
    return EXIT_OK


def _cmd_purge(args: argparse.Namespace) -> int:
    from pacsnode.jobs import ENDED
    from pacsnode.node import RESULTS_SUBDIR
    from pacsnode.worker.retention import Retention

    statuses = list(dict.fromkeys(args.status or sorted(ENDED, key=lambda s: s.value)))
    live = [status.value for status in statuses if status not in ENDED]
    if live:
        raise PacsnodeError(
            f"{', '.join(live)} jobs have not ended and are never purged; "
            "cancel them or let them finish"
        )
    now = datetime.now(UTC)
    # --all-ended: anything last changed up to now (a second ahead, for clock granularity).
    cutoff = now + timedelta(seconds=1) if args.all_ended else now - args.older_than
    names = " or ".join(status.value for status in statuses)
    when = "" if args.all_ended else f" ended before {_when(cutoff)}"
    with _open(args, write=args.yes) as node:
        storage = node.settings.storage
        retention = Retention(
            node.queue,
            node.audit,
            storage,
            storage.data_dir / RESULTS_SUBDIR,
            actor=_actor(),
        )
        if not args.yes:
            found = retention.purge(statuses, cutoff, dry_run=True)
            films, results = _purged_files(found)
            print(
                f"{len(found.jobs)} {names} jobs{when} would be deleted with "
                f"{len(found.deliveries)} deliveries, {films} films and {results} result "
                "files; nothing was. Re-run with --yes."
            )
            return EXIT_ERROR
        purged = _administer(
            node,
            "purge",
            lambda: retention.purge(statuses, cutoff),
            job=None,
            job_id=None,
            details={
                "statuses": [status.value for status in statuses],
                "older_than": cutoff.isoformat(),
            },
            outcome=lambda done: dict(
                zip(
                    ("deleted", "deliveries", "films", "results"),
                    (len(done.jobs), len(done.deliveries), *_purged_files(done)),
                    strict=True,
                )
            ),
        )
    films, results = _purged_files(purged)
    print(
        f"deleted {len(purged.jobs)} {names} jobs{when}, with {len(purged.deliveries)} "
        f"deliveries, {films} films and {results} result files"
    )
    return EXIT_OK


def _purged_files(purged: Any) -> tuple[int, int]:
    """Films and result files (not yet deleted by retention) of a purge."""
    films = sum(job.spool_path is not None for job in purged.jobs)
    results = len({d.path for d in purged.deliveries if d.path is not None})
    return films, results


# --- audit -------------------------------------------------------------------------------


def _cmd_audit(args: argparse.Namespace) -> int:
    with _open(args, write=False) as node:
        found = {
            entry.id: entry
            # AuditLog.query takes one event: one query each, merged newest first.
            for event in dict.fromkeys(args.event or [None])
            for entry in node.audit.query(
                since=args.since, event=event, uid=args.uid, job_id=args.job, limit=args.limit
            )
        }
    entries = sorted(found.values(), key=lambda entry: entry.id, reverse=True)[: args.limit]
    if args.json:
        _print_json(entries)
        return EXIT_OK
    print(_audit_table(entries, with_job=True))
    if not entries:
        print("(no entries)")
    return EXIT_OK


def _audit_table(entries: Sequence[Any], *, with_job: bool) -> str:
    rows = []
    for e in entries:
        details = "" if e.details is None else json.dumps(e.details, separators=(",", ":"))
        row = [_when(e.time), e.event.value, e.outcome.value, e.actor]
        if with_job:
            row += [_text(e.job_id), _text(e.sop_instance_uid)]
        rows.append([*row, _short(e.reason), _short(details, 64)])
    header = ["TIME", "EVENT", "OUTCOME", "ACTOR"]
    if with_job:
        header += ["JOB", "SOP INSTANCE UID"]
    return _table([*header, "REASON", "DETAILS"], rows)


# --- status and echo ---------------------------------------------------------------------


def _cmd_status(args: argparse.Namespace) -> int:
    from sqlalchemy.engine import make_url

    from pacsnode.export.sender import echo

    with _open(args, write=False) as node:
        jobs = node.queue.counts_by_status()
        deliveries = _delivery_counts(node)
        oldest = node.queue.oldest_waiting()
        settings = node.settings
    now = datetime.now(UTC)
    echoes = [
        (d, echo(d, calling_ae=settings.node.ae_title, timeout=args.timeout))
        for d in settings.destinations
    ]
    ok = all(result.ok for _, result in echoes)
    database = make_url(settings.database.url).render_as_string(hide_password=True)
    if args.json:
        _print_json(
            {
                "ok": ok,
                "config": settings.source,
                "node": settings.node,
                "senders": _senders(settings),
                "tls": _tls_summary(settings),
                "database": database,
                "jobs": {status.value: n for status, n in jobs.items()},
                "deliveries": {status.value: n for status, n in deliveries.items()},
                "oldest_waiting": None
                if oldest is None
                else {
                    "job_id": oldest.id,
                    "status": oldest.status,
                    "created_at": oldest.created_at,
                    "age_seconds": (now - oldest.created_at).total_seconds(),
                },
                "destinations": [
                    {
                        "name": d.name,
                        "ae_title": d.ae_title,
                        "host": d.host,
                        "port": d.port,
                        "ok": result.ok,
                        "status": result.status,
                        "detail": result.detail,
                        "seconds": result.seconds,
                    }
                    for d, result in echoes
                ],
                "notify": [
                    {"name": t.name, "url": _shown_url(t.url), "on": list(t.on)}
                    for t in settings.notify
                ],
            }
        )
        return EXIT_OK if ok else EXIT_ERROR
    n = settings.node
    print(f"node          {n.ae_title} on {n.host}:{n.port} ({settings.source or 'defaults'})")
    print(f"senders       {_senders(settings)}")
    print(f"tls           {_tls_summary(settings)}")
    print(f"database      {database}")
    print("jobs          " + ", ".join(f"{s.value} {c}" for s, c in jobs.items()))
    print("deliveries    " + ", ".join(f"{s.value} {c}" for s, c in deliveries.items()))
    if oldest is None:
        print("oldest        no job waiting")
    else:
        print(
            f"oldest        job {oldest.id}, {oldest.status.value}, waiting "
            f"{_age(now - oldest.created_at)} (since {_when(oldest.created_at)})"
        )
    if not echoes:
        print("destinations  none configured")
    else:
        print("destinations")
        rows = [[d.name, "ok" if r.ok else "FAILED", r.detail] for d, r in echoes]
        print(_indent(_table(["NAME", "ECHO", "DETAIL"], rows)))
    if not settings.notify:
        print("notify        none configured")
    else:
        print("notify        (alert receivers; not probed: a POST would be an alert)")
        rows = [[t.name, _shown_url(t.url), ", ".join(t.on)] for t in settings.notify]
        print(_indent(_table(["NAME", "URL", "ON"], rows)))
    return EXIT_OK if ok else EXIT_ERROR


def _shown_url(url: str) -> str:
    """A receiver's URL without what may hold a credential (its query and fragment; the
    configuration refuses user info)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _senders(settings: Settings) -> str:
    """Who may send films, in a line; an empty allow-list says so plainly."""
    titles = settings.security.allowed_calling_aets
    if titles:
        return "calling AEs " + ", ".join(titles)
    where = "from this machine only" if settings.node.loopback_only else "from the network"
    return f"accepts any calling AE ({where}; [security] allowed_calling_aets is empty)"


def _tls_summary(settings: Settings) -> str:
    """The listener's DICOM TLS, in a line."""
    tls = settings.tls
    if tls is None:
        return "off (plain DICOM; [tls] is not set)"
    peers = (
        "client certificates required"
        if tls.require_client_certificate
        else "client certificates optional"
    )
    return f"DICOM TLS only, {tls.minimum_version} or later, {peers}"


def _cmd_echo(args: argparse.Namespace) -> int:
    from pacsnode.export.sender import echo

    settings = _settings(args)
    if args.targets:
        targets = [_target(settings, text) for text in args.targets]
    else:
        targets = [("this node", _own_listener(settings))]
        targets += [(d.name, d) for d in settings.destinations]
    failed = 0
    for label, destination in targets:
        result = echo(destination, calling_ae=settings.node.ae_title, timeout=args.timeout)
        failed += not result.ok
        print(f"{label}: {'ok' if result.ok else 'FAILED'}: {result.detail}")
    return EXIT_ERROR if failed else EXIT_OK


_WILDCARD_HOSTS: Final = frozenset({"0.0.0.0", "::", "[::]", ""})


def _own_listener(settings: Settings) -> Destination:
    from pacsnode.config.settings import Destination

    node = settings.node
    # A listener on every interface is reached on loopback.
    host = "127.0.0.1" if node.host in _WILDCARD_HOSTS else node.host
    if settings.tls is None:
        return Destination(name="self", ae_title=node.ae_title, host=host, port=node.port)
    # Over TLS with the node's own certificate, which must chain to the node's CAs; its
    # name is not checked, since it names the host the modalities call, not loopback.
    return Destination(
        name="self",
        ae_title=node.ae_title,
        host=host,
        port=node.port,
        tls=True,
        ca_certificates=settings.tls.ca_certificates,
        certificate=settings.tls.certificate,
        private_key=settings.tls.private_key,
        check_hostname=False,
    )


def _target(settings: Settings, text: str) -> tuple[str, Destination]:
    """A configured destination by name, or one written ``AE@HOST:PORT``."""
    from pacsnode.config.settings import Destination

    try:
        return text, settings.destination(text)
    except KeyError:
        pass
    ae_title, at, address = text.partition("@")
    host, colon, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")  # [::1]:104
    known = ", ".join(d.name for d in settings.destinations) or "none configured"
    if not (at and colon and ae_title.strip() and host and port.isdigit()):
        raise PacsnodeError(f"{text!r} is neither a destination ({known}) nor AE@HOST:PORT")
    if len(ae_title.strip()) > 16 or not 1 <= int(port) <= 65535:
        raise PacsnodeError(f"{text!r}: an AE title has at most 16 characters, a port 1-65535")
    return text, Destination(name=text, ae_title=ae_title.strip(), host=host, port=int(port))


# --- output ------------------------------------------------------------------------------


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _age(age: timedelta) -> str:
    seconds = max(0, int(age.total_seconds()))
    days, seconds = divmod(seconds, 86_400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"


def _text(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return _when(value)
    if isinstance(value, Enum):
        return str(value.value)
    return str(value)


def _short(text: str | None, width: int = _ERROR_WIDTH) -> str:
    """The first line of ``text``, cut to ``width`` characters."""
    line = next(iter((text or "").strip().splitlines()), "")
    return line if len(line) <= width else line[: width - 1] + "…"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max([len(title), *(len(row[i]) for row in rows)]) for i, title in enumerate(header)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in fields(value)}
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _print_json(value: object) -> None:
    print(json.dumps(value, default=_json_default, indent=1, ensure_ascii=False))
