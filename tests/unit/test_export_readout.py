"""The ER read-out in the result objects (issue 15): one SR measurement group per finding
with its codes, the Impression, a GSPS that draws it all over the film (MONOCHROME1
inverted, every mark inside the film) and a burned-in Secondary Capture labelled not for
diagnosis; all pass dciodvfy."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from pacsnode.analysis.reading import SpineReading
from pacsnode.analysis.readout import (
    CobbAngle,
    Flag,
    ReadOut,
    Slip,
    SoftTissue,
    StepOff,
    cobb_degrees,
    corners_of,
    meyerding_grade,
    slip_percent,
    step_offs_between,
)
from pacsnode.export import ExportKind, export_uids
from pacsnode.export.capture import NOT_FOR_DIAGNOSIS, SC_SERIES_NUMBER, build_spine_capture
from pacsnode.export.gsps import GSPS_SERIES_NUMBER
from pacsnode.export.marks import FINDINGS, MEASUREMENTS, OUTLINES, Label, Line, clip, place
from pacsnode.export.readout import (
    CURVATURE,
    MALALIGNMENT,
    MEYERDING_GRADE,
    SHARED_SHIFT,
    SLIP_PERCENT,
    SPONDYLOLISTHESIS,
    STEP_OFF,
)
from pacsnode.export.results import build_results
from pacsnode.export.sr import PIXELS, SPACING_METHODS
from pacsnode.imaging.reader import film_from_dataset
from tests.unit.test_export import ALGORITHM, COLUMNS, ROWS, dciodvfy, film, localisation
from tests.unit.test_export_vertebrae import CERVICAL, POSITIONAL, make_reading

MM = 0.125  # mm per pixel of the magnification-corrected test film
FLAGS = (
    Flag("malalignment", "C4/C5", "high", "step-off 4.1 mm at C4/C5"),
    Flag("soft_tissue", "C6", "high", "prevertebral soft tissue 25 mm at C6"),
    Flag("fracture_grade3", "C5", "high", "C5 grade 3 deformity (wedge)"),
)
SLIPPED = Slip("C6", "C7", 38.0, meyerding_grade(38.0))


def with_readout(reading: SpineReading, *, unit: str = "mm") -> SpineReading:
    """``reading`` with a read-out measured from its corners by the analysis' own
    functions, one slip of grade II and three flags."""
    scale = MM if unit == "mm" else 1.0
    vertebrae = reading.vertebrae
    corners = [corners_of(v.heights) for v in vertebrae]
    first, last = corners[0], corners[-1]
    cobb = CobbAngle(
        vertebrae[0].label,
        "inferior",
        vertebrae[-1].label,
        "inferior",
        cobb_degrees(first, "inferior", last, "inferior"),
        _line(first.endplate("inferior")),
        _line(last.endplate("inferior")),
    )
    steps, slips = [], []
    for (a, b), (upper, lower) in zip(
        itertools.pairwise(corners), itertools.pairwise(vertebrae), strict=True
    ):
        anterior, posterior = step_offs_between(a, b)
        steps.append(
            StepOff(
                upper.label,
                lower.label,
                anterior * scale,
                posterior * scale,
                (a.anterior_inferior, b.anterior_superior),
                (a.posterior_inferior, b.posterior_superior),
            )
        )
        percent = slip_percent(a, b)
        slips.append(Slip(upper.label, lower.label, percent, meyerding_grade(percent)))
    slips[-1] = replace(SLIPPED, upper=slips[-1].upper, lower=slips[-1].lower)
    level = min(3, len(corners) - 1)  # C6 of C3-C7
    corner = corners[level].anterior_inferior
    tissue = SoftTissue(
        vertebrae[level].label, 25.0 if unit == "mm" else 200.0, corner, (corner[0] + 60, corner[1])
    )
    readout = ReadOut(
        unit,
        MM if unit == "mm" else None,
        (cobb,),
        tuple(steps),
        tuple(slips),
        (tissue,),
        FLAGS,
        f"{cobb.describe()}; step-off 4.1 mm at C4/C5; soft tissue swelling at C6.",
    )
    return replace(reading, readout=readout)


def _line(
    endplate: tuple[np.ndarray, np.ndarray],
) -> tuple[tuple[float, float], tuple[float, float]]:
    back, front = endplate
    return (float(back[0]), float(back[1])), (float(front[0]), float(front[1]))


def built(
    reading: SpineReading,
    *,
    spacing: str = "magnification",
    photometric: str = "MONOCHROME2",
    capture: bool = True,
):
    ds = film(spacing=spacing, photometric=photometric)
    return ds, build_results(
        ds, film_from_dataset(ds), localisation(), ALGORITHM, reading, secondary_capture=capture
    )


def finding_groups(sr: Dataset) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
    content = hd.sr.ComprehensiveSR.from_dataset(sr).content
    return content.get_image_measurement_groups()


def by_identifier(sr: Dataset) -> dict[str, hd.sr.MeasurementsAndQualitativeEvaluations]:
    return {group.tracking_identifier: group for group in finding_groups(sr)}


def sites(measurement: hd.sr.Measurement) -> list[tuple[str, str | None]]:
    return [
        (s.value.value, s.topographical_modifier.value if s.topographical_modifier else None)
        for s in measurement.finding_sites
    ]


def evaluations(group) -> dict[str, str]:
    return {e.name.value: e.value.value for e in group.get_qualitative_evaluations()}


# --- validity -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "spacing", "photometric", "unit"),
    [
        (CERVICAL, "magnification", "MONOCHROME1", "mm"),
        (POSITIONAL, "none", "MONOCHROME2", "px"),
    ],
)
def test_sr_gsps_and_capture_pass_dciodvfy(
    tmp_path: Path, labels: tuple[str, ...], spacing: str, photometric: str, unit: str
) -> None:
    reading = with_readout(make_reading(labels, identified=labels == CERVICAL), unit=unit)
    _, objects = built(reading, spacing=spacing, photometric=photometric)
    assert set(objects.by_kind()) == set(ExportKind)
    for kind, ds in objects.by_kind().items():
        errors, _ = dciodvfy(ds, tmp_path / f"{kind.value}.dcm")
        assert errors == [], f"{kind.value}: {errors}"


# --- SR -------------------------------------------------------------------------------


def test_one_group_per_finding_in_the_readout_order() -> None:
    reading = with_readout(make_reading(CERVICAL, identified=True))
    _, objects = built(reading, capture=False)
    readout = reading.readout
    expected = [
        "Cobb C3-C7",
        *(f"Step-off {s.level}" for s in readout.step_offs),
        *(f"Slip {s.level}" for s in readout.slips),
        "Prevertebral soft tissue C6",
        *(flag.text for flag in FLAGS),
    ]
    assert [g.tracking_identifier for g in finding_groups(objects.sr)] == expected
    uids = [g.tracking_uid for g in finding_groups(objects.sr)]
    assert len(set(uids)) == len(uids)
    _, again = built(with_readout(make_reading(CERVICAL, identified=True)), capture=False)
    assert [g.tracking_uid for g in finding_groups(again.sr)] == uids  # deterministic


def test_cobb_angle_names_its_endplates_and_draws_them() -> None:
    reading = with_readout(make_reading(CERVICAL, identified=True))
    _, objects = built(reading, capture=False)
    cobb = reading.readout.cobb[0]
    group = by_identifier(objects.sr)["Cobb C3-C7"]
    assert group.finding_type.value == codes.SCT.CervicalSpine.value
    (angle,) = group.get_measurements(name=codes.SCT.CobbAngle)
    assert angle.name.value == "285285000"
    assert (angle.value, angle.unit.value) == (pytest.approx(abs(cobb.degrees), abs=1e-3), "deg")
    assert sites(angle) == [
        (codes.SCT.C3Vertebra.value, codes.SCT.Inferior.value),
        (codes.SCT.C7Vertebra.value, codes.SCT.Inferior.value),
    ]
    assert evaluations(group)[CURVATURE.value] == f"CURV-{cobb.curvature.upper()}"
    lines = [
        item for item in angle[0].ContentSequence if item.ValueType == "SCOORD"
    ]  # the endplates the angle is inferred from
    assert len(lines) == 2
    for item, drawn in zip(lines, (cobb.upper_line, cobb.lower_line), strict=True):
        assert item.GraphicType == "POLYLINE"
        assert np.allclose(np.reshape(item.GraphicData, (-1, 2)), drawn, atol=1e-3)
        assert item.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID


@pytest.mark.parametrize("spacing", ["magnification", "calibrated"])
def test_step_offs_and_soft_tissue_are_distances_in_mm_with_the_spacing(spacing: str) -> None:
    reading = with_readout(make_reading(CERVICAL, identified=True))
    ds, objects = built(reading, spacing=spacing, capture=False)
    method = SPACING_METHODS[film_from_dataset(ds).spacing.basis].value
    groups = by_identifier(objects.sr)
    for step in reading.readout.step_offs:
        group = groups[f"Step-off {step.level}"]
        assert group.finding_type.value == STEP_OFF.value
        anterior, posterior, shared = group.get_measurements(name=codes.DCM.Distance)
        assert shared.value == pytest.approx(abs(step.shift), abs=1e-3)
        assert shared.derivation.value == SHARED_SHIFT.value
        assert [site for site, _ in sites(shared)] == [
            getattr(codes.SCT, f"{label}Vertebra").value for label in (step.upper, step.lower)
        ]
        for m, value, side in (
            (anterior, step.anterior, codes.SCT.Anterior),
            (posterior, step.posterior, codes.SCT.Posterior),
        ):
            assert m.value == pytest.approx(abs(value), abs=1e-3)
            assert (m.unit.value, m.method.value) == ("mm", method)
            upper, lower = (f"{label}Vertebra" for label in (step.upper, step.lower))
            assert sites(m) == [
                (getattr(codes.SCT, upper).value, side.value),
                (getattr(codes.SCT, lower).value, side.value),
            ]
    group = groups["Prevertebral soft tissue C6"]
    assert group.finding_type.value == codes.SCT.SoftTissue.value
    (m,) = group.get_measurements(name=codes.DCM.Distance)
    assert (m.value, m.unit.value, m.method.value) == (pytest.approx(25.0), "mm", method)
    assert sites(m) == [(codes.SCT.C6Vertebra.value, codes.SCT.Anterior.value)]


def test_lengths_are_in_pixels_when_the_readout_is() -> None:
    reading = with_readout(make_reading(POSITIONAL, identified=False), unit="px")
    _, objects = built(reading, spacing="none", capture=False)
    for group in finding_groups(objects.sr):
        for m in group.get_measurements(name=codes.DCM.Distance):
            assert m.unit.value == PIXELS.value == "{pixels}"
            assert m.method is None
    # Positional labels carry the generic Vertebra code.
    step = by_identifier(objects.sr)["Step-off V1/V2"]
    assert {site for m in step.get_measurements() for site, _ in sites(m)} == {"51282000"}


def test_slips_carry_percent_and_meyerding_grade() -> None:
    reading = with_readout(make_reading(CERVICAL, identified=True))
    _, objects = built(reading, capture=False)
    groups = by_identifier(objects.sr)
    for slip in reading.readout.slips:
        group = groups[f"Slip {slip.level}"]
        (m,) = group.get_measurements(name=SLIP_PERCENT)
        assert (m.value, m.unit.value) == (pytest.approx(slip.percent, abs=1e-3), "%")
        found = evaluations(group)
        assert found[MEYERDING_GRADE.value] == f"MEYERDING-{slip.grade}"
        listhesis = found.get(codes.SCT.Finding.value)
        assert listhesis == (SPONDYLOLISTHESIS.value if slip.grade >= 1 else None)
    assert SLIPPED.grade == 2  # the last level was made a grade II slip


def test_each_flag_is_a_finding_with_its_severity() -> None:
    reading = with_readout(make_reading(CERVICAL, identified=True))
    _, objects = built(reading, capture=False)
    groups = by_identifier(objects.sr)
    expected = {
        FLAGS[0].text: (MALALIGNMENT.value, [("5329002", None), ("36978003", None)]),
        FLAGS[1].text: (codes.SCT.Swelling.value, [("36054005", codes.SCT.Anterior.value)]),
        FLAGS[2].text: ("42942008", [("36978003", None)]),
    }
    for text, (finding, where) in expected.items():
        group = groups[text]
        assert group.finding_type.value == finding
        assert evaluations(group)[codes.SCT.Severity.value] == codes.SCT.Severe.value
        found = [
            (s.value.value, s.topographical_modifier.value if s.topographical_modifier else None)
            for s in group.finding_sites
        ]
        assert found == where


def _report_evaluations(sr: Dataset) -> list[Dataset]:
    (container,) = [
        item
        for item in sr.ContentSequence
        if item.ConceptNameCodeSequence[0].CodeValue == "C0034375"  # Qualitative Evaluations
    ]
    return list(container.ContentSequence)


@pytest.mark.parametrize("labels", [CERVICAL, POSITIONAL])
def test_the_impression_is_one_text_item_beside_the_identification(labels) -> None:
    identified = labels == CERVICAL
    reading = with_readout(make_reading(labels, identified=identified), unit="px")
    _, objects = built(reading, spacing="none", capture=False)
    items = _report_evaluations(objects.sr)
    texts = [i for i in items if i.ValueType == "TEXT"]
    assert len(texts) == 1
    assert texts[0].ConceptNameCodeSequence[0].CodeValue == codes.DCM.Impression.value == "121073"
    assert texts[0].TextValue == reading.readout.impression
    codes_given = [i.ConceptCodeSequence[0].CodeValue for i in items if i.ValueType == "CODE"]
    assert codes_given == ([] if identified else ["VERT-IDENT-NONE"])


def test_no_readout_no_findings_and_no_impression() -> None:
    _, objects = built(make_reading(CERVICAL, identified=True), capture=False)
    assert finding_groups(objects.sr) == []
    assert not [
        i
        for i in objects.sr.ContentSequence
        if i.ValueType == "CONTAINER" and i.ConceptNameCodeSequence[0].CodeValue == "C0034375"
    ]


# --- GSPS -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("photometric", "shape"), [("MONOCHROME1", "INVERSE"), ("MONOCHROME2", "IDENTITY")]
)
def test_gsps_keeps_the_films_look(photometric: str, shape: str) -> None:
    reading = with_readout(make_reading(CERVICAL, identified=True))
    ds, objects = built(reading, photometric=photometric, capture=False)
    gsps = objects.gsps
    assert gsps.PresentationLUTShape == shape
    (voi,) = gsps.SoftcopyVOILUTSequence
    assert (float(voi.WindowCenter), float(voi.WindowWidth)) == (
        float(ds.WindowCenter),
        float(ds.WindowWidth),
    )
    assert "Laterality" in gsps
    assert gsps.SeriesNumber == GSPS_SERIES_NUMBER
    uids = export_uids(ds.SOPInstanceUID, _version(objects), ExportKind.GSPS)
    assert gsps.SOPInstanceUID == uids.sop_instance_uid
    assert gsps.SeriesInstanceUID == uids.series_instance_uid
    reference = gsps.ReferencedSeriesSequence[0].ReferencedImageSequence[0]
    assert reference.ReferencedSOPInstanceUID == ds.SOPInstanceUID


def _version(objects) -> str:
    """The stack algorithm version the objects were keyed with (from the SEG)."""
    item = objects.seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    return str(item.AlgorithmVersion)


def test_gsps_layers_hold_every_mark() -> None:
    reading = with_readout(make_reading(CERVICAL, identified=True))
    _, objects = built(reading, capture=False)
    gsps = objects.gsps
    layers = [
        (item.GraphicLayer, int(item.GraphicLayerOrder)) for item in gsps.GraphicLayerSequence
    ]
    assert layers == [(OUTLINES, 1), ("BODY LINES", 2), (MEASUREMENTS, 3), (FINDINGS, 4)]
    annotations = {a.GraphicLayer: a for a in gsps.GraphicAnnotationSequence}
    outlines = annotations[OUTLINES]
    assert len(outlines.GraphicObjectSequence) == len(CERVICAL)
    assert [t.UnformattedTextValue for t in outlines.TextObjectSequence] == list(CERVICAL)
    texts = [t.UnformattedTextValue for t in annotations[MEASUREMENTS].TextObjectSequence]
    assert any(t.startswith("C3-C7 ") and t.endswith(" deg") for t in texts), texts
    assert any("soft tissue 25.0 mm" in t for t in texts), texts
    findings = [t.UnformattedTextValue for t in annotations[FINDINGS].TextObjectSequence]
    assert f"! {FLAGS[0].text}" in findings
    assert all(t.isascii() for t in texts + findings)


def test_gsps_labels_only_step_offs_worth_reading() -> None:
    reading = with_readout(make_reading(CERVICAL, identified=True))
    readout = reading.readout
    first, second = readout.step_offs[:2]
    steps = (
        replace(first, anterior=0.4, posterior=0.3),
        replace(second, anterior=3.6, posterior=3.4),
    )
    _, objects = built(replace(reading, readout=replace(readout, step_offs=steps)), capture=False)
    annotations = {a.GraphicLayer: a for a in objects.gsps.GraphicAnnotationSequence}
    measurements = annotations[MEASUREMENTS]
    texts = [t.UnformattedTextValue for t in measurements.TextObjectSequence]
    shown = [t for t in texts if t.startswith((first.level, second.level))]
    assert shown == [f"{second.level} {steps[1].largest:.1f} mm"] == [f"{second.level} 3.4 mm"]
    # Both step-offs' line segments are drawn all the same (two per disc).
    ends = {
        tuple(np.round(np.asarray(g.GraphicData, float).reshape(-1, 2)[0], 1))
        for g in measurements.GraphicObjectSequence
    }
    for step in steps:
        assert tuple(np.round(np.asarray(step.anterior_points[0], float), 1)) in ends


def test_gsps_marks_near_the_edges_stay_inside_the_film() -> None:
    """Findings at the film's corners: lines clipped, text boxes moved in."""
    reading = with_readout(make_reading(CERVICAL, identified=True))
    readout = reading.readout
    edge = replace(
        readout,
        cobb=(
            replace(
                readout.cobb[0],
                upper_line=((2.0, 1.0), (COLUMNS - 3.0, 0.5)),  # drawn on past the right edge
                lower_line=((COLUMNS - 1.0, ROWS - 1.0), (COLUMNS - 0.5, ROWS - 0.5)),
            ),
        ),
        soft_tissue=(SoftTissue("C6", 25.0, (COLUMNS - 20.0, 3.0), (COLUMNS - 0.5, 0.5)),),
        impression="A long impression " * 12,
    )
    _, objects = built(replace(reading, readout=edge), capture=False)
    rows, columns = ROWS, COLUMNS
    for annotation in objects.gsps.GraphicAnnotationSequence:
        for graphic in annotation.get("GraphicObjectSequence", []):
            points = np.reshape(np.asarray(graphic.GraphicData, float), (-1, 2))
            assert points[:, 0].min() >= 0 and points[:, 0].max() <= columns
            assert points[:, 1].min() >= 0 and points[:, 1].max() <= rows
        for text in annotation.get("TextObjectSequence", []):
            left, top = text.BoundingBoxTopLeftHandCorner
            right, bottom = text.BoundingBoxBottomRightHandCorner
            assert 0 <= left < right <= columns and 0 <= top < bottom <= rows, text
    findings = [a for a in objects.gsps.GraphicAnnotationSequence if a.GraphicLayer == FINDINGS]
    lines = [t.UnformattedTextValue for t in findings[0].TextObjectSequence]
    assert len(lines) > 2  # the impression was wrapped to the film's width


