"""CUDA paths: the start-up checks pass on a healthy GPU, and the learner's bf16 log-probs track fp32's."""
import pytest
import torch

from gainrl.engine import forward_logprobs
from gainrl.preflight import check_devices, probe_devices

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_the_start_up_checks_see_cuda_and_nccl():
    import torch.distributed
    facts = probe_devices(torch.distributed.is_nccl_available())
    assert facts.cuda_available and facts.nccl_available and facts.cuda_devices >= 1
    assert facts.visible_gpus >= 1  # the driver's /proc entries (or device files) are found
    check_devices(facts, ranks_on_node=facts.cuda_devices)


def test_bf16_logprobs_on_cuda_track_fp32_on_cpu(tiny_model_dir):
    from transformers import AutoModelForCausalLM
    ids = torch.randint(3, 500, (4, 48), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    cpu = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    gpu = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).cuda()
    with torch.no_grad():
        a = forward_logprobs(cpu, ids, mask, temperature=0.9)[0]
        b = forward_logprobs(gpu, ids.cuda(), mask.cuda(), temperature=0.9)[0].cpu()
    assert (a - b).abs().mean() < 0.05  # bf16 drift: what logprob_gap shows on GPU when the push is right
