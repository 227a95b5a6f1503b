"""The node's typed settings: embedded defaults, then a TOML file, then the environment.

Everything is validated at start-up and every mistake is reported at once in one
:class:`~pacsnode.errors.ConfigError`, a ``section.key: problem`` line each.

Environment overrides are named ``PACSNODE_<SECTION>__<KEY>`` (two underscores between
section and key, any case), e.g. ``PACSNODE_NODE__PORT=11113`` or
``PACSNODE_DATABASE__URL=postgresql+psycopg://pacsnode@db/pacsnode``. Lists are
comma-separated (``PACSNODE_FILTER__MODALITIES=DX,CR``, empty for an empty list).
Destinations are addressed by their 0-based position in the file,
``PACSNODE_DESTINATIONS__0__HOST=pacs2``; the next free position adds one. ``[[notify]]``
receivers likewise, ``PACSNODE_NOTIFY__0__URL=https://alerts.example/spine`` (their
``headers`` from the file only). Names with no
double underscore, such as ``PACSNODE_CACHE``, are not settings and are left alone; a
double-underscore name that matches no setting is an error, like an unknown key in the
file.

Relative paths from the file, and the default paths, resolve against the file's
directory (the working directory when there is no file); relative paths from the
environment resolve against the working directory.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from pacsnode.analysis.readout import FLAG_KINDS
from pacsnode.config.tls import TLS_VERSIONS, check_files
from pacsnode.errors import ConfigError

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
    "MetricsSettings",
    "NodeSettings",
    "NotifyTarget",
    "PriorityRule",
    "SecuritySettings",
    "Settings",
    "StorageSettings",
    "TlsSettings",
    "Unmatched",
    "WorkerSettings",
    "load_settings",
    "usable_cores",
]

ENV_PREFIX: Final = "PACSNODE_"

DX_FOR_PRESENTATION_STORAGE: Final = "1.2.840.10008.5.1.4.1.1.1.1"
DX_FOR_PROCESSING_STORAGE: Final = "1.2.840.10008.5.1.4.1.1.1.1.1"
CR_IMAGE_STORAGE: Final = "1.2.840.10008.5.1.4.1.1.1"
SECONDARY_CAPTURE_STORAGE: Final = "1.2.840.10008.5.1.4.1.1.7"

RESULT_KINDS: Final = ("seg", "sr", "gsps", "sc")
"""The result objects a destination can be sent (``[[destinations]] send``): the SEG, the
SR, the presentation state and the burned-in Secondary Capture
(:class:`pacsnode.export.uids.ExportKind`)."""
DEFAULT_SEND: Final = ("seg", "sr", "gsps")
"""What a destination gets unless its ``send`` says otherwise."""

SHIPPED_MODELS_DIR: Final = Path(__file__).resolve().parents[2] / "models"
"""The weights that come with pacsnode; where the node looks unless told otherwise."""

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Unmatched(enum.Enum):
    """What the node does with a film its filter does not select for analysis."""

    STORE = "store"
    """Accept it, keep it in the spool, analyse nothing (audited as ignored)."""
    REFUSE = "refuse"
    """Answer the C-STORE with a failure status and keep nothing."""


# The single source of the defaults; config/pacsnode.toml writes the same values out.
# storage.spool_dir and database.url are absent on purpose: they follow data_dir.
DEFAULTS: Final[Mapping[str, Any]] = {
    "node": {
        "ae_title": "PACSNODE",
        "host": "0.0.0.0",
        "port": 11112,
        "max_associations": 10,
        "max_pdu_kb": 256,
        "max_dataset_mb": 512,
    },
    "storage": {
        "data_dir": "./data",
        "min_free_mb": 1024,
        "keep_films_days": 7.0,
        "keep_results_days": 7.0,
    },
    "database": {},
    "destinations": [],
    "priority": [],
    "notify": [],
    "security": {
        "allowed_calling_aets": [],
        "allowed_hosts": [],
        "max_spool_share_per_ae": 0.5,
    },
    "worker": {
        "concurrency": 1,
        "max_attempts": 3,
        "lease_seconds": 30.0,
        "backoff_base_seconds": 30.0,
        "backoff_max_seconds": 1800.0,
        "delivery_max_attempts": 30,
        "delivery_backoff_base_seconds": 60.0,
        "delivery_backoff_max_seconds": 3600.0,
    },
    "analysis": {
        "device": "cpu",
        "models_dir": str(SHIPPED_MODELS_DIR),
        "ensemble_eta": 0.6,
        "ensemble_lambda": 2.0,
    },
    "filter": {
        "modalities": ["DX", "CR"],
        "body_parts": [],
        "view_positions": [],
        "sop_classes": [
            DX_FOR_PRESENTATION_STORAGE,
            DX_FOR_PROCESSING_STORAGE,
            CR_IMAGE_STORAGE,
            SECONDARY_CAPTURE_STORAGE,
        ],
        "unmatched": "store",
    },
    # No TLS unless the file or the environment gives [tls] keys; an empty [tls] is
    # the same as none. Its own defaults are TlsSettings'.
    "tls": {},
    "metrics": {
        "enabled": False,
        "host": "127.0.0.1",
        "port": 9112,
    },
}

SPOOL_SUBDIR: Final = "spool"
DATABASE_FILE: Final = "pacsnode.db"


@dataclass(frozen=True, slots=True)
class NodeSettings:
    """The listening side of the node.

    Attributes
    ----------
    ae_title
        Our Application Entity title, at most 16 characters, spaces trimmed.
    host
        Address to listen on; ``0.0.0.0`` listens on every IPv4 interface.
    port
        TCP port of the C-STORE listener.
    max_associations
        Associations served at once; further ones are rejected as transient.
    max_pdu_kb
        Largest PDU (KiB) a peer may send: offered as our maximum receive length, and a
        longer PDU aborts the association.
    max_dataset_mb
        Largest data set (MiB) one C-STORE may carry, deflated ones counted inflated;
        a larger one is refused with A700.
    """

    ae_title: str
    host: str
    port: int
    max_associations: int
    max_pdu_kb: int = 256
    max_dataset_mb: int = 512

    @property
    def loopback_only(self) -> bool:
        """Whether the listener is reachable from this machine only."""
        if self.host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host.strip("[]")).is_loopback
        except ValueError:
            return False  # a host name: whatever it resolves to, assume the network


@dataclass(frozen=True, slots=True)
class StorageSettings:
    """Where received files and the node's state live.

    Attributes
    ----------
    data_dir
        Root of the node's state, absolute.
    spool_dir
        Received instances wait here for analysis; ``<data_dir>/spool`` unless set.
    min_free_mb
        Free space (MiB) below which new instances are refused rather than half-written.
    keep_films_days
        Days a received film stays in the spool after its job has ended (succeeded, dead,
        cancelled or ignored); 0 deletes it at the next retention sweep.
    keep_results_days
        Days a result object stays after its last delivery was sent or given up.
    """

    data_dir: Path
    spool_dir: Path
    min_free_mb: int
    keep_films_days: float
    keep_results_days: float


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    """The job queue's and audit log's database.

    Attributes
    ----------
    url
        An SQLAlchemy URL; relative SQLite file paths are already made absolute.
    """

    url: str

    def __repr__(self) -> str:
        # Keep passwords out of logs and tracebacks that print the settings.
        return f"DatabaseSettings(url={make_url(self.url).render_as_string()!r})"


@dataclass(frozen=True, slots=True)
class Destination:
    """A DICOM node that results are sent to with C-STORE.

    Attributes
    ----------
    name
        The node's own name for it, unique, used by the queue and the admin CLI.
    ae_title
        The called AE title.
    host
        Host name or address.
    port
        TCP port.
    tls
        Send over DICOM TLS: the destination's certificate must chain to
        ``ca_certificates`` and name ``host``.
    ca_certificates
        PEM CA certificates for the destination's certificate; when not given, those of
        ``[tls]``, else the system's trust store. Only with ``tls``.
    certificate, private_key
        PEM client certificate and key to present; when not given, those of ``[tls]``,
        else none. Only with ``tls``.
    check_hostname
        Whether the destination's certificate must name ``host``; not a setting: only
        ``pacsnode echo`` turns it off, to reach the node's own listener on loopback.
    send
        Which result objects it gets, of :data:`RESULT_KINDS`: ``seg``, ``sr``, ``gsps``
        (the presentation state) and ``sc`` (the burned-in Secondary Capture, built only
        when some destination takes it); :data:`DEFAULT_SEND` unless given.
    """

    name: str
    ae_title: str
    host: str
    port: int
    tls: bool = False
    ca_certificates: Path | None = None
    certificate: Path | None = None
    private_key: Path | None = None
    check_hostname: bool = True
    send: tuple[str, ...] = DEFAULT_SEND


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    """Who may open an association.

    Attributes
    ----------
    allowed_calling_aets
        Calling AE titles accepted; empty accepts any.
    allowed_hosts
        Peer networks accepted (a single address is a /32 or /128); empty accepts any.
    max_spool_share_per_ae
        The largest part, in (0, 1], of the spool's usable space that the unfinished
        films of one calling AE may hold; 1 sets no limit of its own. The usable space
        is the free space above ``min_free_mb`` plus what that AE already holds, so at
        0.5 one sender never leaves the others less room than it takes.
    """

    allowed_calling_aets: tuple[str, ...]
    allowed_hosts: tuple[IPNetwork, ...]
    max_spool_share_per_ae: float = 0.5

    def allows_calling_ae(self, ae_title: str) -> bool:
        """Whether an association from ``ae_title`` may be accepted."""
        return not self.allowed_calling_aets or ae_title.strip() in self.allowed_calling_aets

    def allows_host(self, address: str) -> bool:
        """Whether a peer at IP ``address`` may connect; a malformed address may not."""
        if not self.allowed_hosts:
            return True
        try:
            peer = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(peer in network for network in self.allowed_hosts)


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """DICOM TLS on the listener (PS3.15 Annex B); the port then speaks nothing else.

    Attributes
    ----------
    certificate
        PEM file of the node's certificate chain, leaf first.
    private_key
        PEM file of its unencrypted private key.
    ca_certificates
        PEM file of the CA certificates a peer's certificate must chain to; required
        when client certificates are.
    require_client_certificate
        Refuse a peer without a certificate from those CAs (anonymous TLS included).
    minimum_version
        ``"TLSv1.2"`` or ``"TLSv1.3"``.
    handshake_timeout_seconds
        A peer that has not finished the TLS handshake by then is dropped.
    """

    certificate: Path
    private_key: Path
    ca_certificates: Path | None = None
    require_client_certificate: bool = True
    minimum_version: str = "TLSv1.2"
    handshake_timeout_seconds: float = 10.0


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """The analysis worker and its retry schedule; times in seconds.

    Attributes
    ----------
    concurrency
        Films analysed at once by each analysis process (threads sharing its models).
    processes
        Analysis processes, each loading the models once; 0 runs the analysis in the
        node's own process (tests, debugging). Default: the number of usable cores.
    torch_threads
        Threads torch uses in each analysis process. Default: the usable cores shared
        out over the processes, at least 1.
    max_attempts
        Analysis attempts of one film before it is dead-lettered.
    lease_seconds
        How long a claimed job stays the worker's without a heartbeat.
    backoff_base_seconds, backoff_max_seconds
        Retry delay ceiling after attempt n is ``min(max, base * 2**(n-1))``; the delay
        is drawn uniformly below it (full jitter).
    delivery_max_attempts, delivery_backoff_base_seconds, delivery_backoff_max_seconds
        The same for sending results, on their own schedule, so a PACS outage is ridden
        out without re-running analysis.
    """

    concurrency: int
    max_attempts: int
    lease_seconds: float
    backoff_base_seconds: float
    backoff_max_seconds: float
    delivery_max_attempts: int
    delivery_backoff_base_seconds: float
    delivery_backoff_max_seconds: float
    processes: int = 0
    torch_threads: int = 1


@dataclass(frozen=True, slots=True)
class AnalysisSettings:
    """The model stack.

    Attributes
    ----------
    device
        ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    models_dir
        Directory of the weight files, absolute.
    ensemble_eta
        VertXNet's η: two masks agree when their overlap over the larger is above it.
    ensemble_lambda
        VertXNet's λ: an unmatched mask is kept when its area is within λ standard
        deviations of the mean area of the masks already accepted.
    """

    device: str
    models_dir: Path
    ensemble_eta: float = 0.6
    ensemble_lambda: float = 2.0


@dataclass(frozen=True, slots=True)
class FilterSettings:
    """Which received films are analysed; an empty list matches anything.

    Attributes
    ----------
    modalities
        Modality (0008,0060) values, e.g. ``DX``.
    body_parts
        Body Part Examined (0018,0015) values, e.g. ``SPINE``.
    view_positions
        View Position (0018,5101) values, e.g. ``LL``.
    sop_classes
        SOP Class UIDs.
    unmatched
        What to do with a film that does not match.
    """

    modalities: tuple[str, ...]
    body_parts: tuple[str, ...]
    view_positions: tuple[str, ...]
    sop_classes: tuple[str, ...]
    unmatched: Unmatched

    def matches(
        self,
        *,
        modality: str | None,
        body_part: str | None,
        view_position: str | None,
        sop_class_uid: str,
    ) -> bool:
        """Whether a film with these header values is selected for analysis.

        A missing value (None or blank) fails every non-empty rule: a film that does not
        say it is a spine is not taken for one.
        """
        checks = (
            (self.modalities, modality),
            (self.body_parts, body_part),
            (self.view_positions, view_position),
            (self.sop_classes, sop_class_uid),
        )
        for allowed, value in checks:
            if allowed and (value is None or value.strip().upper() not in allowed):
                return False
        return True


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """The Prometheus endpoint (``/metrics``, plain HTTP, no patient data).

    Attributes
    ----------
    enabled
        Serve the endpoint; off by default, so that a receiver and a worker on one
        host do not compete for the port.
    host
        Address to listen on; loopback by default, so only this machine can scrape.
    port
        TCP port; each ``pacsnode serve`` process on a host needs its own.
    """

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 9112


REQUEST_PRIORITIES: Final = ("HIGH", "MEDIUM", "LOW")
"""The C-STORE request's Priority (0000,0700) values, by name (PS3.7 §9.1.1.1)."""