def test_gsps_without_vertebrae_draws_the_spine_region() -> None:
    _, objects = built(None, capture=False)
    (layer,) = objects.gsps.GraphicLayerSequence
    assert layer.GraphicLayer == OUTLINES
    (annotation,) = objects.gsps.GraphicAnnotationSequence
    assert annotation.TextObjectSequence[0].UnformattedTextValue == "spine region"


def test_clip_and_place() -> None:
    (inside,) = clip(Line(np.array([[-10.0, 5.0], [10.0, 5.0]])), 20, 20)
    assert np.allclose(inside.points, [[0.0, 5.0], [10.0, 5.0]])
    assert list(clip(Line(np.array([[-10.0, -5.0], [-1.0, -1.0]])), 20, 20)) == []
    # A closed outline crossing the right edge becomes one open line along its inside.
    square = Line(np.array([[15.0, 5.0], [25.0, 5.0], [25.0, 10.0], [15.0, 10.0]]), closed=True)
    parts = list(clip(square, 20, 20))
    assert all(p.points[:, 0].max() <= 20 for p in parts)
    for label in (
        Label("far right", (19.5, 10.0), (1.0, 0.0)),
        Label("top", (5.0, 0.0), (0.0, -1.0)),
    ):
        left, top, right, bottom = place(label, 20, 40, 10.0)
        assert 0 <= left < right <= 40 and 0 <= top < bottom <= 20


