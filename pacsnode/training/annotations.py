"""Read annotated training films from a folder, so a hospital can retrain on its own films.

Three annotation formats, which one folder may mix: outline JSON (the phantom truth
format), label-mask PNGs, and four-corner landmark CSVs as the BUU lumbar spine dataset
ships them; each sits beside its DICOM or PNG image under the same stem.

Folder layout
-------------
Only the folder itself is read, not its subfolders. A film is an image ``<case>.dcm`` or
``<case>.png`` plus exactly one annotation with the same stem (``<case>`` is the case id):

``<case>.json``
    Outline JSON: ``{"vertebrae": [{"outline": [[x, y], ...], "label": "L3",
    "corners": {"anterior_superior": [x, y], "posterior_superior": ..., "anterior_inferior":
    ..., "posterior_inferior": ...}}, ...]}``. Only ``outline`` is required; a folder
    written by ``pacsnode phantoms`` (:func:`~pacsnode.training.phantom.write_phantom`)
    reads back as it is. Where the file also gives ``rows`` and ``columns`` they must
    match the image.
``<case>.labels.png``
    Label mask: an 8- or 16-bit single-channel PNG (a palette PNG's indices count as the
    values) of the image's size, 0 the background and each vertebra one positive value.
    An optional ``labels.json`` in the folder names the values for all its masks:
    ``{"1": "L1", ...}``; values it does not name get no label. Each vertebra's outline is
    the boundary of its largest 4-connected piece, holes filled, simplified to within 0.4
    pixel.
``<case>.csv``
    Four-corner landmarks, BUU-LSPINE style: one endplate per row ``x1,y1,x2,y2,flag``,
    the superior and then the inferior endplate of each vertebra from the top down. An
    optional header row is skipped. An odd final row is the superior endplate of S1 (BUU
    marks no lower S1 endplate, S1 being fused to S2): its numbers must parse, but it
    forms no outline, as a single line encloses nothing. With exactly five vertebrae and
    that S1 row the vertebrae are named L1 to L5; otherwise they are left unnamed. The
    ``flag`` column may be left out; it is read as text and not used, as nothing here
    needs it and its coding is not relied on. Each outline is the quadrilateral of its two
    endplate lines, each superior end joined to the nearer inferior end.

When a stem has both a DICOM and a PNG, the DICOM is the film and the PNG is ignored:
``write_phantom`` writes a downsized, drawn-on preview beside each film.

Coordinates and order
---------------------
Points are ``(x, y) = (col, row)`` in pixels of the image as stored, from the top-left
corner of the top-left pixel (the centre of pixel ``[r, c]`` is at ``(c + 0.5, r + 0.5)``),
as DICOM SR SCOORD and the phantom truth use them. Outlines run clockwise as displayed
(positive :func:`~pacsnode.training.phantom.geometry.signed_area`), from the annotation's
first point. Vertebrae are sorted head first: by their names when every vertebra of a
film has a distinct anatomical name (C1 ... S1); otherwise by the row of their area
centroid, top first. That assumes the film is stored head up, as lateral spine films
are; Patient Orientation is not consulted.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError
from scipy import ndimage
from skimage.measure import approximate_polygon

from pacsnode.analysis.naming import SPINE_ORDER
from pacsnode.errors import ImageReadError, PacsnodeError
from pacsnode.imaging.reader import SpacingBasis, read_film
from pacsnode.training.metrics import mask_outline
from pacsnode.training.phantom.generate import Phantom
from pacsnode.training.phantom.geometry import signed_area

__all__ = [
    "LABELS_FILE",
    "SOURCES",
    "AnnotatedFilm",
    "AnnotatedVertebra",
    "AnnotationError",
    "phantom_film",
    "read_folder",
]

_LOG = logging.getLogger(__name__)

Point = tuple[float, float]
Endplate = tuple[Point, Point]

SOURCES: Final = ("phantom", "outline-json", "label-mask", "landmark-csv")
"""The values of :attr:`AnnotatedFilm.source`."""

LABELS_FILE: Final = "labels.json"
"""The folder's optional naming of label-mask values."""

