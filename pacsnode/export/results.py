"""The result objects of one analysed film, built together: the SEG, the SR that
describes and references it, the GSPS that draws the findings over the film, and on
request the burned-in Secondary Capture. Shared by the offline ``pacsnode analyze`` and
the worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset

from pacsnode.analysis.localise import Localisation
from pacsnode.errors import ExportError
from pacsnode.export.capture import build_spine_capture
from pacsnode.export.gsps import build_spine_gsps
from pacsnode.export.identity import AlgorithmInfo
from pacsnode.export.provenance import stack_algorithm
from pacsnode.export.seg import build_spine_seg
from pacsnode.export.sr import build_spine_sr
from pacsnode.export.uids import ExportKind
from pacsnode.imaging.reader import Film

if TYPE_CHECKING:
    from pacsnode.analysis.reading import SpineReading

__all__ = ["ResultObjects", "algorithm_of", "build_results"]


@dataclass(frozen=True)
class ResultObjects:
    """The objects of one film; ``sc`` is None unless it was asked for."""

    seg: Dataset
    sr: Dataset
    gsps: Dataset
    sc: Dataset | None = None

    def by_kind(self) -> dict[ExportKind, Dataset]:
        """Each object that was built, by its kind, in the order they are sent."""
        objects = {
            ExportKind.SEG: self.seg,
            ExportKind.SR: self.sr,
            ExportKind.GSPS: self.gsps,
            ExportKind.SC: self.sc,
        }
        return {kind: ds for kind, ds in objects.items() if ds is not None}


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
    *,
    secondary_capture: bool = False,
) -> ResultObjects:
    """SEG, SR and GSPS of one film, and its burned-in Secondary Capture when asked.
    ``source`` is the film's header (pixel data not needed: the capture draws on
    ``film.image``).

    Parameters
    ----------
    reading
        The vertebrae the full stack found, head first: each becomes a SEG segment
        labelled with its name (or position, "V1"…) and three SR measurement groups
        (:mod:`pacsnode.export.vertebrae`). Its ``models`` join ``algorithm`` in both
        objects' algorithm identification and version
        (:func:`~pacsnode.export.provenance.stack_algorithm`), so the result UIDs change
        when any of those models does. Its vertebrae and read-out are drawn by the GSPS
        (:func:`~pacsnode.export.gsps.build_spine_gsps`) and the capture.
    secondary_capture
        Also build the Secondary Capture (:func:`~pacsnode.export.capture.build_spine_capture`):
        only when a destination takes it, as it costs a picture of the film.

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
    gsps = build_spine_gsps(source, localisation, algorithm=algorithm, reading=reading)
    sc = None
    if secondary_capture:
        sc = build_spine_capture(
            source, film.image, localisation, algorithm=algorithm, reading=reading
        )
    return ResultObjects(seg, sr, gsps, sc)
