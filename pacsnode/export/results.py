"""The result objects of one analysed film, built together: the SEG, and the SR that
describes and references it. Shared by the offline ``pacsnode analyze`` and the worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset

from pacsnode.analysis.localise import Localisation
from pacsnode.errors import ExportError
from pacsnode.export.identity import AlgorithmInfo
from pacsnode.export.provenance import stack_algorithm
from pacsnode.export.seg import build_spine_seg
from pacsnode.export.sr import build_spine_sr
from pacsnode.imaging.reader import Film

if TYPE_CHECKING:
    from pacsnode.analysis.reading import SpineReading

__all__ = ["ResultObjects", "algorithm_of", "build_results"]


@dataclass(frozen=True)
class ResultObjects:
    seg: Dataset
    sr: Dataset


def algorithm_of(manifest: dict[str, Any]) -> AlgorithmInfo:
    """The algorithm identification of a model manifest: its name, and as version its name
    with the first 12 hex digits of the weights' sha256 (new weights, new result UIDs)."""
    name = str(manifest.get("name", "localiser"))
    digest = str(manifest.get("sha256", ""))[:12]
    if not digest:
        raise ExportError("the model manifest has no sha256 to version the results with")
    return AlgorithmInfo(name=f"pacsnode spine localiser ({name})", version=f"{name}-{digest}")


def build_results(
    source: Dataset,
    film: Film,
    localisation: Localisation,
    algorithm: AlgorithmInfo,
    reading: SpineReading | None = None,
) -> ResultObjects:
    """SEG and SR of one film. ``source`` is the film's header (pixel data not needed).

    Parameters
    ----------
    reading
        The vertebrae the full stack found, head first: each becomes a SEG segment
        labelled with its name (or position, "V1"…) and three SR measurement groups
        (:mod:`pacsnode.export.vertebrae`). Its ``models`` join ``algorithm`` in both
        objects' algorithm identification and version
        (:func:`~pacsnode.export.provenance.stack_algorithm`), so the result UIDs change
        when any of those models does.

    Raises
    ------
    ExportError
        When the localiser found no spine (there is nothing to segment), a vertebra mask is
        empty, or the header lacks what the objects must copy.
    """
    vertebrae = []
    if reading is not None:
        algorithm = stack_algorithm(algorithm, reading.models)
        vertebrae = [(vertebra.label, vertebra.mask) for vertebra in reading.vertebrae]
    seg = build_spine_seg(
        source,
        localisation.mask,
        algorithm=algorithm,
        spacing=film.spacing,
        vertebrae=vertebrae,
    )
    sr = build_spine_sr(
        source, seg, localisation, algorithm=algorithm, spacing=film.spacing, reading=reading
    )
    return ResultObjects(seg, sr)
