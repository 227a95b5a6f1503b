"""Receive: the DICOM listener that keeps films durably in the spool and queues them."""

from pacsnode.receive.scp import FILM_SOP_CLASSES, Peer, StorageSCP
from pacsnode.receive.spool import Spool, SpoolFullError
from pacsnode.receive.statuses import Refusal, StoreStatus

__all__ = [
    "FILM_SOP_CLASSES",
    "Peer",
    "Refusal",
    "Spool",
    "SpoolFullError",
    "StorageSCP",
    "StoreStatus",
]
