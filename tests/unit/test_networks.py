"""Shapes and sizes of the localisation networks (case table in the style of MONAI)."""

from __future__ import annotations

import pytest
import torch

from pacsnode.analysis.networks import build_network, parameter_count

# (architecture, overrides, input side, parameter count)
CASES = [
    ("fcn", {}, 100, 1_177_922),
    ("deconvnet", {}, 100, 4_152_892),
    ("unet", {}, 100, 5_906_342),
    ("fcn", {"width": 8}, 64, None),
    ("deconvnet", {"width": 8}, 64, None),
    ("unet", {"width": 8, "depth": 3}, 64, None),
]


@pytest.mark.parametrize(("arch", "overrides", "side", "params"), CASES)
def test_network_shape_and_size(arch: str, overrides: dict, side: int, params: int | None) -> None:
    net = build_network(arch, **overrides).eval()
    with torch.inference_mode():
        out = net(torch.zeros(2, 1, side, side))
    assert tuple(out.shape) == (2, 2, side, side)
    if params is not None:
        assert parameter_count(net) == params


def test_paper_sizes_are_near_the_paper() -> None:
    paper = {"fcn": 1_199_042, "deconvnet": 4_104_194, "unet": 6_003_842}
    for arch, count in paper.items():
        assert abs(parameter_count(build_network(arch)) - count) / count < 0.05


def test_unknown_architecture() -> None:
    with pytest.raises(ValueError, match="unknown architecture"):
        build_network("resnet")
