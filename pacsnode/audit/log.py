"""The append-only audit log: who sent, refused, analysed or changed what, and when.

There is no API to change or delete an entry, and the database refuses it too (triggers).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import DDL, JSON, Engine, Enum, String, Text, event, or_, select
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from pacsnode.audit.events import AuditEvent, Outcome
from pacsnode.audit.screen import active_screen
from pacsnode.db import (
    Base,
    Clock,
    aware_utc,
    make_sessionmaker,
    read_session,
    utc_now,
    write_session,
)

__all__ = ["AuditEntry", "AuditLog", "AuditRecord"]

_TABLE: Final = "audit_log"


def _vocabulary(kind: type[AuditEvent] | type[Outcome]) -> Enum:
    # No CHECK constraint: the vocabulary grows, and old rows must stay valid without
    # rebuilding an append-only table.
    return Enum(
        kind,
        native_enum=False,
        create_constraint=False,
        length=32,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


class AuditRecord(Base):
    """One audit entry as stored. There is deliberately no column for patient names."""

    __tablename__ = _TABLE

    id: Mapped[int] = mapped_column(primary_key=True)
    time: Mapped[datetime] = mapped_column(index=True)
    event: Mapped[AuditEvent] = mapped_column(_vocabulary(AuditEvent), index=True)
    outcome: Mapped[Outcome] = mapped_column(_vocabulary(Outcome))
    actor: Mapped[str] = mapped_column(String(255))
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    study_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    # No foreign key: the audit outlives purged jobs.
    job_id: Mapped[int | None] = mapped_column(index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)


_APPEND_ONLY: Final = f"{_TABLE} is append-only"

for _operation in ("UPDATE", "DELETE"):
    event.listen(
        AuditRecord.__table__,
        "after_create",
        DDL(
            f"CREATE TRIGGER {_TABLE}_no_{_operation.lower()} BEFORE {_operation} ON {_TABLE} "
            f"BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END"
        ).execute_if(dialect="sqlite"),
    )

# PostgreSQL: one trigger function for row UPDATE/DELETE and for TRUNCATE (EXECUTE
# FUNCTION needs PostgreSQL 11+). tests/integration/test_postgres.py runs UPDATE, DELETE
# and TRUNCATE against a real server and checks each is refused. Other backends get no
# trigger.
_POSTGRESQL_DDL: Final = (
    f"""CREATE OR REPLACE FUNCTION {_TABLE}_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING
        MESSAGE = '{_APPEND_ONLY}: ' || TG_OP || ' refused',
        ERRCODE = 'insufficient_privilege';
END;
$$""",
    f"""CREATE TRIGGER {_TABLE}_append_only BEFORE UPDATE OR DELETE ON {_TABLE}
FOR EACH ROW EXECUTE FUNCTION {_TABLE}_refuse_change()""",
    f"""CREATE TRIGGER {_TABLE}_no_truncate BEFORE TRUNCATE ON {_TABLE}
