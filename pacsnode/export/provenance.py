"""Which models made a full reading of a film, as the algorithm identification of its SEG
and SR: the localiser's :class:`AlgorithmInfo` extended with every contributing model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import highdicom as hd

from pacsnode.errors import ExportError
from pacsnode.export.identity import AlgorithmInfo, NodeIdentity

__all__ = ["StackAlgorithm", "stack_algorithm"]

_LO_MAX = 64  # Algorithm Version is LO, and it keys the result UIDs


@dataclass(frozen=True)
class StackAlgorithm(AlgorithmInfo):
    """An algorithm made of several models.

    Attributes
    ----------
    models
        ``(name, version)`` of every model, sorted by name; written as the Algorithm
        Parameters of the SEG's segments ("name=version", comma-separated) and as one
        Algorithm Parameter per model in the SR's TID 4019.
    """

    models: tuple[tuple[str, str], ...] = ()

    def seg_identification(self) -> hd.AlgorithmIdentificationSequence:
        return hd.AlgorithmIdentificationSequence(
            name=self.name,
            family=self.family,
            version=self.version,
            source=NodeIdentity.MAKER,
            parameters=dict(self.models) or None,
        )

    def sr_identification(self) -> hd.sr.AlgorithmIdentification:
        return hd.sr.AlgorithmIdentification(
            name=self.name,
            version=self.version,
            parameters=[f"{name}={version}" for name, version in self.models] or None,
            family=self.family,
            manufacturer=NodeIdentity.MAKER,
        )


def stack_algorithm(algorithm: AlgorithmInfo, models: Mapping[str, str]) -> AlgorithmInfo:
    """``algorithm`` with ``models`` (name -> version) folded in; ``algorithm`` itself when
    there are none.

    The version becomes ``"<algorithm version>+models.<12 hex digits>"``, the digits from
    the SHA-256 of the sorted ``name=version`` lines, so the result UIDs, which the version
    keys, stay the same for the same models and change when any model does. The models
    themselves are listed in full as algorithm parameters (:class:`StackAlgorithm`): an
    Algorithm Version holds only 64 characters.

    Raises
    ------
    ExportError
        As :func:`~pacsnode.export.results.algorithm_of` does for a bad manifest: when a
        model name or version is empty or holds "=" or ",", which would make the
        parameter list ambiguous, or when the version would be longer than 64 characters.
    """
    if not models:
        return algorithm
    pairs = tuple(sorted((str(name), str(version)) for name, version in models.items()))
    for name, version in pairs:
        if not name.strip() or not version.strip() or any(c in name + version for c in "=,"):
            raise ExportError(f"model {name!r} version {version!r} cannot be listed")
    digest = hashlib.sha256("\n".join(f"{n}={v}" for n, v in pairs).encode()).hexdigest()
    version = f"{algorithm.version}+models.{digest[:12]}"
    if len(version) > _LO_MAX:
        raise ExportError(f"algorithm version {version!r} is longer than {_LO_MAX} characters")
    return StackAlgorithm(
        name=algorithm.name, version=version, family=algorithm.family, models=pairs
    )
