"""Semantic-path helpers: CLAHE makes two windows of one film alike; components split."""

from __future__ import annotations

import numpy as np
import pytest

from pacsnode.analysis.segment import candidate_masks, contrast_normalise


def test_clahe_makes_differently_windowed_films_alike() -> None:
    rng = np.random.default_rng(3)
    film = np.clip(rng.normal(0.5, 0.1, (128, 96)), 0, 1)
    film[40:80, 30:60] += 0.2
    dull = 0.4 + 0.2 * np.clip(film, 0, 1)  # the same film, a narrow window
    a, b = contrast_normalise(np.clip(film, 0, 1)), contrast_normalise(dull)
    assert a.dtype == np.float32 and a.shape == film.shape
    assert a.min() >= 0.0 and a.max() <= 1.0
    before = np.abs(np.clip(film, 0, 1) - dull).mean()
    assert np.abs(a - b).mean() < 0.5 * before
    assert b.std() > 2 * dull.std()  # the narrow window is stretched


def test_candidates_are_components_largest_first() -> None:
    mask = np.zeros((20, 20), bool)
    mask[1:4, 1:4] = True  # 9
    mask[10:16, 10:16] = True  # 36
    mask[18, 0] = True  # 1
    mask[4, 4] = True  # touches the first diagonally: 8-connected, joins it
    parts = candidate_masks(mask, min_area=2)
    assert [int(p.sum()) for p in parts] == [36, 10]
    assert candidate_masks(np.zeros((5, 5), bool)) == []


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="2-D"):
        contrast_normalise(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="2-D"):
        candidate_masks(np.zeros(5, bool))
