"""The whole stack scored against annotated films: vertebra detection (IoU > 0.5), Dice
per vertebra, identification, and the two paths against their ensemble (Dice per vertebra
label, panoptic quality), as VertXNet compares them; and, on phantoms, the ER read-out
(alignment, slips, soft tissue, critical findings) against the truth's.

Masks are compared on the film's own pixel grid, each pair on the crop of their joint
bounding box.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pacsnode.analysis.readout import FLAG_KINDS, ReadOut, shared_step
from pacsnode.analysis.stack import Stack
from pacsnode.training.annotations import AnnotatedFilm, phantom_film
from pacsnode.training.metrics import cohen_kappa
from pacsnode.training.phantom.geometry import polygon_mask

__all__ = [
    "FilmScore",
    "Matched",
    "ReadoutScore",
    "compare_readout",
    "match_film",
    "match_masks",
    "readout_figures",
    "regression_figures",
    "regression_readout",
    "score_film",
    "summarise",
]

IOU_MATCH = 0.5

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class _Crop:
    """A mask kept as its bounding box (r0, r1, c0, c1) and the crop inside it."""

    box: Box
    crop: NDArray[np.bool_]

    @classmethod
    def of(cls, mask: NDArray[np.bool_]) -> _Crop | None:
        rows, cols = np.nonzero(mask)
        if rows.size == 0:
            return None
        box = (int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1)
        return cls(box, mask[box[0] : box[1], box[2] : box[3]].copy())

    @property
    def area(self) -> int:
        return int(self.crop.sum())

    def within(self, box: Box) -> NDArray[np.bool_]:
        r0, r1, c0, c1 = box
        out = np.zeros((r1 - r0, c1 - c0), bool)
        a0, a1, b0, b1 = self.box
        out[a0 - r0 : a1 - r0, b0 - c0 : b1 - c0] = self.crop
        return out


def _overlap(a: _Crop, b: _Crop) -> tuple[int, int]:
    """(intersection, union) pixel counts."""
    r0, r1 = min(a.box[0], b.box[0]), max(a.box[1], b.box[1])
    c0, c1 = min(a.box[2], b.box[2]), max(a.box[3], b.box[3])
    if max(a.box[0], b.box[0]) >= min(a.box[1], b.box[1]) or max(a.box[2], b.box[2]) >= min(
        a.box[3], b.box[3]
    ):
        return 0, a.area + b.area
    box = (r0, r1, c0, c1)
    ma, mb = a.within(box), b.within(box)
    inter = int((ma & mb).sum())
    return inter, a.area + b.area - inter


@dataclass(frozen=True)
class Matched:
    """Prediction-to-truth pairs at IoU > 0.5 (each used once, best IoU first)."""

    pairs: list[tuple[int, int, float, float]]
    """(prediction index, truth index, IoU, Dice)."""
    predicted: int
    truth: int

    @property
    def tp(self) -> int:
        return len(self.pairs)

    @property
    def panoptic_quality(self) -> float:
        fp, fn = self.predicted - self.tp, self.truth - self.tp
        denominator = self.tp + fp / 2 + fn / 2
        return sum(p[2] for p in self.pairs) / denominator if denominator else 1.0


def match_masks(
    predicted: Sequence[NDArray[np.bool_] | _Crop | None], truth: Sequence[_Crop | None]
) -> Matched:
    """Pairs at IoU > 0.5 between masks (or their crops) and the true crops."""
    preds = [m if m is None or isinstance(m, _Crop) else _Crop.of(m) for m in predicted]
    candidates = []
    for i, p in enumerate(preds):
        for j, t in enumerate(truth):
            if p is None or t is None:
                continue
            inter, union = _overlap(p, t)
            if union and inter / union > IOU_MATCH:
                dice = 2 * inter / (p.area + t.area)
                candidates.append((inter / union, i, j, dice))
    used_p, used_t, pairs = set(), set(), []
    for iou, i, j, dice in sorted(candidates, reverse=True):
        if i in used_p or j in used_t:
            continue
        used_p.add(i)
        used_t.add(j)
        pairs.append((i, j, iou, dice))
    return Matched(pairs, len(predicted), sum(t is not None for t in truth))


def match_film(predicted: Sequence[NDArray[np.bool_]], film: AnnotatedFilm) -> Matched:
    """The stack's masks matched to a film's annotated outlines (IoU > 0.5)."""
    shape = film.image.shape
    truth = [_Crop.of(polygon_mask(np.asarray(v.outline), shape)) for v in film.vertebrae]
    return match_masks(predicted, truth)


@dataclass
class FilmScore:
    """One film's scores."""

    case_id: str
    region: str | None
    truth: int
    found: Matched
    labels: list[tuple[str | None, str, bool]] = field(default_factory=list)
    """Per matched vertebra: (true label, given label, named from a reference)."""
    paths: dict[str, Matched] = field(default_factory=dict)
    path_dice: dict[str, dict[str, float]] = field(default_factory=dict)
    """Path -> true label -> Dice of the path's best mask for that vertebra (0 if none)."""
    reference: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    region_overlap: tuple[int, int, int, int] | None = None
    """Localised spine region against the true one, film pixels: (true positives, false
    positives, false negatives, true negatives); None without a true region."""
    grades: list[tuple[int, int | None]] = field(default_factory=list)
    """Per matched vertebra with a true Genant grade: (true grade, called grade or None)."""
    abstention: str | None = None
    readout: ReadoutScore | None = None
    """The read-out against the truth's; None where the film has no read-out truth."""


