"""Run one task in several threads released at the same moment, as processes starting
together would: what concurrency tests of the database set-up and migrations share."""

from __future__ import annotations

import threading
from collections.abc import Callable


def run_together(
    task: Callable[[], object], n: int, timeout_s: float = 60.0
) -> list[BaseException]:
    """Run ``task`` in ``n`` threads that all start it at once; the errors they raised."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def one() -> None:
        try:
            barrier.wait()
            task()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout_s)
    return errors
