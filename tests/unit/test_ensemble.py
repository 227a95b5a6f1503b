"""VertXNet's ensemble rules on toy masks: agreement gives the union, an instance mask
inside an over-merged blob replaces it, leftovers are kept by area, order follows the spine."""

from __future__ import annotations

import numpy as np
import pytest

from pacsnode.analysis.ensemble import (
    Origin,
    agreement,
    ensemble,
    instance_coverage,
    sort_along_spine,
)

SHAPE = (100, 40)


def box(r0: int, r1: int, c0: int = 10, c1: int = 30) -> np.ndarray:
    mask = np.zeros(SHAPE, bool)
    mask[r0:r1, c0:c1] = True
    return mask


def test_delta_and_delta_m_by_hand() -> None:
    a, b = box(0, 10), box(5, 10)  # 200 and 100 pixels, overlap 100
    assert agreement(a, b) == pytest.approx(100 / 200)
    assert instance_coverage(a, b) == 1.0 and instance_coverage(b, a) == 0.5
    assert agreement(np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)) == 0.0


def test_masks_in_agreement_give_their_union() -> None:
    semantic, instance = box(10, 20), box(11, 21)  # δ = 180/200 = 0.9
    [only] = ensemble([semantic], [instance])
    assert only.origin is Origin.AGREEMENT
    assert np.array_equal(only.mask, semantic | instance)


def test_an_over_merged_blob_is_replaced_by_the_instance_masks_inside_it() -> None:
    blob = box(10, 40)  # two vertebrae fused by the semantic path
    upper, lower = box(10, 24), box(26, 40)
    single_u, single_m = box(50, 64), box(50, 64)
    result = ensemble([blob, single_u], [upper, lower, single_m])
    assert [r.origin for r in result] == [
        Origin.INSTANCE_IN_BLOB,
        Origin.INSTANCE_IN_BLOB,
        Origin.AGREEMENT,
    ]
    assert np.array_equal(result[0].mask, upper) and np.array_equal(result[1].mask, lower)
    # The fused blob (600 px) is far outside the band around 280 px: dropped.
    assert all(r.area < 400 for r in result)


def test_leftovers_are_kept_only_within_the_area_band() -> None:
    pairs = [(box(r, r + 10), box(r, r + 10)) for r in (0, 15)]
    accepted_u = [u for u, _ in pairs]
    accepted_m = [m for _, m in pairs]
    accepted_m[1] = box(15, 26)  # 220 px against 200: areas 200 and 220 -> mu 210, sd 10
    missed_by_instance = box(30, 40, 10, 31)  # 210 px, inside (190, 230)
    too_small = box(45, 50)  # 100 px
    result = ensemble([*accepted_u, missed_by_instance, too_small], accepted_m, lam=2.0)
    origins = [r.origin for r in result]
    assert origins == [Origin.AGREEMENT, Origin.AGREEMENT, Origin.SEMANTIC_LEFTOVER]
    # With lambda 0 the band is empty: nothing left over survives.
    strict = ensemble([*accepted_u, missed_by_instance], accepted_m, lam=0.0)
    assert [r.origin for r in strict] == [Origin.AGREEMENT, Origin.AGREEMENT]


def test_result_is_sorted_along_the_spine_axis() -> None:
    top, bottom = box(0, 10, 0, 10), box(50, 60, 30, 40)
    result = ensemble([bottom, top], [bottom, top])
    assert [int(np.nonzero(r.mask)[0].min()) for r in result] == [0, 50]
    # Along an axis pointing up the film, the order reverses.
    flipped = sort_along_spine(result, (0.0, -1.0))
    assert [int(np.nonzero(r.mask)[0].min()) for r in flipped] == [50, 0]


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="eta"):
        ensemble([], [], eta=1.0)
    with pytest.raises(ValueError, match="lambda"):
        ensemble([], [], lam=-1.0)
    with pytest.raises(ValueError, match="zero vector"):
        sort_along_spine([], (0.0, 0.0))


def test_a_leftover_over_an_accepted_vertebra_is_not_a_missed_one() -> None:
    pairs = [box(0, 9), box(14, 24), box(28, 39)]  # agreeing vertebrae: 180, 200, 220 px
    lost_u = box(29, 37, 0, 30)  # 240 px blob, 160 of them on the third vertebra
    lost_m = box(56, 66)  # an instance mask nobody else saw: a missed vertebra
    result = ensemble([*pairs, lost_u], [*pairs, lost_m], lam=3.0)
    assert [r.origin for r in result] == [Origin.AGREEMENT] * 3 + [Origin.INSTANCE_LEFTOVER]


def test_of_two_leftovers_for_one_body_the_instance_mask_is_kept() -> None:
    pairs = [box(0, 9), box(14, 24), box(28, 39)]
    blob = box(42, 50, 0, 22)  # 176 px; 72 of them on the instance mask (δ, δ_m < η)
    inst = box(44, 54, 10, 30)  # 200 px
    result = ensemble([*pairs, blob], [*pairs, inst], lam=3.0)
    assert len(result) == 4 and result[-1].origin is Origin.INSTANCE_LEFTOVER
    assert np.array_equal(result[-1].mask, inst)
