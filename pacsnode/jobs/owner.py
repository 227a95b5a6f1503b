"""Who holds a lease: the host, process id and process start of the worker that claimed it.

A node that starts can then tell, without waiting out the lease, which leases on its own
host belong to processes that are gone: a pid reused by a new process has another start.
"""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["ProcessOwner", "pid_exists", "process_start"]

_PROC: Final = Path("/proc")


@dataclass(frozen=True, slots=True)
class ProcessOwner:
    """A process as the queue records it on a lease.

    Attributes
    ----------
    host
        The host name (:func:`socket.gethostname`).
    pid
        The process id.
    start
        ``<boot id>:<pid namespace>:<start>``, the start being field 22 of
        ``/proc/<pid>/stat`` (clock ticks after boot); None where there is no ``/proc``.
        The boot id tells a reboot apart, the pid namespace a container sharing the host
        name, the start a reused pid.
    """

    host: str
    pid: int
    start: str | None

    @classmethod
    def current(cls) -> ProcessOwner:
        """This process (computed again after a fork, since the pid changes)."""
        return _owner_of(os.getpid())

    def is_dead(self, host: str, pid: int | None, start: str | None) -> bool:
        """Whether the lease owner ``(host, pid, start)`` is known to be gone.

        Only a process on this host, in this boot and pid namespace, can be judged;
        anything else (another host, a lease from before owners were recorded) is
        alive as far as this process can tell, and waits out its lease.
        """
        if host != self.host or pid is None:
            return False
        if start is None or self.start is None:
            # Without /proc, only a pid that no longer exists is known to be dead.
            return start is None and not pid_exists(pid)
        boot, namespace, _ticks = _split(start)
        mine_boot, mine_namespace, _mine = _split(self.start)
        if boot != mine_boot:
            return True  # the host rebooted since: every process of the old boot is gone
        if namespace != mine_namespace:
            return False  # another container with the same host name: not ours to judge
        return process_start(pid) != start


def process_start(pid: int) -> str | None:
    """The start stamp of process ``pid`` (see :class:`ProcessOwner`), or None when it
    does not exist or there is no ``/proc``."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or parentheses:
    # count the fields after its last ")". Field 22, starttime, is the 20th after it.
    ticks = stat[stat.rindex(")") + 2 :].split()[19]
    return f"{_boot_id()}:{_pid_namespace()}:{ticks}"


@functools.cache
def _boot_id() -> str:
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "-"


@functools.cache
def _pid_namespace() -> str:
    try:
        link = os.readlink(_PROC / "self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return "-"
    return link.removeprefix("pid:[").removesuffix("]")


@functools.lru_cache(maxsize=4)
def _owner_of(pid: int) -> ProcessOwner:
    return ProcessOwner(host=socket.gethostname(), pid=pid, start=process_start(pid))


def _split(start: str) -> tuple[str, str, str]:
    boot, namespace, ticks = ([*start.split(":", 2), "", ""])[:3]
    return boot, namespace, ticks


def pid_exists(pid: int) -> bool:
    """Whether a process of this id runs on this host (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True
