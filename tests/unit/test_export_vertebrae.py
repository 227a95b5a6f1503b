"""Per-vertebra results (issue 5): a SpineReading puts one SEG segment and three SR
measurement groups per vertebra into the result objects, which join on label and tracking
UID, measure the body in mm (or pixels), grade it, and pass dciodvfy."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from pacsnode.analysis.findings import read_findings
from pacsnode.analysis.measure import body_heights
from pacsnode.analysis.reading import SpineReading, Vertebra
from pacsnode.errors import ExportError
from pacsnode.export import AlgorithmInfo, ExportKind, build_spine_seg, build_spine_sr, export_uids
from pacsnode.export.provenance import StackAlgorithm, stack_algorithm
from pacsnode.export.results import ResultObjects, build_results
from pacsnode.export.seg import vertebra_tracking_uid
from pacsnode.export.sr import PIXELS, SPACING_METHODS
from pacsnode.export.vertebrae import (
    CLINICAL_FINDING,
    COMPRESSION_FRACTURE,
    DEFORMITY_SHAPE,
    GENANT_GRADE,
    HEIGHT_REDUCTION,
    IDENTIFICATION_NOT_POSSIBLE,
    LABEL_PROBABILITY,
)
from pacsnode.imaging.reader import film_from_dataset
from pacsnode.training.phantom.geometry import polygon_mask
from tests.unit.test_export import ALGORITHM, COLUMNS, ROWS, dciodvfy, film, localisation

MODELS = {"localiser": "deconvnet-1a2b3c4d5e6f", "segmenter": "unet-0f9e8d7c6b5a"}
CERVICAL = ("C3", "C4", "C5", "C6", "C7")
POSITIONAL = ("V1", "V2", "V3")
WEDGED = 2
"""Index of the body drawn as a wedge (anterior height about 35 % low: Genant grade 2)."""

# The film is oriented A\F: columns run towards the patient's front, rows towards the feet.
# The bodies sit on a spine tilted a quarter pixel sideways per row, so that heights have
# an x part and non-square pixels show whether x and y are scaled by the right spacing.
TILT = 0.25
AXIS, FRONT = (TILT, 1.0), (1.0, 0.0)


def body_outline(index: int, *, wedge: float = 0.0) -> np.ndarray:
    """(x, y) corners of one body, head first: posterior-superior, anterior-superior,
    anterior-inferior, posterior-inferior; ``wedge`` lowers the anterior-superior corner."""
    top, height, depth = 60.0 + 56.0 * index, 44.0, 50.0
    corners = np.array(
        [[0.0, 0.0], [depth, wedge * height], [depth, height], [0.0, height]], np.float64
    )
    corners[:, 1] += top
    corners[:, 0] += 110.0 + TILT * corners[:, 1]
    return corners


def make_reading(
    labels: tuple[str, ...],
    *,
    identified: bool,
    models: dict[str, str] = MODELS,
    unmeasured: int | None = None,
) -> SpineReading:
    """A reading of hand-drawn bodies measured and graded by the analysis' own functions;
    the body at ``unmeasured`` has no heights and no finding."""
    outlines = [body_outline(i, wedge=0.35 if i == WEDGED else 0.0) for i in range(len(labels))]
    masks = [polygon_mask(outline, (ROWS, COLUMNS)) for outline in outlines]
    heights = [body_heights(mask, AXIS, FRONT) for mask in masks]
    findings = read_findings(heights)
    vertebrae = []
    for i, (label, outline, mask) in enumerate(zip(labels, outlines, masks, strict=True)):
        rows, cols = np.nonzero(mask)
        vertebrae.append(
            Vertebra(
                label=label,
                confidence=0.9 - 0.1 * i if identified else 0.0,
                identified=identified,
                mask=mask,
                outline=outline,
                centroid=(float(cols.mean() + 0.5), float(rows.mean() + 0.5)),
                heights=None if i == unmeasured else heights[i],
                finding=None if i == unmeasured else findings[i],
                origin="agreement",
            )
        )
    return SpineReading(tuple(vertebrae), "C2" if identified else None, dict(models))


def results(spacing: str, reading: SpineReading | None) -> tuple[Dataset, ResultObjects]:
    ds = film(spacing=spacing)
    return ds, build_results(ds, film_from_dataset(ds), localisation(), ALGORITHM, reading)


def groups(sr: Dataset) -> list[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations]:
    return hd.sr.ComprehensiveSR.from_dataset(sr).content.get_planar_roi_measurement_groups()


def by_vertebra(sr: Dataset) -> dict[str, tuple]:
    """(body, outline, centroid) groups of each vertebra, told apart by their region."""
    out: dict[str, dict] = {}
    for group in groups(sr)[2:]:
        if group.reference_type == codes.DCM.ReferencedSegmentationFrame:
            kind = "body"
        else:
            kind = group.roi.GraphicType
        mine = out.setdefault(group.tracking_identifier, {})
        assert kind not in mine, f"{group.tracking_identifier}: two {kind} groups"
        mine[kind] = group
    return {label: (g["body"], g["POLYLINE"], g["POINT"]) for label, g in out.items()}


def evaluation(group, name) -> str | None:
    """Code value of the group's qualitative evaluation ``name``, None when absent."""
    found = [e.value.value for e in group.get_qualitative_evaluations(name=name)]
    assert len(found) <= 1
    return found[0] if found else None


