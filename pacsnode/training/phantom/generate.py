"""Make phantom cases (film + exact ground truth), deterministically from (seed, index),
at detector resolution for DICOM files or at any coarser grid for training on the fly.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pacsnode.training.phantom.anatomy import REGIONS, Scene, build_scene
from pacsnode.training.phantom.appearance import Appearance, draw_appearance
from pacsnode.training.phantom.dicom import (
    COMPRESSED_SYNTAXES,
    Acquisition,
    build_dataset,
    patient_orientation,
)
from pacsnode.training.phantom.findings import draw_findings, findings_rng, readout_truth
from pacsnode.training.phantom.render import Radiograph, render

__all__ = ["TRUTH_SCHEMA", "Phantom", "make_phantom", "write_phantom"]

TRUTH_SCHEMA = "pacsnode-phantom-truth/1"
COORDINATES = (
    "Pixel coordinates (x = column, y = row) of the image as stored, origin at the top-left "
    "corner of the top-left pixel (pixel centres at +0.5), as DICOM SR SCOORD uses them. "
    "Outlines are closed polygons (first point not repeated) running clockwise as displayed "
    "(x right, y down), starting at the anterior-superior corner."
)
MIN_SIDE_PX, MAX_SIDE_PX = 1000, 3000


@dataclass(frozen=True)
class Phantom:
    """One synthetic lateral film and its ground truth."""

    case_id: str
    seed: int
    index: int
    scene: Scene
    acquisition: Acquisition
    radiograph: Radiograph
    truth: dict[str, Any]
    appearance: Appearance = field(default_factory=Appearance)

    @property
    def full_resolution(self) -> bool:
        return bool(np.isclose(self.radiograph.spacing_mm, self.acquisition.patient_spacing_mm))

    @property
    def written_acquisition(self) -> Acquisition:
        """The acquisition as the film is written: a film rendered coarser than the
        detector's pitch (for a training folder) is written as from a detector of that
        coarser pitch, so its spacing is the rendering's."""
        if self.full_resolution:
            return self.acquisition
        pitch = self.radiograph.spacing_mm * self.acquisition.magnification
        return replace(self.acquisition, detector_spacing_mm=round(pitch, 6))

    @property
    def written_truth(self) -> dict[str, Any]:
        """The truth as written beside the film: its detector pitch is the written one."""
        if self.full_resolution:
            return self.truth
        detector = self.written_acquisition.detector_spacing_mm
        return {**self.truth, "detector_pixel_spacing_mm": detector}

    def dataset(self) -> Dataset:
        """The DX For Presentation dataset, at the pitch the film was rendered at."""
        return build_dataset(
            self.radiograph.display,
            case_id=self.case_id,
            seed=self.seed,
            index=self.index,
            region=self.scene.region,
            facing=self.scene.facing,
            rotation_deg=self.scene.rotation_deg,
            burned_in=self.radiograph.burned_in,
            acq=self.written_acquisition,
        )


def draw_acquisition(
    rng: np.random.Generator, size_mm: tuple[float, float], magnification: float | None = None
) -> tuple[tuple[float, float], Acquisition]:
    """Draw how a field of ``size_mm`` is acquired; returns the field, widened if needed.
    ``magnification`` is drawn (1.05-1.25) unless the geometry gives it (the DRR)."""
    mag = float(rng.uniform(1.05, 1.25)) if magnification is None else float(magnification)
    w_mm, h_mm = size_mm
    longest, shortest = max(w_mm, h_mm), min(w_mm, h_mm)
    lo = max(0.1, longest * mag / MAX_SIDE_PX)
    hi = min(0.2, shortest * mag / MIN_SIDE_PX)
    det = float(rng.uniform(lo, hi)) if hi > lo else min(lo, 0.2)
    # Widen a narrow field (background only) so the short side has at least 1000 pixels.
    pitch = det / mag
    size_mm = (max(w_mm, MIN_SIDE_PX * pitch), max(h_mm, MIN_SIDE_PX * pitch))
    roll = rng.random()
    if roll < 0.5:
        syntax = ExplicitVRLittleEndian
    elif roll < 0.6:
        syntax = ImplicitVRLittleEndian
    else:
        syntax = COMPRESSED_SYNTAXES[int(rng.integers(0, len(COMPRESSED_SYNTAXES)))]
    basis = rng.random()
    acq = Acquisition(
        detector_spacing_mm=round(det, 6),
        magnification=round(mag, 6),
        write_magnification=basis < 0.85,
        write_calibrated_spacing=basis >= 0.7,
        bits_stored=int(rng.choice([12, 14, 15, 16])),
        monochrome1=bool(rng.random() < 0.3),
        transfer_syntax=syntax,
        window_low_frac=float(rng.uniform(0.0, 0.1)),
        window_high_frac=float(rng.uniform(0.85, 1.0)),
        study_date=dt.date(2020, 1, 1) + dt.timedelta(days=int(rng.integers(0, 2400))),
        patient_sex=str(rng.choice(["F", "M"])),
        patient_age_years=int(rng.integers(18, 95)),
    )
    return size_mm, acq