def _best_dice(masks: Sequence[_Crop | None], truth: _Crop) -> float:
    best = 0.0
    for p in masks:
        if p is None:
            continue
        inter, _ = _overlap(p, truth)
        best = max(best, 2 * inter / (p.area + truth.area))
    return best


def score_film(
    stack: Stack,
    film: AnnotatedFilm,
    region: str | None = None,
    *,
    truth: dict[str, Any] | None = None,
    references: frozenset[str] | None = None,
) -> FilmScore:
    """Run the stack on one annotated film and score it.

    ``truth`` is the phantom's ground truth, when there is one: it adds the spine region
    and the Genant grades to the score. ``references`` are the reference vertebrae the
    film's header allows (default: both, as for a film whose header names no region)."""
    kwargs: dict[str, Any] = {"spacing_mm": film.spacing_mm}
    if references is not None:
        kwargs["references"] = references
    result = stack.read(film.image, trace=True, **kwargs)
    shape = film.image.shape
    true_masks = [_Crop.of(polygon_mask(np.asarray(v.outline), shape)) for v in film.vertebrae]
    reading = result.reading
    predicted = [v.mask for v in reading.vertebrae] if reading else []
    found = match_masks(predicted, true_masks)
    score = FilmScore(film.case_id, region, found.truth, found, seconds=result.seconds)
    score.reference = reading.reference if reading else None
    score.abstention = reading.abstention if reading else None
    for i, j, _, _ in found.pairs:
        v = reading.vertebrae[i]  # type: ignore[union-attr]
        score.labels.append((film.vertebrae[j].label, v.label, v.identified))
    if truth is not None:
        from pacsnode.training.localiser.data import spine_region_mask

        true_region = spine_region_mask(truth, shape)
        found_region = result.localisation.mask
        score.region_overlap = (
            int((found_region & true_region).sum()),
            int((found_region & ~true_region).sum()),
            int((~found_region & true_region).sum()),
            int((~found_region & ~true_region).sum()),
        )
        by_label = {v["label"]: v for v in truth.get("vertebrae", [])}
        for i, j, _, _ in found.pairs:
            true_v = by_label.get(str(film.vertebrae[j].label))
            if true_v is None:
                continue
            finding = reading.vertebrae[i].finding  # type: ignore[union-attr]
            score.grades.append(
                (int(true_v["genant_grade"]), None if finding is None else int(finding.grade))
            )
        if "readout" in truth:
            matched = {
                reading.vertebrae[i].label: str(film.vertebrae[j].label)  # type: ignore[union-attr]
                for i, j, _, _ in found.pairs
            }
            score.readout = compare_readout(
                reading.readout if reading else None,
                truth["readout"],
                matched,
                float(truth["pixel_spacing_mm"]),
            )
    paths = dict(result.paths or {"semantic": [], "instance": []})
    paths["ensemble"] = predicted
    for name, full in paths.items():
        masks = [_Crop.of(m) for m in full]
        score.paths[name] = match_masks(masks, true_masks)
        score.path_dice[name] = {
            str(film.vertebrae[j].label): _best_dice(masks, t)
            for j, t in enumerate(true_masks)
            if t is not None
        }
    return score