@dataclass(frozen=True, slots=True)
class PriorityRule:
    """A ``[[priority]]`` rule: films matching every condition it gives get its priority.

    Empty conditions are not checked; a value the film lacks fails a condition that is.
    Patterns are shell-style (:mod:`fnmatch`: ``*``, ``?``, ``[...]``), matched against the
    whole value, ignoring case, e.g. ``"*STAT*"`` or ``"Emergency*"``.

    Attributes
    ----------
    name
        The rule's name, shown in the audit entry of a film it matched.
    priority
        The job's priority; higher is analysed first. Films no rule matches get 0.
    calling_aets
        Calling AE titles of the sender.
    modalities
        Modality (0008,0060) values, e.g. ``DX``.
    study_descriptions
        Patterns for Study Description (0008,1030).
    departments
        Patterns for Institutional Department Name (0008,1040).
    request_priorities
        The C-STORE request's Priority: ``HIGH``, ``MEDIUM``, ``LOW``.
    """

    name: str
    priority: int
    calling_aets: tuple[str, ...] = ()
    modalities: tuple[str, ...] = ()
    study_descriptions: tuple[str, ...] = ()
    departments: tuple[str, ...] = ()
    request_priorities: tuple[str, ...] = ()

    @property
    def reads_header(self) -> bool:
        """Whether matching needs Study Description or Institutional Department Name."""
        return bool(self.study_descriptions or self.departments)

    def matches(
        self,
        *,
        calling_ae: str,
        modality: str | None,
        study_description: str | None,
        department: str | None,
        request_priority: str | None,
    ) -> bool:
        """Whether a film with these values gets this rule's priority."""
        from fnmatch import fnmatchcase

        def listed(allowed: tuple[str, ...], value: str | None) -> bool:
            return not allowed or (value is not None and value.strip().upper() in allowed)

        def like(patterns: tuple[str, ...], value: str | None) -> bool:
            if not patterns:
                return True
            text = (value or "").strip().casefold()
            return bool(text) and any(fnmatchcase(text, p.casefold()) for p in patterns)

        return (
            listed(self.calling_aets, calling_ae)
            and listed(self.modalities, modality)
            and listed(self.request_priorities, request_priority)
            and like(self.study_descriptions, study_description)
            and like(self.departments, department)
        )