# --- burned-in capture ----------------------------------------------------------------


def test_capture_is_labelled_derived_and_not_for_diagnosis() -> None:
    reading = with_readout(make_reading(CERVICAL, identified=True))
    ds, objects = built(reading, photometric="MONOCHROME1")
    sc = objects.sc
    assert sc is not None
    assert list(sc.ImageType[:2]) == ["DERIVED", "SECONDARY"]
    assert sc.BurnedInAnnotation == "YES"
    assert NOT_FOR_DIAGNOSIS in sc.SeriesDescription
    assert sc.SeriesNumber == SC_SERIES_NUMBER
    assert (sc.StudyInstanceUID, sc.PatientID) == (ds.StudyInstanceUID, ds.PatientID)
    assert sc.SeriesInstanceUID != ds.SeriesInstanceUID
    assert sc.PhotometricInterpretation == "RGB" and sc.SamplesPerPixel == 3
    pixels = sc.pixel_array
    assert pixels.shape == (ROWS, COLUMNS, 3)
    # The red band with its white text along the bottom; coloured marks on a grey film.
    band = pixels[-3:, :, :].reshape(-1, 3)
    assert (band == (160, 0, 0)).all(axis=1).mean() > 0.5
    body = pixels[: ROWS - 20]
    coloured = np.abs(body.astype(int) - body.mean(axis=2, keepdims=True)).max(axis=2) > 40
    assert coloured.sum() > 500
    # The film stays the way it looks: bone bright, as on a MONOCHROME1 display.
    grey = film_from_dataset(ds).image
    plain = ~coloured & (np.arange(ROWS - 20)[:, None] > 60)
    assert np.corrcoef(body[..., 0][plain], grey[: ROWS - 20][plain])[0, 1] > 0.9