def _mean_sd(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"mean": float("nan"), "sd": float("nan"), "n": 0}
    sd = statistics.pstdev(values) if len(values) > 1 else 0.0
    return {"mean": float(np.mean(values)), "sd": float(sd), "n": len(values)}


def summarise(scores: Iterable[FilmScore]) -> dict[str, Any]:
    """Totals over films: detection, Dice, identification, and the paths compared."""
    scores = list(scores)
    tp = sum(s.found.tp for s in scores)
    predicted = sum(s.found.predicted for s in scores)
    truth = sum(s.found.truth for s in scores)
    dices = [d for s in scores for *_, d in s.found.pairs]
    named = [
        (t, g, ident)
        for s in scores
        if s.region in ("cervical", "lumbar")
        for t, g, ident in s.labels
        if t is not None
    ]
    per_region: dict[str, dict[str, Any]] = {}
    for region in sorted({s.region for s in scores if s.region}):
        part = [s for s in scores if s.region == region]
        labels = [(t, g) for s in part for t, g, _ in s.labels if t is not None]
        per_region[region] = {
            "films": len(part),
            "recall": sum(s.found.tp for s in part) / max(sum(s.found.truth for s in part), 1),
            "precision": sum(s.found.tp for s in part)
            / max(sum(s.found.predicted for s in part), 1),
            "dice": _mean_sd([d for s in part for *_, d in s.found.pairs])["mean"],
            "identification_accuracy": sum(t == g for t, g in labels) / max(len(labels), 1),
            "reference_found": sum(s.reference is not None for s in part) / len(part),
        }
    paths: dict[str, Any] = {}
    for name in ("semantic", "instance", "ensemble"):
        by_label: dict[str, list[float]] = defaultdict(list)
        for s in scores:
            for label, dice in s.path_dice.get(name, {}).items():
                by_label[label].append(dice)
        matched = [s.paths[name] for s in scores if name in s.paths]
        m_tp = sum(m.tp for m in matched)
        m_fp = sum(m.predicted - m.tp for m in matched)
        m_fn = sum(m.truth - m.tp for m in matched)
        iou = sum(p[2] for m in matched for p in m.pairs)
        paths[name] = {
            "recall": m_tp / max(m_tp + m_fn, 1),
            "precision": m_tp / max(m_tp + m_fp, 1),
            "panoptic_quality": iou / max(m_tp + m_fp / 2 + m_fn / 2, 1e-9),
            "dice_all_vertebrae": _mean_sd([d for v in by_label.values() for d in v]),
            "dice_by_label": {k: _mean_sd(v) for k, v in sorted(by_label.items())},
        }
    stages: dict[str, list[float]] = defaultdict(list)
    for s in scores:
        for stage, seconds in s.seconds.items():
            stages[stage].append(seconds)
    return {
        "films": len(scores),
        "vertebrae": truth,
        "naming": naming_figures(scores),
        "region": region_figures(scores),
        "fractures": fracture_figures(scores),
        "readout": readout_figures(scores),
        "recall": tp / max(truth, 1),
        "precision": tp / max(predicted, 1),
        "dice": _mean_sd(dices),
        "identification": {
            "films": "cervical and lumbar",
            "vertebrae": len(named),
            "accuracy": sum(t == g for t, g, _ in named) / max(len(named), 1),
            "named_from_reference": sum(i for *_, i in named) / max(len(named), 1),
        },
        "by_region": per_region,
        "paths": paths,
        "stage_seconds_median": {k: float(np.median(v)) for k, v in stages.items()},
    }


def naming_figures(scores: Sequence[FilmScore]) -> dict[str, Any]:
    """How the matched vertebrae were named, by region and over cervical and lumbar films.

    ``wrong_name_rate`` is the share of the anatomical names given that are wrong (named
    vertebrae whose name is not their true label, over all named vertebrae), apart from
    ``identification`` (right names over all matched vertebrae, unnamed ones counting as
    not identified)."""

    def figures(part: Sequence[FilmScore]) -> dict[str, Any]:
        labels = [(t, g, named) for s in part for t, g, named in s.labels if t is not None]
        given = [(t, g) for t, g, named in labels if named]
        wrong = sum(t != g for t, g in given)
        return {
            "films": len(part),
            "matched": len(labels),
            "named": len(given),
            "wrong_names": wrong,
            "identification": sum(t == g and named for t, g, named in labels) / max(len(labels), 1),
            "wrong_name_rate": wrong / len(given) if given else 0.0,
            "films_named": sum(s.reference is not None for s in part),
            "films_abstained": sum(s.abstention is not None for s in part),
        }

    out = {
        "cervical_and_lumbar": figures([s for s in scores if s.region in ("cervical", "lumbar")])
    }
    out["all_films"] = figures(scores)
    for region in sorted({s.region for s in scores if s.region}):
        out[region] = figures([s for s in scores if s.region == region])
    return out


