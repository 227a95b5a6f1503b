"""The film reader: every transfer syntax, the display pipeline, spacing, and bad input."""

from __future__ import annotations

import copy
import dataclasses
import struct
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.sequence import Sequence
from pydicom.uid import (
    JPEG2000,
    UID,
    ComputedRadiographyImageStorage,
    DeflatedExplicitVRLittleEndian,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    SecondaryCaptureImageStorage,
)

from pacsnode.errors import ImageReadError, ReadFailure
from pacsnode.imaging import (
    SUPPORTED_TRANSFER_SYNTAXES,
    Film,
    FilmHeader,
    PixelSpacing,
    SpacingBasis,
    film_from_dataset,
    inspect_film,
    read_film,
    reader,
)
from tests.films import (
    BACKGROUND,
    BONE,
    COLUMNS,
    IMAGER_SPACING_MM,
    NEEDS_DCMTK,
    ROWS,
    Encoder,
    bare_dataset_bytes,
    default_window,
    encode,
    film_pixels,
    make_film,
    set_raw,
    to_bytes,
)


def linear_window(values: np.ndarray, centre: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 LINEAR, onto [0, 1], written out independently of the reader."""
    values = values.astype(np.float64)
    low = centre - 0.5 - (width - 1) / 2
    high = centre - 0.5 + (width - 1) / 2
    out = ((values - (centre - 0.5)) / (width - 1) + 0.5).clip(0, 1)
    out[values <= low] = 0.0
    out[values > high] = 1.0
    return out


def expected_display(bits_stored: int = 12) -> np.ndarray:
    """What a viewer shows for :func:`make_film` with its default window."""
    return linear_window(film_pixels(bits_stored), *default_window(bits_stored))


def reason_of(excinfo: pytest.ExceptionInfo[ImageReadError]) -> ReadFailure:
    return excinfo.value.reason


# --- every transfer syntax ---------------------------------------------------------

# (transfer syntax, bits stored, encoder, largest and mean absolute display difference)
LOSSLESS = (0.0, 0.0)
ROUND_TRIPS = [
    pytest.param(ImplicitVRLittleEndian, 12, "pydicom", LOSSLESS, id="implicit-le"),
    pytest.param(ExplicitVRLittleEndian, 12, "pydicom", LOSSLESS, id="explicit-le"),
    pytest.param(ExplicitVRBigEndian, 12, "pydicom", LOSSLESS, id="explicit-be"),
    pytest.param(ExplicitVRBigEndian, 8, "pydicom", LOSSLESS, id="explicit-be-8bit"),
    pytest.param(DeflatedExplicitVRLittleEndian, 12, "pydicom", LOSSLESS, id="deflated"),
    pytest.param(RLELossless, 12, "pydicom", LOSSLESS, id="rle"),
    pytest.param(RLELossless, 8, "pydicom", LOSSLESS, id="rle-8bit"),
    pytest.param(JPEGLSLossless, 12, "pydicom", LOSSLESS, id="jpeg-ls-lossless"),
    pytest.param(JPEGLSNearLossless, 12, "pydicom", (0.005, 0.002), id="jpeg-ls-near"),
    pytest.param(JPEG2000Lossless, 12, "pydicom", LOSSLESS, id="j2k-lossless"),
    pytest.param(JPEG2000Lossless, 8, "pydicom", LOSSLESS, id="j2k-lossless-8bit"),
    pytest.param(JPEG2000, 12, "pydicom", (0.05, 0.01), id="j2k-lossy"),
    pytest.param(JPEGBaseline8Bit, 8, "pillow", (0.1, 0.02), id="jpeg-baseline-pillow"),
    pytest.param(
        JPEGBaseline8Bit, 8, "dcmtk", (0.1, 0.02), id="jpeg-baseline-8bit", marks=NEEDS_DCMTK
    ),
    pytest.param(
        # dcmcjpeg renders 12-bit data to 8 bits and rewrites the window to match.
        JPEGBaseline8Bit,
        12,
        "dcmtk",
        (0.1, 0.02),
        id="jpeg-baseline-from-12bit",
        marks=NEEDS_DCMTK,
    ),
    pytest.param(
        # dcmcjpeg shifts the values down by their minimum and moves the window with them.
        JPEGExtended12Bit,
        12,
        "dcmtk",
        (0.02, 0.005),
        id="jpeg-extended",
        marks=NEEDS_DCMTK,
    ),
    pytest.param(JPEGLossless, 12, "dcmtk", LOSSLESS, id="jpeg-lossless", marks=NEEDS_DCMTK),
    pytest.param(JPEGLossless, 8, "dcmtk", LOSSLESS, id="jpeg-lossless-8bit", marks=NEEDS_DCMTK),
    pytest.param(JPEGLosslessSV1, 12, "dcmtk", LOSSLESS, id="jpeg-sv1", marks=NEEDS_DCMTK),
    # dcmtk's own writers, so the reader is not only checked against pydicom's.
    pytest.param(
        ImplicitVRLittleEndian, 12, "dcmtk", LOSSLESS, id="dcmtk-implicit-le", marks=NEEDS_DCMTK
    ),
    pytest.param(
        ExplicitVRBigEndian, 12, "dcmtk", LOSSLESS, id="dcmtk-explicit-be", marks=NEEDS_DCMTK
    ),
    pytest.param(
        DeflatedExplicitVRLittleEndian,
        12,
        "dcmtk",
        LOSSLESS,
        id="dcmtk-deflated",
        marks=NEEDS_DCMTK,
    ),
    pytest.param(RLELossless, 12, "dcmtk", LOSSLESS, id="dcmtk-rle", marks=NEEDS_DCMTK),
    pytest.param(
        JPEGLSLossless, 12, "dcmtk", LOSSLESS, id="dcmtk-jpeg-ls-lossless", marks=NEEDS_DCMTK
    ),
    pytest.param(
        JPEGLSNearLossless, 12, "dcmtk", (0.005, 0.002), id="dcmtk-jpeg-ls-near", marks=NEEDS_DCMTK
    ),
]


@pytest.mark.parametrize(("transfer_syntax", "bits", "encoder", "tolerance"), ROUND_TRIPS)
def test_round_trip_gives_the_display_image(
    transfer_syntax: str, bits: int, encoder: Encoder, tolerance: tuple[float, float]
) -> None:
    film = read_film(encode(make_film(film_pixels(bits)), transfer_syntax, encoder=encoder))

    assert film.transfer_syntax_uid == transfer_syntax
    assert film.image.dtype == np.float32
    assert film.image.shape == (ROWS, COLUMNS)
    assert film.image.min() >= 0.0 and film.image.max() <= 1.0
    difference = np.abs(film.image.astype(np.float64) - expected_display(bits))
    largest, mean = tolerance
    if tolerance == LOSSLESS:
        np.testing.assert_allclose(film.image, expected_display(bits), rtol=0, atol=1e-6)
    else:
        assert difference.max() <= largest
        assert difference.mean() <= mean
    assert film.image[BONE].mean() > film.image[BACKGROUND].mean() + 0.5


def test_every_supported_syntax_is_covered_by_a_round_trip() -> None:
    covered = {param.values[0] for param in ROUND_TRIPS}
    assert covered == set(SUPPORTED_TRANSFER_SYNTAXES)
    assert len(SUPPORTED_TRANSFER_SYNTAXES) == 13


def test_lossless_syntaxes_give_the_same_image_as_uncompressed() -> None:
    original = read_film(encode(make_film(), ExplicitVRLittleEndian)).image
    for ts in (RLELossless, JPEGLSLossless, JPEG2000Lossless):
        assert np.array_equal(read_film(encode(make_film(), ts)).image, original)


# --- input forms ---------------------------------------------------------------------


def test_bytes_with_and_without_preamble_and_meta() -> None:
    ds = make_film()
    data = to_bytes(ds)
    expected = expected_display()
    without_preamble = data[132:]  # no preamble, no "DICM"
    assert without_preamble.startswith(b"\x02\x00")  # file meta straight away
    for source in (
        data,
        bytearray(data),
        memoryview(data),
        without_preamble,
        bare_dataset_bytes(ds, implicit_vr=True),
        bare_dataset_bytes(ds, implicit_vr=False),
    ):
        film = read_film(source)
        np.testing.assert_allclose(film.image, expected, atol=1e-6)
        assert film.sop_instance_uid == ds.SOPInstanceUID


def test_bare_data_set_gets_the_syntax_it_was_read_with() -> None:
    ds = make_film()
    assert read_film(bare_dataset_bytes(ds, implicit_vr=True)).transfer_syntax_uid == (
        ImplicitVRLittleEndian
    )
    assert read_film(bare_dataset_bytes(ds, implicit_vr=False)).transfer_syntax_uid == (
        ExplicitVRLittleEndian
    )


def test_path_and_dataset_inputs(tmp_path: Path) -> None:
    ds = make_film()
    path = tmp_path / "film.dcm"
    path.write_bytes(encode(ds, JPEG2000Lossless))
    for source in (path, str(path)):
        np.testing.assert_allclose(read_film(source).image, expected_display(), atol=1e-6)
    np.testing.assert_allclose(film_from_dataset(ds).image, expected_display(), atol=1e-6)


def test_film_from_dataset_leaves_the_dataset_alone() -> None:
    ds = make_film()
    before = copy.deepcopy(ds)
    film_from_dataset(ds)
    assert ds == before
    assert "_pixel_array" not in vars(ds) or ds._pixel_array is None


def test_dataset_read_with_deferred_pixel_data(tmp_path: Path) -> None:
    path = tmp_path / "film.dcm"
    path.write_bytes(to_bytes(make_film()))
    ds = dcmread(path, defer_size=1024)
    np.testing.assert_allclose(film_from_dataset(ds).image, expected_display(), atol=1e-6)


def test_concurrent_reads_leave_the_warning_filters_as_they_were() -> None:
    data = to_bytes(make_film())
    filters_before = list(warnings.filters)
    with ThreadPoolExecutor(max_workers=8) as pool:
        films = list(pool.map(read_film, [data] * 32))
    assert warnings.filters == filters_before
    assert all(np.array_equal(film.image, films[0].image) for film in films)


def test_missing_path_is_an_os_error_not_a_read_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_film(tmp_path / "absent.dcm")


# --- header fields -------------------------------------------------------------------


def test_header_fields() -> None:
    film = read_film(encode(make_film(), RLELossless))
    assert isinstance(film, FilmHeader)
    assert film.sop_class_uid == DigitalXRayImageStorageForPresentation
    assert film.sop_instance_uid == "1.2.826.0.1.3680043.8.498.1001"
    assert film.study_instance_uid == "1.2.826.0.1.3680043.8.498.1002"
    assert film.series_instance_uid == "1.2.826.0.1.3680043.8.498.1003"
    assert film.modality == "DX"
    assert film.body_part_examined == "LSPINE"
    assert film.view_position == "LL"
    assert film.patient_orientation == ("A", "F")
    assert film.photometric_interpretation == "MONOCHROME2"
    assert (film.rows, film.columns, film.bits_stored) == (ROWS, COLUMNS, 12)
    with pytest.raises(dataclasses.FrozenInstanceError):
        film.rows = 1  # type: ignore[misc]


def test_absent_optional_fields_are_none() -> None:
    ds = make_film()
    del ds.BodyPartExamined, ds.ViewPosition, ds.PatientOrientation
    film = film_from_dataset(ds)
    assert (film.body_part_examined, film.view_position, film.patient_orientation) == (
        None,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("sop_class", "modality"),
    [
        (DigitalXRayImageStorageForPresentation, "DX"),
        (DigitalXRayImageStorageForProcessing, "DX"),
        (ComputedRadiographyImageStorage, "CR"),
        (SecondaryCaptureImageStorage, "OT"),
    ],
)
def test_accepted_sop_classes(sop_class: str, modality: str) -> None:
    ds = make_film(sop_class_uid=sop_class, modality=modality, window=None, rescale=None)
    film = read_film(encode(ds, ExplicitVRLittleEndian))
    assert (film.sop_class_uid, film.modality) == (sop_class, modality)
    assert film.image[BONE].mean() > film.image[BACKGROUND].mean() + 0.5


def test_inspect_film_matches_read_film_and_does_not_decode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = encode(make_film(magnification=1.1), JPEG2000Lossless)
    film = read_film(data)

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("inspect_film decoded pixel data")

    monkeypatch.setattr(reader, "get_decoder", no_decoding)
    header = inspect_film(data)
    assert type(header) is FilmHeader
    for field in dataclasses.fields(FilmHeader):
        assert getattr(header, field.name) == getattr(film, field.name)


# --- display pipeline ----------------------------------------------------------------


@pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, JPEG2000Lossless])
@pytest.mark.parametrize("window", ["default", None])
def test_monochrome1_displays_like_monochrome2(
    transfer_syntax: str, window: Literal["default"] | None
) -> None:
    mono2 = read_film(encode(make_film(window=window), transfer_syntax))
    mono1 = read_film(encode(make_film(photometric="MONOCHROME1", window=window), transfer_syntax))

    assert mono1.photometric_interpretation == "MONOCHROME1"
    np.testing.assert_allclose(mono1.image, mono2.image, atol=1e-6)
    assert mono1.image[BONE].mean() > mono1.image[BACKGROUND].mean() + 0.5


def test_inverse_presentation_lut_shape_inverts_monochrome2() -> None:
    ds = make_film()
    ds.PresentationLUTShape = "INVERSE"
    np.testing.assert_allclose(film_from_dataset(ds).image, 1 - expected_display(), atol=1e-6)


def test_window_clips_values_outside_it() -> None:
    pixels = film_pixels()
    film = read_film(encode(make_film(window=(600.0, 300.0)), ExplicitVRLittleEndian))

    assert np.all(film.image[BONE] == 1.0)
    assert film.image.min() == 0.0
    assert 0.0 < np.median(film.image[BACKGROUND]) < 1.0
    np.testing.assert_allclose(film.image, linear_window(pixels, 600.0, 300.0), atol=1e-6)


@pytest.mark.parametrize("function", ["LINEAR_EXACT", "SIGMOID"])
def test_voi_lut_functions(function: str) -> None:
    ds = make_film(window=(1500.0, 2000.0))
    ds.VOILUTFunction = function
    values = film_pixels().astype(np.float64)
    if function == "LINEAR_EXACT":
        expected = ((values - 1500.0) / 2000.0 + 0.5).clip(0, 1)
    else:
        expected = 1 / (1 + np.exp(-4 * (values - 1500.0) / 2000.0))
    np.testing.assert_allclose(film_from_dataset(ds).image, expected, atol=1e-6)


def test_first_of_several_windows_is_used() -> None:
    ds = make_film()
    ds.WindowCenter = [600.0, 2000.0]
    ds.WindowWidth = [300.0, 4000.0]
    expected = linear_window(film_pixels(), 600.0, 300.0)
    np.testing.assert_allclose(film_from_dataset(ds).image, expected, atol=1e-6)


def test_rescale_is_applied_before_the_window() -> None:
    ds = make_film(rescale=(2.0, -100.0), window=(3000.0, 6000.0))
    modality = film_pixels() * 2.0 - 100.0
    film = read_film(encode(ds, JPEGLSLossless))
    np.testing.assert_allclose(film.image, linear_window(modality, 3000.0, 6000.0), atol=1e-6)


def test_without_a_window_the_robust_range_is_used() -> None:
    film = read_film(encode(make_film(window=None), ExplicitVRLittleEndian))
    values = film_pixels().astype(np.float64)
    low, high = np.percentile(values, [0.5, 99.5])
    np.testing.assert_allclose(film.image, ((values - low) / (high - low)).clip(0, 1), atol=1e-6)
    assert film.image.min() == 0.0 and film.image.max() == 1.0


def test_flat_image_without_a_window_is_black_not_nan() -> None:
    ds = make_film(np.full((ROWS, COLUMNS), 1000, np.uint16), window=None)
    assert np.all(film_from_dataset(ds).image == 0.0)


@pytest.mark.parametrize("centre_width", [(b"abc", b"100"), (b"1000", b"0"), (b"1000", b"-5")])
def test_unusable_window_falls_back_to_the_robust_range(
    centre_width: tuple[bytes, bytes],
) -> None:
    ds = make_film(window=None)
    robust = film_from_dataset(ds).image
    set_raw(ds, "WindowCenter", centre_width[0])
    set_raw(ds, "WindowWidth", centre_width[1])
    np.testing.assert_allclose(film_from_dataset(ds).image, robust, atol=1e-6)


def voi_lut_item(
    table: np.ndarray, first: int, bits: int, vr: str = "US", order: str = "<"
) -> Dataset:
    item = Dataset()
    item.LUTDescriptor = [len(table), first, bits]
    if vr == "US":
        item.LUTData = [int(v) for v in table]
    else:  # OW: pydicom writes the words as given, so in the file's byte order
        item.LUTData = table.astype(f"{order}u2").tobytes()
    item["LUTData"].VR = vr
    return item


@pytest.mark.parametrize(
    ("transfer_syntax", "vr"),
    [
        (ExplicitVRLittleEndian, "US"),
        (ExplicitVRLittleEndian, "OW"),
        (ImplicitVRLittleEndian, "US"),  # read back as OW: the VR is ambiguous
        (ExplicitVRBigEndian, "US"),
        (ExplicitVRBigEndian, "OW"),
    ],
)
def test_voi_lut_sequence_is_preferred_to_the_window(transfer_syntax: str, vr: str) -> None:
    # A gamma curve holding 12-bit values in entries declared 16 bits wide; the LUT's
    # own range is what reaches [0, 1].
    first = 200
    table = np.rint(4095 * (np.arange(3500) / 3499) ** 0.5).astype(np.uint16)
    ds = make_film(window=(600.0, 300.0))
    order = ">" if transfer_syntax == ExplicitVRBigEndian else "<"
    ds.VOILUTSequence = Sequence([voi_lut_item(table, first, 16, vr, order)])
    film = read_film(encode(ds, transfer_syntax))

    index = np.clip(film_pixels().astype(np.int64) - first, 0, len(table) - 1)
    np.testing.assert_allclose(film.image, table[index] / 4095.0, atol=1e-6)


def test_eight_bit_voi_lut_longer_than_256_entries() -> None:
    table = (np.arange(4096) // 16).astype(np.uint16)  # 0..255 over the 12-bit range
    ds = make_film(window=None)
    ds.VOILUTSequence = Sequence([voi_lut_item(table, 0, 8)])
    expected = table[film_pixels()] / 255.0
    np.testing.assert_allclose(film_from_dataset(ds).image, expected, atol=1e-6)


def test_malformed_voi_lut_falls_back_to_the_window() -> None:
    ds = make_film()
    item = voi_lut_item(np.arange(10, dtype=np.uint16), 0, 16)
    item.LUTDescriptor = [4096, 0, 16]  # more entries than the data hold
    ds.VOILUTSequence = Sequence([item])
    np.testing.assert_allclose(film_from_dataset(ds).image, expected_display(), atol=1e-6)


def test_modality_lut_sequence() -> None:
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.LUTData = [2 * v for v in range(4096)]
    item["LUTData"].VR = "US"
    item.ModalityLUTType = "US"
    ds = make_film(rescale=None, window=(3200.0, 6400.0))
    ds.ModalityLUTSequence = Sequence([item])
    expected = linear_window(film_pixels() * 2.0, 3200.0, 6400.0)
    np.testing.assert_allclose(film_from_dataset(ds).image, expected, atol=1e-6)


@pytest.mark.parametrize(
    ("keyword", "value"),
    [("RescaleSlope", b"abc"), ("RescaleSlope", b"0"), ("RescaleIntercept", b"1\\2")],
)
def test_unusable_rescale_is_refused(keyword: str, value: bytes) -> None:
    ds = make_film()
    set_raw(ds, keyword, value)
    with pytest.raises(ImageReadError, match="Rescale") as excinfo:
        film_from_dataset(ds)
    assert reason_of(excinfo) is ReadFailure.CORRUPT_PIXEL_DATA


def test_signed_pixels() -> None:
    pixels = (film_pixels().astype(np.int16) - 2048).astype(np.int16)
    centre, width = default_window(12)
    ds = make_film(pixels, window=(centre - 2048, width))
    film = read_film(encode(ds, JPEG2000Lossless))
    np.testing.assert_allclose(film.image, expected_display(), atol=1e-6)


# --- spacing -------------------------------------------------------------------------


def test_imager_spacing_alone_is_at_the_detector() -> None:
    spacing = film_from_dataset(make_film(imager_spacing=(0.15, 0.16))).spacing
    assert spacing == PixelSpacing(0.15, 0.16, SpacingBasis.DETECTOR)
    assert spacing.unit == "mm"
    assert "detector" in spacing.description


def test_magnification_factor_corrects_imager_spacing() -> None:
    spacing = film_from_dataset(make_film(imager_spacing=(0.15, 0.16), magnification=1.1)).spacing
    assert spacing.basis is SpacingBasis.MAGNIFICATION_CORRECTED
    assert spacing.row_mm == pytest.approx(0.15 / 1.1)
    assert spacing.col_mm == pytest.approx(0.16 / 1.1)
    assert spacing.magnification_factor == pytest.approx(1.1)
    assert spacing.description == (
        "magnification-corrected (ImagerPixelSpacing / "
        "EstimatedRadiographicMagnificationFactor 1.10)"
    )


def test_pixel_spacing_different_from_the_detector_is_calibrated() -> None:
    ds = make_film(magnification=1.1, pixel_spacing=(0.125, 0.126))
    spacing = read_film(encode(ds, ExplicitVRLittleEndian)).spacing
    assert spacing == PixelSpacing(0.125, 0.126, SpacingBasis.CALIBRATED)
    assert "calibrated" in spacing.description


def test_pixel_spacing_alone_is_calibrated() -> None:
    ds = make_film(imager_spacing=None, pixel_spacing=(0.2, 0.2))
    assert film_from_dataset(ds).spacing.basis is SpacingBasis.CALIBRATED


def test_pixel_spacing_copied_from_the_detector_is_not_a_calibration() -> None:
    # PS3.3 §10.7.1.1: without calibration Pixel Spacing repeats Imager Pixel Spacing.
    ds = make_film(pixel_spacing=(IMAGER_SPACING_MM, IMAGER_SPACING_MM), magnification=1.2)
    assert film_from_dataset(ds).spacing.basis is SpacingBasis.MAGNIFICATION_CORRECTED
    ds.PixelSpacingCalibrationType = "GEOMETRY"
    assert film_from_dataset(ds).spacing.basis is SpacingBasis.CALIBRATED


def test_no_spacing_means_pixels() -> None:
    spacing = film_from_dataset(make_film(imager_spacing=None)).spacing
    assert spacing == PixelSpacing(None, None, SpacingBasis.NONE)
    assert spacing.unit == "px"
    assert "pixels" in spacing.description


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"PixelSpacing": b"abc\\def"}, SpacingBasis.DETECTOR),
        ({"PixelSpacing": b"0.1"}, SpacingBasis.DETECTOR),
        ({"PixelSpacing": b"0\\0.1"}, SpacingBasis.DETECTOR),
        ({"PixelSpacing": b"nan\\0.1"}, SpacingBasis.DETECTOR),
        ({"EstimatedRadiographicMagnificationFactor": b"x"}, SpacingBasis.DETECTOR),
        ({"EstimatedRadiographicMagnificationFactor": b"-1.2"}, SpacingBasis.DETECTOR),
        ({"EstimatedRadiographicMagnificationFactor": b"0"}, SpacingBasis.DETECTOR),
        ({"ImagerPixelSpacing": b"-0.15\\0.15"}, SpacingBasis.NONE),
        ({"ImagerPixelSpacing": b"wide\\0.15"}, SpacingBasis.NONE),
        (
            {"ImagerPixelSpacing": b"", "EstimatedRadiographicMagnificationFactor": b"1.1"},
            SpacingBasis.NONE,
        ),
    ],
)
def test_malformed_spacing_is_ignored(raw: dict[str, bytes], expected: SpacingBasis) -> None:
    ds = make_film()
    for keyword, value in raw.items():
        set_raw(ds, keyword, value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the reader must keep pydicom's warnings to itself
        assert film_from_dataset(ds).spacing.basis is expected
        assert read_film(to_bytes(ds)).spacing.basis is expected


# --- bad input -----------------------------------------------------------------------


def expect_failure(source: object, reason: ReadFailure, *, match: str | None = None) -> None:
    for function in (read_film, inspect_film):
        with pytest.raises(ImageReadError, match=match) as excinfo:
            function(source)  # type: ignore[arg-type]
        assert reason_of(excinfo) is reason, str(excinfo.value)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(np.random.default_rng(3).bytes(4000), id="random"),
        pytest.param(b"\x02\x00" + np.random.default_rng(4).bytes(500), id="random-group-2"),
        pytest.param(bytes(128) + b"DICM" + np.random.default_rng(5).bytes(2000), id="junk-dicm"),
        pytest.param(b"Patient report\nNothing to see here.\n" * 20, id="text"),
        pytest.param(b"", id="empty"),
        pytest.param(b"DICM", id="tiny"),
    ],
)
def test_not_dicom(data: bytes, tmp_path: Path) -> None:
    expect_failure(data, ReadFailure.NOT_DICOM)
    path = tmp_path / "not.dcm"
    path.write_bytes(data)
    expect_failure(path, ReadFailure.NOT_DICOM)


def test_no_pixel_data() -> None:
    ds = make_film()
    del ds.PixelData
    expect_failure(to_bytes(ds), ReadFailure.NO_PIXEL_DATA, match="no Pixel Data")


def test_float_pixel_data_is_not_read() -> None:
    ds = make_film()
    del ds.PixelData
    ds.FloatPixelData = np.zeros(ROWS * COLUMNS, np.float32).tobytes()
    expect_failure(to_bytes(ds), ReadFailure.NO_PIXEL_DATA, match="Float Pixel Data")


def test_multi_frame() -> None:
    ds = make_film()
    ds.NumberOfFrames = 2
    ds.PixelData = ds.PixelData * 2
    expect_failure(to_bytes(ds), ReadFailure.MULTI_FRAME, match="Number of Frames .* is 2")


def test_colour_rgb() -> None:
    ds = make_film()
    rgb = np.repeat(film_pixels(8)[..., None], 3, axis=2)
    ds.set_pixel_data(rgb, "RGB", 8, generate_instance_uid=False)
    expect_failure(to_bytes(ds), ReadFailure.COLOUR, match="'RGB'")


@pytest.mark.parametrize("photometric", ["PALETTE COLOR", "YBR_FULL"])
def test_colour_single_sample(photometric: str) -> None:
    ds = make_film()
    ds.PhotometricInterpretation = photometric
    expect_failure(to_bytes(ds), ReadFailure.COLOUR, match=photometric)


@pytest.mark.parametrize("photometric", ["MONOCHROME", "GREYSCALE", None])
def test_unsupported_photometric(photometric: str | None) -> None:
    ds = make_film()
    if photometric is None:
        del ds.PhotometricInterpretation
    else:
        ds.PhotometricInterpretation = photometric
    expect_failure(to_bytes(ds), ReadFailure.UNSUPPORTED_PHOTOMETRIC, match="Photometric")


def test_truncated_native_pixel_data() -> None:
    ds = make_film()
    ds.PixelData = ds.PixelData[:1000]
    expect_failure(to_bytes(ds), ReadFailure.TRUNCATED_PIXEL_DATA, match="1,000 bytes")


@pytest.mark.parametrize("rows", [ROWS, 256], ids=["small", "deferred-by-inspect"])
def test_file_cut_short_inside_native_pixel_data(rows: int, tmp_path: Path) -> None:
    # 256 rows make pixel data larger than what inspect_film loads from a path.
    data = to_bytes(make_film(film_pixels(rows=rows)))
    cut = data[: len(data) - 500]
    path = tmp_path / "cut.dcm"
    path.write_bytes(cut)
    expect_failure(cut, ReadFailure.TRUNCATED_PIXEL_DATA)
    expect_failure(path, ReadFailure.TRUNCATED_PIXEL_DATA)


def test_file_cut_short_inside_jpeg_2000_fragments() -> None:
    data = encode(make_film(), JPEG2000Lossless)
    expect_failure(data[: len(data) - 700], ReadFailure.TRUNCATED_PIXEL_DATA, match="cut short")


def test_truncated_jpeg_2000_codestream_is_corrupt() -> None:
    ds = make_film()
    ds.compress(JPEG2000Lossless, generate_instance_uid=False)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[: len(frame) // 2]])
    with pytest.raises(ImageReadError, match="could not be decoded") as excinfo:
        read_film(to_bytes(ds))
    assert reason_of(excinfo) is ReadFailure.CORRUPT_PIXEL_DATA


def test_codestream_larger_than_the_header_is_refused_before_decoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ds = make_film()
    ds.compress(JPEG2000Lossless, generate_instance_uid=False)
    ds.Rows = 32  # the codestream still says 64
    monkeypatch.setattr(reader, "get_decoder", pytest.fail)
    with pytest.raises(ImageReadError, match="64 × 48") as excinfo:
        read_film(to_bytes(ds))
    assert reason_of(excinfo) is ReadFailure.CORRUPT_PIXEL_DATA


def test_jpeg_codestream_size_is_read() -> None:
    ds = make_film()
    ds.compress(JPEGLSLossless, generate_instance_uid=False)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    assert reader._codestream_size(ds.file_meta.TransferSyntaxUID, frame) == (ROWS, COLUMNS)


def test_pixel_data_that_is_not_encapsulated() -> None:
    ds = make_film()
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds["PixelData"].is_undefined_length = False
    with pytest.raises(ImageReadError, match="not encapsulated") as excinfo:
        film_from_dataset(ds)
    assert reason_of(excinfo) is ReadFailure.CORRUPT_PIXEL_DATA


@pytest.mark.parametrize(
    ("attributes", "match"),
    [
        ({"Rows": 65000}, "65000 × 48"),  # US cannot hold 100000
        ({"Columns": 0}, "64 × 0"),
        ({"Rows": 8}, "8 × 48"),
        ({"Rows": None}, "Rows .* absent"),
        ({"BitsAllocated": 32}, "Bits Allocated .* 32"),
        ({"BitsStored": 20}, "Bits Stored .* 20"),
        ({"PixelRepresentation": 2}, "Pixel Representation .* 2"),
        ({"SamplesPerPixel": 0}, "Samples per Pixel .* 0"),
    ],
)
def test_absurd_dimensions_fail_before_decoding(
    attributes: dict[str, int | None], match: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = make_film()
    for keyword, value in attributes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    monkeypatch.setattr(reader, "get_decoder", pytest.fail)
    expect_failure(to_bytes(ds), ReadFailure.ABSURD_DIMENSIONS, match=match)


def test_pixel_limits_are_keyword_arguments() -> None:
    data = to_bytes(make_film())
    with pytest.raises(ImageReadError) as excinfo:
        read_film(data, max_pixels=ROWS * COLUMNS - 1)
    assert reason_of(excinfo) is ReadFailure.ABSURD_DIMENSIONS
    with pytest.raises(ImageReadError) as excinfo:
        inspect_film(data, max_side=ROWS - 1)
    assert reason_of(excinfo) is ReadFailure.ABSURD_DIMENSIONS
    assert read_film(data, max_side=ROWS, max_pixels=ROWS * COLUMNS).rows == ROWS


HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
JPEG_XL_LOSSLESS = "1.2.840.10008.1.2.4.110"  # unknown to pydicom 3.0


@pytest.mark.parametrize(
    "transfer_syntax", [HTJ2K_LOSSLESS, "1.2.840.10008.1.2.4.92", JPEG_XL_LOSSLESS]
)
def test_unsupported_transfer_syntax(transfer_syntax: str) -> None:
    ds = make_film()
    ds.compress(JPEG2000Lossless, generate_instance_uid=False)
    if transfer_syntax == JPEG_XL_LOSSLESS:
        # pydicom refuses to write a syntax it does not know: swap a same-length UID.
        ds.file_meta.TransferSyntaxUID = UID(HTJ2K_LOSSLESS)
        data = to_bytes(ds).replace(HTJ2K_LOSSLESS.encode(), JPEG_XL_LOSSLESS.encode())
    else:
        ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
        data = to_bytes(ds)
    expect_failure(data, ReadFailure.UNSUPPORTED_TRANSFER_SYNTAX, match=transfer_syntax)


def test_missing_decoder_plugin_is_an_unsupported_syntax(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoPlugins:
        is_available = False
        missing_dependencies = ("pylibjpeg - requires pylibjpeg-openjpeg",)

    monkeypatch.setattr(reader, "get_decoder", lambda uid: NoPlugins())
    with pytest.raises(ImageReadError, match="pylibjpeg-openjpeg") as excinfo:
        read_film(encode(make_film(), JPEG2000Lossless))
    assert reason_of(excinfo) is ReadFailure.UNSUPPORTED_TRANSFER_SYNTAX


def test_compressed_data_without_a_transfer_syntax_is_refused() -> None:
    ds = make_film()
    ds.compress(RLELossless, generate_instance_uid=False)
    del ds.file_meta
    with pytest.raises(ImageReadError) as excinfo:
        film_from_dataset(ds)
    assert reason_of(excinfo) is ReadFailure.UNSUPPORTED_TRANSFER_SYNTAX


def test_error_messages_name_the_value_and_the_reason() -> None:
    ds = make_film()
    ds.Rows = 65000
    with pytest.raises(ImageReadError) as excinfo:
        read_film(to_bytes(ds))
    text = str(excinfo.value)
    assert "65000" in text and "16384" in text and text.endswith("[absurd_dimensions]")


# --- warnings and logging ------------------------------------------------------------


def test_invalid_values_do_not_leak_warnings_or_patient_names(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ds = make_film()
    set_raw(ds, "SOPInstanceUID", b"1.2.03.x")  # invalid UI: pydicom warns on access
    set_raw(ds, "PatientName", b"Secret^Person" + b"x" * 70)  # too long for PN
    filters_before = list(warnings.filters)
    caplog.set_level("DEBUG", logger="pacsnode")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        film = read_film(to_bytes(ds))
    assert film.sop_instance_uid == "1.2.03.x"
    assert warnings.filters == filters_before
    assert "Secret" not in caplog.text
    assert "1.2.03.x" in caplog.text  # logged by SOP Instance UID


def test_film_compares_by_identity() -> None:
    ds = make_film()
    first, second = film_from_dataset(ds), film_from_dataset(ds)
    assert first == first
    assert first != second
    assert isinstance(first, Film)


def test_preamble_less_objects_are_recognised_by_their_first_tag() -> None:
    assert reader._starts_like_dataset(struct.pack("<HH", 8, 0x16) + b"UI\x04\x00")  # explicit
    assert reader._starts_like_dataset(struct.pack("<HHI", 8, 0x16, 26))  # implicit VR
    assert not reader._starts_like_dataset(b"%PDF-1.7 etc")
    assert not reader._starts_like_dataset(b"")