def test_capture_of_a_large_film_is_shrunk() -> None:
    ds = film()
    image = np.kron(film_from_dataset(ds).image, np.ones((8, 8), np.float32))  # 3200 x 2400
    big = ds.copy()
    big.Rows, big.Columns = image.shape
    capture = build_spine_capture(
        big, image, localisation_on(image.shape), algorithm=ALGORITHM, max_side=1000
    )
    assert (capture.Rows, capture.Columns) == (1000, 750)
    assert "PixelSpacing" not in capture  # a picture to look at, not to measure on


def localisation_on(shape: tuple[int, int]):
    from pacsnode.analysis.localise import Localisation
    from pacsnode.analysis.lowres import oriented_box
    from pacsnode.training.phantom.geometry import polygon_mask

    band = np.array([[0.3, 0.1], [0.6, 0.1], [0.6, 0.9], [0.3, 0.9]]) * [shape[1], shape[0]]
    mask = polygon_mask(band, shape)
    return Localisation(mask, oriented_box(mask), np.zeros((8, 8), np.float32), 1)


def test_capture_only_when_asked() -> None:
    reading = make_reading(CERVICAL, identified=True)
    _, objects = built(reading, capture=False)
    assert objects.sc is None
    assert list(objects.by_kind()) == [ExportKind.SEG, ExportKind.SR, ExportKind.GSPS]