NOTIFY_TIMEOUT_SECONDS: Final = 10.0
"""How long a ``[[notify]]`` POST waits to connect, and then for each read of the answer."""


@dataclass(frozen=True, slots=True)
class NotifyTarget:
    """A ``[[notify]]`` receiver: critical findings are POSTed to it as JSON.

    Attributes
    ----------
    name
        Unique among the ``[[notify]]`` and ``[[destinations]]`` names, used by the queue
        and the admin CLI; ``notify-<N>`` (its 0-based position) when not given.
    url
        An ``http`` or ``https`` URL; https verifies the receiver against the system's
        trust store.
    on
        The kinds of finding (:data:`~pacsnode.analysis.readout.FLAG_KINDS`) that raise an
        alert to it; all of them by default.
    timeout_seconds
        How long a POST waits to connect, and then for each read of the answer.
    max_attempts
        POSTs of one alert before it is dead-lettered; None: ``[worker]
        delivery_max_attempts``. Retries back off as result deliveries do.
    headers
        (name, value) pairs sent with every POST, e.g. an ``Authorization`` token; the
        values are kept out of ``repr``.
    ca_certificates
        PEM file of the CA certificates an ``https`` receiver is verified against instead
        of the system's trust store (a hospital's own CA); None: the system's.
    """

    name: str
    url: str
    on: tuple[str, ...] = FLAG_KINDS
    timeout_seconds: float = NOTIFY_TIMEOUT_SECONDS
    max_attempts: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    ca_certificates: Path | None = None

    def __repr__(self) -> str:
        # Header values are often credentials: keep them out of logs and tracebacks.
        headers = [(name, "***") for name, _ in self.headers]
        return (
            f"NotifyTarget(name={self.name!r}, url={self.url!r}, on={self.on!r}, "
            f"timeout_seconds={self.timeout_seconds!r}, max_attempts={self.max_attempts!r}, "
            f"headers={headers!r})"
        )


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the node is configured with; built by :func:`load_settings`.

    Attributes
    ----------
    source
        The file read, or None for the defaults; not part of equality, so the same
        settings from different places compare equal.
    """

    node: NodeSettings
    storage: StorageSettings
    database: DatabaseSettings
    destinations: tuple[Destination, ...]
    security: SecuritySettings
    worker: WorkerSettings
    analysis: AnalysisSettings
    filter: FilterSettings
    tls: TlsSettings | None = None
    """None: the listener speaks plain DICOM."""
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    priority: tuple[PriorityRule, ...] = ()
    """The ``[[priority]]`` rules, in file order; a film gets the highest that matches."""
    notify: tuple[NotifyTarget, ...] = ()
    """The ``[[notify]]`` receivers of critical-finding alerts, in file order."""
    source: Path | None = field(default=None, compare=False)

    def destination(self, name: str) -> Destination:
        """The destination called ``name``.

        Raises
        ------
        KeyError
            When there is none.
        """
        for destination in self.destinations:
            if destination.name == name:
                return destination
        raise KeyError(name)


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, e.g. a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def load_settings(path: Path | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, override and validate the node's settings.

    Parameters
    ----------
    path
        A TOML file; None uses the embedded defaults (those of ``config/pacsnode.toml``).
    environ
        Where ``PACSNODE_<SECTION>__<KEY>`` overrides are looked up; None reads
        :data:`os.environ`.

    Raises
    ------
    ConfigError
        Listing every mistake: unreadable file, unknown section or key, wrong type or
        value.
    """
    cwd = Path.cwd()
    environ = os.environ if environ is None else environ
    source = None if path is None else Path(os.path.abspath(os.path.expanduser(path)))
    file_dir = cwd if source is None else source.parent
    problems: list[str] = []

    tree = _merge_defaults(file_dir)
    if source is not None:
        document = _read_toml(source)
        _merge_document(tree, document, file_dir, problems)
    _merge_environment(tree, environ, cwd, problems)
    settings = _build(tree, problems, source)
    if problems or settings is None:
        raise ConfigError(problems, source)
    return settings


