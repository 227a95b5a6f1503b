"""Calibrating the identifier's reference probability on validation films: a temperature
(Guo et al. 2017) fitted to the vertebrae the whole stack finds, then the naming threshold
chosen as the lowest whose names are wrong at most a target share of the time.

The films are phantoms of a validation seed, under the training appearance families (the
held-out families are kept for testing and never calibrated on).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pacsnode.analysis.identify import CLASSES
from pacsnode.analysis.naming import NamingInputs

__all__ = ["CalibrationFilm", "choose_threshold", "fit_temperature", "with_temperature"]

MIN_THRESHOLD = 0.5
"""The lowest threshold the calibration may choose: a chain is named only from a reference
the calibrated identifier holds more likely than not. On the films of the training families
a lower one can name without a wrong name (an in-family segmenter that keeps C2's dens
whole made 0.30 safe there), but a name given on a minority probability is what goes wrong
first on an appearance the networks never saw."""

THRESHOLDS = tuple(round(t, 3) for t in np.arange(MIN_THRESHOLD, 0.995, 0.01))


@dataclass(frozen=True)
class CalibrationFilm:
    """One film's naming inputs (at temperature 1) and the true label of each vertebra of
    its chain (None where the stack's vertebra matched no annotated one)."""

    inputs: NamingInputs
    truth: Sequence[str | None]
    case_id: str = ""


def _class_of(label: str) -> int:
    return CLASSES.index(label) if label in CLASSES else 0


def fit_temperature(log_probs: NDArray[np.floating], labels: Sequence[str]) -> float:
    """The temperature T minimising the negative log-likelihood of ``labels`` under
    softmax(log_probs / T), searched on a log grid from 0.25 to 8 and refined."""
    z = np.asarray(log_probs, np.float64)
    y = np.array([_class_of(label) for label in labels])
    if len(y) == 0:
        return 1.0

    def nll(t: float) -> float:
        s = z / t
        s = s - s.max(axis=1, keepdims=True)
        logp = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
        return float(-logp[np.arange(len(y)), y].mean())

    grid = np.exp(np.linspace(math.log(0.25), math.log(8.0), 61))
    best = float(grid[int(np.argmin([nll(t) for t in grid]))])
    fine = np.linspace(best / 1.06, best * 1.06, 21)
    return float(fine[int(np.argmin([nll(t) for t in fine]))])


def with_temperature(prob: NDArray[np.floating], t: float) -> NDArray[np.float64]:
    """Probabilities given at temperature 1, rescaled to temperature ``t``."""
    z = np.log(np.clip(np.asarray(prob, np.float64), 1e-12, 1.0)) / t
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _sweep_one(films: Sequence[CalibrationFilm], t: float, threshold: float) -> dict[str, Any]:
    named = wrong = right = matched = 0
    wrong_films: list[str] = []
    for film in films:
        inputs = film.inputs
        if len(inputs.probabilities):
            inputs = replace(inputs, probabilities=with_temperature(inputs.probabilities, t))
        names, _, _ = inputs.name(threshold)
        film_wrong = 0
        for given, true in zip(names, film.truth, strict=True):
            if true is None:
                continue
            matched += 1
            if given.identified:
                named += 1
                film_wrong += given.label != true
                right += given.label == true
        wrong += film_wrong
        if film_wrong:
            wrong_films.append(film.case_id)
    return {
        "threshold": threshold,
        "matched": matched,
        "named": named,
        "wrong": wrong,
        "identification": right / max(matched, 1),
        "wrong_name_rate": wrong / named if named else 0.0,
        "films_with_wrong_names": wrong_films,
    }


def choose_threshold(
    films: Sequence[CalibrationFilm],
    temperature: float,
    *,
    max_wrong_rate: float = 0.01,
    thresholds: Sequence[float] = THRESHOLDS,
) -> tuple[float, list[dict[str, Any]]]:
    """The lowest threshold whose wrong-name rate over the films is at most
    ``max_wrong_rate`` (the most names for that safety), and the whole sweep. When no
    threshold is that safe, the one with the lowest wrong-name rate (the highest such)."""
    sweep = [_sweep_one(films, temperature, th) for th in thresholds]
    safe = [s for s in sweep if s["wrong_name_rate"] <= max_wrong_rate]
    if safe:
        return float(safe[0]["threshold"]), sweep
    lowest = min(s["wrong_name_rate"] for s in sweep)
    return float(max(s["threshold"] for s in sweep if s["wrong_name_rate"] == lowest)), sweep
