"""Naming vertebrae by walking the sorted chain from a reference vertebra (VertXNet §2.4):
down from C2 (C3…C7, T1, T2…), up from S1 (L5…L1, T12, T11…).

Which vertebra is the reference is the identifier network's call; this module only walks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["REFERENCES", "SPINE_ORDER", "Named", "chain_labels", "name_chain"]

SPINE_ORDER: Final = (
    *(f"C{n}" for n in range(1, 8)),
    *(f"T{n}" for n in range(1, 13)),
    *(f"L{n}" for n in range(1, 6)),
    "S1",
)
"""Vertebrae from the head down, as a lateral film shows them."""

REFERENCES: Final = ("C2", "S1")
"""The vertebrae the identifier recognises: the dens of C2, the sacral wedge of S1."""


@dataclass(frozen=True)
class Named:
    """The name given to one vertebra of the sorted chain.

    Attributes
    ----------
    label
        ``"C5"``, ``"L3"``…; by position only (``"V1"``, ``"V2"``… from the top) when no
        reference was found or the walk ran past the ends of the spine.
    confidence
        Probability that the label is right: the identifier's confidence in the
        reference (the walk itself adds no guess); 0 for positional labels.
    identified
        The label is an anatomical name, not a position.
    """

    label: str
    confidence: float
    identified: bool


def name_chain(count: int, reference: tuple[int, str, float] | None) -> list[Named]:
    """Names for ``count`` vertebrae sorted head first.

    Parameters
    ----------
    count
        How many vertebrae the chain has.
    reference
        ``(index in the chain, "C2" or "S1", confidence)``, or None when the identifier
        found no reference vertebra (many lateral chest films).

    Raises
    ------
    ValueError
        An index outside the chain, a reference other than C2 or S1, or a confidence
        outside [0, 1].
    """
    if count < 0:
        raise ValueError(f"a chain has a non-negative length, got {count}")
    if reference is None:
        return [Named(f"V{i + 1}", 0.0, identified=False) for i in range(count)]
    index, name, confidence = reference
    if name not in REFERENCES:
        raise ValueError(f"the reference is C2 or S1, got {name!r}")
    if not 0 <= index < count:
        raise ValueError(f"reference index {index} outside a chain of {count}")
    if not 0.0 <= confidence <= 1.0:
        raise ValueError(f"confidence must be in [0, 1], got {confidence}")
    anchor = SPINE_ORDER.index(name)
    named = []
    for i in range(count):
        position = anchor + (i - index)
        if 0 <= position < len(SPINE_ORDER):
            named.append(Named(SPINE_ORDER[position], confidence, identified=True))
        else:  # more vertebrae than the spine has past the reference: not nameable
            named.append(Named(f"V{i + 1}", 0.0, identified=False))
    return named


def chain_labels(named: Sequence[Named]) -> list[str]:
    """The labels alone, for reports and tests."""
    return [entry.label for entry in named]