_MASK_SUFFIX = ".labels.png"
_ANNOTATION_SUFFIXES: Final = {".json": "outline-json", ".csv": "landmark-csv"}
_CORNERS = {
    "superior": ("anterior_superior", "posterior_superior"),
    "inferior": ("anterior_inferior", "posterior_inferior"),
}
# Coordinates written rounded (the phantom truth keeps 3 decimals) may land a hair
# beyond the image edge they lie on.
_BOUNDS_TOLERANCE_PX = 1e-3
# Mask outlines: within 0.4 px of the pixel-edge boundary, which smooths its staircase
# (steps stray 0.35 px from the diagonal) but keeps a straight run of pixel edges, half a
# pixel from the chamfered corners at its ends, from being cut away. No more points than
# a phantom outline has twice over, so one ragged mask does not dominate a batch.
_MASK_TOLERANCE_PX = 0.4
_MASK_MAX_POINTS = 128
_BUU_LUMBAR = ("L1", "L2", "L3", "L4", "L5")


class AnnotationError(PacsnodeError):
    """An annotated folder, or a file in it, that cannot be read as training films.

    Parameters
    ----------
    where
        The file or folder at fault (a description for in-memory annotations).
    problem
        What is wrong, naming the vertebra where one is at fault.
    line
        The 1-based line of a text file at fault, when known.
    """

    def __init__(self, where: Path | str, problem: str, *, line: int | None = None) -> None:
        self.where = where
        self.line = line
        at = f", line {line}" if line is not None else ""
        super().__init__(f"{where}{at}: {problem}")


@dataclass(frozen=True, eq=False)
class AnnotatedVertebra:
    """One annotated vertebral body. Compares by identity (arrays have no single truth value).

    Attributes
    ----------
    label
        ``"L3"``, ``"C2"``, ``"S1"`` ...; None when the annotation does not name it.
    outline
        ``(M, 2)`` closed polygon, ``M >= 3``, ``(x, y)`` film pixels from the top-left
        corner of the top-left pixel, first point not repeated, clockwise as displayed.
        Read-only.
    superior, inferior
        The endplate's two end points, ``(x, y)`` pixels as ``outline``, when the
        annotation gives them: anterior then posterior from outline JSON corners; from a
        landmark CSV in the file's ``(x1, y1), (x2, y2)`` order, which is not checked to be
        anterior first. None for label masks.
    """

    label: str | None
    outline: NDArray[np.float64]
    superior: Endplate | None
    inferior: Endplate | None


@dataclass(frozen=True, eq=False)
class AnnotatedFilm:
    """A film and its annotated vertebrae. Compares by identity.

    Attributes
    ----------
    case_id
        The file stem (the phantom's case id for :func:`phantom_film`).
    image
        ``(rows, cols)`` float32 in [0, 1], bone bright, indexed ``image[row, col]``:
        DICOM as :func:`~pacsnode.imaging.reader.read_film` renders it, PNG as stored
        (8-bit / 255, 16-bit / 65535, colour to luma) and assumed bone bright.
    vertebrae
        Head first (see the module notes).
    spacing_mm
        Square pixel size in mm as the DICOM reader found it (calibrated, magnification
        corrected or detector, whichever the header gives); None for PNG, for a DICOM
        without usable spacing, and for non-square pixels.
    source
        One of :data:`SOURCES`: how the annotation was given.
    """

    case_id: str
    image: NDArray[np.float32]
    vertebrae: tuple[AnnotatedVertebra, ...]
    spacing_mm: float | None
    source: str


@dataclass(frozen=True)
class _Case:
    case_id: str
    image: Path
    annotation: Path
    source: str