def heights_of(group) -> dict[str, hd.sr.Measurement]:
    """The body group's heights by topographical modifier code value."""
    out = {}
    for m in group.get_measurements(name=codes.DCM.Height):
        (site,) = m.finding_sites
        out[site.topographical_modifier.value] = m
    return out


def statement(sr: Dataset) -> list[str]:
    """Code values in the report's TID 1500 Qualitative Evaluations container."""
    values = []
    for item in sr.ContentSequence:
        if item.ConceptNameCodeSequence[0].CodeValue == "C0034375":
            values += [child.ConceptCodeSequence[0].CodeValue for child in item.ContentSequence]
    return values


# --- validity -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "spacing"),
    [
        (CERVICAL, "magnification"),
        (CERVICAL, "none"),
        (POSITIONAL, "calibrated"),
        (POSITIONAL, "none"),
    ],
)
def test_seg_and_sr_with_vertebrae_pass_dciodvfy(
    tmp_path: Path, labels: tuple[str, ...], spacing: str
) -> None:
    reading = make_reading(labels, identified=labels == CERVICAL, unmeasured=1)
    _, objects = results(spacing, reading)
    assert len(groups(objects.sr)) == 2 + 3 * len(labels)  # the vertebrae are in it
    for name, ds in (("seg", objects.seg), ("sr", objects.sr)):
        errors, _ = dciodvfy(ds, tmp_path / f"{name}.dcm")
        assert errors == [], f"{name}: {errors}"


# --- SEG ------------------------------------------------------------------------------


@pytest.mark.parametrize("labels", [CERVICAL, POSITIONAL])
def test_seg_has_one_coded_segment_per_vertebra(labels: tuple[str, ...]) -> None:
    reading = make_reading(labels, identified=labels == CERVICAL)
    _, objects = results("magnification", reading)
    seg = objects.seg
    described = seg.SegmentSequence
    assert [item.SegmentLabel for item in described] == ["Spine region", *labels]
    expected = [
        getattr(codes.SCT, f"{label}Vertebra").value if label[0] == "C" else "51282000"
        for label in labels
    ]
    assert [i.SegmentedPropertyTypeCodeSequence[0].CodeValue for i in described[1:]] == expected
    for item, vertebra in zip(described[1:], reading.vertebrae, strict=True):
        frame = int(item.SegmentNumber) - 1  # one frame per segment on a single-frame film
        assert np.array_equal(seg.pixel_array[frame].astype(bool), vertebra.mask)
        algorithm = item.SegmentationAlgorithmIdentificationSequence[0]
        assert algorithm.AlgorithmParameters == ",".join(f"{k}={v}" for k, v in MODELS.items())
        assert algorithm.AlgorithmVersion.startswith(ALGORITHM.version + "+models.")


# --- SR: structure and joins ----------------------------------------------------------


