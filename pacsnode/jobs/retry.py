"""When a failed job or result send is tried again, and when it is given up.

Exponential backoff with full jitter, so workers that failed together do not retry together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

__all__ = ["RandomSource", "RetryPolicy"]


class RandomSource(Protocol):
    """What :meth:`RetryPolicy.next_delay` needs of a random generator; ``random.Random`` fits."""

    def random(self) -> float:
        """A float uniformly drawn from [0, 1)."""
        ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many attempts a task gets and how long to wait between them.

    Attributes
    ----------
    max_attempts
        Attempts in all, the first included; after the last failure the task is dead.
    base
        Delay ceiling after the first failure, in seconds; it doubles per failure.
    cap
        Largest delay ceiling, in seconds.
    jitter
        Draw the delay uniformly from [0, ceiling) ("full jitter") rather than waiting
        the ceiling itself.
    """

    max_attempts: int = 3
    base: float = 30.0
    cap: float = 1800.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if not (0 < self.base <= self.cap < math.inf):
            raise ValueError(f"need 0 < base <= cap < inf, got base={self.base}, cap={self.cap}")

    def ceiling(self, attempt: int) -> float:
        """The largest delay after failed attempt number ``attempt`` (1-based), in seconds."""
        if attempt < 1:
            raise ValueError(f"attempt numbers start at 1, got {attempt}")
        # Clamp the exponent: past 2**64 the cap has long won, and floats would overflow.
        return min(self.cap, self.base * 2.0 ** min(attempt - 1, 64))

    def next_delay(self, attempt: int, rng: RandomSource) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        ceiling = self.ceiling(attempt)
        return ceiling * rng.random() if self.jitter else ceiling