# --- raw values and where they came from -------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Raw:
    """A value before conversion, with what is needed to convert and blame it."""

    value: object
    base: Path
    variable: str | None = None

    @property
    def from_env(self) -> bool:
        return self.variable is not None


class _Invalid(Exception):
    """A value's problem, without its ``section.key``; the caller adds that."""


# A section is key -> raw value; destinations is a list of such sections.
_Section = dict[str, _Raw]
_Tree = dict[str, Any]


def _merge_defaults(file_dir: Path) -> _Tree:
    tree: _Tree = {}
    for name, section in DEFAULTS.items():
        if isinstance(section, Mapping):
            tree[name] = {key: _Raw(value, file_dir) for key, value in section.items()}
        else:
            tree[name] = [
                {key: _Raw(value, file_dir) for key, value in entry.items()} for entry in section
            ]
    return tree


def _read_toml(source: Path) -> Mapping[str, Any]:
    try:
        with source.open("rb") as stream:
            return tomllib.load(stream)
    except FileNotFoundError:
        raise ConfigError([f"{source}: no such file"], source) from None
    except OSError as error:
        raise ConfigError([f"{source}: cannot be read ({error.strerror})"], source) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([f"{source}: not valid TOML ({error})"], source) from None


def _merge_document(
    tree: _Tree, document: Mapping[str, Any], file_dir: Path, problems: list[str]
) -> None:
    for name, section in document.items():
        if name not in _SCHEMA:
            problems.append(f"{name}: unknown section")
        elif name in _TABLE_LISTS:
            if not isinstance(section, list) or not all(isinstance(e, dict) for e in section):
                problems.append(f"{name}: expected [[{name}]] tables")
                continue
            tree[name] = [
                {key: _Raw(value, file_dir) for key, value in entry.items()} for entry in section
            ]
        elif not isinstance(section, dict):
            problems.append(f"{name}: expected a [{name}] table, got {_type_name(section)}")
        else:
            for key, value in section.items():
                tree[name][key] = _Raw(value, file_dir)


