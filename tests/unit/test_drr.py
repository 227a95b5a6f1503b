"""The DRR phantom: determinism, truth that agrees with the projected bodies, magnification and
doubled contours from the geometry, valid DICOM, and films that read back as annotations."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy.ndimage import binary_dilation, binary_erosion
from scipy.signal import find_peaks

from pacsnode.cli.main import main
from pacsnode.training.annotations import phantom_film, read_folder
from pacsnode.training.phantom import REGIONS, genant_grade, make_drr_phantom, make_phantom
from pacsnode.training.phantom.anatomy import SPINE_ORDER
from pacsnode.training.phantom.appearance import TRAINING_FAMILIES
from pacsnode.training.phantom.drr import NATIVE, ConeBeam, RayGrid, line_integrals
from pacsnode.training.phantom.drr_anatomy import (
    IDENTITY,
    Blob,
    Body,
    BodyShape,
    Ellipsoid,
    SolidSpec,
    texture_tile,
    voxelise,
)
from pacsnode.training.phantom.geometry import polygon_mask, signed_area

SMALL = 192


def test_same_case_same_film() -> None:
    a = make_drr_phantom(11, 2, "lumbar", size_px=SMALL)
    b = make_drr_phantom(11, 2, "lumbar", size_px=SMALL)
    assert np.array_equal(a.radiograph.display, b.radiograph.display)
    assert a.truth == b.truth
    c = make_drr_phantom(11, 3, "lumbar", size_px=SMALL)
    assert c.truth["vertebrae"] != a.truth["vertebrae"]


def test_a_training_family_presents_the_same_projection() -> None:
    native = make_drr_phantom(11, 2, "lumbar", size_px=SMALL)
    seen = set()
    for index in range(4):
        other = make_drr_phantom(11, index, "lumbar", size_px=SMALL, appearance="randomised")
        family = other.truth["appearance"]
        assert family in TRAINING_FAMILIES and other.appearance.family == family
        seen.add(family)
        if index != 2:
            continue
        # The patient, pose and truth are the native film's; only the processing differs.
        assert other.truth["vertebrae"] == native.truth["vertebrae"]
        assert other.radiograph.display.shape == native.radiograph.display.shape
        assert not np.array_equal(other.radiograph.display, native.radiograph.display)
    assert native.truth["appearance"] == NATIVE == native.appearance.family
    again = make_drr_phantom(11, 1, "lumbar", size_px=SMALL, appearance="randomised")
    assert (
        again.truth
        == make_drr_phantom(11, 1, "lumbar", size_px=SMALL, appearance="randomised").truth
    )
    # Bone stays bright under a 2-D family's chain: each body outshines the band around it.
    film = make_drr_phantom(11, 2, "lumbar", size_px=SMALL, appearance="flat")
    display = film.radiograph.display
    for vertebra in film.truth["vertebrae"]:
        body = polygon_mask(np.asarray(vertebra["outline"]), display.shape)
        band = binary_dilation(body, iterations=3) & ~body
        assert display[body].mean() > display[band].mean()
    with pytest.raises(ValueError, match="unknown appearance"):
        make_drr_phantom(11, 2, "lumbar", size_px=SMALL, appearance="glossy")


def test_truth_has_the_phantom_schema() -> None:
    drr = make_drr_phantom(12, 0, "cervical", size_px=SMALL).truth
    classic = make_phantom(12, 0, "cervical", size_px=64).truth
    assert drr["renderer"] == "drr"
    assert set(drr) == set(classic) | {"renderer"}
    assert set(drr["vertebrae"][0]) == set(classic["vertebrae"][0])
    assert drr["schema"] == classic["schema"]


@pytest.mark.parametrize(("region", "index"), [(r, i) for r in REGIONS for i in range(2)])
def test_outlines_are_well_formed_and_in_order(region: str, index: int) -> None:
    ph = make_drr_phantom(13, index, region, size_px=SMALL)
    truth = ph.truth
    assert truth["region"] == region == ph.scene.region
    labels = [v["label"] for v in truth["vertebrae"]]
    assert len(labels) >= 4
    positions = [SPINE_ORDER.index(label) for label in labels]
    assert positions == list(range(positions[0], positions[0] + len(positions))), labels
    assert "C1" not in labels
    if region == "cervical":
        assert labels[0] == "C2"
    if region == "lumbar":
        assert labels[-1] == "S1"
    centroids = [ph.beam.project(v.frame.origin[None])[0] for v in ph.patient.vertebrae]
    head_first = [
        c for c, v in zip(centroids, ph.patient.vertebrae, strict=True) if v.label in labels
    ]
    for v, expected in zip(truth["vertebrae"], head_first, strict=True):
        outline = np.array(v["outline"])
        assert outline.shape == (64, 2)
        assert signed_area(outline) > 0, "clockwise as displayed"
        np.testing.assert_allclose(outline[0], v["corners"]["anterior_superior"], atol=1e-6)
        assert (outline >= 0).all()
        assert (outline[:, 0] <= truth["columns"]).all() and (outline[:, 1] <= truth["rows"]).all()
        # The outline sits on the projected body centre.
        centre = np.array(v["centroid"]) * truth["pixel_spacing_mm"]
        assert np.linalg.norm(centre - expected) < 0.35 * max(v["heights_mm"].values())
        loss = max(0.0, 1 - min(v["heights_mm"].values()) / v["expected_height_mm"])
        assert v["genant_grade"] == genant_grade(loss)
        if v["fracture"] is None:
            assert v["genant_grade"] == 0


def test_fractures_are_graded() -> None:
    grades = [
        v["genant_grade"]
        for i in range(10)
        for v in make_drr_phantom(14, i, "lumbar", size_px=96).truth["vertebrae"]
    ]
    assert any(g > 0 for g in grades)
    assert grades.count(0) > 0.8 * len(grades)


def test_bodies_are_denser_than_the_discs_between_them() -> None:
    denser, pairs = 0, 0
    for region, index in [("lumbar", 0), ("lumbar", 1), ("cervical", 0), ("chest", 0)]:
        ph = make_drr_phantom(15, index, region, size_px=320)
        img = ph.radiograph.display
        vs = ph.truth["vertebrae"]
        masks = [polygon_mask(np.array(v["outline"]), img.shape) for v in vs]
        bodies = np.logical_or.reduce(masks)
        for upper, lower, m_up, m_low in zip(vs, vs[1:], masks, masks[1:], strict=False):
            c = upper["corners"], lower["corners"]
            gap_poly = np.array(
                [
                    c[0]["anterior_inferior"],
                    c[1]["anterior_superior"],
                    c[1]["posterior_superior"],
                    c[0]["posterior_inferior"],
                ]
            )
            if signed_area(gap_poly) < 0:
                gap_poly = gap_poly[::-1]
            gap = polygon_mask(gap_poly, img.shape) & ~binary_dilation(bodies, iterations=1)
            inner = binary_erosion(m_up, iterations=1) | binary_erosion(m_low, iterations=1)
            if gap.sum() < 5:
                continue
            pairs += 1
            denser += img[inner].mean() > img[gap].mean()
    assert pairs >= 15
    assert denser / pairs >= 0.85, f"{denser}/{pairs} pairs brighter than their disc"


def _beam(
    rotation: np.ndarray | None = None, size: tuple[float, float] = (120.0, 120.0)
) -> ConeBeam:
    rot = np.eye(3) if rotation is None else rotation
    return ConeBeam(1200.0, 1000.0, rot, np.zeros(3), size[0], size[1])


def _width(profile: np.ndarray, pitch: float) -> float:
    inside = np.flatnonzero(profile > 0.02 * profile.max())
    return float((inside[-1] - inside[0] + 1) * pitch)


@pytest.mark.parametrize("voxels", [False, True])
def test_magnification_comes_from_the_geometry(voxels: bool) -> None:
    """The same ball nearer the source projects larger, by the ratio of its distances."""
    beam = _beam()
    grid = RayGrid(0.2, (600, 600))
    widths = {}
    for z in (-80.0, 80.0):
        centre = np.array([0.0, 0.0, z])
        if voxels:
            spec = SolidSpec("ball", IDENTITY, (Blob.of(centre, (15.0, 15.0, 15.0)),), texture=0.0)
            solid = voxelise(
                spec, 0.5, texture_tile(np.random.default_rng(0), 0.5), np.random.default_rng(0)
            )
            _, path = line_integrals(beam, grid, solids=(solid,))
        else:
            path, _ = line_integrals(
                beam, grid, analytic=(Ellipsoid(centre, np.full(3, 15.0), water=1.0),)
            )
        widths[z] = _width(path[300], grid.pitch)
    assert widths[-80.0] > widths[80.0]
    expected = (beam.sod_mm + 80.0) / (beam.sod_mm - 80.0)
    assert widths[-80.0] / widths[80.0] == pytest.approx(expected, rel=0.03)
    assert widths[80.0] == pytest.approx(30.0 * beam.sod_mm / (beam.sod_mm + 80.0), rel=0.05)


def test_film_scale_follows_the_beam() -> None:
    """Heights in the truth (patient plane) match the 3-D bodies seen at the isocentre."""
    ph = make_drr_phantom(16, 0, "lumbar", size_px=400)
    assert ph.truth["magnification"] == pytest.approx(ph.beam.sid_mm / ph.beam.sod_mm, rel=1e-5)
    assert 1000 <= ph.beam.sid_mm <= 1800 and 150 <= ph.beam.sid_mm - ph.beam.sod_mm <= 250
    by = {v.label: v for v in ph.patient.vertebrae}
    for v in ph.truth["vertebrae"]:
        if v["fracture"] is None:
            post = by[v["label"]].shape.h_post
            assert v["heights_mm"]["posterior"] == pytest.approx(post, rel=0.2)


def test_rotation_about_the_long_axis_doubles_the_back_wall() -> None:
    """A body turned about the patient's long axis shows its left and right posterior walls
    apart, by about its lateral width times the sine of the angle; unturned, they coincide."""
    shape = BodyShape(
        width=35.0,
        depth=48.0,
        h_ant=26.0,
        h_post=26.0,
        conc_sup=1.0,
        conc_inf=1.0,
        rounding=2.0,
        waist=0.04,
        back_bow=1.5,
    )
    spec = SolidSpec("L3 body", IDENTITY, (Body.of(shape, shell=0.8),), cancellous=0.0, texture=0.0)
    solid = voxelise(
        spec, 0.4, texture_tile(np.random.default_rng(0), 0.4), np.random.default_rng(0)
    )
    grid = RayGrid(0.1, (200, 800))
    peaks = {}
    for deg in (0.0, 8.0):
        a = np.deg2rad(deg)
        turn = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        _, cortex = line_integrals(_beam(turn, (80.0, 20.0)), grid, solids=(solid,))
        profile = cortex[100, :400]  # the posterior half, through the middle of the body
        found, _ = find_peaks(profile, prominence=0.1 * profile.max())
        peaks[deg] = found * grid.pitch
    assert len(peaks[0.0]) == 1
    assert len(peaks[8.0]) == 2
    apart = float(np.ptp(peaks[8.0]))
    assert 0.25 * 48.0 * np.sin(np.deg2rad(8.0)) < apart < 1.5 * 48.0 * np.sin(np.deg2rad(8.0))


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One full-resolution DRR case written by the CLI."""
    out = tmp_path_factory.mktemp("drr")
    argv = ["phantom", "--renderer", "drr", "--n", "1", "--seed", "3", "--region", "cervical"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    return out


def test_cli_writes_a_drr_case(written: Path) -> None:
    files = sorted(p.name for p in written.iterdir())
    assert files == ["3-00000.dcm", "3-00000.json", "3-00000.png", "phantoms-seed3.json"]
    truth = json.loads((written / "3-00000.json").read_text())
    assert truth["renderer"] == "drr" and truth["vertebrae"][0]["label"] == "C2"
    assert json.loads((written / "phantoms-seed3.json").read_text())["renderer"] == "drr"


def test_cli_writes_drr_cases_in_a_training_family(tmp_path: Path) -> None:
    argv = ["phantom", "--renderer", "drr", "--n", "1", "--seed", "3", "--region", "cervical"]
    argv += ["--appearance", "export", "--size-px", "300", "--no-preview", "--quiet"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    truth = json.loads((tmp_path / "3-00000.json").read_text())
    assert truth["appearance"] == "export" and max(truth["rows"], truth["columns"]) == 300
    manifest = json.loads((tmp_path / "phantoms-seed3.json").read_text())
    assert manifest["appearance"] == "export" and manifest["size_px"] == 300
    # Written as from a detector of the coarser pitch: its spacing is the rendering's.
    ds = pydicom.dcmread(tmp_path / "3-00000.dcm")
    assert max(ds.Rows, ds.Columns) == 300
    assert float(ds.ImagerPixelSpacing[0]) == pytest.approx(truth["detector_pixel_spacing_mm"])
    assert truth["detector_pixel_spacing_mm"] == pytest.approx(
        truth["pixel_spacing_mm"] * truth["magnification"], rel=1e-4
    )
    dciodvfy = Path(sys.executable).with_name("dciodvfy")
    proc = subprocess.run(
        [str(dciodvfy), str(tmp_path / "3-00000.dcm")], capture_output=True, text=True
    )
    assert [ln for ln in (proc.stdout + proc.stderr).splitlines() if "Error" in ln] == []
    # The DRR's own look belongs to that renderer only.
    bad = ["phantom", "--n", "1", "--seed", "3", "--appearance", "drr", "--quiet"]
    assert main([*bad, "--out", str(tmp_path / "bad")]) != 0


def test_dicom_passes_dciodvfy(written: Path) -> None:
    dciodvfy = Path(sys.executable).with_name("dciodvfy")
    path = written / "3-00000.dcm"
    proc = subprocess.run([str(dciodvfy), str(path)], capture_output=True, text=True)
    errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "Error" in ln]
    assert errors == []


def test_written_folder_reads_back(written: Path, tmp_path: Path) -> None:
    # The case files alone, as write_phantom leaves them (the CLI's manifest beside them
    # is JSON without an image, which read_folder refuses whatever the renderer).
    for name in ("3-00000.dcm", "3-00000.json"):
        shutil.copy(written / name, tmp_path / name)
    films = read_folder(tmp_path)
    assert len(films) == 1
    film = films[0]
    truth = json.loads((written / "3-00000.json").read_text())
    assert film.image.shape == (truth["rows"], truth["columns"])
    assert min(film.image.shape) >= 1000
    assert [v.label for v in film.vertebrae] == [v["label"] for v in truth["vertebrae"]]
    assert film.spacing_mm == pytest.approx(truth["pixel_spacing_mm"], rel=1e-4) or (
        film.spacing_mm == pytest.approx(truth["detector_pixel_spacing_mm"], rel=1e-4)
    )
    ds = pydicom.dcmread(written / "3-00000.dcm", stop_before_pixels=True)
    assert ds.PatientID == "DRR-3-00000"
    assert str(ds.SOPInstanceUID).startswith("2.25.")


def test_phantom_film_takes_a_drr_phantom() -> None:
    ph = make_drr_phantom(17, 0, "chest", size_px=SMALL)
    film = phantom_film(ph)
    assert film.image.shape == ph.radiograph.display.shape
    assert [v.label for v in film.vertebrae] == [v["label"] for v in ph.truth["vertebrae"]]
    assert film.spacing_mm == pytest.approx(ph.radiograph.spacing_mm)