def read_folder(
    path: Path, *, progress: Callable[[int], None] | None = None
) -> list[AnnotatedFilm]:
    """Read every annotated film in a folder (not its subfolders), sorted by case id.

    Parameters
    ----------
    path
        The folder; see the module notes for the file names and formats.
    progress
        Called after each film with the number of films read so far.

    Returns
    -------
    list[AnnotatedFilm]
        At least one film. An image without an annotation is skipped with a logged
        warning.

    Raises
    ------
    AnnotationError
        A file that cannot be read or makes no sense (the message names it, and the line
        of a CSV or JSON file where known), an annotation without an image, a stem with
        more than one annotation, an outline outside its image, or a folder with no
        annotated film.
    """
    if not path.is_dir():
        raise AnnotationError(path, "not a folder")
    cases = _pair(path)
    if not cases:
        raise AnnotationError(
            path,
            "no annotated films: expected images <case>.dcm or <case>.png, each beside "
            f"one of <case>.json, <case>{_MASK_SUFFIX} or <case>.csv",
        )
    labels_path = path / LABELS_FILE
    masks = any(case.source == "label-mask" for case in cases)
    names = _read_label_names(labels_path) if masks and labels_path.is_file() else {}
    films: list[AnnotatedFilm] = []
    for case in cases:
        films.append(_read_case(case, names))
        if progress is not None:
            progress(len(films))
    return films


def phantom_film(phantom: Phantom) -> AnnotatedFilm:
    """The phantom as an annotated film, at whatever resolution it was rendered.

    Outlines and corners are those of ``phantom.truth``, exactly as ``write_phantom``
    writes them to ``<case>.json``, so a written folder reads back with the same
    vertebrae; the spacing is the rendering's, in the patient plane.
    """
    image = np.asarray(phantom.radiograph.display, dtype=np.float32)
    where = f"phantom {phantom.case_id}"
    vertebrae = _outline_json_vertebrae(phantom.truth, where, image.shape)
    return AnnotatedFilm(
        case_id=phantom.case_id,
        image=image,
        vertebrae=vertebrae,
        spacing_mm=float(phantom.radiograph.spacing_mm),
        source="phantom",
    )


# --- the folder ------------------------------------------------------------------------


def _pair(folder: Path) -> list[_Case]:
    """Group the folder's files by stem into (image, annotation) cases."""
    images: dict[str, dict[str, Path]] = {}
    annotations: dict[str, list[tuple[Path, str]]] = {}
    for entry in sorted(folder.iterdir()):
        name = entry.name
        if name.startswith(".") or not entry.is_file() or name.lower() == LABELS_FILE:
            continue
        lower = name.lower()
        suffix = entry.suffix.lower()
        if lower.endswith(_MASK_SUFFIX):
            stem = name[: -len(_MASK_SUFFIX)]
            annotations.setdefault(stem, []).append((entry, "label-mask"))
        elif suffix in _ANNOTATION_SUFFIXES:
            annotations.setdefault(entry.stem, []).append((entry, _ANNOTATION_SUFFIXES[suffix]))
        elif suffix in (".dcm", ".png"):
            images.setdefault(entry.stem, {})[suffix] = entry
        else:
            _LOG.debug("ignoring %s: neither an image nor an annotation", entry)

    cases = []
    for stem in sorted(images.keys() | annotations.keys()):
        found = annotations.get(stem, [])
        kinds = images.get(stem, {})
        if len(found) > 1:
            listed = ", ".join(p.name for p, _ in found)
            raise AnnotationError(
                folder, f"case {stem!r} has {len(found)} annotations ({listed}); expected one"
            )
        if not kinds:
            raise AnnotationError(
                found[0][0], f"annotation without an image: expected {stem}.dcm or {stem}.png"
            )
        image = kinds.get(".dcm", kinds.get(".png"))
        assert image is not None
        if not found:
            _LOG.warning("skipping %s: no annotation with the same stem", image)
            continue
        if len(kinds) > 1:
            _LOG.debug("case %s: reading %s, ignoring %s (a preview)", stem, image, kinds[".png"])
        cases.append(_Case(stem, image, found[0][0], found[0][1]))
    return cases


def _read_case(case: _Case, names: dict[int, str]) -> AnnotatedFilm:
    image, spacing = _read_image(case.image)
    if case.source == "outline-json":
        vertebrae = _outline_json_vertebrae(
            _load_json(case.annotation), case.annotation, image.shape
        )
    elif case.source == "label-mask":
        vertebrae = _mask_vertebrae(case.annotation, names, image.shape)
    else:
        vertebrae = _csv_vertebrae(case.annotation, image.shape)
    _LOG.debug(
        "case %s: %d vertebrae from %s (%s)",
        case.case_id,
        len(vertebrae),
        case.annotation.name,
        case.source,
    )
    return AnnotatedFilm(case.case_id, image, vertebrae, spacing, case.source)


