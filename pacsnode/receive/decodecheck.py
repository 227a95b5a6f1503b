"""Compressed pixel data decoded in child processes before a film is accepted, so that a
damaged codestream is never answered Success while the listener decodes no pixel itself.

A decoder that hangs is killed at the timeout; one that crashes takes only its child down.
Either way the next check gets a fresh child, and the association threads never wait on
each other's decoding.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import queue
import signal
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

from pacsnode.errors import ImageReadError, ReadFailure

__all__ = ["DECODE_TIMEOUT_SECONDS", "DecodeChecks"]

log = logging.getLogger(__name__)

DECODE_TIMEOUT_SECONDS: Final = 60.0
"""How long one film's decode check may take (16 MiB of JPEG 2000 decodes in about a
second on an idle core) before its child is killed and the film refused for now."""

_START_SECONDS: Final = 60.0
"""How long a new child may take to import the decoders and say it is ready."""


class DecodeChecks:
    """A few child processes that decode compressed films on request.

    Parameters
    ----------
    processes
        Children, so checks run at once; a check waits for a free one.
    timeout
        Seconds one check may take, waiting for a free child included.
    """

    def __init__(self, processes: int = 2, timeout: float = DECODE_TIMEOUT_SECONDS) -> None:
        if processes < 1:
            raise ValueError(f"processes must be at least 1, got {processes}")
        self.timeout = timeout
        self._context = multiprocessing.get_context("spawn")
        self._children = [_Child(self._context, index) for index in range(processes)]
        self._idle: queue.Queue[_Child] = queue.Queue()
        for child in self._children:
            self._idle.put(child)
        self._stopped = threading.Event()

    def start(self) -> None:
        """Start every child now, so the first compressed film does not wait for one."""
        self._stopped.clear()
        for child in self._children:
            child.ensure_started()

    def check(self, path: Path) -> None:
        """Decode the pixel data of the film at ``path`` in a child, and say nothing if
        they decode.

        Raises
        ------
        ImageReadError
            The film is refused by the reader, or its pixel data crash the decoder.
        TimeoutError
            No child was free, or the decode took longer than the timeout (the child is
            killed): not the film's fault for certain, so a refusal to try again later.
        """
        if self._stopped.is_set():
            raise TimeoutError("the decode check is stopped")
        try:
            child = self._idle.get(timeout=self.timeout)
        except queue.Empty:
            raise TimeoutError(f"no decode check free within {self.timeout:g} s") from None
        try:
            child.check(path, self.timeout)
        finally:
            self._idle.put(child)

    def stop(self) -> None:
        """Ask every child to exit, and kill one that does not."""
        self._stopped.set()
        for child in self._children:
            child.stop()


class _Child:
    """One decode-check process and the pipe to it; started on first use, and again
    after it was killed or died."""

    def __init__(self, context: Any, index: int) -> None:
        self._context = context
        self.index = index
        self._process: Any = None
        self._conn: Connection | None = None

    def ensure_started(self) -> Connection:
        if self._process is not None and self._process.is_alive() and self._conn is not None:
            return self._conn
        self._discard()
        ours, theirs = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=_serve, args=(theirs,), name=f"pacsnode-decode-check-{self.index}", daemon=True
        )
        process.start()
        theirs.close()
        self._process, self._conn = process, ours
        if not ours.poll(_START_SECONDS):
            self._discard()
            raise TimeoutError("a decode check process did not start")
        try:
            ours.recv()  # "ready"
        except EOFError:
            self._discard()
            raise TimeoutError("a decode check process died while starting") from None
        return ours

    def check(self, path: Path, timeout: float) -> None:
        conn = self.ensure_started()
        try:
            conn.send(str(path))
            if not conn.poll(timeout):
                log.warning("decode check of %s took over %g s: child killed", path.name, timeout)
                self._discard()
                raise TimeoutError(f"decoding the pixel data took over {timeout:g} s")
            answer = conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError):
            code = None if self._process is None else self._process.exitcode
            self._discard()
            log.warning("decode check of %s: the decoder died (exit code %s)", path.name, code)
            raise ImageReadError(
                ReadFailure.CORRUPT_PIXEL_DATA,
                "the compressed pixel data crashed the decoder",
            ) from None
        if answer is None:
            return
        kind, message = answer
        if kind == "error":  # a fault of the node, not the film
            raise RuntimeError(f"decode check failed: {message}")
        raise ImageReadError(ReadFailure(kind), message)

    def stop(self) -> None:
        if self._conn is not None and self._process is not None and self._process.is_alive():
            with contextlib.suppress(OSError):
                self._conn.send(None)
            self._process.join(2.0)
        self._discard()

    def _discard(self) -> None:
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join(5.0)
            self._process.close()
        if self._conn is not None:
            self._conn.close()
        self._process, self._conn = None, None


def _serve(conn: Connection) -> None:
    """The child: decode the film at each path received until told to stop (None) or the
    listener goes (end of the pipe). It answers None, (reason, message) for a film the
    reader refuses, or ("error", text) for anything else."""
    # Ctrl-C reaches the whole process group; the listener decides when children stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from pacsnode.imaging.reader import inspect_film

    conn.send("ready")
    while True:
        try:
            path = conn.recv()
        except (EOFError, OSError):
            return
        if path is None:
            return
        try:
            # Bytes, not the path: the reader's messages then name "the DICOM object",
            # as they do for every other refusal, never a spool path.
            inspect_film(Path(path).read_bytes(), decode_compressed=True)
            reply: tuple[str, str] | None = None
        except ImageReadError as exc:
            reply = (exc.reason.value, str(exc.args[0]))
        except BaseException as exc:  # a native decoder's panic is no Exception
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            reply = ("error", f"{type(exc).__name__}: {exc}")
        try:
            conn.send(reply)
        except (OSError, ValueError):
            return
