"""Appearance families: independent ways a lateral film can look (bone, what overlaps the
bodies, implants, projection, processing), so the networks learn the anatomy, not one look.

A film is rendered under one family. ``classic`` is the renderer as it was before families
existed (same pixels for the same seed). The others change the scene (bone contrast and
texture, posterior elements, implants, doubled contours from patient rotation) and the
processing chain (equalisation, unsharp masking, LUT curves, grid lines, 8-bit export with
JPEG artefacts, burned-in text and rulers). :data:`HELD_OUT_FAMILIES` are never drawn for
training, validation or tuning: they make the out-of-family test tier.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw
from scipy.ndimage import gaussian_filter

from pacsnode.training.phantom.anatomy import MU_CORTICAL, MU_METAL, Scene, Structure
from pacsnode.training.phantom.geometry import ellipse, thick_polyline

__all__ = [
    "ALL_FAMILIES",
    "HELD_OUT_FAMILIES",
    "TRAINING_FAMILIES",
    "Appearance",
    "draw_appearance",
    "dress_scene",
    "finish_display",
]

TRAINING_FAMILIES: Final = ("classic", "flat", "enhanced", "cr-grid", "export")
"""The families drawn when a training or validation set asks for randomised appearance."""

HELD_OUT_FAMILIES: Final = ("scanned",)
"""Never drawn for training, validation or tuning: the out-of-family test tier. A scanned
analogue film: an H&D film curve on the exposure, film grain, scanner blur, uneven light
box illumination, dust and scratches, 8-bit, with anisotropic trabeculae."""

ALL_FAMILIES: Final = (*TRAINING_FAMILIES, *HELD_OUT_FAMILIES)

RANDOMISED: Final = "randomised"
"""The appearance name that draws one of :data:`TRAINING_FAMILIES` per film."""

TEXTURES: Final = ("none", "fine", "coarse", "anisotropic")


@dataclass(frozen=True)
class Appearance:
    """How one film looks; every field has the classic renderer's value by default.

    Scene: ``cortical``, ``cancellous`` and ``posterior`` scale the attenuation of the
    bodies' shells, their cores and the posterior elements; ``texture`` is the trabecular
    grain and ``texture_amount`` its strength relative to the classic one; ``doubled_mm``
    offsets a second, fainter contour of each body (rotation about the long axis);
    ``implants`` lists "screws", "cage" and "cement".

    Processing: ``equalisation`` (None keeps the scene's own), ``unsharp`` as
    (sigma mm, amount) pairs, ``lut`` ("linear", "gamma", "sigmoid", "film") with
    ``lut_param``, ``grid`` (amplitude, period px) anti-scatter grid lines, ``noise`` scales
    the quantum noise (above 1 is noisier), ``blur_mm`` extra detector or scanner blur,
    ``bits8``, ``jpeg_quality`` (0: none), ``text`` and ``ruler`` burned in, ``grain``
    (film grain strength), ``vignette`` and ``scratches``.
    """

    family: str = "classic"
    cortical: float = 1.0
    cancellous: float = 1.0
    posterior: float = 1.0
    texture: str = "fine"
    texture_amount: float = 1.0
    doubled_mm: float = 0.0
    implants: tuple[str, ...] = ()
    equalisation: float | None = None
    unsharp: tuple[tuple[float, float], ...] = ()
    lut: str = "linear"
    lut_param: float = 1.0
    grid: tuple[float, float] = (0.0, 0.0)
    noise: float = 1.0
    blur_mm: float = 0.0
    bits8: bool = False
    jpeg_quality: int = 0
    text: bool = False
    ruler: bool = False
    grain: float = 0.0
    vignette: float = 0.0
    scratches: int = 0

    @property
    def classic(self) -> bool:
        return self == Appearance()


def _scene_variation(rng: np.random.Generator, family: str) -> dict[str, object]:
    """Bone, overlap, implant and projection variation shared by the non-classic families."""
    roll = rng.random()
    implants: tuple[str, ...] = ()
    if roll < 0.12:
        implants = ("screws",)
    elif roll < 0.18:
        implants = ("screws", "cage")
    elif roll < 0.26:
        implants = ("cement",)
    return {
        "cortical": float(rng.uniform(0.55, 1.5)),
        "cancellous": float(rng.uniform(0.5, 1.5)),
        "posterior": float(rng.uniform(0.3, 2.0)),
        "texture_amount": float(rng.uniform(0.3, 2.0)),
        "doubled_mm": float(rng.uniform(1.0, 4.5)) if rng.random() < 0.3 else 0.0,
        "implants": implants,
    }


def draw_appearance(family: str, rng: np.random.Generator) -> Appearance:
    """Draw a film's appearance from ``family`` (one of :data:`ALL_FAMILIES`, or
    ``"randomised"`` for one of :data:`TRAINING_FAMILIES` per film)."""
    if family == RANDOMISED:
        family = TRAINING_FAMILIES[int(rng.integers(0, len(TRAINING_FAMILIES)))]
    if family == "classic":
        return Appearance()
    if family not in ALL_FAMILIES:
        raise ValueError(f"unknown appearance {family!r}; expected one of {ALL_FAMILIES}")
    scene = _scene_variation(rng, family)
    texture = str(rng.choice(TEXTURES))
    if family == "flat":
        return Appearance(
            family,
            texture=texture,
            equalisation=float(rng.uniform(0.0, 0.25)),
            lut="gamma",
            lut_param=float(rng.uniform(0.55, 1.7)),
            noise=float(rng.uniform(0.8, 3.0)),
            blur_mm=float(rng.uniform(0.0, 0.3)),
            **scene,  # type: ignore[arg-type]
        )
    if family == "enhanced":
        return Appearance(
            family,
            texture=texture,
            equalisation=float(rng.uniform(0.6, 0.95)),
            unsharp=(
                (float(rng.uniform(0.8, 3.0)), float(rng.uniform(0.5, 2.5))),
                (float(rng.uniform(5.0, 15.0)), float(rng.uniform(0.2, 1.0))),
            ),
            lut="sigmoid",
            lut_param=float(rng.uniform(3.0, 9.0)),
            text=bool(rng.random() < 0.5),
            **scene,  # type: ignore[arg-type]
        )
    if family == "cr-grid":
        return Appearance(
            family,
            texture=texture,
            equalisation=float(rng.uniform(0.2, 0.6)),
            unsharp=((float(rng.uniform(1.0, 4.0)), float(rng.uniform(0.2, 0.8))),),
            lut="gamma",
            lut_param=float(rng.uniform(0.7, 1.4)),
            grid=(float(rng.uniform(0.02, 0.08)), float(rng.uniform(2.1, 4.5))),
            noise=float(rng.uniform(0.7, 2.0)),
            blur_mm=float(rng.uniform(0.1, 0.4)),
            ruler=bool(rng.random() < 0.5),
            **scene,  # type: ignore[arg-type]
        )
    if family == "export":
        return Appearance(
            family,
            texture=texture,
            equalisation=float(rng.uniform(0.0, 0.9)),
            unsharp=((float(rng.uniform(1.0, 6.0)), float(rng.uniform(0.0, 1.5))),),
            lut=str(rng.choice(["linear", "gamma", "sigmoid"])),
            lut_param=float(rng.uniform(0.7, 1.5)),
            blur_mm=float(rng.uniform(0.0, 0.5)),
            bits8=True,
            jpeg_quality=int(rng.integers(25, 95)),
            text=bool(rng.random() < 0.7),
            ruler=bool(rng.random() < 0.3),
            **scene,  # type: ignore[arg-type]
        )
    # scanned (held out)
    scene["texture_amount"] = float(rng.uniform(0.8, 2.0))
    return Appearance(
        family,
        texture="anisotropic",
        equalisation=0.0,
        lut="film",
        lut_param=float(rng.uniform(2.0, 4.0)),
        noise=float(rng.uniform(0.5, 1.5)),
        blur_mm=float(rng.uniform(0.15, 0.5)),
        bits8=True,
        text=bool(rng.random() < 0.5),
        grain=float(rng.uniform(0.02, 0.06)),
        vignette=float(rng.uniform(0.1, 0.35)),
        scratches=int(rng.integers(0, 6)),
        **scene,  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------------------------
# The scene


def dress_scene(scene: Scene, app: Appearance, rng: np.random.Generator) -> Scene:
    """``scene`` with the appearance's bone contrast, doubled contours and implants; the
    truth (outlines, corners, heights) does not change."""
    if app.classic:
        return scene
    out: list[Structure] = []
    for s in scene.structures:
        if s.kind == "body":
            s = replace(s, mu=s.mu * app.cancellous, shell_mu=s.shell_mu * app.cortical)
        elif s.kind == "posterior":
            s = replace(s, mu=s.mu * app.posterior, shell_mu=s.shell_mu * app.posterior)
        out.append(s)
    for v in scene.vertebrae:
        front = v.corners["anterior_superior"] - v.corners["posterior_superior"]
        front = front / max(float(np.linalg.norm(front)), 1e-6)
        down = v.corners["posterior_inferior"] - v.corners["posterior_superior"]
        height = float(np.linalg.norm(down))
        down = down / max(height, 1e-6)
        depth_mm = float(
            np.linalg.norm(v.corners["anterior_superior"] - v.corners["posterior_superior"])
        )
        if app.doubled_mm > 0:
            # The far side's posterior wall and endplates, shifted by the rotation.
            shift = -front * app.doubled_mm + down * app.doubled_mm * rng.uniform(-0.3, 0.3)
            out.append(
                Structure(
                    v.outline + shift,
                    mu=0.0,
                    depth=10.0,
                    radius=2.0,
                    shell=0.8,
                    shell_mu=MU_CORTICAL * app.cortical * 0.5,
                )
            )
        centre = v.outline.mean(axis=0)
        if "cement" in app.implants and rng.random() < 0.25:
            angle = float(np.arctan2(down[1], down[0]))
            blob = ellipse(*centre, 0.6 * height / 2, 0.35 * depth_mm, angle=angle, n=48)
            out.append(Structure(blob, mu=MU_METAL * 0.25, depth=12.0, radius=4.0))
        if "screws" in app.implants and v.label[0] in "TLS" and rng.random() < 0.6:
            back = (v.corners["posterior_superior"] + v.corners["posterior_inferior"]) / 2
            tip = back + front * depth_mm * rng.uniform(0.5, 0.8)
            tail = back - front * rng.uniform(20.0, 35.0)
            line = np.stack([np.linspace(tail[k], tip[k], 24) for k in range(2)], axis=1)
            out.append(Structure(thick_polyline(line, 5.5), mu=MU_METAL, depth=6.0, radius=2.0))
    if "screws" in app.implants:
        heads = [
            (v.corners["posterior_superior"] + v.corners["posterior_inferior"]) / 2
            for v in scene.vertebrae
            if v.label[0] in "TLS"
        ]
        if len(heads) >= 2:
            start = int(rng.integers(0, max(len(heads) - 1, 1)))
            span = heads[start : start + int(rng.integers(2, 5))]
            if len(span) >= 2:
                v0 = scene.vertebrae[0]
                front = v0.corners["anterior_superior"] - v0.corners["posterior_superior"]
                front = front / max(float(np.linalg.norm(front)), 1e-6)
                rod = np.array(span) - front * 25.0
                out.append(Structure(thick_polyline(rod, 5.0), mu=MU_METAL, depth=6.0, radius=2.0))
    if "cage" in app.implants and len(scene.vertebrae) >= 2:
        k = int(rng.integers(0, len(scene.vertebrae) - 1))
        upper, lower = scene.vertebrae[k], scene.vertebrae[k + 1]
        mid = (upper.mid_inferior + lower.mid_superior) / 2
        axis = lower.mid_superior - upper.mid_inferior
        angle = float(np.arctan2(axis[1], axis[0]))
        size = float(
            np.linalg.norm(upper.corners["anterior_inferior"] - upper.corners["posterior_inferior"])
        )
        box = ellipse(
            *mid, max(float(np.linalg.norm(axis)), 4.0) / 2, 0.35 * size, angle=angle, n=32
        )
        out.append(
            Structure(box, mu=0.0, depth=8.0, radius=1.0, shell=1.0, shell_mu=MU_METAL * 0.5)
        )
    return replace(scene, structures=out)


def texture_band(noise: NDArray[np.float64], spacing: float, mode: str) -> NDArray[np.float64]:
    """Band-pass trabecular grain of ``mode`` from white ``noise`` (unnormalised)."""
    if mode == "coarse":
        return gaussian_filter(noise, 0.8 / spacing) - gaussian_filter(noise, 2.5 / spacing)
    if mode == "anisotropic":
        # Vertical trabeculae: long along one axis of the image, fine across it.
        return gaussian_filter(noise, (1.4 / spacing, 0.3 / spacing)) - gaussian_filter(
            noise, 2.5 / spacing
        )
    return gaussian_filter(noise, 0.35 / spacing) - gaussian_filter(noise, 1.2 / spacing)


# --------------------------------------------------------------------------------------------
# Processing


def grid_field(
    shape: tuple[int, int], app: Appearance, rng: np.random.Generator
) -> NDArray[np.float64]:
    """Multiplicative anti-scatter grid lines (1 where there is no grid)."""
    amplitude, period = app.grid
    if amplitude <= 0:
        return np.ones(shape)
    axis = int(rng.integers(0, 2))
    n = shape[axis]
    wave = 1.0 - amplitude * (
        0.5 + 0.5 * np.sin(2 * np.pi * np.arange(n) / period + rng.uniform(0, 6.3))
    )
    return wave[:, None] * np.ones(shape) if axis == 0 else np.ones(shape) * wave[None, :]


def _lut(x: NDArray[np.float64], app: Appearance) -> NDArray[np.float64]:
    if app.lut == "gamma":
        return x**app.lut_param
    if app.lut == "sigmoid":
        k = app.lut_param
        y = 1.0 / (1.0 + np.exp(-k * (x - 0.5)))
        lo, hi = 1.0 / (1.0 + np.exp(k / 2)), 1.0 / (1.0 + np.exp(-k / 2))
        return (y - lo) / (hi - lo)
    return x


def finish_display(
    log_image: NDArray[np.float64],
    spacing_mm: float,
    app: Appearance,
    rng: np.random.Generator,
    smooth: Callable[[NDArray[np.float64], float], NDArray[np.float64]],
) -> NDArray[np.float64]:
    """From the log image (attenuation, bone high) to a display in [0, 1], bone bright,
    through the family's processing chain. ``smooth(img, sigma_mm)`` is a large-kernel
    low-pass that the renderer computes on its coarse grid."""
    img = log_image
    if app.equalisation:
        low = smooth(img, 15.0)
        img = img - app.equalisation * (low - float(np.median(low)))
    for sigma_mm, amount in app.unsharp:
        if amount > 0:
            img = img + amount * (img - smooth(img, sigma_mm))
    sample = img[:: max(1, img.shape[0] // 400), :: max(1, img.shape[1] // 400)]
    lo, hi = np.percentile(sample, [0.5, 99.7])
    x = np.clip((img - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    if app.lut == "film":
        # An H&D curve on the exposure (toe and shoulder), read by transmitted light.
        k = app.lut_param
        density = 1.0 / (1.0 + np.exp(-k * ((1.0 - x) - rng.uniform(0.4, 0.6)) * 2.0))
        x = 1.0 - density
        if app.grain > 0:
            grain = gaussian_filter(rng.standard_normal(x.shape), max(0.08 / spacing_mm, 0.5))
            x = x * (1.0 + app.grain * grain / max(float(grain.std()), 1e-9))
    else:
        x = _lut(x, app)
    if app.blur_mm > 0:
        x = gaussian_filter(x, app.blur_mm / spacing_mm)
    rows, cols = x.shape
    if app.vignette > 0:
        yy, xx = np.mgrid[0:rows, 0:cols]
        cy, cx = rows * rng.uniform(0.3, 0.7), cols * rng.uniform(0.3, 0.7)
        r = np.hypot((yy - cy) / rows, (xx - cx) / cols)
        x = x * (1.0 - app.vignette * r / max(float(r.max()), 1e-6))
    x = np.clip(x, 0.0, 1.0)
    if app.scratches or app.text or app.ruler:
        x = _burn(x, spacing_mm, app, rng)
    if app.bits8:
        x = np.round(x * 255.0) / 255.0
    if app.jpeg_quality:
        x = _jpeg(x, app.jpeg_quality)
    return x


def _burn(
    x: NDArray[np.float64], spacing_mm: float, app: Appearance, rng: np.random.Generator
) -> NDArray[np.float64]:
    """Scratches, dust, text and rulers drawn into the pixels."""
    rows, cols = x.shape
    bright, dark = Image.new("L", (cols, rows), 0), Image.new("L", (cols, rows), 0)
    px = max(1, round(0.3 / spacing_mm))
    for _ in range(app.scratches):
        a = (rng.uniform(0, cols), rng.uniform(0, rows))
        length = rng.uniform(0.05, 0.4) * max(rows, cols)
        angle = rng.uniform(0, np.pi)
        b = (a[0] + length * np.cos(angle), a[1] + length * np.sin(angle))
        ImageDraw.Draw(bright if rng.random() < 0.5 else dark).line([a, b], fill=255, width=px)
    draw = ImageDraw.Draw(bright)
    if app.text:
        scale = max(1, round(max(rows, cols) / 400))
        for _ in range(int(rng.integers(1, 4))):
            words = "".join(
                rng.choice(list("ABCDEFGHKLMNPRSTUVXYZ0123456789 :/.")) for _ in range(14)
            )
            small = Image.new("L", (6 * len(words) + 4, 12), 0)
            ImageDraw.Draw(small).text((2, 0), words, fill=255)
            big = small.resize((small.width * scale, small.height * scale), Image.NEAREST)
            at = (
                int(rng.uniform(0, max(cols - big.width, 1))),
                int(rng.uniform(0, max(rows - big.height, 1))),
            )
            bright.paste(255, at, big)
    if app.ruler:
        step = 10.0 / spacing_mm  # a tick every centimetre
        c = rng.uniform(0.02, 0.1) * cols
        r0, r1 = 0.1 * rows, 0.9 * rows
        draw.line([(c, r0), (c, r1)], fill=255, width=px)
        for k in range(int((r1 - r0) / step) + 1):
            r = r0 + k * step
            draw.line([(c, r), (c + 4 * px * (2 if k % 5 == 0 else 1), r)], fill=255, width=px)
    out = np.where(np.asarray(bright) > 0, 1.0, x)
    return np.where(np.asarray(dark) > 0, 0.0, out)


def _jpeg(x: NDArray[np.float64], quality: int) -> NDArray[np.float64]:
    buf = io.BytesIO()
    Image.fromarray((np.clip(x, 0, 1) * 255).round().astype(np.uint8)).save(
        buf, "JPEG", quality=int(quality)
    )
    buf.seek(0)
    return np.asarray(Image.open(buf), np.float64) / 255.0
