"""GPU placement, tested without a GPU: parsing nvidia-smi, several runs per GPU, pinning."""

import pytest

from mnist_models.placement import Gpu, gpu_slots, parse_nvidia_smi, runs_per_gpu, slot_environment, visible_gpus

H200 = Gpu(0, "NVIDIA H200", 143771)


def test_nvidia_smi_output_is_parsed():
    text = "0, NVIDIA H200, 143771\n1, NVIDIA A10G, 23028\n"
    assert parse_nvidia_smi(text) == [H200, Gpu(1, "NVIDIA A10G", 23028)]
    assert parse_nvidia_smi("") == []
    with pytest.raises(ValueError, match="unexpected nvidia-smi line"):
        parse_nvidia_smi("No devices were found")


def test_a_large_gpu_takes_several_runs_and_a_small_one_fewer():
    assert runs_per_gpu(H200) == 8
    assert runs_per_gpu(Gpu(1, "small", 5000)) == 2
    assert runs_per_gpu(Gpu(2, "tiny", 1000)) == 1  # always at least one


def test_slots_fill_the_gpus_evenly_and_stop_at_their_capacity():
    small = Gpu(1, "A10G", 6000)  # room for 2
    assert gpu_slots([H200, small], runs=4) == [0, 1, 0, 1]
    assert gpu_slots([H200, small], runs=20) == [0, 1, 0, 1] + [0] * 6
    assert gpu_slots([], runs=4) == []
    assert gpu_slots([H200], runs=14) == [0] * 8


def test_each_slot_is_pinned_to_its_gpu_with_memory_growth():
    assert slot_environment(3) == {"CUDA_VISIBLE_DEVICES": "3", "TF_FORCE_GPU_ALLOW_GROWTH": "true"}
    assert slot_environment(None) == {}


def test_this_machine_is_described_without_failing():
    assert all(isinstance(gpu, Gpu) for gpu in visible_gpus())