@pytest.mark.parametrize("labels", [CERVICAL, POSITIONAL])
def test_sr_vertebra_groups_join_their_seg_segments(labels: tuple[str, ...]) -> None:
    reading = make_reading(labels, identified=labels == CERVICAL)
    ds, objects = results("magnification", reading)
    seg, sr = objects.seg, objects.sr
    segments = {item.SegmentLabel: item for item in seg.SegmentSequence}
    all_groups = groups(sr)
    assert [g.tracking_identifier for g in all_groups[:2]] == ["Spine region box", "Spine region"]
    assert len(all_groups) == 2 + 3 * len(labels)
    vertebra_groups = by_vertebra(sr)
    assert list(vertebra_groups) == list(labels)  # head first
    for vertebra in reading.vertebrae:
        segment = segments[vertebra.label]
        code = segment.SegmentedPropertyTypeCodeSequence[0].CodeValue
        for group in vertebra_groups[vertebra.label]:
            assert group.tracking_uid == segment.TrackingUID
            assert group.finding_type.value == code
            assert group.finding_category.value == "91723000"
        body, _, _ = vertebra_groups[vertebra.label]
        items = {i.ConceptNameCodeSequence[0].CodeMeaning: i for i in body[0].ContentSequence}
        frame = items["Referenced Segmentation Frame"].ReferencedSOPSequence[0]
        assert frame.ReferencedSOPInstanceUID == seg.SOPInstanceUID
        assert "ReferencedSegmentNumber" not in frame  # dciodvfy refuses it beside a frame
        # The frame it names holds this vertebra's segment.
        per_frame = seg.PerFrameFunctionalGroupsSequence[int(frame.ReferencedFrameNumber) - 1]
        number = per_frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        assert number == segment.SegmentNumber
        source = items["Source Image for Segmentation"].ReferencedSOPSequence[0]
        assert source.ReferencedSOPInstanceUID == ds.SOPInstanceUID


def test_outline_and_centroid_are_on_the_film() -> None:
    reading = make_reading(CERVICAL, identified=True)
    ds, objects = results("magnification", reading)
    vertebra_groups = by_vertebra(objects.sr)
    for vertebra in reading.vertebrae:
        _, outline_group, centre_group = vertebra_groups[vertebra.label]
        polygon = np.asarray(outline_group.roi.value)
        assert polygon.shape == (len(vertebra.outline) + 1, 2)
        assert np.array_equal(polygon[0], polygon[-1])  # closed
        assert np.allclose(polygon[:-1], vertebra.outline, atol=1e-3)  # (x, y) film pixels
        purpose = outline_group.get_qualitative_evaluations(name=codes.DCM.GeometricPurposeOfRegion)
        assert [p.value.value for p in purpose] == ["111041"]  # Outline
        point = centre_group.roi
        assert point.GraphicType == "POINT"
        assert np.allclose(point.value, [vertebra.centroid], atol=1e-3)
        purpose = centre_group.get_qualitative_evaluations(name=codes.DCM.GeometricPurposeOfRegion)
        assert [p.value.value for p in purpose] == ["128138"]  # Center of Mass
        for group in (outline_group, centre_group):
            source = group.roi.ContentSequence[0].ReferencedSOPSequence[0]
            assert source.ReferencedSOPInstanceUID == ds.SOPInstanceUID
            assert group.get_measurements() == []  # the numbers are in the body group


# --- SR: measurements -----------------------------------------------------------------


@pytest.mark.parametrize("spacing", ["magnification", "calibrated", "detector"])
def test_heights_and_area_in_mm_name_the_spacing(spacing: str) -> None:
    reading = make_reading(CERVICAL, identified=True)
    ds, objects = results(spacing, reading)
    basis = film_from_dataset(ds).spacing
    row_mm, col_mm = basis.row_mm, basis.col_mm
    method = SPACING_METHODS[basis.basis].value
    vertebra_groups = by_vertebra(objects.sr)
    for vertebra in reading.vertebrae:
        body, _, _ = vertebra_groups[vertebra.label]
        h = vertebra.heights
        ends = {
            "255549009": (h.anterior_superior, h.anterior_inferior),  # Anterior
            "26216008": (h.superior_midpoint, h.inferior_midpoint),  # Central
            "255551008": (h.posterior_superior, h.posterior_inferior),  # Posterior
        }
        measured = heights_of(body)
        assert set(measured) == set(ends)
        for modifier, ((x0, y0), (x1, y1)) in ends.items():
            m = measured[modifier]
            assert m.name.value == "121207"  # Height
            assert m.value == pytest.approx(np.hypot((x1 - x0) * col_mm, (y1 - y0) * row_mm))
            assert m.unit.value == "mm"
            assert m.method.value == method
            assert m.finding_sites[0].value.value == body.finding_type.value  # the vertebra
        (area,) = body.get_measurements(name=codes.SCT.Area)
        assert area.value == pytest.approx(vertebra.mask.sum() * row_mm * col_mm)
        assert (area.unit.value, area.method.value) == ("mm2", method)
    # Non-square pixels: a tilted height is not its pixel length times one spacing.
    if spacing == "calibrated":
        anterior = heights_of(vertebra_groups["C3"][0])["255549009"].value
        pixels = reading.vertebrae[0].heights.anterior
        assert anterior != pytest.approx(pixels * row_mm)
        assert anterior != pytest.approx(pixels * col_mm)