def region_figures(scores: Sequence[FilmScore]) -> dict[str, Any]:
    """Spine region sensitivity and specificity on the film's pixels, mean over films (as
    the localisation paper reports them), where the films carry a true region."""
    sens, spec = [], []
    for s in scores:
        if s.region_overlap is None:
            continue
        tp, fp, fn, tn = s.region_overlap
        sens.append(tp / max(tp + fn, 1))
        spec.append(tn / max(tn + fp, 1))
    return {"films": len(sens), "sensitivity": _mean_sd(sens), "specificity": _mean_sd(spec)}


def fracture_figures(scores: Sequence[FilmScore]) -> dict[str, Any]:
    """False moderate or severe fracture calls: Genant >= 2 called on a vertebra whose
    true grade is 0, over the matched normal vertebrae that were measured; and the
    sensitivity for true grade >= 2."""
    pairs = [p for s in scores for p in s.grades]
    normal = [called for true, called in pairs if true == 0 and called is not None]
    severe = [called for true, called in pairs if true >= 2 and called is not None]
    return {
        "normal_measured": len(normal),
        "false_grade2plus": sum(c >= 2 for c in normal),
        "false_grade2plus_rate": sum(c >= 2 for c in normal) / max(len(normal), 1),
        "grade2plus_measured": len(severe),
        "grade2plus_sensitivity": sum(c >= 2 for c in severe) / max(len(severe), 1),
    }


@dataclass(frozen=True)
class ReadoutScore:
    """One film's read-out against its truth, every length in mm.

    Attributes
    ----------
    available
        The stack made a read-out; when not, every other field is empty.
    in_pixels
        Its lengths were in pixels (no spacing), scaled here by the film's true spacing.
    cobb
        Span ("C2-C7") of each true angle -> (true degrees, read degrees or None).
    steps
        Per read pair of bodies matched to an adjacent true pair: (true level, true
        (anterior, posterior), read (anterior, posterior)).
    slips
        Per matched pair: (true level, true percent, read percent, true Meyerding grade,
        read grade).
    soft_tissue
        Level ("C2", "C6") of each true thickness -> (true mm, read mm or None).
    flags
        Each kind of :data:`~pacsnode.analysis.readout.FLAG_KINDS` -> (in the truth, in
        the read-out), at film level.
    unmatched_pairs
        Read pairs whose bodies do not match an adjacent true pair.
    """

    available: bool
    in_pixels: bool = False
    cobb: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    steps: list[tuple[str, tuple[float, float], tuple[float, float]]] = field(default_factory=list)
    slips: list[tuple[str, float, float, int, int]] = field(default_factory=list)
    soft_tissue: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    flags: dict[str, tuple[bool, bool]] = field(default_factory=dict)
    unmatched_pairs: int = 0


