"""What the presentation state and the burned-in capture draw on a film: the vertebrae and
the ER read-out as layers of lines and text, in one model that both renderers share.

Points are film (x, y) pixels with (0, 0) the top-left corner of the top-left pixel, pixel
centres at +0.5, as in the SR and in a GSPS's PIXEL units. Every mark is kept inside the
film: lines are clipped to it, and a text box that would cross an edge is moved in.
"""

from __future__ import annotations

import itertools
import math
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:  # the analysis stack imports torch; drawing needs only its results
    from pacsnode.analysis.localise import Localisation
    from pacsnode.analysis.reading import SpineReading, Vertebra
    from pacsnode.analysis.readout import ReadOut

__all__ = [
    "BODY_LINES",
    "FINDINGS",
    "MEASUREMENTS",
    "OUTLINES",
    "Box",
    "Label",
    "Layer",
    "Line",
    "clip",
    "film_marks",
    "place",
    "text_height",
]

Point = tuple[float, float]
RGB = tuple[int, int, int]
Box = tuple[float, float, float, float]
"""(left, top, right, bottom) in film pixels."""

OUTLINES = "OUTLINES"
BODY_LINES = "BODY LINES"
MEASUREMENTS = "MEASUREMENTS"
FINDINGS = "FINDINGS"
"""The layers, bottom to top; names are GSPS graphic layer names (code strings of at most
16 characters), so a viewer can show or hide each kind of mark."""

_COLOURS: dict[str, RGB] = {
    OUTLINES: (80, 255, 80),
    BODY_LINES: (0, 200, 255),
    MEASUREMENTS: (255, 230, 0),
    FINDINGS: (255, 64, 64),
}
_DESCRIPTIONS = {
    OUTLINES: "Vertebral body outlines and labels",
    BODY_LINES: "Anterior and posterior vertebral body lines",
    MEASUREMENTS: "Cobb angles, step-offs and prevertebral soft tissue",
    FINDINGS: "Critical findings and the impression",
}

CHAR_WIDTH = 0.6
"""Width of a character as a fraction of the text height: what the text boxes assume."""

STEP_LABEL_MIN_MM = 1.0
"""A step-off under this is drawn (its two line segments) but not labelled: a "0.2 mm" at
every disc crowds the film and says nothing a reader acts on. The SR carries every value.
Without a pixel spacing there is no such scale, and every step-off is labelled."""


@dataclass(frozen=True)
class Line:
    """A polyline of (x, y) points; ``closed`` joins the last point to the first."""

    points: NDArray[np.float64]
    closed: bool = False


@dataclass(frozen=True)
class Label:
    """A line of text belonging to a point.

    Attributes
    ----------
    text
        ASCII only: a GSPS's text takes the film's character set, which may be the default.
    anchor
        (x, y) the text belongs to.
    direction
        Which side of ``anchor`` the text goes, a unit vector (x, y); (0, 0) centres the
        text on ``anchor``.
    corner
        ``anchor`` is the box's top-left corner instead (for lines stacked in a corner).
    """

    text: str
    anchor: Point
    direction: Point = (0.0, 0.0)
    corner: bool = False


@dataclass(frozen=True)
class Layer:
    """One kind of mark, drawn in one colour."""

    name: str
    description: str
    colour: RGB
    lines: tuple[Line, ...] = ()
    labels: tuple[Label, ...] = ()


def text_height(rows: int, columns: int) -> float:
    """Height in pixels of the text drawn on a film of this size."""
    return float(max(10, round(min(rows, columns) / 45)))


def place(label: Label, rows: int, columns: int, height: float) -> Box:
    """The text box of ``label`` on a film of ``rows`` x ``columns``: beside its anchor as
    it asks, then moved inside the film; a text wider than the film is cut to its width."""
    width = min(CHAR_WIDTH * height * max(len(label.text), 1), float(columns))
    height = min(height, float(rows))
    x, y = label.anchor
    if label.corner:
        left, top = x, y
    else:
        dx, dy = label.direction
        gap = 0.5 * height if (dx or dy) else 0.0
        # From the anchor to the box's centre: the gap, then half the box along (dx, dy).
        reach = gap + abs(dx) * width / 2 + abs(dy) * height / 2
        left, top = x + dx * reach - width / 2, y + dy * reach - height / 2
    left = min(max(left, 0.0), columns - width)
    top = min(max(top, 0.0), rows - height)
    return (left, top, left + width, top + height)


