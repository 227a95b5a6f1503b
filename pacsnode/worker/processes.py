"""Analysis in worker processes: a supervisor spawns ``[worker] processes`` of them, each
loading the models once and running the analysis loop, and restarts one that dies.

The processes share nothing with the node's own process but the database, the spool and
two doorbells: wake (a film was queued here) and results (deliveries were queued, for the
delivery loop); SIGTERM stops them. Their log records come back to the node's handlers,
screened of patient values in the process that wrote them.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import multiprocessing
import os
import queue as queue_module
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any, Final

from pacsnode.config.settings import Settings
from pacsnode.errors import ModelError, PacsnodeError

__all__ = ["AnalysisProcesses", "Doorbell"]

log = logging.getLogger(__name__)

READY_SECONDS: Final = 600.0
"""How long the node waits at start for every process to load its models."""

RESTART_DELAY_SECONDS: Final = (1.0, 60.0)
"""A process that dies is restarted after the first delay, doubled for each death soon
after a start, up to the second: a process that cannot stay up does not spin."""

STABLE_SECONDS: Final = 60.0
"""A process up this long before it died is restarted at once."""

NICENESS: Final = 10
"""Analysis processes run this much nicer than the listener: when the cores are busy, a
C-STORE answer (and its decode check) goes first, and analysis takes what is left."""

MMAP_THRESHOLD_BYTES: Final = 1 << 20
"""Allocations from this size are mapped on their own and returned to the system when
freed (glibc otherwise raises the threshold as big arrays come and go, and keeps a film's
worth of freed memory in the heap between films)."""

_LIBRARIES: Final = ("pacsnode", "pynetdicom", "pydicom", "highdicom", "sqlalchemy")


@dataclass(frozen=True)
class _Spec:
    """What a process needs, sent to it at spawn (pickled)."""

    settings: Settings
    index: int
    results_dir: str
    wake: Doorbell
    results: Doorbell
    status: Any
    logs: Any
    levels: dict[str, int]
    screened: bool


class AnalysisProcesses:
    """The node's analysis processes and their supervisor.

    Parameters
    ----------
    settings
        The node's settings: ``[worker] processes``, ``torch_threads``, ``concurrency``,
        ``[analysis]`` and the destinations.
    results_dir
        Where the result objects are written.
    """

    def __init__(self, settings: Settings, results_dir: os.PathLike[str] | str) -> None:
        if settings.worker.processes < 1:
            raise ValueError("analysis processes need [worker] processes of at least 1")
        self.settings = settings
        self.results_dir = str(results_dir)
        self._context = multiprocessing.get_context("spawn")
        self._stopping = threading.Event()
        self.results = Doorbell(self._context)
        """Rung by a process that queued deliveries: the delivery loop's wake."""
        self._wakes = [Doorbell(self._context) for _ in range(settings.worker.processes)]
        self._status: Any = self._context.Queue()
        self._logs: Any = self._context.Queue()
        self._processes: list[Any] = [None] * settings.worker.processes
        self._started_at = [0.0] * settings.worker.processes
        self._delays = [RESTART_DELAY_SECONDS[0]] * settings.worker.processes
        self._due: list[float | None] = [None] * settings.worker.processes
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stopped = False
        self.versions: dict[str, str] = {}
        """The models' versions, as the first process to start reported them."""

    @property
    def pids(self) -> list[int]:
        """The process ids of the live analysis processes."""
        with self._lock:
            return [p.pid for p in self._processes if p is not None and p.is_alive()]

    def start(self, timeout: float = READY_SECONDS) -> None:
        """Spawn every process and wait until each has loaded its models.

        Raises
        ------
        ModelError
            A process could not load the models (the message is its error), or they
            were not ready within ``timeout``.
        """
        self._start_thread(self._forward_logs, "analysis-logs")
        for index in range(len(self._processes)):
            self._spawn(index)
        waiting = set(range(len(self._processes)))
        deadline = time.monotonic() + timeout
        while waiting:
            left = deadline - time.monotonic()
            try:
                index, state, detail = self._status.get(timeout=min(max(left, 0.01), 1.0))
            except queue_module.Empty:
                dead = [i for i in waiting if not self._processes[i].is_alive()]
                if not dead and left > 0:
                    continue
                self.stop(5.0)
                raise ModelError(
                    f"analysis processes {sorted(dead)} died while loading the models"
                    if dead
                    else f"analysis processes {sorted(waiting)} did not load the models "
                    f"within {timeout:g} s"
                ) from None
            if state == "failed":
                self.stop(5.0)
                raise ModelError(f"analysis process {index} could not start: {detail}")
            self.versions = self.versions or dict(detail["versions"])
            waiting.discard(index)
        log.info(
            "%d analysis process(es) ready, %d torch thread(s) each: pids %s",
            len(self._processes),
            self.settings.worker.torch_threads,
            ", ".join(map(str, self.pids)),
        )
        self._start_thread(self._supervise, "analysis-supervisor")

    def wake_one(self) -> None:
        """Tell one idle process that a film was queued (the others find it by polling)."""
        for wake in self._wakes:
            if not wake.is_set():
                wake.set()
                return

    def stop(self, timeout: float | None = None) -> None:
        """Let each process finish (or release) its film and exit; kill one still busy
        after ``timeout`` seconds (its lease then expires, or is reclaimed at restart)."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        for thread in self._threads:  # no restart from here on
            if thread.name == "analysis-supervisor":
                thread.join(10.0)
        with self._lock:
            processes = [p for p in self._processes if p is not None]
        for process in processes:
            with contextlib.suppress(ValueError):  # it died just now
                process.terminate()  # SIGTERM: finish or release the film, then exit
        deadline = None if timeout is None else time.monotonic() + timeout
        for process in processes:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            process.join(left)
            if process.is_alive():
                log.warning("analysis process %d still busy at shutdown: killed", process.pid)
                process.kill()
                process.join(5.0)
        self._logs.put(None)
        for thread in self._threads:
            thread.join(10.0)
        self._threads.clear()
        for channel in (self._status, self._logs):
            channel.close()
            channel.join_thread()

    def _spawn(self, index: int) -> None:
        spec = _Spec(
            settings=self.settings,
            index=index,
            results_dir=self.results_dir,
            wake=self._wakes[index],
            results=self.results,
            status=self._status,
            logs=self._logs,
            levels=_levels(),
            screened=_screened(),
        )
        process = self._context.Process(
            target=_main, args=(spec,), name=f"pacsnode-analysis-{index}", daemon=False
        )
        process.start()
        with self._lock:
            self._processes[index] = process
            self._started_at[index] = time.monotonic()
            self._due[index] = None

    def _supervise(self) -> None:
        """Restart a process that died, after a delay that grows while it keeps dying."""
        while not self._stopping.is_set():
            with self._lock:
                sentinels = [p.sentinel for p in self._processes if p is not None]
            wait(sentinels, timeout=1.0)
            self._drain_status()
            if self._stopping.is_set():
                return
            now = time.monotonic()
            for index, process in enumerate(self._processes):
                if process is not None and not process.is_alive():
                    lived = now - self._started_at[index]
                    self._delays[index] = (
                        RESTART_DELAY_SECONDS[0]
                        if lived >= STABLE_SECONDS
                        else min(self._delays[index] * 2, RESTART_DELAY_SECONDS[1])
                    )
                    log.warning(
                        "analysis process %d (pid %s) exited with code %s after %.0f s; "
                        "restarting in %.0f s",
                        index,
                        process.pid,
                        process.exitcode,
                        lived,
                        self._delays[index],
                    )
                    with self._lock:
                        self._processes[index] = None
                    process.close()
                    self._due[index] = now + self._delays[index]
                due = self._due[index]
                if self._processes[index] is None and due is not None and now >= due:
                    self._spawn(index)

    def _drain_status(self) -> None:
        while True:
            try:
                index, state, detail = self._status.get_nowait()
            except (queue_module.Empty, OSError, ValueError):
                return
            if state == "failed":
                log.error("analysis process %d could not start: %s", index, detail)
            else:
                log.info("analysis process %d ready (pid %s)", index, detail["pid"])

    def _forward_logs(self) -> None:
        """Hand the processes' log records to this process's loggers and handlers."""
        while True:
            try:
                record = self._logs.get()
            except (EOFError, OSError):
                return
            if record is None:
                return
            logging.getLogger(record.name).handle(record)

    def _start_thread(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)


class Doorbell:
    """A wake between processes, with the part of :class:`threading.Event` the loops use.

    One byte down a pipe. A :class:`multiprocessing.Event` will not do: a process killed
    while waiting on one leaves its condition counting a sleeper, and the next ``set()``
    waits for that dead sleeper for ever.
    """

    def __init__(self, context: Any) -> None:
        self._reader, self._writer = context.Pipe(duplex=False)
        # A full pipe already says "wake up": ringing again must not block.
        os.set_blocking(self._writer.fileno(), False)

    def set(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._writer.send_bytes(b"!")  # under PIPE_BUF: written whole or not at all

    def is_set(self) -> bool:
        return bool(self._reader.poll(0))

    def wait(self, timeout: float | None = None) -> bool:
        return bool(self._reader.poll(timeout))

    def clear(self) -> None:
        with contextlib.suppress(OSError, EOFError):
            while self._reader.poll(0):
                self._reader.recv_bytes()


def _levels() -> dict[str, int]:
    """The levels of the root logger and of the libraries that log, to copy to a process."""
    levels = {"": logging.getLogger().level}
    for name in _LIBRARIES:
        level = logging.getLogger(name).level
        if level != logging.NOTSET:
            levels[name] = level
    return levels


def _screened() -> bool:
    """Whether this process screens patient values out of its log (no ``--log-phi``)."""
    from pacsnode.audit.screen import ScreeningFilter

    return any(
        isinstance(f, ScreeningFilter) for h in logging.getLogger().handlers for f in h.filters
    )


# --- in the analysis process --------------------------------------------------------------


def _main(spec: _Spec) -> None:
    """An analysis process: load the models once, then run the analysis loop(s) until the
    node stops, this process gets SIGTERM, or the node's process is gone."""
    settings = spec.settings
    threads = settings.worker.torch_threads
    # Before torch loads: the OpenMP pool takes its size from here.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    stop = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group
    os.nice(NICENESS)
    _return_freed_memory()
    signal.signal(signal.SIGTERM, lambda number, frame: (stop.set(), spec.wake.set()))
    _log_to(spec)
    try:
        import torch

        torch.set_num_threads(threads)
        with contextlib.suppress(RuntimeError):  # only before any parallel work
            torch.set_num_interop_threads(1)
        engine, loops = _loops(spec, stop)
    except Exception as exc:
        if isinstance(exc, PacsnodeError):  # a setting or the weights: the message says it
            log.error("analysis process %d could not start: %s", spec.index, exc)
        else:
            log.exception("analysis process %d could not start", spec.index)
        spec.status.put((spec.index, "failed", f"{type(exc).__name__}: {exc}"))
        raise SystemExit(3) from None
    versions = loops[0].analyst.stack.versions if loops else {}
    spec.status.put((spec.index, "ready", {"pid": os.getpid(), "versions": versions}))
    watcher = threading.Thread(target=_watch, args=(spec, stop), name="watch", daemon=True)
    watcher.start()
    for loop in loops:
        loop.start()
    for loop in loops:
        loop.join()
    engine.dispose()


