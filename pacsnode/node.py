"""The running node: listener, analysis loops and delivery loop, assembled from settings.

``pacsnode serve`` is a thin shell around :class:`Node`; tests start one in-process.
"""

from __future__ import annotations

import enum
import getpass
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pacsnode import __version__
from pacsnode.audit import AuditEvent, AuditLog, Outcome
from pacsnode.config.settings import Settings
from pacsnode.db import create_schema, make_engine
from pacsnode.jobs import JobQueue
from pacsnode.metrics import NO_METRICS, NoMetrics

if TYPE_CHECKING:
    from pacsnode.metrics import MetricsEndpoint
    from pacsnode.receive import StorageSCP
    from pacsnode.worker.loops import JobLoop, _Loop
    from pacsnode.worker.processes import AnalysisProcesses

__all__ = ["RESULTS_SUBDIR", "Node", "Role"]

log = logging.getLogger(__name__)

RESULTS_SUBDIR = "results"
"""Result objects wait under ``<data_dir>/results`` until every destination has them."""


class Role(enum.StrEnum):
    """What one node process runs."""

    ALL = "all"
    """Listener and worker together: the default, one process."""
    RECEIVER = "receiver"
    """Only the listener; workers elsewhere share its database and spool."""
    WORKER = "worker"
    """Only analysis and delivery."""

    @property
    def receives(self) -> bool:
        return self is not Role.WORKER

    @property
    def works(self) -> bool:
        return self is not Role.RECEIVER


