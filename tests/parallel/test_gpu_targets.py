"""GPU descriptions for XLA's compile-only topology (the compiles themselves: tests/train/test_kernels_gpu_aot.py)."""

import pytest

from neo.errors import LayoutError
from neo.parallel.gpu_targets import board_name, gpu_target_config, knows, topology_of


@pytest.mark.parametrize(
    ("devices", "topology", "want"),
    [(1, "", "1x1x1"), (8, "", "1x1x8"), (32, "", "1x4x8"), (12, "", "1x1x12"), (16, "2x1x8", "2x1x8")],
)
def test_topology_is_the_meshs_own_else_nodes_of_eight(devices: int, topology: str, want: str) -> None:
    assert topology_of(devices, topology) == want


def test_a_description_names_the_board_its_architecture_and_this_cudnn() -> None:
    text = gpu_target_config("H100")
    assert 'device_description_str: "NVIDIA H100 80GB HBM3"' in text
    assert "cuda_compute_capability { major: 9 minor: 0 }" in text and "core_count: 132" in text
    assert "dnn_version_info { major: " in text
    assert board_name("NVIDIA H200") == "NVIDIA H200" and knows("h100") and not knows("V100")


def test_an_unknown_gpu_says_which_are_known() -> None:
    with pytest.raises(LayoutError, match=r"no GPU description for mesh.device_kind 'V100'.*use one of H100, H200"):
        gpu_target_config("V100")
