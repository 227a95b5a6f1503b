"""One film in, result files out: the analysis stack and the export builders, loaded once.

Shared by the worker; knows nothing of the queue, so it can be tested on a file.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pydicom
from pydicom.errors import InvalidDicomError

from pacsnode.durable import write_durably
from pacsnode.errors import ExportError, ImageReadError, ReadFailure
from pacsnode.export.identity import AlgorithmInfo
from pacsnode.imaging.reader import read_film

if TYPE_CHECKING:
    from pacsnode.analysis.localise import Localiser

__all__ = ["Analysis", "Analyst", "ResultFile"]

log = logging.getLogger(__name__)

LOCALISER_FILE = "localiser.safetensors"


@dataclass(frozen=True)
class ResultFile:
    """One result object written to disk, ready to send.

    Attributes
    ----------
    kind
        ``"seg"`` or ``"sr"``.
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
        A sentence for the audit log, e.g. "spine region found (153,221 pixels)".
    seconds
        Wall time of reading, analysing and writing.
    """

    results: tuple[ResultFile, ...]
    finding: str
    seconds: float


class Analyst:
    """The loaded analysis stack.

    Parameters
    ----------
    localiser
        The spine localiser, loaded once.
    results_dir
        Where result objects are written, one directory per source instance.
    """

    def __init__(self, localiser: Localiser, results_dir: Path) -> None:
        from pacsnode.export.results import algorithm_of

        self.localiser = localiser
        self.algorithm: AlgorithmInfo = algorithm_of(localiser.manifest)
        self.results_dir = results_dir

    @classmethod
    def load(cls, models_dir: Path, results_dir: Path, device: str = "cpu") -> Analyst:
        """Load the shipped (or configured) models from ``models_dir``.

        Raises
        ------
        ModelError
            A weight file is missing, altered, or does not fit its manifest.
        """
        from pacsnode.analysis.localise import Localiser

        localiser = Localiser.load(models_dir / LOCALISER_FILE, device=device)
        log.info(
            "analysis stack loaded: %s on %s", localiser.manifest.get("name"), localiser.device
        )
        return cls(localiser, results_dir)

    def directory_for(self, sop_instance_uid: str) -> Path:
        fan = hashlib.sha1(sop_instance_uid.encode("ascii")).hexdigest()[:2]
        return self.results_dir / fan / sop_instance_uid

    def analyse(self, path: Path) -> Analysis:
        """Read the film at ``path``, analyse it and write its result objects.

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
        found = self.localiser.predict(film.image)
        if not found.found:
            return Analysis(
                (), "no spine region found: nothing to send", time.monotonic() - started
            )
        objects = build_results(header, film, found, self.algorithm)
        directory = self.directory_for(film.sop_instance_uid)
        results = []
        for kind, dataset in (("seg", objects.seg), ("sr", objects.sr)):
            buffer = io.BytesIO()
            dataset.save_as(buffer, enforce_file_format=True)
            target = directory / f"{kind}.dcm"
            write_durably(target, buffer.getvalue())
            results.append(ResultFile(kind, str(dataset.SOPInstanceUID), target))
        pixels = int(found.mask.sum())
        finding = f"spine region found ({pixels:,} pixels, {found.regions} region(s) predicted)"
        return Analysis(tuple(results), finding, time.monotonic() - started)


def is_permanent(error: BaseException) -> bool:
    """Whether a failed analysis would fail the same way every time."""
    return isinstance(error, ImageReadError | ExportError)