@dataclass
class Node:
    """One node process.

    Parameters
    ----------
    settings
        Validated settings.
    role
        Which parts to run.
    migrate
        Bring the database to the newest schema at start (``pacsnode db upgrade``);
        False only checks that it is there, and refuses to start otherwise.
    """

    settings: Settings
    role: Role = Role.ALL
    migrate: bool = True
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _threads: list[_Loop] = field(default_factory=list, init=False)
    _job_loops: list[JobLoop] = field(default_factory=list, init=False)
    _scp: StorageSCP | None = field(default=None, init=False)
    _processes: AnalysisProcesses | None = field(default=None, init=False)
    _metrics_endpoint: MetricsEndpoint | None = field(default=None, init=False)
    metrics: NoMetrics = field(default=NO_METRICS, init=False)

    def start(self) -> None:
        """Open the database, load the models, start the loops, then listen.

        The models load before the listener opens, so a node that cannot analyse does not
        accept films it would only queue.

        Raises
        ------
        ModelError
            The weights are missing or altered.
        OSError
            The port cannot be bound, or the data directory cannot be created.
        """
        settings = self.settings
        settings.storage.data_dir.mkdir(parents=True, exist_ok=True)
        settings.storage.spool_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.database.url)
        self._engine = engine
        if self.migrate:
            create_schema(engine)
        else:
            from pacsnode.migrations import check_current

            check_current(engine)
        self.queue = JobQueue.configured(engine, settings.worker)
        self.audit = AuditLog(engine)
        # Work this host's processes held when they died (kill -9, a crash, a reboot) is
        # due again at once, not after the lease: a restart recovers in seconds.
        from pacsnode.worker.loops import reclaim_orphans

        reclaim_orphans(self.queue, self.audit, f"node:{settings.node.ae_title}:{os.getpid()}")
        if settings.metrics.enabled:
            from pacsnode.metrics import MetricsEndpoint

            endpoint = MetricsEndpoint(settings.metrics, engine)
            endpoint.start()
            self._metrics_endpoint = endpoint
            self.metrics = endpoint.metrics
        if self.role.works:
            self._start_worker()
        if self.role.receives:
            from pacsnode.receive import StorageSCP

            scp = StorageSCP(
                settings,
                self.queue,
                self.audit,
                on_queued=self._wake_analysis,
                metrics=self.metrics,
            )
            scp.start()
            self._scp = scp
        self._record(AuditEvent.NODE_STARTED)

    def _start_worker(self) -> None:
        from pacsnode.worker import (
            Analyst,
            DeliveryLoop,
            JobLoop,
            Retention,
            RetentionLoop,
            wants_capture,
            worker_name,
        )

        settings = self.settings
        lease = settings.worker.lease_seconds
        delivery = DeliveryLoop(
            "delivery",
            self.queue,
            self.audit,
            self._stop,
            destinations=settings.destinations,
            calling_ae=settings.node.ae_title,
            lease_seconds=lease,
            metrics=self.metrics,
            notify=settings.notify,
        )
        if settings.worker.processes > 0:
            # Analysis in worker processes: this one decodes no pixel and runs no network.
            from pacsnode.worker.processes import AnalysisProcesses

            processes = AnalysisProcesses(settings, settings.storage.data_dir / RESULTS_SUBDIR)
            processes.start()  # the models load before the listener opens
            self._processes = processes
            self.metrics.models_loaded(processes.versions)
            delivery.wake = processes.results  # type: ignore[assignment]
        else:
            analyst = Analyst.load(
                settings.analysis.models_dir,
                settings.storage.data_dir / RESULTS_SUBDIR,
                device=settings.analysis.device,
                eta=settings.analysis.ensemble_eta,
                lam=settings.analysis.ensemble_lambda,
                secondary_capture=wants_capture(settings.destinations),
            )
            self.metrics.models_loaded(analyst.stack.versions)
        for index in range(settings.worker.concurrency if settings.worker.processes == 0 else 0):
            self._job_loops.append(
                JobLoop(
                    f"analysis-{index}",
                    self.queue,
                    self.audit,
                    self._stop,
                    analyst=analyst,
                    destinations=settings.destinations,
                    lease_seconds=lease,
                    on_results=delivery.wake.set,
                    metrics=self.metrics,
                    notify=settings.notify,
                )
            )
        retention = RetentionLoop(
            "retention",
            self.queue,
            self.audit,
            self._stop,
            retention=Retention(
                self.queue,
                self.audit,
                settings.storage,
                settings.storage.data_dir / RESULTS_SUBDIR,
                actor=f"worker:{worker_name('retention')}",
            ),
        )
        self._threads.extend(self._job_loops)
        self._threads.append(delivery)
        self._threads.append(retention)
        for thread in self._threads:
            thread.start()

    def _wake_analysis(self) -> None:
        # One film, one job: waking every loop would only make the others poll for nothing.
        if self._processes is not None:
            self._processes.wake_one()
            return
        for loop in self._job_loops:
            if not loop.wake.is_set():
                loop.wake.set()
                return

    @property
    def address(self) -> tuple[str, int] | None:
        """Where the listener is bound, or None without one."""
        return None if self._scp is None else self._scp.address

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """Where the metrics endpoint is bound, or None without one."""
        endpoint = self._metrics_endpoint
        return None if endpoint is None else endpoint.address

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting, let each loop finish (or release) its item, and return.

        Parameters
        ----------
        timeout
            Seconds to wait for each loop; None waits as long as its item takes.
        """
        if self._scp is not None:
            self._scp.stop()
            self._scp = None
        if self._stop.is_set():
            return
        self._stop.set()
        if self._processes is not None:
            self._processes.stop(timeout)
            self._processes = None
        for thread in self._threads:
            thread.wake.set()
        for thread in self._threads:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("%s still busy at shutdown; its lease will expire", thread.name)
        self._threads.clear()
        self._job_loops.clear()
        if self._metrics_endpoint is not None:
            self._metrics_endpoint.stop()
            self._metrics_endpoint = None
        if hasattr(self, "audit"):  # not when start() failed before opening the database
            self._record(AuditEvent.NODE_STOPPED)
        if hasattr(self, "_engine"):
            self._engine.dispose()

    def _record(self, event: AuditEvent) -> None:
        node = self.settings.node
        try:
            self.audit.record(
                event,
                Outcome.SUCCESS,
                actor=f"node:{node.ae_title}:{os.getpid()}:{getpass.getuser()}",
                details={
                    "role": self.role.value,
                    "version": __version__,
                    "port": node.port,
                    "config": None if self.settings.source is None else str(self.settings.source),
                },
            )
        except Exception:
            log.exception("audit entry %s could not be written", event.value)
