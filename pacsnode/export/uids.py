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

with ``kind`` an :class:`ExportKind` (``seg``, ``sr``, ``gsps``, ``sc``), ``role``
``series`` or ``instance``, and the model version last so that any text it holds cannot be
mistaken for another part (UIDs and the fixed words contain no ``|``). The same film analysed by the
same model version therefore always gives the same Series and SOP Instance UIDs; a new
model version gives new ones, so the PACS keeps both versions' results apart.

A picture (PNG, JPEG) that ``pacsnode analyze`` wraps as a Secondary Capture film
(:mod:`pacsnode.imaging.import_picture`) gets its Study, Series and SOP Instance UIDs from
the parts

    ``import | study, series or instance | sha256 of the picture file``

so the same picture always becomes the same film, and its results get the same UIDs.

Do not change the namespace or the ``pacsnode-export/1`` prefix: every UID already sent
would stop matching its re-run.

pydicom's ``generate_uid(prefix=None, entropy_srcs=...)`` is no substitute: with no prefix
it ignores the entropy and returns a random UID.
"""

from __future__ import annotations

import enum
import re
import uuid
from dataclasses import dataclass

from pydicom.uid import UID

__all__ = [
    "NAMESPACE",
    "ExportKind",
    "ExportUIDs",
    "ImportUIDs",
    "export_uids",
    "import_uids",
    "is_valid_uid",
    "name_based_uid",
]

NAMESPACE = uuid.UUID("cf56b214-b829-491e-b20a-9c3a7e23a9a2")
"""The UUID namespace of every UID pacsnode derives (a random UUID drawn once)."""

_SCHEME = "pacsnode-export/1"
# PS3.5 §9.1: components of digits separated by dots, no leading zero in a component of
# more than one digit, at most 64 characters in all.
_UID_GRAMMAR = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class ExportKind(enum.StrEnum):
    """The kinds of result object the node writes for one film."""

    SEG = "seg"
    SR = "sr"
    GSPS = "gsps"
    SC = "sc"


@dataclass(frozen=True)
class ExportUIDs:
    """The Series and SOP Instance UIDs of one result object."""

    series_instance_uid: UID
    sop_instance_uid: UID


@dataclass(frozen=True)
class ImportUIDs:
    """The Study, Series and SOP Instance UIDs of a picture wrapped as a film."""

    study_instance_uid: UID
    series_instance_uid: UID
    sop_instance_uid: UID


def is_valid_uid(value: str) -> bool:
    """Whether ``value`` follows the DICOM UID grammar (PS3.5 §9.1): digits in components
    separated by dots, no leading zeros, at most 64 characters.

    A UID that passes is also safe as a file name: it holds no path separator and is
    neither ``.`` nor ``..``.
    """
    return len(value) <= 64 and _UID_GRAMMAR.fullmatch(value) is not None


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


def import_uids(content_sha256: str) -> ImportUIDs:
    """The UIDs of the film made from a picture, from the SHA-256 of the picture's file.

    Parameters
    ----------
    content_sha256
        64 lower-case hex digits: ``hashlib.sha256(data).hexdigest()``.
    """
    if not _SHA256_HEX.fullmatch(content_sha256):
        raise ValueError(f"not a SHA-256 hex digest: {content_sha256!r}")
    return ImportUIDs(
        study_instance_uid=name_based_uid("import", "study", content_sha256),
        series_instance_uid=name_based_uid("import", "series", content_sha256),
        sop_instance_uid=name_based_uid("import", "instance", content_sha256),
    )
