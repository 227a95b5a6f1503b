"""The phantoms' read-out truth: slips, step-offs and prevertebral swelling drawn from their
own stream, and a truth measured by the read-out's definitions that agrees with what was
drawn; films without findings keep their vertebrae."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pacsnode.analysis.readout import (
    FLAG_KINDS,
    SOFT_TISSUE_LEVELS,
    STEP_OFF_LIMIT_MM,
    shared_step,
)
from pacsnode.training.phantom import make_drr_phantom, make_phantom
from pacsnode.training.phantom.anatomy import build_scene
from pacsnode.training.phantom.findings import (
    NO_FINDINGS,
    Findings,
    Translation,
    draw_findings,
    findings_rng,
    readout_truth,
)

SMALL = 200


def _scene(seed: int, index: int, region: str, findings: Findings = NO_FINDINGS):
    # The scene's own stream, as make_phantom seeds it.
    scene_ss = np.random.SeedSequence([seed, index]).spawn(4)[0]
    return build_scene(np.random.default_rng(scene_ss), region, findings)


def _truth(scene) -> dict:
    return readout_truth(
        scene.vertebrae,
        spacing_mm=0.2,
        airway_wall=scene.airway_wall,
        field_mm=scene.collimation,
        findings=scene.findings,
    )


def _pair(entries: list[dict], upper: str) -> dict:
    return next(e for e in entries if e["upper"] == upper)


@pytest.mark.parametrize(
    ("region", "upper", "lower", "percent"),
    [("lumbar", "L5", "S1", 8.0), ("lumbar", "L4", "L5", 37.0), ("cervical", "C4", "C5", 20.0)],
)
def test_a_drawn_slip_reads_as_that_slip(region: str, upper: str, lower: str, percent: float):
    scene = _scene(4, 2, region)
    before = _truth(scene)
    after = _truth(_scene(4, 2, region, Findings(Translation("slip", upper, lower, percent))))
    grown = _pair(after["slips"], upper)["percent"] - _pair(before["slips"], upper)["percent"]
    # The slip is the shift both body lines share: a drawn slip adds to it, less the
    # smaller of the two lines' own offsets on the unslipped pair (their widths and the
    # disc's wedge), at most the larger of those offsets.
    step = _pair(before["step_offs"], upper)
    endplate = next(v for v in scene.vertebrae if v.label == lower).corners
    length = float(np.hypot(*(endplate["anterior_superior"] - endplate["posterior_superior"])))
    offset = max(abs(step["anterior"]), abs(step["posterior"])) / length * 100
    assert abs(grown - percent) <= offset + 0.5  # and the mean front against the lower body's
    # Only the slipping level changes: the bodies above move together.
    for b, a in zip(before["slips"], after["slips"], strict=True):
        if b["upper"] != upper:
            assert a["percent"] == pytest.approx(b["percent"], abs=1e-6)


@pytest.mark.parametrize("mm", [-2.9, 3.1, 6.0])
def test_a_drawn_step_off_reads_as_that_step(mm: float) -> None:
    before = _truth(_scene(4, 5, "cervical"))
    after = _truth(_scene(4, 5, "cervical", Findings(Translation("step", "C5", "C6", mm))))
    for line in ("anterior", "posterior"):
        moved = _pair(after["step_offs"], "C5")[line] - _pair(before["step_offs"], "C5")[line]
        assert moved == pytest.approx(mm, abs=0.01)
    flagged = "C5/C6" in after["flags"]["malalignment"]
    step = _pair(after["step_offs"], "C5")
    assert flagged == (abs(shared_step(step["anterior"], step["posterior"])) > STEP_OFF_LIMIT_MM)


@pytest.mark.parametrize(("c2", "c6"), [(7.3, 15.0), (4.0, 22.4), (6.8, 21.8), (9.0, 27.0)])
def test_the_true_soft_tissue_is_the_drawn_one(c2: float, c6: float) -> None:
    drawn = {"C2": c2, "C6": c6}
    scene = _scene(4, 1, "cervical", Findings(prevertebral_mm=drawn, swollen=True))
    truth = _truth(scene)
    got = {s["level"]: s["thickness"] for s in truth["soft_tissue"]}
    assert got == pytest.approx(drawn, abs=1e-3)
    expected = [k for k, v in drawn.items() if v > SOFT_TISSUE_LEVELS[k]]
    assert truth["flags"]["soft_tissue"] == expected


def test_films_without_findings_keep_their_vertebrae() -> None:
    # Recorded from the generator before the read-out's findings: (label, centroid px at
    # 256 px, anterior height mm). The airway moved; the vertebrae did not.
    recorded = {
        1: [
            ("C2", (101.224, 57.973), 14.465),
            ("C3", (97.593, 85.959), 12.283),
            ("C4", (94.443, 104.401), 13.4),
            ("C5", (90.124, 126.436), 12.008),
            ("C6", (84.512, 148.789), 13.823),
            ("C7", (77.771, 172.828), 14.928),
            ("T1", (70.474, 198.345), 15.825),
            ("T2", (64.491, 223.601), 16.608),
        ],
        4: [
            ("C2", (105.653, 74.885), 14.166),
            ("C3", (109.497, 102.342), 11.941),
            ("C4", (113.59, 123.826), 13.439),
            ("C5", (117.944, 145.65), 12.6),
            ("C6", (121.099, 164.386), 13.903),
            ("C7", (127.098, 187.944), 14.431),
            ("T1", (131.312, 213.486), 14.986),
        ],
    }
    for index, bodies in recorded.items():
        findings = draw_findings(findings_rng(3, index), "cervical")
        assert findings.translation is None and findings.cervical_curvature is None
        truth = make_phantom(3, index, "cervical", size_px=256).truth
        got = [
            (v["label"], tuple(v["centroid"]), v["heights_mm"]["anterior"])
            for v in truth["vertebrae"]
        ]
        assert [g[0] for g in got] == [b[0] for b in bodies]
        for (_, centroid, height), (_, want_c, want_h) in zip(got, bodies, strict=True):
            assert centroid == pytest.approx(want_c, abs=1e-3)
            assert height == pytest.approx(want_h, abs=1e-3)


@pytest.mark.parametrize("region", ["lumbar", "chest"])
def test_normal_films_raise_no_alignment_flag(region: str) -> None:
    # The chain's walk used to leave 3 mm steps at lordotic lumbar levels and a grade I
    # slip at L5/S1 on every film; the bodies from T4 down are now lined up.
    for index in range(8):
        truth = _truth(_scene(5, index, region))
        assert truth["flags"]["malalignment"] == [], index
        assert truth["flags"]["listhesis_grade2"] == [], index
        worst = max(max(abs(s["anterior"]), abs(s["posterior"])) for s in truth["step_offs"])
        assert worst < STEP_OFF_LIMIT_MM


def test_findings_are_drawn_apart_and_cover_the_thresholds() -> None:
    assert draw_findings(findings_rng(1, 1), "chest") == NO_FINDINGS
    a = draw_findings(findings_rng(1, 2), "cervical")
    assert a == draw_findings(findings_rng(1, 2), "cervical")
    cervical = [draw_findings(findings_rng(11, i), "cervical") for i in range(600)]
    lumbar = [draw_findings(findings_rng(11, i), "lumbar") for i in range(600)]
    swollen = [f for f in cervical if f.swollen]
    assert 0.13 < len(swollen) / len(cervical) < 0.23
    for f in cervical:
        assert f.prevertebral_mm is not None
        over = {k: v > SOFT_TISSUE_LEVELS[k] for k, v in f.prevertebral_mm.items()}
        assert any(over.values()) == f.swollen
    near = [
        f
        for f in swollen
        if 7.0 < f.prevertebral_mm["C2"] < 8.5 or 22.0 < f.prevertebral_mm["C6"] < 23.5
    ]
    assert len(near) >= 0.25 * len(swollen), "swollen films reach down to the limits"
    steps = [
        abs(f.translation.amount)
        for f in cervical + lumbar
        if f.translation and f.translation.kind == "step"
    ]
    assert min(steps) < 1.5 and max(steps) > 7.0
    assert sum(2.5 < s < 3.5 for s in steps) >= 0.1 * len(steps)
    slips = [f.translation for f in lumbar if f.translation and f.translation.kind == "slip"]
    assert {t.lower for t in slips} >= {"L5", "S1"}
    assert min(t.amount for t in slips) < 8 and max(t.amount for t in slips) > 75
    turned = [f.cervical_curvature for f in cervical if f.cervical_curvature is not None]
    assert 0.2 < len(turned) / len(cervical) < 0.4 and max(turned) > 0.003


def test_the_truth_file_carries_the_readout() -> None:
    for index in range(6):
        phantom = make_phantom(13, index, size_px=SMALL)
        truth = json.loads(json.dumps(phantom.truth))  # as written to <case>.json
        readout = truth["readout"]
        labels = [v["label"] for v in truth["vertebrae"]]
        assert readout["unit"] == "mm"
        assert len(readout["step_offs"]) == len(readout["slips"]) == len(labels) - 1
        assert set(readout["flags"]) == set(FLAG_KINDS)
        spans = {c["span"] for c in readout["cobb"]}
        if truth["region"] == "cervical":
            assert "C2-C7" in spans and {s["level"] for s in readout["soft_tissue"]} <= {"C2", "C6"}
        if truth["region"] == "lumbar":
            assert "L1-S1" in spans
        if truth["region"] != "cervical":
            assert readout["soft_tissue"] == []
        grade3 = [v["label"] for v in truth["vertebrae"] if v["genant_grade"] == 3]
        assert readout["flags"]["fracture_grade3"] == grade3
        drawn = readout["drawn"]
        assert set(drawn) == {
            "translation",
            "prevertebral_mm",
            "swollen",
            "cervical_curvature_per_mm",
        }


def test_the_drr_truth_carries_the_readout() -> None:
    # Index 3 of seed 7 is drawn with C6 swollen (22.3 mm, just over the limit).
    phantom = make_drr_phantom(7, 3, "cervical", size_px=400)
    readout = phantom.truth["readout"]
    drawn = readout["drawn"]["prevertebral_mm"]
    got = {s["level"]: s["thickness"] for s in readout["soft_tissue"]}
    assert set(got) == {"C2", "C6"}
    # Measured on the projected film: the beam and the silhouettes' corners move it a little.
    assert got == pytest.approx(drawn, abs=1.5)
    assert [c["span"] for c in readout["cobb"]] == ["C2-C7"]
    assert len(readout["step_offs"]) == len(phantom.truth["vertebrae"]) - 1