# --- images ----------------------------------------------------------------------------


def _read_image(path: Path) -> tuple[NDArray[np.float32], float | None]:
    try:
        if path.suffix.lower() == ".dcm":
            return _read_dicom(path)
        return _read_png(path), None
    except OSError as exc:
        raise AnnotationError(path, f"cannot read the image: {exc}") from exc


def _read_dicom(path: Path) -> tuple[NDArray[np.float32], float | None]:
    try:
        film = read_film(path.read_bytes())
    except ImageReadError as exc:
        raise AnnotationError(path, str(exc)) from exc
    image = np.asarray(film.image, dtype=np.float32)
    sp = film.spacing
    if sp.basis is SpacingBasis.NONE or sp.row_mm is None or sp.col_mm is None:
        return image, None
    if not math.isclose(sp.row_mm, sp.col_mm, rel_tol=1e-3):
        _LOG.warning(
            "%s: pixels are not square (%g x %g mm); spacing left unknown",
            path,
            sp.row_mm,
            sp.col_mm,
        )
        return image, None
    return image, float(sp.row_mm)


def _read_png(path: Path) -> NDArray[np.float32]:
    with _open_png(path) as im:
        mode = im.mode
        if mode in ("I;16", "I;16B", "I;16L", "I"):
            values = np.asarray(im, dtype=np.float64)
            if values.min(initial=0) < 0 or values.max(initial=0) > 65535:
                raise AnnotationError(path, f"{mode} values outside 0..65535")
            grey = values / 65535.0
        elif mode == "L":
            grey = np.asarray(im, dtype=np.float64) / 255.0
        elif mode == "1":
            grey = np.asarray(im, dtype=np.float64)
        elif mode in ("LA", "RGB", "RGBA", "P", "PA"):
            # A palette with transparency warns when converted straight to L.
            rgb = im.convert("RGBA") if mode in ("P", "PA") else im
            grey = np.asarray(rgb.convert("L"), dtype=np.float64) / 255.0
        else:
            raise AnnotationError(path, f"unsupported PNG mode {mode}")
    return grey.astype(np.float32)


