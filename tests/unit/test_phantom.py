"""The phantom generator: determinism, ground truth that agrees with the pixels, valid DICOM."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy.ndimage import binary_dilation

from pacsnode.cli.main import main
from pacsnode.training.phantom import REGIONS, genant_grade, make_phantom, write_phantom
from pacsnode.training.phantom.anatomy import SPINE_ORDER
from pacsnode.training.phantom.dicom import patient_orientation
from pacsnode.training.phantom.geometry import polygon_mask, signed_area

TRAIN_SIZE = 256


@pytest.mark.parametrize("region", ["cervical", "lumbar", "chest", "mixed"])
def test_same_seed_same_case(region: str) -> None:
    a = make_phantom(21, 3, region, size_px=TRAIN_SIZE)
    b = make_phantom(21, 3, region, size_px=TRAIN_SIZE)
    assert np.array_equal(a.radiograph.display, b.radiograph.display)
    assert a.truth == b.truth


def test_different_cases_differ() -> None:
    a = make_phantom(21, 3, "lumbar", size_px=TRAIN_SIZE)
    b = make_phantom(21, 4, "lumbar", size_px=TRAIN_SIZE)
    c = make_phantom(22, 3, "lumbar", size_px=TRAIN_SIZE)
    assert a.truth["vertebrae"] != b.truth["vertebrae"]
    assert a.truth["vertebrae"] != c.truth["vertebrae"]


def test_resolution_changes_pixels_not_anatomy() -> None:
    small = make_phantom(5, 0, "cervical", size_px=200)
    large = make_phantom(5, 0, "cervical", size_px=400)
    assert [v["label"] for v in small.truth["vertebrae"]] == [
        v["label"] for v in large.truth["vertebrae"]
    ]
    for vs, vl in zip(small.truth["vertebrae"], large.truth["vertebrae"], strict=True):
        assert vs["heights_mm"] == vl["heights_mm"]
        np.testing.assert_allclose(np.array(vs["outline"]) * 2, vl["outline"], atol=0.01)


@pytest.mark.parametrize("index", range(12))
def test_truth_is_well_formed(index: int) -> None:
    ph = make_phantom(31, index, "mixed", size_px=TRAIN_SIZE)
    truth = ph.truth
    assert truth["region"] in REGIONS
    labels = [v["label"] for v in truth["vertebrae"]]
    assert labels, "every film shows vertebrae"
    positions = [SPINE_ORDER.index(label) for label in labels]
    assert positions == list(range(positions[0], positions[0] + len(positions))), labels
    for v in truth["vertebrae"]:
        outline = np.array(v["outline"])
        assert outline.shape[0] >= 32
        assert signed_area(outline) > 0, "clockwise as displayed"
        np.testing.assert_allclose(outline[0], v["corners"]["anterior_superior"], atol=1e-6)
        assert (outline[:, 0] >= 0).all() and (outline[:, 0] <= truth["columns"]).all()
        assert (outline[:, 1] >= 0).all() and (outline[:, 1] <= truth["rows"]).all()
        heights = v["heights_mm"]
        loss = max(0.0, 1 - min(heights.values()) / v["expected_height_mm"])
        assert v["genant_grade"] == genant_grade(loss)
        for name, mm in heights.items():
            assert mm / truth["pixel_spacing_mm"] == pytest.approx(v["heights_px"][name], abs=0.01)
        if v["fracture"] is None:
            assert v["genant_grade"] == 0, "an intact body loses under 20 % of its height"


def test_regions_show_their_vertebrae() -> None:
    for index in range(6):
        cervical = make_phantom(41, index, "cervical", size_px=TRAIN_SIZE).truth
        assert [v["label"] for v in cervical["vertebrae"]][:6] == [
            "C2",
            "C3",
            "C4",
            "C5",
            "C6",
            "C7",
        ]
        lumbar = make_phantom(41, index, "lumbar", size_px=TRAIN_SIZE).truth
        names = [v["label"] for v in lumbar["vertebrae"]]
        assert names[-6:] == ["L1", "L2", "L3", "L4", "L5", "S1"]
        chest = make_phantom(41, index, "chest", size_px=TRAIN_SIZE).truth
        assert sum(v["label"].startswith("T") for v in chest["vertebrae"]) >= 8


def test_fractures_and_grades_occur() -> None:
    grades = [
        v["genant_grade"]
        for i in range(60)
        for v in make_phantom(51, i, "lumbar", size_px=128).truth["vertebrae"]
    ]
    assert {0, 1, 2, 3} <= set(grades) or {0, 2, 3} <= set(grades)
    assert grades.count(0) > 0.8 * len(grades)


@pytest.mark.parametrize(
    ("loss", "grade"),
    [(0.0, 0), (0.199, 0), (0.20, 1), (0.249, 1), (0.25, 2), (0.40, 2), (0.401, 3), (0.9, 3)],
)
def test_genant_thresholds(loss: float, grade: int) -> None:
    assert genant_grade(loss) == grade


@pytest.mark.parametrize(
    ("facing", "rotation", "expected"),
    [
        ("right", 0.0, ["A", "F"]),
        ("left", 0.0, ["P", "F"]),
        ("right", 90.0, ["H", "A"]),
        ("right", 180.0, ["P", "H"]),
        ("right", 45.0, ["AH", "FA"]),
    ],
)
def test_patient_orientation(facing: str, rotation: float, expected: list[str]) -> None:
    got = patient_orientation(facing, rotation)
    assert [set(g) for g in got] == [set(e) for e in expected]


def test_bodies_brighter_than_their_surround() -> None:
    brighter, total = 0, 0
    for index in range(10):
        ph = make_phantom(61, index, "mixed", size_px=512)
        img = ph.radiograph.display
        bodies = np.zeros(img.shape, dtype=bool)
        masks = [polygon_mask(np.array(v["outline"]), img.shape) for v in ph.truth["vertebrae"]]
        for m in masks:
            bodies |= m
        for m in masks:
            ring = binary_dilation(m, iterations=4) & ~bodies
            total += 1
            brighter += img[m].mean() > img[ring].mean()
    assert brighter / total >= 0.9, f"{brighter}/{total} bodies brighter than their surround"


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, dict]]:
    """A few full-resolution DICOM phantoms covering every transfer syntax written."""
    out = tmp_path_factory.mktemp("phantoms")
    cases = []
    syntaxes: set[str] = set()
    for index in range(80):
        ph = make_phantom(71, index, "mixed", size_px=64)  # cheap look at the acquisition
        ts = str(ph.acquisition.transfer_syntax)
        if ts in syntaxes and len(cases) >= 3:
            continue
        syntaxes.add(ts)
        full = make_phantom(71, index, "mixed")
        paths = write_phantom(full, out)
        cases.append((paths["dicom"], full.truth, full.radiograph.display))
        if len(syntaxes) == 5:
            break
    assert len(syntaxes) == 5, syntaxes
    return cases


def test_dicom_files_pass_dciodvfy(written: list) -> None:
    dciodvfy = Path(sys.executable).with_name("dciodvfy")
    for path, truth, _ in written:
        proc = subprocess.run([str(dciodvfy), str(path)], capture_output=True, text=True)
        errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("Error")]
        assert errors == [], f"{path.name} ({truth['transfer_syntax']}): {errors}"


def test_dicom_matches_truth_after_reading(written: list) -> None:
    from pacsnode.imaging import SpacingBasis, read_film

    for path, truth, display in written:
        film = read_film(path)
        assert film.image.shape == (truth["rows"], truth["columns"])
        assert min(film.image.shape) >= 1000 and max(film.image.shape) <= 3000
        # The written window maps stored values back onto the rendered image.
        assert np.abs(film.image - display).max() < 2e-3
        assert film.spacing.basis is not SpacingBasis.NONE
        if film.spacing.basis is not SpacingBasis.DETECTOR:
            assert film.spacing.row_mm == pytest.approx(truth["pixel_spacing_mm"], rel=1e-5)
        assert list(film.patient_orientation) == truth["patient_orientation"]
        for v in truth["vertebrae"][:3]:
            body = polygon_mask(np.array(v["outline"]), film.image.shape)
            ring = binary_dilation(body, iterations=20) & ~binary_dilation(body, iterations=8)
            assert film.image[body].mean() > film.image[ring].mean() - 0.05


def test_cli_writes_cases(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "set"
    assert (
        main(
            [
                "phantom",
                "--n",
                "1",
                "--seed",
                "3",
                "--region",
                "cervical",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    files = sorted(p.name for p in out.iterdir())
    assert files == ["3-00000.dcm", "3-00000.json", "3-00000.png", "phantoms-seed3.json"]
    truth = json.loads((out / "3-00000.json").read_text())
    assert truth["vertebrae"][0]["label"] == "C2"
    assert re.search(r"wrote 1 cases", capsys.readouterr().out)


def test_cli_refuses_a_file_as_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    assert main(["phantom", "--n", "1", "--seed", "3", "--out", str(target), "--quiet"]) == 1
    assert "not a directory" in capsys.readouterr().err


def test_serving_path_does_not_import_training() -> None:
    code = (
        "import sys, pacsnode, pacsnode.imaging, pacsnode.cli.main, pacsnode.analysis.localise, "
        "pacsnode.config, pacsnode.jobs, pacsnode.audit; "
        "print([m for m in sys.modules if m.startswith('pacsnode.training')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--n", "0", "--seed", "1"], "must be at least 1, got 0"),
        (["--n", "2", "--seed", "-3"], "must be at least 0, got -3"),
        (["--n", "two", "--seed", "1"], "'two' is not a whole number"),
        (["--n", "1", "--seed", "1", "--region", "hand"], "invalid choice"),
    ],
)
def test_cli_rejects_bad_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["phantom", *argv, "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_dicom_uids_are_the_same_for_the_same_case(written: list[tuple[Path, dict]]) -> None:
    # Every transfer syntax: pydicom's compress() would draw a fresh SOP Instance UID.
    # The case is drawn again small: its UIDs and transfer syntax do not depend on size.
    for path, truth, _ in written:
        seed, index = (int(p) for p in truth["case_id"].split("-"))
        again = make_phantom(seed, index, "mixed", size_px=64).dataset()
        first = pydicom.dcmread(path, stop_before_pixels=True)
        assert again.file_meta.TransferSyntaxUID == first.file_meta.TransferSyntaxUID
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            assert again[keyword].value == first[keyword].value, (path.name, keyword)
            assert str(first[keyword].value).startswith("2.25.")
        assert again.file_meta.MediaStorageSOPInstanceUID == first.SOPInstanceUID