FOR EACH STATEMENT EXECUTE FUNCTION {_TABLE}_refuse_change()""",
)
for _statement in _POSTGRESQL_DDL:
    event.listen(
        AuditRecord.__table__, "after_create", DDL(_statement).execute_if(dialect="postgresql")
    )


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """An audit entry as read back; ``time`` is UTC-aware.

    Attributes
    ----------
    actor
        Who acted, e.g. ``"AE MODALITY1 @ 10.0.0.5:4242"`` or ``"os-user alice"``.
    reason
        Why, in words, e.g. the DIMSE status a refusal was answered with.
    details
        Further machine-readable facts (JSON).
    """

    id: int
    time: datetime
    event: AuditEvent
    outcome: Outcome
    actor: str
    sop_instance_uid: str | None
    study_instance_uid: str | None
    job_id: int | None
    reason: str | None
    details: Mapping[str, Any] | None

    @classmethod
    def of(cls, record: AuditRecord) -> AuditEntry:
        """Snapshot a row."""
        return cls(
            id=record.id,
            time=record.time,
            event=record.event,
            outcome=record.outcome,
            actor=record.actor,
            sop_instance_uid=record.sop_instance_uid,
            study_instance_uid=record.study_instance_uid,
            job_id=record.job_id,
            reason=record.reason,
            details=record.details,
        )


class AuditLog:
    """Write and read the audit log.

    Parameters
    ----------
    bind
        An engine from :func:`pacsnode.db.make_engine`, or a sessionmaker bound to one;
        the schema must exist (:func:`pacsnode.db.create_schema`).
    clock
        Returns the current UTC-aware time; tests pass a fake.
    """

    def __init__(self, bind: Engine | sessionmaker[Session], *, clock: Clock = utc_now) -> None:
        self._sessions = make_sessionmaker(bind)
        self._clock = clock

    def record(
        self,
        event: AuditEvent,
        outcome: Outcome = Outcome.SUCCESS,
        *,
        actor: str,
        sop_instance_uid: str | None = None,
        study_instance_uid: str | None = None,
        job_id: int | None = None,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        """Append one entry, committed before this returns.

        Parameters
        ----------
        actor
            Who acted: the calling AE and peer address, a worker, or an OS user.
        details
            JSON-serialisable facts. Keys that name patient data (``PatientName``,
            ``patient_id``, a physician's or operator's name...) are refused: the log
            identifies instances by UID only.

        The active patient screen (:func:`pacsnode.audit.screen.screening`) is applied
        to ``reason`` and to the text in ``details``.

        Raises
        ------
        ValueError
            ``details`` is not JSON-serialisable or carries patient data keys.
        """
        if not actor.strip():
            raise ValueError("an audit entry needs an actor")
        stored = None if details is None else _checked_details(details)
        screen = active_screen()
        if screen is not None:
            reason = None if reason is None else screen(reason)
            stored = None if stored is None else _screened(stored, screen)
        with write_session(self._sessions) as session:
            record = AuditRecord(
                time=aware_utc(self._clock(), "the clock's time"),
                event=event,
                outcome=outcome,
                actor=actor,
                sop_instance_uid=sop_instance_uid,
                study_instance_uid=study_instance_uid,
                job_id=job_id,
                reason=reason,
                details=stored,
            )
            session.add(record)
            session.flush()
            return AuditEntry.of(record)

    def query(
        self,
        *,
        since: datetime | None = None,
        event: AuditEvent | None = None,
        uid: str | None = None,
        job_id: int | None = None,
        limit: int = 100,
    ) -> tuple[AuditEntry, ...]:
        """Up to ``limit`` entries matching every given filter, newest first.

        Parameters
        ----------
        since
            Only entries at or after this UTC-aware time.
        event
            Only entries of this kind.
        uid
            Only entries about this instance or study: matches the SOP Instance UID or
            the Study Instance UID.
        job_id
            Only entries about this job.
        """
        statement = select(AuditRecord).order_by(AuditRecord.id.desc()).limit(limit)
        if since is not None:
            statement = statement.where(AuditRecord.time >= aware_utc(since, "since"))
        if event is not None:
            statement = statement.where(AuditRecord.event == event)
        if uid is not None:
            statement = statement.where(
                or_(AuditRecord.sop_instance_uid == uid, AuditRecord.study_instance_uid == uid)
            )
        if job_id is not None:
            statement = statement.where(AuditRecord.job_id == job_id)
        with read_session(self._sessions) as session:
            return tuple(AuditEntry.of(record) for record in session.scalars(statement))


# Normalised (lower case, letters and digits only) keys that carry a person's identity;
# any key containing "patient" is refused too.
_PERSON_KEYS: Final = frozenset(
    {
        "referringphysiciansname",
        "referringphysicianname",
        "performingphysiciansname",
        "performingphysicianname",
        "nameofphysiciansreadingstudy",
        "operatorsname",
        "operatorname",
        "requestingphysician",
        "personname",
    }
)
_NOT_ALNUM: Final = re.compile(r"[^a-z0-9]")


def _checked_details(details: Mapping[str, Any]) -> dict[str, Any]:
    try:
        # A round trip stores exactly what a later read returns, and rejects NaN.
        stored: dict[str, Any] = json.loads(json.dumps(dict(details), allow_nan=False))
    except (TypeError, ValueError) as error:
        raise ValueError(f"audit details must be JSON-serialisable: {error}") from None
    _refuse_person_keys(stored, "details")
    return stored


def _screened(value: Any, screen: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return screen(value)
    if isinstance(value, dict):
        return {key: _screened(item, screen) for key, item in value.items()}
    if isinstance(value, list):
        return [_screened(item, screen) for item in value]
    return value


def _refuse_person_keys(value: object, where: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            normalised = _NOT_ALNUM.sub("", key.lower())
            if "patient" in normalised or normalised in _PERSON_KEYS:
                raise ValueError(f"{where}.{key}: the audit log does not store patient data")
            _refuse_person_keys(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_person_keys(item, f"{where}[{index}]")
