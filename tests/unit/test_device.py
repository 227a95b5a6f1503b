"""The device setting reaches every network of the stack, and a CUDA device that torch
cannot use stops the load with a message that says what to do."""

from __future__ import annotations

import pytest
import torch

from pacsnode.analysis import device as device_module
from pacsnode.analysis import stack as stack_module
from pacsnode.analysis.device import pick_device
from pacsnode.analysis.stack import Stack
from pacsnode.config.settings import SHIPPED_MODELS_DIR
from pacsnode.errors import ModelError


def test_auto_is_the_cpu_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu")
    assert pick_device(None) == torch.device("cpu")
    assert pick_device("cpu") == torch.device("cpu")


def test_auto_is_the_first_gpu_with_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == torch.device("cuda")


def test_cuda_on_a_cpu_build_says_to_install_a_cuda_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(ModelError, match=r"built without CUDA.*install\.sh --cuda.*auto"):
        pick_device("cuda")


def test_cuda_without_a_visible_gpu_points_at_the_driver_and_the_unit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelError, match=r"sees no CUDA device.*nvidia-smi.*/dev/nvidia"):
        pick_device("cuda:0")


def test_a_cuda_index_past_the_last_gpu_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert pick_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ModelError, match="1 CUDA device"):
        pick_device("cuda:1")


@pytest.fixture(scope="module")
def placed() -> tuple[list[tuple[str, torch.device]], Stack]:
    """A stack loaded with a device string, and each network's placement on the way."""
    calls: list[tuple[str, torch.device]] = []
    real = device_module.place

    def recording(network: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        calls.append((type(network).__name__, device))
        return real(network, device)

    patch = pytest.MonkeyPatch()
    for module in ("localise", "detect", "identify", "orient"):
        patch.setattr(f"pacsnode.analysis.{module}.place", recording)
    try:
        stack = Stack.load(SHIPPED_MODELS_DIR, device="cpu")
    finally:
        patch.undo()
    return calls, stack


def test_every_network_of_the_stack_is_put_on_the_device(
    placed: tuple[list[tuple[str, torch.device]], Stack],
) -> None:
    networks, stack = placed
    assert len(networks) == len(stack_module.MODEL_FILES) == 6
    assert {device for _, device in networks} == {torch.device("cpu")}
    assert stack.device == "cpu"
    for wrapper in (
        stack.localiser,
        stack.detector,
        stack.semantic,
        stack.segmenter,
        stack.identifier,
        stack.orienter,
    ):
        assert wrapper.device == torch.device("cpu")
        assert all(p.device.type == "cpu" for p in wrapper.network.parameters())


def test_the_device_string_reaches_all_six_networks() -> None:
    # The meta device holds no data but is a device like any other: every network lands
    # there, so none is left behind on the CPU as four of six once were.
    stack = Stack.load(SHIPPED_MODELS_DIR, device="meta")
    wrappers = [
        stack.localiser,
        stack.detector,
        stack.semantic,
        stack.segmenter,
        stack.identifier,
        stack.orienter,
    ]
    for wrapper in wrappers:
        assert wrapper.device == torch.device("meta")
        assert {p.device.type for p in wrapper.network.parameters()} == {"meta"}


def test_cuda_without_cuda_fails_before_any_weights_are_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(stack_module.Localiser, "load", pytest.fail)
    with pytest.raises(ModelError, match="without CUDA"):
        Stack.load(SHIPPED_MODELS_DIR, device="cuda")