def _open_png(path: Path) -> Image.Image:
    """The decoded PNG, for the caller to close."""
    try:
        im = Image.open(path)
    except (UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise AnnotationError(path, f"not a readable PNG: {exc}") from exc
    try:
        if im.format != "PNG":
            raise AnnotationError(path, f"not a PNG but {im.format}")
        im.load()
    except (OSError, SyntaxError, ValueError) as exc:
        im.close()
        raise AnnotationError(path, f"not a readable PNG: {exc}") from exc
    except AnnotationError:
        im.close()
        raise
    return im


# --- outline JSON ----------------------------------------------------------------------


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise AnnotationError(path, f"not valid JSON: {exc.msg}", line=exc.lineno) from exc
    except (UnicodeDecodeError, OSError) as exc:
        raise AnnotationError(path, f"cannot read: {exc}") from exc


def _outline_json_vertebrae(
    data: Any, where: Path | str, shape: tuple[int, ...]
) -> tuple[AnnotatedVertebra, ...]:
    if not isinstance(data, dict) or not isinstance(data.get("vertebrae"), list):
        raise AnnotationError(where, 'expected an object with a "vertebrae" list')
    rows, cols = shape
    declared = (data.get("rows"), data.get("columns"))
    if all(isinstance(v, int) for v in declared) and declared != (rows, cols):
        raise AnnotationError(
            where,
            f"annotated for a {declared[0]} x {declared[1]} image, "
            f"but the image is {rows} x {cols} (rows x columns)",
        )
    vertebrae = []
    for k, item in enumerate(data["vertebrae"], start=1):
        name = f"vertebra {k}"
        if not isinstance(item, dict) or "outline" not in item:
            raise AnnotationError(where, f'{name}: expected an object with an "outline"')
        label = item.get("label")
        if label is not None and (not isinstance(label, str) or not label.strip()):
            raise AnnotationError(where, f"{name}: label must be a non-empty string or null")
        if label is not None:
            name = f"{name} ({label})"
        outline = _points(item["outline"], where, f"{name} outline")
        corners = item.get("corners")
        if corners is not None and not isinstance(corners, dict):
            raise AnnotationError(where, f"{name}: corners must be an object")
        endplates: dict[str, Endplate | None] = {}
        for side, keys in _CORNERS.items():
            if corners is None or not all(key in corners for key in keys):
                endplates[side] = None
                continue
            ends = [_points([corners[key]], where, f"{name} {key}", minimum=1)[0] for key in keys]
            endplates[side] = (_as_point(ends[0]), _as_point(ends[1]))
        vertebrae.append(
            _vertebra(
                label, outline, endplates["superior"], endplates["inferior"], where, name, shape
            )
        )
    return _head_first(vertebrae, where)


def _points(
    raw: Any, where: Path | str, what: str, *, minimum: int = 3, line: int | None = None
) -> NDArray[np.float64]:
    try:
        pts = np.array(raw, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise AnnotationError(where, f"{what}: expected [x, y] numbers", line=line) from exc
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < minimum:
        raise AnnotationError(
            where, f"{what}: expected at least {minimum} [x, y] points", line=line
        )
    if not np.isfinite(pts).all():
        raise AnnotationError(where, f"{what}: coordinates must be finite", line=line)
    return pts


def _as_point(p: NDArray[np.float64]) -> Point:
    return (float(p[0]), float(p[1]))


# --- label masks -----------------------------------------------------------------------


def _read_label_names(path: Path) -> dict[int, str]:
    data = _load_json(path)
    if not isinstance(data, dict):
        raise AnnotationError(path, 'expected an object mapping mask values to names, {"1": "L1"}')
    names: dict[int, str] = {}
    for key, value in data.items():
        try:
            number = int(key)
        except ValueError:
            number = 0
        if number <= 0 or str(number) != key.strip():
            raise AnnotationError(path, f"key {key!r} is not a positive integer mask value")
        if not isinstance(value, str) or not value.strip():
            raise AnnotationError(path, f"value {key}: the name must be a non-empty string")
        names[number] = value
    seen: dict[str, int] = {}
    for number, name in sorted(names.items()):
        if name in seen:
            raise AnnotationError(path, f"values {seen[name]} and {number} are both named {name}")
        seen[name] = number
    return names


def _read_mask(path: Path) -> NDArray[np.int64]:
    try:
        with _open_png(path) as im:
            if im.mode not in ("L", "I;16", "I;16B", "I;16L", "I", "P", "1"):
                raise AnnotationError(
                    path,
                    f"a label mask is a single-channel 8- or 16-bit PNG, not mode {im.mode}",
                )
            mask = np.asarray(im).astype(np.int64)
    except OSError as exc:
        raise AnnotationError(path, f"cannot read the mask: {exc}") from exc
    if mask.min(initial=0) < 0:
        raise AnnotationError(path, "negative mask values")
    return mask


def _mask_vertebrae(
    path: Path, names: dict[int, str], shape: tuple[int, ...]
) -> tuple[AnnotatedVertebra, ...]:
    mask = _read_mask(path)
    if mask.shape != shape:
        raise AnnotationError(
            path, f"mask is {mask.shape[0]} x {mask.shape[1]}, image {shape[0]} x {shape[1]}"
        )
    vertebrae = []
    boxes = ndimage.find_objects(mask)
    for value, box in enumerate(boxes, start=1):
        if box is None:
            continue
        label = names.get(value)
        name = f"mask value {value}" + (f" ({label})" if label else "")
        pieces, count = ndimage.label(mask[box] == value)
        if count > 1:
            sizes = np.bincount(pieces.ravel())[1:]
            _LOG.warning(
                "%s: %s has %d separate pieces; outlining the largest (%d of %d pixels)",
                path,
                name,
                count,
                int(sizes.max()),
                int(sizes.sum()),
            )
            region = pieces == int(np.argmax(sizes)) + 1
        else:
            region = pieces == 1
        corner = np.array([box[1].start, box[0].start], dtype=np.float64)
        outline = _simplify(mask_outline(ndimage.binary_fill_holes(region))) + corner
        vertebrae.append(_vertebra(label, outline, None, None, path, name, shape))
    return _head_first(vertebrae, path)


def _simplify(outline: NDArray[np.float64]) -> NDArray[np.float64]:
    """Douglas-Peucker within 0.4 px, coarser if that leaves too many points."""
    closed = np.vstack([outline, outline[:1]])
    tolerance = _MASK_TOLERANCE_PX
    while True:
        simple = approximate_polygon(closed, tolerance)[:-1]
        if len(simple) <= _MASK_MAX_POINTS or len(simple) <= 3:
            break
        tolerance *= 1.5
    # A mask of one or two pixels simplifies to a line; its full boundary is tiny anyway.
    return simple if len(simple) >= 3 else outline


# --- landmark CSV ----------------------------------------------------------------------


@dataclass(frozen=True)
class _EndplateRow:
    line: int
    ends: Endplate
    flag: str


def _csv_vertebrae(path: Path, shape: tuple[int, ...]) -> tuple[AnnotatedVertebra, ...]:
    rows = _read_endplate_rows(path)
    if len(rows) < 2:
        raise AnnotationError(
            path, "no vertebra: expected a superior and an inferior endplate row per vertebra"
        )
    s1 = rows[-1] if len(rows) % 2 else None
    pairs = [(rows[i], rows[i + 1]) for i in range(0, len(rows) - 1, 2)]
    if s1 is not None:
        _LOG.debug("%s: line %d taken as the S1 superior endplate", path, s1.line)
    labels: Sequence[str | None] = (
        _BUU_LUMBAR if s1 is not None and len(pairs) == len(_BUU_LUMBAR) else [None] * len(pairs)
    )
    vertebrae = []
    for (sup, inf), label in zip(pairs, labels, strict=True):
        name = f"vertebra on lines {sup.line}-{inf.line}" + (f" ({label})" if label else "")
        outline = _quadrilateral(sup.ends, inf.ends, path, name, sup.line)
        vertebrae.append(_vertebra(label, outline, sup.ends, inf.ends, path, name, shape))
    return _head_first(vertebrae, path)


def _read_endplate_rows(path: Path) -> list[_EndplateRow]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (UnicodeDecodeError, OSError) as exc:
        raise AnnotationError(path, f"cannot read: {exc}") from exc
    reader = csv.reader(io.StringIO(text))
    rows: list[_EndplateRow] = []
    first = True
    for record in reader:
        line = reader.line_num
        fields = [f.strip() for f in record]
        while fields and not fields[-1]:
            fields.pop()
        if not fields:
            continue
        numbers = _floats(fields[:4])
        if first and numbers is None:
            first = False
            _LOG.debug("%s: line %d taken as a header", path, line)
            continue
        first = False
        if len(fields) not in (4, 5) or numbers is None:
            raise AnnotationError(
                path, f"expected x1,y1,x2,y2,flag numbers, got {','.join(fields)!r}", line=line
            )
        x1, y1, x2, y2 = numbers
        flag = fields[4] if len(fields) == 5 else ""
        rows.append(_EndplateRow(line, ((x1, y1), (x2, y2)), flag))
    return rows


def _floats(fields: Iterable[str]) -> list[float] | None:
    try:
        values = [float(f) for f in fields]
    except ValueError:
        return None
    return values if all(math.isfinite(v) for v in values) else None


def _quadrilateral(
    superior: Endplate, inferior: Endplate, path: Path, name: str, line: int
) -> NDArray[np.float64]:
    """The simple polygon through both endplates' ends, each endplate one of its sides.

    Each superior end joins the inferior end on its side of the body (the nearer pairing);
    should that cross, the other pairing is tried.
    """
    a, b = np.array(superior[0]), np.array(superior[1])
    c, d = np.array(inferior[0]), np.array(inferior[1])
    straight = np.hypot(*(a - c)) + np.hypot(*(b - d))
    crossed = np.hypot(*(a - d)) + np.hypot(*(b - c))
    candidates = [[a, b, d, c], [a, b, c, d]]
    if crossed < straight:
        candidates.reverse()
    for ring in candidates:
        quad = np.array(ring, dtype=np.float64)
        if _is_simple_quad(quad) and abs(signed_area(quad)) > 0:
            return quad
    raise AnnotationError(
        path, f"{name}: its endplate lines do not bound a quadrilateral", line=line
    )


def _is_simple_quad(quad: NDArray[np.float64]) -> bool:
    """Whether neither pair of opposite sides of the quadrilateral meets."""
    p = [quad[i] for i in range(4)]
    return not (_segments_meet(p[0], p[1], p[2], p[3]) or _segments_meet(p[1], p[2], p[3], p[0]))


def _segments_meet(
    p1: NDArray[np.float64],
    p2: NDArray[np.float64],
    p3: NDArray[np.float64],
    p4: NDArray[np.float64],
) -> bool:
    def cross(o: NDArray[np.float64], a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
        return float((a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]))

    def on_segment(o: NDArray[np.float64], a: NDArray[np.float64], q: NDArray[np.float64]) -> bool:
        return bool(
            min(o[0], a[0]) <= q[0] <= max(o[0], a[0])
            and min(o[1], a[1]) <= q[1] <= max(o[1], a[1])
        )

    d1, d2 = cross(p3, p4, p1), cross(p3, p4, p2)
    d3, d4 = cross(p1, p2, p3), cross(p1, p2, p4)
    if ((d1 > 0 > d2) or (d1 < 0 < d2)) and ((d3 > 0 > d4) or (d3 < 0 < d4)):
        return True
    # Touching or collinear overlap also makes the polygon degenerate.
    return (
        (d1 == 0 and on_segment(p3, p4, p1))
        or (d2 == 0 and on_segment(p3, p4, p2))
        or (d3 == 0 and on_segment(p1, p2, p3))
        or (d4 == 0 and on_segment(p1, p2, p4))
    )


# --- shared ----------------------------------------------------------------------------


def _vertebra(
    label: str | None,
    outline: NDArray[np.float64],
    superior: Endplate | None,
    inferior: Endplate | None,
    where: Path | str,
    name: str,
    shape: tuple[int, ...],
) -> AnnotatedVertebra:
    """Check an outline against its image and orient it clockwise as displayed."""
    rows, cols = shape
    area = signed_area(outline)
    if area == 0:
        raise AnnotationError(where, f"{name}: the outline encloses no area")
    tol = _BOUNDS_TOLERANCE_PX
    lo = outline.min(axis=0)
    hi = outline.max(axis=0)
    if lo[0] < -tol or lo[1] < -tol or hi[0] > cols + tol or hi[1] > rows + tol:
        raise AnnotationError(
            where,
            f"{name}: the outline spans x {lo[0]:g}..{hi[0]:g}, y {lo[1]:g}..{hi[1]:g}, "
            f"outside the {cols} x {rows} image (x 0..{cols}, y 0..{rows})",
        )
    if area < 0:
        outline = np.vstack([outline[:1], outline[1:][::-1]])
    outline = np.ascontiguousarray(outline, dtype=np.float64)
    outline.setflags(write=False)
    return AnnotatedVertebra(label, outline, superior, inferior)


def _head_first(
    vertebrae: list[AnnotatedVertebra], where: Path | str
) -> tuple[AnnotatedVertebra, ...]:
    labels = [v.label for v in vertebrae if v.label is not None]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise AnnotationError(where, f"more than one vertebra named {', '.join(repeated)}")
    if len(labels) == len(vertebrae) and all(label in SPINE_ORDER for label in labels):
        return tuple(sorted(vertebrae, key=lambda v: SPINE_ORDER.index(str(v.label))))
    return tuple(sorted(vertebrae, key=lambda v: _centroid_y(v.outline)))


def _centroid_y(poly: NDArray[np.float64]) -> float:
    """Row coordinate of the polygon's area centroid."""
    x, y = poly[:, 0], poly[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x * yn - xn * y
    return float(((y + yn) * cross).sum() / (3.0 * cross.sum()))