def compare_readout(
    readout: ReadOut | None,
    truth: Mapping[str, Any],
    matched: Mapping[str, str],
    spacing_mm: float,
) -> ReadoutScore:
    """A film's read-out against its truth (a phantom's ``truth["readout"]``).

    Parameters
    ----------
    readout
        What the stack read; None: not available.
    truth
        The true read-out, lengths in mm.
    matched
        Label the stack gave -> true label, for the vertebrae matched to the truth's (IoU
        > 0.5). Step-offs and slips are compared on read pairs whose two bodies match an
        adjacent true pair; Cobb angles and soft tissue by the names the read-out carries.
    spacing_mm
        The film's true pixel spacing, to scale a read-out made in pixels.
    """
    if readout is None:
        return ReadoutScore(available=False)
    in_pixels = readout.unit != "mm"
    scale = spacing_mm if in_pixels else 1.0
    read_cobb = {c.span: c.degrees for c in readout.cobb}
    cobb = {c["span"]: (float(c["degrees"]), read_cobb.get(c["span"])) for c in truth["cobb"]}
    true_steps = {(s["upper"], s["lower"]): s for s in truth["step_offs"]}
    true_slips = {(s["upper"], s["lower"]): s for s in truth["slips"]}
    steps, unmatched = [], 0
    for step in readout.step_offs:
        pair = (matched.get(step.upper), matched.get(step.lower))
        t = true_steps.get(pair)  # type: ignore[arg-type]
        if t is None:
            unmatched += 1
            continue
        steps.append(
            (
                f"{pair[0]}/{pair[1]}",
                (float(t["anterior"]), float(t["posterior"])),
                (step.anterior * scale, step.posterior * scale),
            )
        )
    slips = []
    for slip in readout.slips:
        pair = (matched.get(slip.upper), matched.get(slip.lower))
        t = true_slips.get(pair)  # type: ignore[arg-type]
        if t is not None:
            slips.append(
                (
                    f"{pair[0]}/{pair[1]}",
                    float(t["percent"]),
                    float(slip.percent),
                    int(t["grade"]),
                    int(slip.grade),
                )
            )
    read_soft = {t.level: t.thickness * scale for t in readout.soft_tissue}
    soft = {
        t["level"]: (float(t["thickness"]), read_soft.get(t["level"])) for t in truth["soft_tissue"]
    }
    flags = {
        kind: (bool(truth["flags"].get(kind)), bool(readout.flagged((kind,))))
        for kind in FLAG_KINDS
    }
    return ReadoutScore(True, in_pixels, cobb, steps, slips, soft, flags, unmatched)


def _errors(values: Sequence[float]) -> dict[str, float]:
    """Mean and 95th percentile of absolute errors; nan without any."""
    if not values:
        return {"mean": float("nan"), "p95": float("nan"), "n": 0}
    a = np.abs(np.asarray(values, np.float64))
    return {"mean": float(a.mean()), "p95": float(np.percentile(a, 95)), "n": len(values)}


def _kappa(pairs: Sequence[tuple[int, int]], n_grades: int) -> float:
    """Linearly weighted Cohen's kappa of (true, read) grades; nan without pairs."""
    if not pairs:
        return float("nan")
    true, read = zip(*pairs, strict=True)
    return cohen_kappa(true, read, weights="linear", n_grades=n_grades)


def readout_figures(scores: Sequence[FilmScore]) -> dict[str, Any]:
    """The read-out against the truth over the films that have both.

    Cobb: per span, the share of the films whose truth has the angle on which the read-out
    carries it too, and the mean absolute error (degrees) there. Step-offs (mm, both lines
    pooled and each) and slips (percentage points): mean and 95th percentile absolute
    error on matched adjacent pairs, and Meyerding's grade by linearly weighted kappa.
    Soft tissue: per level, the share read and the errors (mm). Flags: film-level
    sensitivity and specificity per kind, with the counts. Genant's grade (linearly
    weighted kappa over the matched vertebrae graded) needs no read-out and is always
    given.
    """
    genant = [(t, c) for s in scores for t, c in s.grades if c is not None]
    out: dict[str, Any] = {"genant": {"vertebrae": len(genant), "linear_kappa": _kappa(genant, 4)}}
    with_truth = [s.readout for s in scores if s.readout is not None]
    read = [r for r in with_truth if r.available]
    out["films_with_truth"] = len(with_truth)
    out["films_read"] = len(read)
    out["available"] = bool(read)
    if not read:
        out["note"] = "not available: the stack made no read-out on these films"
        return out
    out["films_read_in_pixels"] = sum(r.in_pixels for r in read)
    cobb: dict[str, Any] = {}
    for span in sorted({k for r in read for k in r.cobb}):
        pairs = [r.cobb[span] for r in read if span in r.cobb]
        carried = [abs(got - true) for true, got in pairs if got is not None]
        cobb[span] = {
            "films": len(pairs),
            "carried": len(carried),
            "carried_fraction": len(carried) / len(pairs),
            "mae_degrees": float(np.mean(carried)) if carried else float("nan"),
        }
    out["cobb"] = cobb
    steps = [(t, g) for r in read for _, t, g in r.steps]
    anterior = [g[0] - t[0] for t, g in steps]
    posterior = [g[1] - t[1] for t, g in steps]
    shift = [shared_step(*g) - shared_step(*t) for t, g in steps]
    out["step_offs_mm"] = {
        "pairs": len(steps),
        "unmatched_read_pairs": sum(r.unmatched_pairs for r in read),
        "step_off": _errors(shift),
        "both_lines": _errors(anterior + posterior),
        "anterior": _errors(anterior),
        "posterior": _errors(posterior),
    }
    slips = [s for r in read for s in r.slips]
    out["slips"] = {
        "pairs": len(slips),
        "percent_points": _errors([got - true for _, true, got, _, _ in slips]),
        "meyerding_linear_kappa": _kappa([(t, g) for *_, t, g in slips], 6),
    }
    soft: dict[str, Any] = {}
    for level in sorted({k for r in read for k in r.soft_tissue}):
        pairs = [r.soft_tissue[level] for r in read if level in r.soft_tissue]
        got = [g - t for t, g in pairs if g is not None]
        soft[level] = {"films": len(pairs), "read": len(got), "error_mm": _errors(got)}
    out["soft_tissue"] = soft
    flags: dict[str, Any] = {}
    for kind in FLAG_KINDS:
        calls = [r.flags[kind] for r in read if kind in r.flags]
        tp = sum(t and g for t, g in calls)
        fn = sum(t and not g for t, g in calls)
        fp = sum(g and not t for t, g in calls)
        tn = sum(not t and not g for t, g in calls)
        flags[kind] = {
            "tp": tp,
            "fn": fn,
            "fp": fp,
            "tn": tn,
            "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
            "specificity": tn / (tn + fp) if tn + fp else float("nan"),
        }
    out["flags"] = flags
    return out


