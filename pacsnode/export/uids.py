"""Deterministic UIDs for the objects the node sends back, so that analysing a film again
with the same model replaces its results in the PACS instead of adding copies.

Scheme
------
Every UID is ``2.25.`` followed by the decimal form of a name-based (version 5, SHA-1)
UUID, as ISO/IEC 9834-8 and PS3.5 §B.2 allow: no organisational root is needed and the
result is at most 44 characters. The UUID's namespace is :data:`NAMESPACE` (fixed for
pacsnode) and its name is ``"pacsnode-export/1|" + "|".join(parts)``, where the parts are,
for a result object,

    ``kind | role | source SOP Instance UID | model version``

with ``kind`` an :class:`ExportKind` (``seg``, ``sr``), ``role`` ``series`` or
``instance``, and the model version last so that any text it holds cannot be mistaken for
another part (UIDs and the fixed words contain no ``|``). The same film analysed by the
same model version therefore always gives the same Series and SOP Instance UIDs; a new
model version gives new ones, so the PACS keeps both versions' results apart.

Do not change the namespace or the ``pacsnode-export/1`` prefix: every UID already sent
would stop matching its re-run.

pydicom's ``generate_uid(prefix=None, entropy_srcs=...)`` is no substitute: with no prefix
it ignores the entropy and returns a random UID.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass

from pydicom.uid import UID

__all__ = ["NAMESPACE", "ExportKind", "ExportUIDs", "export_uids", "name_based_uid"]

NAMESPACE = uuid.UUID("cf56b214-b829-491e-b20a-9c3a7e23a9a2")
"""The UUID namespace of every UID pacsnode derives (a random UUID drawn once)."""

_SCHEME = "pacsnode-export/1"


class ExportKind(enum.StrEnum):
    """The kinds of result object the node writes for one film."""

    SEG = "seg"
    SR = "sr"


@dataclass(frozen=True)
class ExportUIDs:
    """The Series and SOP Instance UIDs of one result object."""

    series_instance_uid: UID
    sop_instance_uid: UID


def name_based_uid(*parts: str) -> UID:
    """``2.25.<UUID>`` from a version 5 UUID of ``parts`` in pacsnode's namespace.

    Parameters
    ----------
    parts
        The words that identify what the UID names; none may contain ``|`` except the
        last, which is taken as it is.
    """
    if not parts:
        raise ValueError("a name-based UID needs at least one part")
    for part in parts[:-1]:
        if "|" in part:
            raise ValueError(f"only the last part may contain '|', got {part!r}")
    name = "|".join((_SCHEME, *parts))
    return UID(f"2.25.{uuid.uuid5(NAMESPACE, name).int}")


def export_uids(source_sop_instance_uid: str, model_version: str, kind: ExportKind) -> ExportUIDs:
    """The UIDs of the ``kind`` object derived from one film by one model version.

    Parameters
    ----------
    source_sop_instance_uid
        SOP Instance UID of the analysed film.
    model_version
        The version of the model that made the result, as its manifest gives it.
    kind
        Which result object.
    """
    source = str(source_sop_instance_uid).strip()
    if not source:
        raise ValueError("the film's SOP Instance UID is empty")
    kind = ExportKind(kind)
    return ExportUIDs(
        series_instance_uid=name_based_uid(kind.value, "series", source, model_version),
        sop_instance_uid=name_based_uid(kind.value, "instance", source, model_version),
    )
