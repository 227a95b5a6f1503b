"""The node's settings: one typed, frozen object loaded from TOML and the environment.

Build it once at start-up with :func:`load_settings` and pass it in explicitly.
"""

from pacsnode.config.settings import (
    CR_IMAGE_STORAGE,
    DEFAULT_SEND,
    DEFAULTS,
    DX_FOR_PRESENTATION_STORAGE,
    DX_FOR_PROCESSING_STORAGE,
    ENV_PREFIX,
    RESULT_KINDS,
    SECONDARY_CAPTURE_STORAGE,
    AnalysisSettings,
    DatabaseSettings,
    Destination,
    FilterSettings,
    IPNetwork,
    NodeSettings,
    NotifyTarget,
    SecuritySettings,
    Settings,
    StorageSettings,
    TlsSettings,
    Unmatched,
    WorkerSettings,
    load_settings,
)

__all__ = [
    "CR_IMAGE_STORAGE",
    "DEFAULTS",
    "DEFAULT_SEND",
    "DX_FOR_PRESENTATION_STORAGE",
    "DX_FOR_PROCESSING_STORAGE",
    "ENV_PREFIX",
    "RESULT_KINDS",
    "SECONDARY_CAPTURE_STORAGE",
    "AnalysisSettings",
    "DatabaseSettings",
    "Destination",
    "FilterSettings",
    "IPNetwork",
    "NodeSettings",
    "NotifyTarget",
    "SecuritySettings",
    "Settings",
    "StorageSettings",
    "TlsSettings",
    "Unmatched",
    "WorkerSettings",
    "load_settings",
]