def _merge_environment(
    tree: _Tree, environ: Mapping[str, str], cwd: Path, problems: list[str]
) -> None:
    # section -> position -> (key, value, variable), for [[destinations]] and [[notify]]
    indexed: dict[str, dict[int, list[tuple[str, str, str]]]] = {s: {} for s in _INDEXED_FROM_ENV}
    for variable in sorted(environ):
        if not variable.upper().startswith(ENV_PREFIX):
            continue
        rest = variable[len(ENV_PREFIX) :]
        if "__" not in rest:
            continue
        parts = rest.lower().split("__")
        section = parts[0]
        origin = f" (from {variable})"
        if section in indexed:
            if len(parts) != 3 or not parts[1].isdigit():
                problems.append(
                    f"{section}: {variable} is not {ENV_PREFIX}{section.upper()}__<N>__<KEY>"
                )
                continue
            overrides = indexed[section].setdefault(int(parts[1]), [])
            overrides.append((parts[2], environ[variable], variable))
        elif section not in _SCHEMA:
            problems.append(f"{section}: unknown section{origin}")
        elif section in _TABLE_LISTS:
            problems.append(f"{section}: [[{section}]] rules are set in the file only{origin}")
        elif len(parts) != 2:
            problems.append(f"{section}: {variable} is not PACSNODE_<SECTION>__<KEY>")
        else:
            tree[section][parts[1]] = _Raw(environ[variable], cwd, variable)

    for section, by_index in indexed.items():
        entries: list[_Section] = tree[section]
        noun = "destination" if section == "destinations" else "entry"
        for index in sorted(by_index):
            if index > len(entries):
                first = by_index[index][0][2]
                problems.append(
                    f"{section}[{index}]: no such {noun}; the next new one is "
                    f"{section}[{len(entries)}] (from {first})"
                )
                continue
            if index == len(entries):
                entries.append({})
            for key, text, variable in by_index[index]:
                entries[index][key] = _Raw(text, cwd, variable)


# --- converters: raw value -> typed value, or _Invalid -------------------------------------

_Converter = Callable[[_Raw], Any]


def _type_name(value: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def _text(raw: _Raw) -> str:
    if not isinstance(raw.value, str):
        raise _Invalid(f"expected a string, got {_type_name(raw.value)}")
    return raw.value


def _integer(minimum: int, maximum: int | None = None) -> _Converter:
    def convert(raw: _Raw) -> int:
        value = raw.value
        if raw.from_env:
            try:
                value = int(str(value).strip())
            except ValueError:
                raise _Invalid(f"{raw.value!r} is not a whole number") from None
        elif isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"expected a whole number, got {_type_name(value)}")
        if value < minimum or (maximum is not None and value > maximum):
            limit = f"from {minimum} to {maximum}" if maximum is not None else f"at least {minimum}"
            raise _Invalid(f"must be {limit}, got {value}")
        return value

    return convert


def _seconds(raw: _Raw) -> float:
    value = raw.value
    if raw.from_env:
        try:
            value = float(str(value).strip())
        except ValueError:
            raise _Invalid(f"{raw.value!r} is not a number of seconds") from None
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid(f"expected a number of seconds, got {_type_name(value)}")
    value = float(value)
    if not value > 0 or value == float("inf"):
        raise _Invalid(f"must be a positive, finite number of seconds, got {value}")
    return value


def _number(raw: _Raw) -> float:
    value = raw.value
    if raw.from_env:
        try:
            value = float(str(value).strip())
        except ValueError:
            raise _Invalid(f"{raw.value!r} is not a number") from None
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid(f"expected a number, got {_type_name(value)}")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise _Invalid(f"must be a finite number, got {value}")
    return value


def _fraction(raw: _Raw) -> float:
    value = _number(raw)
    if not 0.0 < value < 1.0:
        raise _Invalid(f"must be between 0 and 1 (exclusive), got {value}")
    return value


def _share(raw: _Raw) -> float:
    value = _number(raw)
    if not 0.0 < value <= 1.0:
        raise _Invalid(f"must be above 0 and at most 1, got {value}")
    return value


def _non_negative(raw: _Raw) -> float:
    value = _number(raw)
    if value < 0.0:
        raise _Invalid(f"must not be negative, got {value}")
    return value


def _path(raw: _Raw) -> Path:
    text = _text(raw).strip()
    if not text:
        raise _Invalid("must not be empty")
    path = Path(text).expanduser()
    # normpath, not resolve(): "../data" should not depend on where symlinks point.
    return Path(os.path.normpath(raw.base / path))


_TRUE: Final = frozenset({"true", "yes", "on", "1"})
_FALSE: Final = frozenset({"false", "no", "off", "0"})


def _boolean(raw: _Raw) -> bool:
    value = raw.value
    if raw.from_env:
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise _Invalid(f"{value!r} is not true or false")
    if not isinstance(value, bool):
        raise _Invalid(f"expected true or false, got {_type_name(value)}")
    return value


def _tls_version(raw: _Raw) -> str:
    text = _text(raw).strip()
    for name in TLS_VERSIONS:
        if text.lower() == name.lower():
            return name
    raise _Invalid(f"{raw.value!r} is not one of {', '.join(map(repr, TLS_VERSIONS))}")


_AE_FORBIDDEN = re.compile(r"[^\x20-\x5b\x5d-\x7e]")


def _ae_title(raw: _Raw) -> str:
    value = _text(raw)
    bad = _AE_FORBIDDEN.search(value)
    if bad:
        raise _Invalid(
            f"{value!r} has {bad.group()!r}; AE titles allow printable ASCII except backslash"
        )
    # Leading and trailing spaces are not significant in the AE value representation.
    title = value.strip()
    if not title:
        raise _Invalid("must not be empty or all spaces")
    if len(title) > 16:
        raise _Invalid(f"{title!r} is {len(title)} characters; AE titles have at most 16")
    return title


def _host(raw: _Raw) -> str:
    value = _text(raw).strip()
    if not value or any(c.isspace() for c in value):
        raise _Invalid(f"{raw.value!r} is not a host name or address")
    return value


_CODE_STRING = re.compile(r"[A-Z0-9 _]{1,16}")


def _code_string(raw: _Raw) -> str:
    value = _text(raw).strip().upper()
    if not _CODE_STRING.fullmatch(value):
        raise _Invalid(
            f"{raw.value!r} is not a DICOM code string (1-16 of A-Z, 0-9, space, underscore)"
        )
    return value


_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


def _uid(raw: _Raw) -> str:
    value = _text(raw).strip()
    if len(value) > 64 or not _UID.fullmatch(value):
        raise _Invalid(f"{raw.value!r} is not a DICOM UID")
    return value