def film_marks(
    rows: int,
    columns: int,
    localisation: Localisation,
    reading: SpineReading | None,
) -> tuple[Layer, ...]:
    """The layers drawn on a film of ``rows`` x ``columns``: the outlines and labels of
    the vertebrae (the spine region's box when there are none), the vertebral body lines,
    and the read-out's measurements and findings when the reading has one. Empty layers
    are left out."""
    vertebrae = reading.vertebrae if reading is not None else ()
    height = text_height(rows, columns)
    outlines: list[Line] = []
    names: list[Label] = []
    for vertebra in vertebrae:
        outlines.append(Line(np.asarray(vertebra.outline, np.float64), closed=True))
        text = vertebra.label if vertebra.identified else f"{vertebra.label}?"
        names.append(Label(text, vertebra.centroid))
    if not vertebrae and localisation.box is not None:
        corners = np.asarray(localisation.box.corners, np.float64)
        outlines.append(Line(corners, closed=True))
        names.append(Label("spine region", tuple(corners.mean(axis=0))))
    layers = [Layer(OUTLINES, _DESCRIPTIONS[OUTLINES], _COLOURS[OUTLINES], (*outlines,), (*names,))]
    layers.append(
        Layer(BODY_LINES, _DESCRIPTIONS[BODY_LINES], _COLOURS[BODY_LINES], _body_lines(vertebrae))
    )
    readout = reading.readout if reading is not None else None
    if readout is not None:
        lines, labels = _measurements(readout)
        layers.append(
            Layer(MEASUREMENTS, _DESCRIPTIONS[MEASUREMENTS], _COLOURS[MEASUREMENTS], lines, labels)
        )
        layers.append(_findings(readout, vertebrae, columns, height))
    return tuple(
        Layer(
            layer.name,
            layer.description,
            layer.colour,
            tuple(clipped for line in layer.lines for clipped in clip(line, rows, columns)),
            layer.labels,
        )
        for layer in layers
        if layer.lines or layer.labels
    )


def _body_lines(vertebrae: Sequence[Vertebra]) -> tuple[Line, ...]:
    """The anterior and posterior lines through the corners of each run of measured
    vertebrae; a vertebra without corners breaks the lines."""
    runs: list[list[Vertebra]] = [[]]
    for vertebra in vertebrae:
        if vertebra.heights is None:
            runs.append([])
        else:
            runs[-1].append(vertebra)
    lines = []
    for run in runs:
        if len(run) < 2:
            continue
        for side in ("anterior", "posterior"):
            points = [
                getattr(v.heights, f"{side}_{end}") for v in run for end in ("superior", "inferior")
            ]
            lines.append(Line(np.asarray(points, np.float64)))
    return tuple(lines)


def _measurements(readout: ReadOut) -> tuple[tuple[Line, ...], tuple[Label, ...]]:
    unit = "mm" if readout.unit == "mm" else "px"
    lines: list[Line] = []
    labels: list[Label] = []
    for cobb in readout.cobb:
        ends = []
        for back, front in (cobb.upper_line, cobb.lower_line):
            # Drawn on past the anterior corner, as a Cobb angle is drawn by hand.
            end = _ahead(front, back, 1.0)
            lines.append(Line(np.asarray([back, end], np.float64)))
            ends.append(end)
        # Between the two lines' far ends, in front: where the angle opens or closes.
        back, front = cobb.upper_line
        middle = np.mean(ends, axis=0)
        text = f"{cobb.span} {cobb.curvature} {abs(cobb.degrees):.0f} deg"
        labels.append(Label(text, (float(middle[0]), float(middle[1])), _unit(front, back)))
    for step in readout.step_offs:
        for pair in (step.anterior_points, step.posterior_points):
            lines.append(Line(np.asarray(pair, np.float64)))
        if unit == "mm" and step.largest < STEP_LABEL_MIN_MM:
            continue
        front, back = step.anterior_points[0], step.posterior_points[0]
        middle = np.mean(step.posterior_points, axis=0)
        text = f"{step.level} {step.largest:.1f} {unit}"
        labels.append(Label(text, (float(middle[0]), float(middle[1])), _unit(back, front)))
    for tissue in readout.soft_tissue:
        lines.append(Line(np.asarray([tissue.corner, tissue.airway], np.float64)))
        text = f"{tissue.level} soft tissue {tissue.thickness:.1f} {unit}"
        labels.append(Label(text, tissue.airway, _unit(tissue.airway, tissue.corner)))
    return tuple(lines), tuple(labels)


