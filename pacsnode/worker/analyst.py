"""One film in, result files out: the analysis stack and the export builders, loaded once.

Shared by the worker; knows nothing of the queue, so it can be tested on a file.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from pacsnode.analysis.ensemble import DEFAULT_ETA, DEFAULT_LAMBDA
from pacsnode.durable import write_durably
from pacsnode.errors import ExportError, ImageReadError, ReadFailure
from pacsnode.export.identity import AlgorithmInfo
from pacsnode.export.uids import ExportKind
from pacsnode.imaging.reader import Film, read_film

if TYPE_CHECKING:
    from pacsnode.analysis.reading import SpineReading
    from pacsnode.analysis.readout import ReadOut
    from pacsnode.analysis.stack import Stack
    from pacsnode.config.settings import Destination

__all__ = ["RESULT_FILE_NAMES", "Analysis", "Analyst", "ResultFile", "describe", "wants_capture"]

log = logging.getLogger(__name__)

RESULT_FILE_NAMES = {
    ExportKind.SEG: "seg.dcm",
    ExportKind.SR: "sr.dcm",
    ExportKind.GSPS: "pr.dcm",
    ExportKind.SC: "sc.dcm",
}
"""The file of each result object in a film's results directory."""


@dataclass(frozen=True)
class ResultFile:
    """One result object written to disk, ready to send.

    Attributes
    ----------
    kind
        ``"seg"``, ``"sr"``, ``"gsps"`` or ``"sc"`` (:class:`~pacsnode.export.uids.ExportKind`).
    sop_instance_uid
        Its SOP Instance UID.
    path
        Where it was written durably.
    """

    kind: str
    sop_instance_uid: str
    path: Path


@dataclass(frozen=True)
class Analysis:
    """What the stack made of one film.

    Attributes
    ----------
    results
        The result objects to send; empty when nothing was found.
    finding
        A sentence for the audit log, e.g. "7 vertebrae C2-T1, named from C2 (p 0.99)".
    seconds
        Wall time of reading, analysing and writing.
    stages
        Wall time of each stage: ``read`` (the film), the stack's own stages, and
        ``build`` (the result objects made and written) when there are results.
    """

    results: tuple[ResultFile, ...]
    finding: str
    seconds: float
    stages: dict[str, float] = field(default_factory=dict)
    readout: ReadOut | None = None
    """The film's ER read-out (its flags drive ``[[notify]]``); None when nothing was read."""


class Analyst:
    """The loaded analysis stack.

    Parameters
    ----------
    stack
        The networks of the stack, loaded once.
    results_dir
        Where result objects are written, one directory per source instance.
    secondary_capture
        Also build the burned-in Secondary Capture of each film: only when a destination
        takes it (:func:`wants_capture`), as it costs a picture of the whole film.
    """

    def __init__(self, stack: Stack, results_dir: Path, *, secondary_capture: bool = False) -> None:
        from pacsnode.export.results import algorithm_of

        self.stack = stack
        self.algorithm: AlgorithmInfo = algorithm_of(stack.localiser.manifest)
        self.results_dir = results_dir
        self.secondary_capture = secondary_capture

    @classmethod
    def load(
        cls,
        models_dir: Path,
        results_dir: Path,
        device: str = "cpu",
        *,
        eta: float = DEFAULT_ETA,
        lam: float = DEFAULT_LAMBDA,
        secondary_capture: bool = False,
    ) -> Analyst:
        """Load the shipped (or configured) models from ``models_dir``.

        Raises
        ------
        ModelError
            A weight file is missing, altered, or does not fit its manifest.
        """
        from pacsnode.analysis.stack import Stack

        stack = Stack.load(models_dir, device=device, eta=eta, lam=lam)
        log.info(
            "analysis stack loaded from %s: %s",
            models_dir,
            ", ".join(f"{k} {v}" for k, v in stack.versions.items()),
        )
        return cls(stack, results_dir, secondary_capture=secondary_capture)

    def directory_for(self, sop_instance_uid: str) -> Path:
        from pacsnode.worker.retention import result_directory

        return result_directory(self.results_dir, sop_instance_uid)

    def analyse(self, path: Path) -> Analysis:
        """Read the film at ``path``, analyse it and write its result objects: the SEG,
        SR and GSPS, and the burned-in Secondary Capture when the analyst makes it.

        Raises
        ------
        ImageReadError
            The file is not a film the reader can use; trying again will not help.
        ExportError
            The header lacks what the result objects must copy.
        OSError
            The spool file cannot be read, or the results cannot be written.
        """
        from pacsnode.export.results import build_results

        started = time.monotonic()
        data = path.read_bytes()
        film = read_film(data)
        try:
            header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        except InvalidDicomError as exc:  # the reader accepted it, so this is unexpected
            raise ImageReadError(ReadFailure.NOT_DICOM, str(exc)) from exc
        read_seconds = time.monotonic() - started
        result = self.stack.read(film.image, **reading_hints(header, film))
        stages = {"read": read_seconds, **result.seconds}
        found, reading = result.localisation, result.reading
        if not found.found or reading is None:
            return Analysis(
                (),
                "no spine region found: nothing to send",
                time.monotonic() - started,
                stages,
            )
        building = time.monotonic()
        objects = build_results(
            header, film, found, self.algorithm, reading, secondary_capture=self.secondary_capture
        )
        directory = self.directory_for(film.sop_instance_uid)
        results = []
        for kind, dataset in objects.by_kind().items():
            buffer = io.BytesIO()
            dataset.save_as(buffer, enforce_file_format=True)
            target = directory / RESULT_FILE_NAMES[kind]
            write_durably(target, buffer.getvalue())
            results.append(ResultFile(kind.value, str(dataset.SOPInstanceUID), target))
        stages["build"] = time.monotonic() - building
        return Analysis(
            tuple(results),
            describe(reading),
            time.monotonic() - started,
            stages,
            readout=reading.readout,
        )