def _network(raw: _Raw) -> IPNetwork:
    value = _text(raw).strip()
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise _Invalid(f"{raw.value!r} is not an IP address or network (CIDR)") from None


_DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


def _device(raw: _Raw) -> str:
    value = _text(raw).strip().lower()
    if not _DEVICE.fullmatch(value):
        raise _Invalid(f"{raw.value!r} is not one of auto, cpu, cuda, cuda:N")
    return value


def _choice(kind: type[enum.Enum]) -> _Converter:
    def convert(raw: _Raw) -> enum.Enum:
        value = _text(raw).strip().lower()
        try:
            return kind(value)
        except ValueError:
            allowed = ", ".join(repr(member.value) for member in kind)
            raise _Invalid(f"{raw.value!r} is not one of {allowed}") from None

    return convert


def _list_of(item: _Converter) -> _Converter:
    def convert(raw: _Raw) -> tuple[Any, ...]:
        if raw.from_env:
            text = str(raw.value).strip()
            items: list[object] = [part.strip() for part in text.split(",")] if text else []
        elif isinstance(raw.value, list):
            items = raw.value
        else:
            raise _Invalid(f"expected a list, got {_type_name(raw.value)}")
        values = []
        for number, value in enumerate(items, start=1):
            try:
                values.append(item(_Raw(value, raw.base, raw.variable)))
            except _Invalid as problem:
                raise _Invalid(f"item {number}: {problem}") from None
        if len(set(values)) != len(values):
            raise _Invalid("lists the same value twice")
        return tuple(values)

    return convert


def _database_url(raw: _Raw) -> str:
    text = _text(raw).strip()
    try:
        url = make_url(text)
    except ArgumentError:
        # Not echoed: a URL can carry a password.
        raise _Invalid("not an SQLAlchemy URL (dialect+driver://user:password@host/db)") from None
    try:
        url.get_dialect()
    except NoSuchModuleError:
        raise _Invalid(f"unknown database dialect {url.drivername!r}") from None
    return _absolute_sqlite(url, raw.base).render_as_string(hide_password=False)


def _absolute_sqlite(url: URL, base: Path) -> URL:
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return url
    if database.startswith("file:"):
        return url
    return url.set(database=os.path.normpath(base / Path(database).expanduser()))


def _result_kind(raw: _Raw) -> str:
    text = _text(raw).strip().lower()
    if text not in RESULT_KINDS:
        raise _Invalid(f"{raw.value!r} is not one of {', '.join(RESULT_KINDS)}")
    return text


def _result_kinds(raw: _Raw) -> tuple[str, ...]:
    kinds: tuple[str, ...] = _list_of(_result_kind)(raw)
    if not kinds:
        raise _Invalid(f"sends nothing; give some of {', '.join(RESULT_KINDS)}")
    return kinds


# --- the schema: section -> key -> converter -------------------------------------------

_DESTINATION_KEYS: Final[Mapping[str, _Converter]] = {
    "name": _text,
    "ae_title": _ae_title,
    "host": _host,
    "port": _integer(1, 65535),
    "tls": _boolean,
    "ca_certificates": _path,
    "certificate": _path,
    "private_key": _path,
    "send": _result_kinds,
}
_DESTINATION_REQUIRED: Final = ("name", "ae_title", "host", "port")
_DESTINATION_TLS_FILES: Final = ("ca_certificates", "certificate", "private_key")


def _pattern(raw: _Raw) -> str:
    text = _text(raw).strip()
    if not text:
        raise _Invalid("must not be empty")
    return text


def _request_priority(raw: _Raw) -> str:
    text = _text(raw).strip().upper()
    if text not in REQUEST_PRIORITIES:
        raise _Invalid(f"{raw.value!r} is not one of {', '.join(REQUEST_PRIORITIES)}")
    return text


def _one_or_list(item: _Converter) -> _Converter:
    """A list of ``item``; a single value stands for a list of one."""
    many = _list_of(item)

    def convert(raw: _Raw) -> tuple[Any, ...]:
        if isinstance(raw.value, str) and not raw.from_env:
            return (item(raw),)
        return many(raw)

    return convert


_PRIORITY_KEYS: Final[Mapping[str, _Converter]] = {
    "name": _text,
    "priority": _integer(-1000, 1000),
    "calling_aets": _one_or_list(_ae_title),
    "modalities": _one_or_list(_code_string),
    "study_descriptions": _one_or_list(_pattern),
    "departments": _one_or_list(_pattern),
    "request_priorities": _one_or_list(_request_priority),
}
_PRIORITY_CONDITIONS: Final = tuple(k for k in _PRIORITY_KEYS if k not in ("name", "priority"))


def _http_url(raw: _Raw) -> str:
    text = _text(raw).strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise _Invalid(f"{text!r} is not a URL (a bad host or port)") from None
    if "@" in parts.netloc:
        # Not echoed: it holds a password. urllib would not send it anyway.
        raise _Invalid("has a user name or password in it; send credentials in headers")
    if any(c.isspace() or not c.isprintable() for c in text):
        raise _Invalid(f"{text!r} has spaces or control characters")
    if parts.scheme.lower() not in ("http", "https"):
        raise _Invalid(f"{text!r} is not an http or https URL")
    if not parts.hostname or port == 0:
        raise _Invalid(f"{text!r} has no host or no valid port")
    return text


def _flag_kind(raw: _Raw) -> str:
    text = _text(raw).strip().lower()
    if text not in FLAG_KINDS:
        raise _Invalid(f"{raw.value!r} is not one of {', '.join(FLAG_KINDS)}")
    return text


def _flag_kinds(raw: _Raw) -> tuple[str, ...]:
    kinds: tuple[str, ...] = _one_or_list(_flag_kind)(raw)
    if not kinds:
        raise _Invalid(f"names no finding; give some of {', '.join(FLAG_KINDS)}, or none for all")
    return kinds


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADERS_SET_BY_NODE: Final = frozenset(
    {"content-type", "content-length", "host", "transfer-encoding", "connection"}
)