def make_phantom(
    seed: int,
    index: int = 0,
    region: str = "mixed",
    *,
    size_px: int | None = None,
    appearance: str = "classic",
) -> Phantom:
    """Make case ``index`` of the phantom set ``seed``.

    Parameters
    ----------
    seed, index
        Identify the case; the same pair always gives the same anatomy and acquisition.
    region
        "cervical", "lumbar", "chest", or "mixed" (drawn per case).
    size_px
        Render with the film's longest side at this many pixels (for training); by default
        at the detector pitch, as the DICOM file is written.
    appearance
        An appearance family (:data:`~pacsnode.training.phantom.appearance.ALL_FAMILIES`),
        or "randomised" for one of the training families drawn per case. "classic" (the
        default) is the renderer as it always was: the same pixels for the same case.
    """
    # The fourth stream is the appearance's own: the first three, and so the anatomy,
    # acquisition and a classic film's pixels, stay what they were before families.
    scene_ss, acq_ss, noise_ss, look_ss = np.random.SeedSequence([seed, index]).spawn(4)
    scene_rng = np.random.default_rng(scene_ss)
    if region == "mixed":
        region = REGIONS[int(scene_rng.integers(0, len(REGIONS)))]
    elif region not in REGIONS:
        raise ValueError(f"unknown region {region!r}; expected one of {(*REGIONS, 'mixed')}")
    # The read-out's findings draw from a stream of their own and take nothing from the
    # scene's, so a film without findings is drawn as it was before there were findings.
    scene = build_scene(scene_rng, region, draw_findings(findings_rng(seed, index), region))
    scene.size_mm, acq = draw_acquisition(np.random.default_rng(acq_ss), scene.size_mm)
    spacing = acq.patient_spacing_mm
    if size_px is not None:
        spacing = max(scene.size_mm) / float(size_px)
    look_rng = np.random.default_rng(look_ss)
    look = draw_appearance(appearance, look_rng)
    radiograph = render(scene, spacing, np.random.default_rng(noise_ss), look, look_rng)
    case_id = f"{seed}-{index:05d}"
    truth = _truth(case_id, seed, index, scene, acq, radiograph)
    truth["appearance"] = look.family
    return Phantom(case_id, seed, index, scene, acq, radiograph, truth, look)


