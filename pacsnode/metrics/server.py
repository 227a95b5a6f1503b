"""The ``/metrics`` endpoint of one ``pacsnode serve`` process, and the multiprocess set-up
that lets its analysis processes' timings reach it.

prometheus_client decides once, when first imported, whether values live in memory or in
per-process files under ``PROMETHEUS_MULTIPROC_DIR``. ``pacsnode serve`` therefore calls
:func:`use_multiprocess_dir` before anything imports it, and every process it starts,
forked or spawned, inherits the directory and writes its own files there; the endpoint
adds them up. A node started in-process (the tests) without that directory counts in
memory, which is complete as long as it analyses in its own process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from pacsnode.jobs.owner import pid_exists
from pacsnode.metrics.instruments import NO_METRICS, Metrics, NoMetrics
from pacsnode.metrics.queue import QueueCollector

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from sqlalchemy import Engine

    from pacsnode.config.settings import MetricsSettings

__all__ = [
    "METRICS_SUBDIR",
    "MULTIPROC_ENV",
    "MetricsEndpoint",
    "multiprocess_mode",
    "process_metrics",
    "use_multiprocess_dir",
]

log = logging.getLogger(__name__)

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
METRICS_SUBDIR: Final = "metrics"
"""Per-process value files live under ``<data_dir>/metrics/<host>-<pid>``."""


def use_multiprocess_dir(data_dir: Path) -> Path | None:
    """Point prometheus_client at a fresh directory of this process tree's own.

    The directory is ``<data_dir>/metrics/<host>-<pid>``, so processes on several hosts
    sharing one data directory, or several nodes on one host, never add up each other's
    files; those left by dead processes of this host are removed. Does nothing (and
    returns None) when prometheus_client is already imported, whose mode is then fixed,
    or when the variable is already set: the caller's directory (systemd's
    ``RuntimeDirectory``, say, local and fresh at each start) is used as it is.
    """
    if MULTIPROC_ENV in os.environ or "prometheus_client" in sys.modules:
        return None
    root = data_dir / METRICS_SUBDIR
    host = socket.gethostname()
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob(f"{host}-*"):
        pid = old.name[len(host) + 1 :]  # not host "a-b"'s "a-b-7" when this host is "a"
        if pid.isdigit() and not pid_exists(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    directory = root / f"{host}-{os.getpid()}"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    os.environ[MULTIPROC_ENV] = str(directory)
    return directory


def multiprocess_mode() -> bool:
    """Whether this process's prometheus_client writes its values to files."""
    from prometheus_client import values

    return bool(getattr(values.ValueClass, "_multiprocess", False)) and bool(
        os.environ.get(MULTIPROC_ENV)
    )


@dataclass
class MetricsEndpoint:
    """The HTTP endpoint with this process's instruments and the queue's state.

    Parameters
    ----------
    settings
        ``[metrics]``: where to listen.
    engine
        The queue's database, read at each scrape.
    """

    settings: MetricsSettings
    engine: Engine
    registry: CollectorRegistry = field(init=False)
    metrics: Metrics | NoMetrics = field(init=False)
    _server: Any = field(default=None, init=False)
    _thread: Any = field(default=None, init=False)

    def __post_init__(self) -> None:
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        self.registry = CollectorRegistry(auto_describe=True)
        if multiprocess_mode():
            # Every process of this node, this one included, counts into the directory.
            MultiProcessCollector(self.registry)
            self.metrics = process_metrics()
        else:
            self.metrics = Metrics(self.registry)
        self.registry.register(QueueCollector(self.engine))

    def start(self) -> None:
        """Listen; returns once the socket is bound.

        Raises
        ------
        OSError
            The port is in use or cannot be bound.
        """
        from prometheus_client import start_http_server

        self._server, self._thread = start_http_server(
            self.settings.port, addr=self.settings.host, registry=self.registry
        )
        log.info("metrics on http://%s:%d/metrics", *self.address)

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) bound."""
        if self._server is None:
            raise RuntimeError("the metrics endpoint is not started")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            with contextlib.suppress(RuntimeError):
                self._thread.join(5)
            self._server = None


def process_metrics() -> Metrics | NoMetrics:
    """The instruments of this process in multiprocess mode, else none.

    For a process a node started (an analysis process): its values go to the node's
    directory, where the endpoint reads them. One instance a process, because two
    instances of a metric in one process would overwrite each other's file entries.
    """
    if not multiprocess_mode():
        return NO_METRICS
    pid = os.getpid()
    if pid not in _PER_PROCESS:
        _PER_PROCESS[pid] = Metrics(None)
    return _PER_PROCESS[pid]


# The one exception to "no module globals": prometheus_client's multiprocess values are
# per process by nature (see process_metrics).
_PER_PROCESS: dict[int, Metrics] = {}
