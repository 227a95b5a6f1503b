"""A received film's job priority, from the ``[[priority]]`` rules: what the listener
decides at enqueue, so a STAT film is analysed before the backlog.

The rules see the sender, the header and the C-STORE request's own Priority field.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final, NamedTuple

from pydicom import dcmread

from pacsnode.config.settings import PriorityRule

__all__ = ["Prioritised", "request_priority", "rule_priority"]

_REQUEST_PRIORITY: Final = {0: "MEDIUM", 1: "HIGH", 2: "LOW"}
"""C-STORE Priority (0000,0700) codes by name (PS3.7 §9.1.1.1.2)."""

# Study Description, Institutional Department Name: read only when a rule needs them.
_TAGS: Final = (0x0008_1030, 0x0008_1040)


class Prioritised(NamedTuple):
    """A film's priority and the rule that gave it (None: no rule matched, priority 0)."""

    priority: int
    rule: PriorityRule | None


def request_priority(code: object) -> str | None:
    """The name of a C-STORE request's Priority code, or None when absent or unknown."""
    try:
        return _REQUEST_PRIORITY.get(int(code))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def rule_priority(
    rules: Sequence[PriorityRule],
    *,
    path: Path,
    calling_ae: str,
    modality: str | None,
    request: str | None,
) -> Prioritised:
    """The highest priority among the rules the film at ``path`` matches (the first such
    rule in file order on a tie), or 0 with no rule.

    Parameters
    ----------
    path
        The spooled film; its header is read (no pixels) only when a rule matches on
        Study Description or Institutional Department Name.
    request
        The C-STORE request's Priority by name (:func:`request_priority`).
    """
    if not rules:
        return Prioritised(0, None)
    description = department = None
    if any(rule.reads_header for rule in rules):
        header = dcmread(path, stop_before_pixels=True, specific_tags=list(_TAGS))
        description = _text(header.get("StudyDescription"))
        department = _text(header.get("InstitutionalDepartmentName"))
    best = Prioritised(0, None)
    for rule in rules:
        if (best.rule is None or rule.priority > best.priority) and rule.matches(
            calling_ae=calling_ae,
            modality=modality,
            study_description=description,
            department=department,
            request_priority=request,
        ):
            best = Prioritised(rule.priority, rule)
    return best


def _text(value: object) -> str | None:
    """A header value as text (Dataset.get gives the value), None when absent."""
    return None if value is None else str(value)