def _truth(
    case_id: str, seed: int, index: int, scene: Scene, acq: Acquisition, rad: Radiograph
) -> dict[str, Any]:
    s = rad.spacing_mm

    def px(p: np.ndarray) -> list[float]:
        return [round(float(v) / s, 3) for v in p]

    vertebrae = []
    for v in scene.vertebrae:
        heights = v.heights_mm
        vertebrae.append(
            {
                "label": v.label,
                "outline": [px(p) for p in v.outline],
                "corners": {k: px(c) for k, c in v.corners.items()},
                "centroid": px(_centroid(v.outline)),
                "endplate_midpoints": {
                    "superior": px(v.mid_superior),
                    "inferior": px(v.mid_inferior),
                },
                "heights_mm": {k: round(h, 3) for k, h in heights.items()},
                "heights_px": {k: round(h / s, 3) for k, h in heights.items()},
                "expected_height_mm": round(v.expected_height_mm, 3),
                "height_loss": round(v.height_loss, 4),
                "genant_grade": v.genant,
                "fracture": v.fracture,
                "osteophytes": v.osteophytes,
                "disc_below_narrowed": v.disc_below_narrowed,
            }
        )
    rows, cols = rad.display.shape
    return {
        "schema": TRUTH_SCHEMA,
        "case_id": case_id,
        "seed": seed,
        "index": index,
        "region": scene.region,
        "coordinates": COORDINATES,
        "rows": rows,
        "columns": cols,
        "pixel_spacing_mm": round(s, 6),
        "heights_basis": "patient plane (detector pitch / magnification)",
        "detector_pixel_spacing_mm": acq.detector_spacing_mm,
        "magnification": acq.magnification,
        "facing": scene.facing,
        "rotation_deg": round(scene.rotation_deg, 3),
        "patient_orientation": patient_orientation(scene.facing, scene.rotation_deg),
        "photometric_interpretation": "MONOCHROME1" if acq.monochrome1 else "MONOCHROME2",
        "transfer_syntax": str(acq.transfer_syntax),
        "bits_stored": acq.bits_stored,
        "metal": scene.metal,
        "osteoporotic": scene.osteoporotic,
        "marker": scene.marker[0],
        "marker_burned_in": rad.burned_in,
        "partially_visible": scene.partial,
        "vertebrae": vertebrae,
        "readout": readout_truth(
            scene.vertebrae,
            spacing_mm=s,
            airway_wall=scene.airway_wall,
            field_mm=scene.collimation,
            findings=scene.findings,
        ),
    }


def _centroid(poly: np.ndarray) -> np.ndarray:
    """Area centroid of a simple polygon."""
    x, y = poly[:, 0], poly[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x * yn - xn * y
    area = cross.sum() / 2.0
    return np.array([((x + xn) * cross).sum(), ((y + yn) * cross).sum()]) / (6.0 * area)


def write_phantom(phantom: Phantom, out_dir: Path, *, preview: bool = True) -> dict[str, Path]:
    """Write ``<case>.dcm``, ``<case>.json`` (ground truth) and ``<case>.png`` (preview)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "dicom": out_dir / f"{phantom.case_id}.dcm",
        "truth": out_dir / f"{phantom.case_id}.json",
    }
    phantom.dataset().save_as(paths["dicom"], enforce_file_format=True)
    paths["truth"].write_text(json.dumps(phantom.written_truth, indent=1))
    if preview:
        paths["preview"] = out_dir / f"{phantom.case_id}.png"
        draw_preview(phantom.radiograph.display, phantom.truth).save(paths["preview"])
    return paths


def draw_preview(display: np.ndarray, truth: dict[str, Any], max_side: int = 1024) -> Image.Image:
    """A downsized RGB picture with each outline, its corners and its label drawn."""
    img = Image.fromarray((np.clip(display, 0, 1) * 255).astype(np.uint8)).convert("RGB")
    scale = min(1.0, max_side / max(img.size))
    if scale < 1.0:
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.LANCZOS)
    draw = ImageDraw.Draw(img)
    for v in truth["vertebrae"]:
        pts = [(x * scale, y * scale) for x, y in v["outline"]]
        colour = (0, 220, 0) if v["genant_grade"] == 0 else (255, 140, 0)
        draw.line([*pts, pts[0]], fill=colour, width=1)
        for cx, cy in v["corners"].values():
            draw.ellipse(
                (cx * scale - 2, cy * scale - 2, cx * scale + 2, cy * scale + 2), fill=(255, 0, 0)
            )
        text = v["label"] + (f" G{v['genant_grade']}" if v["genant_grade"] else "")
        draw.text(
            (v["centroid"][0] * scale + 8, v["centroid"][1] * scale - 5), text, fill=(255, 255, 0)
        )
    return img