def test_heights_and_area_in_pixels_without_spacing() -> None:
    reading = make_reading(POSITIONAL, identified=False)
    _, objects = results("none", reading)
    vertebra_groups = by_vertebra(objects.sr)
    for vertebra in reading.vertebrae:
        body, _, _ = vertebra_groups[vertebra.label]
        measured = heights_of(body)
        h = vertebra.heights
        assert measured["255549009"].value == pytest.approx(h.anterior)
        assert measured["26216008"].value == pytest.approx(h.middle)
        assert measured["255551008"].value == pytest.approx(h.posterior)
        (area,) = body.get_measurements(name=codes.SCT.Area)
        assert area.value == vertebra.mask.sum()
        for m in (*measured.values(), area):
            assert m.unit.value == PIXELS.value == "{pixels}"
            assert m.method is None


def test_grade_deformity_and_fracture() -> None:
    reading = make_reading(CERVICAL, identified=True, unmeasured=4)
    wedged = reading.vertebrae[WEDGED].finding
    assert wedged.grade >= 1 and wedged.deformity.value == "wedge"  # the drawing works
    _, objects = results("magnification", reading)
    vertebra_groups = by_vertebra(objects.sr)
    for i, vertebra in enumerate(reading.vertebrae):
        body, _, _ = vertebra_groups[vertebra.label]
        grade = evaluation(body, GENANT_GRADE)
        fracture = evaluation(body, CLINICAL_FINDING)
        shape = evaluation(body, DEFORMITY_SHAPE)
        loss = body.get_measurements(name=HEIGHT_REDUCTION)
        if vertebra.finding is None:  # no heights, nothing graded
            assert i == 4
            assert (grade, fracture, shape, loss) == (None, None, None, [])
            assert heights_of(body) == {}
            assert len(body.get_measurements(name=codes.SCT.Area)) == 1
            continue
        assert grade == f"GENANT-{vertebra.finding.grade}"
        assert loss[0].value == pytest.approx(100 * vertebra.finding.height_loss)
        assert loss[0].unit.value == "%"
        if i == WEDGED:
            assert fracture == COMPRESSION_FRACTURE.value == "42942008"
            assert shape == "DEF-WEDGE"
        else:
            assert vertebra.finding.grade == 0
            assert (fracture, shape) == (None, None)


@pytest.mark.parametrize("labels", [CERVICAL, POSITIONAL])
def test_label_probability_only_for_identified_vertebrae(labels: tuple[str, ...]) -> None:
    reading = make_reading(labels, identified=labels == CERVICAL)
    _, objects = results("magnification", reading)
    vertebra_groups = by_vertebra(objects.sr)
    for vertebra in reading.vertebrae:
        body, _, _ = vertebra_groups[vertebra.label]
        probability = body.get_measurements(name=LABEL_PROBABILITY)
        if not vertebra.identified:
            assert probability == []
            continue
        assert probability[0].value == pytest.approx(vertebra.confidence)
        assert probability[0].unit.value == "1"


# --- identification -------------------------------------------------------------------


def test_identification_not_possible_is_stated_only_without_reference() -> None:
    _, positional = results("none", make_reading(POSITIONAL, identified=False))
    _, identified = results("none", make_reading(CERVICAL, identified=True))
    _, localised = results("none", None)
    assert statement(positional.sr) == [IDENTIFICATION_NOT_POSSIBLE.value]
    assert statement(identified.sr) == []
    assert statement(localised.sr) == []
    # A reading that found no vertebra at all could not identify any either.
    _, empty = results("none", SpineReading((), None, MODELS))
    assert statement(empty.sr) == [IDENTIFICATION_NOT_POSSIBLE.value]
    assert len(groups(empty.sr)) == 2