def regression_figures(
    stack: Stack,
    *,
    seed: int,
    start: int,
    n: int,
    size_px: int | None,
    appearance: str = "classic",
) -> dict[str, Any]:
    """The figures a regression run records and checks: detection, Dice, naming (with the
    header's region as the node reads it), region, the labels given and the read-out's
    errors against the truth (:func:`regression_readout`), on phantoms ``seed``-``start`` …
    of the given size and appearance."""
    from pacsnode.analysis.naming import references_for
    from pacsnode.training.phantom import make_phantom
    from pacsnode.training.phantom.dicom import body_part_examined

    scores = []
    labels = []
    for index in range(start, start + n):
        phantom = make_phantom(seed, index, size_px=size_px, appearance=appearance)
        region = phantom.scene.region
        score = score_film(
            stack,
            phantom_film(phantom),
            region,
            truth=phantom.truth,
            references=references_for([body_part_examined(region)]),
        )
        scores.append(score)
        labels.append([given for _, given, _ in score.labels])
    summary = summarise(scores)
    naming = summary["naming"]["cervical_and_lumbar"]
    return {
        "recall": summary["recall"],
        "precision": summary["precision"],
        "dice": summary["dice"]["mean"],
        "identification_accuracy": naming["identification"],
        "wrong_name_rate": naming["wrong_name_rate"],
        "region_sensitivity": summary["region"]["sensitivity"]["mean"],
        "region_specificity": summary["region"]["specificity"]["mean"],
        "labels": labels,
        "readout": regression_readout(summary["readout"]),
    }


def regression_readout(readout: Mapping[str, Any]) -> dict[str, Any]:
    """The read-out figures a regression run holds (from :func:`readout_figures`): films
    read, step-off pairs and the mean step-off error (mm), the mean slip error (percentage
    points), and the prevertebral soft-tissue readings and their mean error (mm); NaN
    where there is nothing to measure."""
    if not readout.get("available"):
        return {"films_read": 0}
    soft = readout["soft_tissue"].values()
    errors = [(v["read"], v["error_mm"]["mean"]) for v in soft if v["read"]]
    read = sum(n for n, _ in errors)
    return {
        "films_read": readout["films_read"],
        "step_off_pairs": readout["step_offs_mm"]["pairs"],
        "step_off_error_mm": readout["step_offs_mm"]["step_off"]["mean"],
        "slip_error_points": readout["slips"]["percent_points"]["mean"],
        "soft_tissue_read": read,
        "soft_tissue_error_mm": sum(n * e for n, e in errors) / read if read else float("nan"),
    }