def _headers(raw: _Raw) -> tuple[tuple[str, str], ...]:
    if raw.from_env:
        raise _Invalid("set in the file only, as a table of name = value")
    if not isinstance(raw.value, dict):
        raise _Invalid(f"expected a table of name = value, got {_type_name(raw.value)}")
    pairs = []
    for name, value in raw.value.items():
        if not _HEADER_NAME.fullmatch(name):
            raise _Invalid(f"{name!r} is not an HTTP header name")
        if name.lower() in _HEADERS_SET_BY_NODE:
            raise _Invalid(f"{name!r} is set by the node")
        if not isinstance(value, str):
            raise _Invalid(f"{name}: expected a string, got {_type_name(value)}")
        # The value is not echoed: it is often a credential.
        if any(c != "\t" and not c.isprintable() for c in value):
            raise _Invalid(f"{name}: the value has a line break or control character")
        pairs.append((name, value.strip()))
    return tuple(pairs)


_NOTIFY_KEYS: Final[Mapping[str, _Converter]] = {
    "name": _text,
    "url": _http_url,
    "on": _flag_kinds,
    "timeout_seconds": _seconds,
    "max_attempts": _integer(1),
    "headers": _headers,
    "ca_certificates": _path,
}
_TABLE_LISTS: Final = ("destinations", "priority", "notify")
"""Sections that are arrays of tables ([[name]]), from the file only (destinations and
notify also from PACSNODE_<SECTION>__<N>__<KEY>)."""
_INDEXED_FROM_ENV: Final = ("destinations", "notify")

_SCHEMA: Final[Mapping[str, Mapping[str, _Converter]]] = {
    "node": {
        "ae_title": _ae_title,
        "host": _host,
        "port": _integer(1, 65535),
        "max_associations": _integer(1),
        "max_pdu_kb": _integer(4, 65536),
        "max_dataset_mb": _integer(1),
    },
    "storage": {
        "data_dir": _path,
        "spool_dir": _path,
        "min_free_mb": _integer(0),
        "keep_films_days": _non_negative,
        "keep_results_days": _non_negative,
    },
    "database": {"url": _database_url},
    "destinations": _DESTINATION_KEYS,
    "priority": _PRIORITY_KEYS,
    "notify": _NOTIFY_KEYS,
    "security": {
        "allowed_calling_aets": _list_of(_ae_title),
        "allowed_hosts": _list_of(_network),
        "max_spool_share_per_ae": _share,
    },
    "worker": {
        "concurrency": _integer(1),
        "processes": _integer(0, 256),
        "torch_threads": _integer(1, 256),
        "max_attempts": _integer(1),
        "lease_seconds": _seconds,
        "backoff_base_seconds": _seconds,
        "backoff_max_seconds": _seconds,
        "delivery_max_attempts": _integer(1),
        "delivery_backoff_base_seconds": _seconds,
        "delivery_backoff_max_seconds": _seconds,
    },
    "analysis": {
        "device": _device,
        "models_dir": _path,
        "ensemble_eta": _fraction,
        "ensemble_lambda": _non_negative,
    },
    "filter": {
        "modalities": _list_of(_code_string),
        "body_parts": _list_of(_code_string),
        "view_positions": _list_of(_code_string),
        "sop_classes": _list_of(_uid),
        "unmatched": _choice(Unmatched),
    },
    "tls": {
        "certificate": _path,
        "private_key": _path,
        "ca_certificates": _path,
        "require_client_certificate": _boolean,
        "minimum_version": _tls_version,
        "handshake_timeout_seconds": _seconds,
    },
    "metrics": {
        "enabled": _boolean,
        "host": _host,
        "port": _integer(1, 65535),
    },
}

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _build_priority(entries: Iterable[_Section], problems: list[str]) -> tuple[PriorityRule, ...]:
    rules = []
    for index, entry in enumerate(entries):
        where = f"priority[{index}]"
        values = _convert_section(where, entry, _PRIORITY_KEYS, problems)
        if "priority" not in entry:
            problems.append(f"{where}.priority: missing")
        if not any(key in _PRIORITY_CONDITIONS for key in entry):
            problems.append(
                f"{where}: no condition; give one or more of {', '.join(_PRIORITY_CONDITIONS)}"
            )
        elif "priority" in values and len(values) == len(entry):
            values.setdefault("name", where)
            rules.append(PriorityRule(**values))
    return tuple(rules)


def _build_notify(
    entries: Iterable[_Section], destinations: Iterable[_Section], problems: list[str]
) -> tuple[NotifyTarget, ...]:
    targets = []
    # One namespace with the destinations: the queue and the admin CLI tell a delivery's
    # target by its name alone.
    first_use: dict[str, str] = {}
    for index, entry in enumerate(destinations):
        raw = entry.get("name")
        if raw is not None and isinstance(raw.value, str):
            first_use.setdefault(raw.value.lower(), f"destinations[{index}]")
    for index, entry in enumerate(entries):
        where = f"notify[{index}]"
        before = len(problems)
        values = _convert_section(where, entry, _NOTIFY_KEYS, problems)
        if "url" not in entry:
            problems.append(f"{where}.url: missing")
        if "name" not in entry:
            values["name"] = f"notify-{index}"
        _claim_name(where, values.get("name"), first_use, problems)
        ca = values.get("ca_certificates")
        if ca is not None:
            if not str(values.get("url", "")).lower().startswith("https:"):
                problems.append(f"{where}.ca_certificates: given for a URL that is not https")
            else:
                files = check_files(certificate=None, private_key=None, ca_certificates=ca)
                problems.extend(f"{where}.{key}: {problem}" for key, problem in files.items())
        if len(problems) == before:
            targets.append(NotifyTarget(**values))
    return tuple(targets)