def describe(reading: SpineReading) -> str:
    """The audit log's sentence for a reading: how many vertebrae, their names, how they
    were named, and any graded deformity (no patient data)."""
    count = len(reading.vertebrae)
    if count == 0:
        return "spine region found, no vertebra segmented"
    labels = [v.label for v in reading.vertebrae]
    span = labels[0] if count == 1 else f"{labels[0]}-{labels[-1]}"
    if reading.reference is None and reading.abstention is not None:
        naming = f"not identified (positions only: {reading.abstention})"
    elif reading.reference is None:
        naming = "not identified (positions only)"
    else:
        confidence = max(v.confidence for v in reading.vertebrae)
        naming = f"named from {reading.reference} (p {confidence:.2f})"
        if reading.abstention is not None:
            naming += f", {reading.abstention}"
    graded = [
        f"{v.label} grade {v.finding.grade} (p {v.finding.confidence:.2f})"
        for v in reading.vertebrae
        if v.finding is not None and v.finding.grade > 0
    ]
    findings = f"; deformity: {', '.join(graded)}" if graded else ""
    impression = f"; impression: {reading.readout.impression}" if reading.readout else ""
    return f"{count} vertebra{'e' if count > 1 else ''} {span}, {naming}{findings}{impression}"


def wants_capture(destinations: Iterable[Destination]) -> bool:
    """Whether any destination takes the burned-in Secondary Capture (``send`` has
    ``sc``)."""
    return any("sc" in destination.send for destination in destinations)


def is_permanent(error: BaseException) -> bool:
    """Whether a failed analysis would fail the same way every time."""
    return isinstance(error, ImageReadError | ExportError)


def reading_hints(header: Dataset, film: Film) -> dict[str, Any]:
    """What the film's header tells the stack: the reference vertebrae its region allows
    (Body Part Examined, then the study, series and protocol descriptions) and its pixel
    spacing in mm, when it has a square one."""
    from pacsnode.analysis.naming import references_for

    texts = [
        header.get(keyword)
        for keyword in ("BodyPartExamined", "StudyDescription", "SeriesDescription", "ProtocolName")
    ]
    spacing = film.spacing
    spacing_mm = None
    if spacing.row_mm and spacing.col_mm and abs(spacing.row_mm - spacing.col_mm) < 1e-6:
        spacing_mm = float(spacing.row_mm)
    return {
        "references": references_for([None if t is None else str(t) for t in texts]),
        "spacing_mm": spacing_mm,
    }
