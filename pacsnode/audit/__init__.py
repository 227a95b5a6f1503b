"""The append-only audit log of what the node received, refused, analysed and sent.

Entries name instances by UID and actors by AE title or user, never patients.
"""

from pacsnode.audit.events import AuditEvent, Outcome
from pacsnode.audit.log import AuditEntry, AuditLog, AuditRecord
from pacsnode.audit.screen import PatientScreen, ScreeningFilter, screen_text, screening

__all__ = [
    "AuditEntry",
    "AuditEvent",
    "AuditLog",
    "AuditRecord",
    "Outcome",
    "PatientScreen",
    "ScreeningFilter",
    "screen_text",
    "screening",
]