def _claim_name(
    where: str, name: str | None, first_use: dict[str, str], problems: list[str]
) -> None:
    """Check a destination's or notify receiver's name and record it, so that no two share
    one (case ignored): each is a delivery's destination in the queue."""
    if name is None:
        return
    if not _NAME.fullmatch(name):
        problems.append(
            f"{where}.name: {name!r} is not a name (letters, digits, _ . -; "
            "at most 64, starting with a letter or digit)"
        )
    elif name.lower() in first_use:
        problems.append(f"{where}.name: {name!r} is already used by {first_use[name.lower()]}")
    else:
        first_use[name.lower()] = where


def _convert_section(
    where: str,
    section: _Section,
    keys: Mapping[str, _Converter],
    problems: list[str],
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, raw in section.items():
        convert = keys.get(key)
        origin = f" (from {raw.variable})" if raw.variable else ""
        if convert is None:
            problems.append(f"{where}.{key}: unknown key{origin}")
            continue
        try:
            values[key] = convert(raw)
        except _Invalid as problem:
            problems.append(f"{where}.{key}: {problem}{origin}")
    return values


def _build(tree: _Tree, problems: list[str], source: Path | None) -> Settings | None:
    sections = {
        name: _convert_section(name, tree[name], keys, problems)
        for name, keys in _SCHEMA.items()
        if name not in _TABLE_LISTS
    }
    destinations = _build_destinations(tree["destinations"], problems)
    priority = _build_priority(tree["priority"], problems)
    notify = _build_notify(tree["notify"], tree["destinations"], problems)
    tls = _build_tls(tree["tls"], sections["tls"], problems)
    worker = sections["worker"]
    for prefix in ("", "delivery_"):
        base, cap = f"{prefix}backoff_base_seconds", f"{prefix}backoff_max_seconds"
        if base in worker and cap in worker and worker[cap] < worker[base]:
            problems.append(
                f"worker.{cap}: must be at least {base} ({worker[base]:g}), got {worker[cap]:g}"
            )
    metrics = sections["metrics"]
    if metrics.get("enabled") and metrics.get("port") == sections["node"].get("port"):
        problems.append(f"metrics.port: must differ from node.port ({metrics['port']})")
    if problems:
        return None

    storage = sections["storage"]
    storage.setdefault("spool_dir", storage["data_dir"] / SPOOL_SUBDIR)
    database = sections["database"]
    database.setdefault("url", f"sqlite:///{storage['data_dir'] / DATABASE_FILE}")
    # Sized to the machine it runs on, so neither has a fixed default in the TOML.
    worker.setdefault("processes", usable_cores())
    worker.setdefault("torch_threads", max(1, usable_cores() // max(worker["processes"], 1)))
    return Settings(
        node=NodeSettings(**sections["node"]),
        storage=StorageSettings(**storage),
        database=DatabaseSettings(**database),
        destinations=tuple(_with_node_tls(d, tls) for d in destinations),
        security=SecuritySettings(**sections["security"]),
        worker=WorkerSettings(**worker),
        analysis=AnalysisSettings(**sections["analysis"]),
        filter=FilterSettings(**sections["filter"]),
        tls=tls,
        metrics=MetricsSettings(**metrics),
        priority=priority,
        notify=notify,
        source=source,
    )


def _build_destinations(
    entries: Iterable[_Section], problems: list[str]
) -> tuple[Destination, ...]:
    destinations = []
    first_use: dict[str, str] = {}
    for index, entry in enumerate(entries):
        where = f"destinations[{index}]"
        values = _convert_section(where, entry, _DESTINATION_KEYS, problems)
        missing = [key for key in _DESTINATION_REQUIRED if key not in entry]
        problems.extend(f"{where}.{key}: missing" for key in missing)
        _claim_name(where, values.get("name"), first_use, problems)
        _check_destination_tls(where, values, problems)
        if all(key in values for key in _DESTINATION_REQUIRED):
            destinations.append(Destination(**values))
    return tuple(destinations)


def _check_destination_tls(where: str, values: dict[str, Any], problems: list[str]) -> None:
    given = [key for key in _DESTINATION_TLS_FILES if key in values]
    if not values.get("tls", False):
        problems.extend(f"{where}.{key}: only with tls = true" for key in given)
        return
    pair = ("certificate", "private_key")
    for key, other in (pair, pair[::-1]):
        if other in values and key not in values:
            problems.append(f"{where}.{key}: missing (needed with {other})")
    files = check_files(
        certificate=values.get("certificate"),
        private_key=values.get("private_key"),
        ca_certificates=values.get("ca_certificates"),
    )
    problems.extend(f"{where}.{key}: {problem}" for key, problem in files.items())


def _build_tls(
    section: _Section, values: dict[str, Any], problems: list[str]
) -> TlsSettings | None:
    """[tls] when it has any key, checked down to loading its files; else None."""
    if not section:
        return None
    required = ["certificate", "private_key"]
    if values.get("require_client_certificate", True):
        required.append("ca_certificates")
    missing = [key for key in required if key not in section]
    problems.extend(f"tls.{key}: missing" for key in missing)
    if missing or len(values) < len(section):  # a value that did not convert
        return None
    files = check_files(
        certificate=values["certificate"],
        private_key=values["private_key"],
        ca_certificates=values.get("ca_certificates"),
    )
    problems.extend(f"tls.{key}: {problem}" for key, problem in files.items())
    return None if files else TlsSettings(**values)


def _with_node_tls(destination: Destination, tls: TlsSettings | None) -> Destination:
    """A TLS destination takes [tls]'s CAs and certificate where it names none."""
    if not destination.tls or tls is None:
        return destination
    if destination.certificate is None:
        destination = replace(destination, certificate=tls.certificate, private_key=tls.private_key)
    if destination.ca_certificates is None:
        destination = replace(destination, ca_certificates=tls.ca_certificates)
    return destination