def _findings(
    readout: ReadOut, vertebrae: Sequence[Vertebra], columns: int, height: float
) -> Layer:
    """The flagged vertebrae outlined again, and the impression and flags stacked in the
    film's top-left corner, wrapped to its width."""
    by_label = {v.label: v for v in vertebrae}
    lines = []
    for flag in readout.flags:
        for level in flag.level.split("/"):
            vertebra = by_label.get(level.strip())
            if vertebra is not None:
                lines.append(Line(np.asarray(vertebra.outline, np.float64), closed=True))
    width = max(8, int(columns / (CHAR_WIDTH * height)) - 1)
    texts = [*textwrap.wrap(_ascii(readout.impression), width)]
    for flag in readout.flags:
        texts += textwrap.wrap(f"! {_ascii(flag.text)}", width)
    margin, step = 0.5 * height, 1.25 * height
    labels = tuple(
        Label(text, (margin, margin + i * step), corner=True) for i, text in enumerate(texts)
    )
    return Layer(FINDINGS, _DESCRIPTIONS[FINDINGS], _COLOURS[FINDINGS], tuple(lines), labels)


def clip(line: Line, rows: int, columns: int) -> Iterable[Line]:
    """The parts of ``line`` inside the film (a closed line is opened first); points on an
    edge count as inside."""
    points = np.asarray(line.points, np.float64)
    if line.closed:
        points = np.vstack([points, points[:1]])
    part: list[NDArray[np.float64]] = []
    for p, q in itertools.pairwise(points):
        segment = _clip_segment(p, q, columns, rows)
        if segment is None:
            if len(part) >= 2:
                yield Line(np.asarray(part))
            part = []
            continue
        a, b = segment
        if part and not np.allclose(part[-1], a):
            if len(part) >= 2:
                yield Line(np.asarray(part))
            part = []
        if not part:
            part.append(a)
        part.append(b)
    if len(part) >= 2:
        yield Line(np.asarray(part))


def _clip_segment(
    p: NDArray[np.float64], q: NDArray[np.float64], width: float, height: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]] | None:
    """Liang-Barsky: the part of p-q inside [0, width] x [0, height], or None."""
    d = q - p
    low, high = 0.0, 1.0
    for step, start, end in ((d[0], p[0], width), (d[1], p[1], height)):
        for direction, distance in ((-step, start), (step, end - start)):
            if direction == 0:
                if distance < 0:
                    return None
                continue
            t = distance / direction
            if direction < 0:
                low = max(low, t)
            else:
                high = min(high, t)
    if low > high:
        return None
    a, b = p + low * d, p + high * d
    # Rounding may leave a point a hair outside; the edge is inside.
    limits = np.asarray([width, height])
    return np.clip(a, 0.0, limits), np.clip(b, 0.0, limits)


def _unit(to: Point | NDArray[np.float64], start: Point | NDArray[np.float64]) -> Point:
    vector = np.asarray(to, np.float64) - np.asarray(start, np.float64)
    norm = math.hypot(*vector)
    if norm == 0.0:
        return (0.0, 0.0)
    return (float(vector[0] / norm), float(vector[1] / norm))


def _ahead(front: Point, back: Point, by: float) -> Point:
    """``front`` moved on by ``by`` times the length back-front."""
    f, b = np.asarray(front, np.float64), np.asarray(back, np.float64)
    x, y = f + by * (f - b)
    return (float(x), float(y))


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii")