# --- identity -------------------------------------------------------------------------


def test_uids_are_deterministic_and_keyed_by_every_model() -> None:
    reading = make_reading(CERVICAL, identified=True)
    _, a = results("magnification", reading)
    _, b = results("magnification", make_reading(CERVICAL, identified=True))
    newer = dict(MODELS, segmenter="unet-111111111111")
    _, c = results("magnification", make_reading(CERVICAL, identified=True, models=newer))
    ds, plain = results("magnification", None)
    for kind in ("seg", "sr", "gsps"):
        first, again, other = (getattr(x, kind) for x in (a, b, c))
        assert (first.SOPInstanceUID, first.SeriesInstanceUID) == (
            again.SOPInstanceUID,
            again.SeriesInstanceUID,
        )
        assert first.SOPInstanceUID != other.SOPInstanceUID
        assert first.SeriesInstanceUID != other.SeriesInstanceUID
        assert first.SOPInstanceUID != getattr(plain, kind).SOPInstanceUID
    # Without a reading the localiser's version alone keys the objects, as before.
    assert set(plain.by_kind()) == {ExportKind.SEG, ExportKind.SR, ExportKind.GSPS}
    for kind, built in plain.by_kind().items():
        expected = export_uids(ds.SOPInstanceUID, ALGORITHM.version, kind).sop_instance_uid
        assert built.SOPInstanceUID == expected
    assert len(groups(plain.sr)) == 2
    version = a.seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert a.seg.SegmentSequence[1].TrackingUID == vertebra_tracking_uid(
        ds.SOPInstanceUID, version.AlgorithmVersion, "C3"
    )
    assert c.seg.SegmentSequence[1].TrackingUID != a.seg.SegmentSequence[1].TrackingUID


def test_sr_names_every_model() -> None:
    _, objects = results("magnification", make_reading(CERVICAL, identified=True))
    group = groups(objects.sr)[2]
    parameters = [
        item.TextValue
        for item in group[0].ContentSequence
        if item.ConceptNameCodeSequence[0].CodeMeaning == "Algorithm Parameters"
    ]
    assert parameters == [f"{k}={v}" for k, v in sorted(MODELS.items())]


def test_stack_algorithm() -> None:
    assert stack_algorithm(ALGORITHM, {}) is ALGORITHM
    algorithm = stack_algorithm(ALGORITHM, {"b": "2", "a": "1"})
    assert isinstance(algorithm, StackAlgorithm)
    assert algorithm.models == (("a", "1"), ("b", "2"))
    assert algorithm == stack_algorithm(ALGORITHM, {"a": "1", "b": "2"})
    assert algorithm.version != stack_algorithm(ALGORITHM, {"a": "1", "b": "3"}).version
    assert len(algorithm.version) <= 64
    with pytest.raises(ExportError, match="longer than 64"):
        stack_algorithm(AlgorithmInfo("x", "v" * 60), {"a": "1"})
    for bad in ({"a=b": "1"}, {"a": "1,2"}, {"": "1"}):
        with pytest.raises(ExportError, match="cannot be listed"):
            stack_algorithm(ALGORITHM, bad)


# --- refusals -------------------------------------------------------------------------


def test_sr_refuses_a_seg_without_the_vertebrae() -> None:
    ds = film()
    reading = make_reading(CERVICAL, identified=True)
    seg = build_spine_seg(ds, localisation().mask, algorithm=ALGORITHM)
    with pytest.raises(ExportError, match="no segment for vertebra C3"):
        build_spine_sr(ds, seg, localisation(), algorithm=ALGORITHM, reading=reading)
    # Segments of another algorithm version do not carry this one's tracking UIDs.
    vertebrae = [(v.label, v.mask) for v in reading.vertebrae]
    other = AlgorithmInfo(ALGORITHM.name, "9.9")
    seg = build_spine_seg(ds, localisation().mask, algorithm=other, vertebrae=vertebrae)
    with pytest.raises(ExportError, match="not made by"):
        build_spine_sr(ds, seg, localisation(), algorithm=ALGORITHM, reading=reading)