def _loops(spec: _Spec, stop: threading.Event) -> tuple[Any, list[Any]]:
    from pathlib import Path

    from pacsnode.audit import AuditLog
    from pacsnode.db import make_engine
    from pacsnode.jobs import JobQueue
    from pacsnode.metrics import process_metrics
    from pacsnode.worker.analyst import Analyst, wants_capture
    from pacsnode.worker.loops import JobLoop

    settings = spec.settings
    analyst = Analyst.load(
        settings.analysis.models_dir,
        Path(spec.results_dir),
        device=settings.analysis.device,
        eta=settings.analysis.ensemble_eta,
        lam=settings.analysis.ensemble_lambda,
        secondary_capture=wants_capture(settings.destinations),
    )
    engine = make_engine(settings.database.url)
    queue = JobQueue.configured(engine, settings.worker)
    audit = AuditLog(engine)
    loops = []
    for k in range(settings.worker.concurrency):
        suffix = "" if settings.worker.concurrency == 1 else f".{k}"
        loop = JobLoop(
            f"analysis-{spec.index}{suffix}",
            queue,
            audit,
            stop,
            analyst=analyst,
            destinations=settings.destinations,
            lease_seconds=settings.worker.lease_seconds,
            on_results=spec.results.set,
            # Into the node's metrics directory (inherited in the environment), if any.
            metrics=process_metrics(),
            notify=settings.notify,
        )
        loop.wake = spec.wake  # set by the node's listener when it queues a film
        loops.append(loop)
    return engine, loops


def _return_freed_memory() -> None:
    """Fix glibc's mmap threshold (:data:`MMAP_THRESHOLD_BYTES`); nothing elsewhere."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(name).mallopt(-3, MMAP_THRESHOLD_BYTES)  # M_MMAP_THRESHOLD


def _watch(spec: _Spec, stop: threading.Event) -> None:
    """Stop this process's loops when the node's process is gone (killed, so it could not
    send SIGTERM): an analysis process never outlives its node."""
    parent = multiprocessing.parent_process()
    while not stop.wait(1.0):
        if parent is not None and not parent.is_alive():
            stop.set()
            spec.wake.set()
            return


def _log_to(spec: _Spec) -> None:
    """Send this process's log records to the node's process, screened here first (the
    patient screen of the film in hand is known only in this process)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.handlers.QueueHandler(spec.logs)
    if spec.screened:
        from pacsnode.audit.screen import ScreeningFilter

        handler.addFilter(ScreeningFilter())
    root.addHandler(handler)
    for name, level in spec.levels.items():
        logging.getLogger(name or None).setLevel(level)
    logging.captureWarnings(True)
