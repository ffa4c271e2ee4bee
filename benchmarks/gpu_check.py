"""The CUDA paths that need no vLLM, on one GPU: each check prints one line (benchmarks/gpu_check.sh runs it).

    python benchmarks/gpu_check.py [--out DIR]          # on a GPU: a few minutes
    python benchmarks/gpu_check.py --smoke              # CPU: the same code on a tiny shape, ~30 s

1. learner: one GRPO update of a ZeRO-3 policy in bf16 over NCCL (world size 1) on a Qwen2.5-0.5B-shaped
   model (random weights), with gradient checkpointing, as the recipes run it; its time and whether the
   loss and gradient norm are finite.
2. scorer: the prefill scorer (gainrl.scorer.score_batch on the model cut at the last layer's MLP input)
   on a Qwen2.5-7B-shaped model reduced to a few decoder layers, tokens/s against a full forward (with
   the LM head) of the same layers.
3. memory: what gainrl.plan predicts for check 1's update phase against torch.cuda.max_memory_allocated.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from typing import Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gainrl import dist  # noqa: E402
from gainrl.plan import ModelShape, load_model_shape  # noqa: E402

GIB = 2 ** 30


def build_model_folder(shape: ModelShape, layers: int, folder: str, dtype: torch.dtype, device: torch.device) -> str:
    """A Qwen2 checkpoint of `shape` with `layers` decoder layers and random weights, written to `folder`."""
    from transformers import AutoModelForCausalLM, Qwen2Config
    config = Qwen2Config(hidden_size=shape.hidden_size, num_hidden_layers=layers,
                         num_attention_heads=shape.num_heads, num_key_value_heads=shape.num_kv_heads,
                         intermediate_size=shape.intermediate_size, vocab_size=shape.vocab_size,
                         tie_word_embeddings=shape.tie_word_embeddings, max_position_embeddings=4096)
    with device:  # initialised where it runs: seconds, not minutes, for billions of parameters
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.save_pretrained(folder)
    del model
    return folder


def tiny_shape() -> ModelShape:
    return ModelShape(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=32, intermediate_size=128,
                      vocab_size=512, tie_word_embeddings=True, qkv_bias=True, name="tiny")


def learner_check(folder: str, shape: ModelShape, sizes: dict, device: torch.device) -> tuple[str, object]:
    """One GRPO update (with gradient checkpointing, the old log-probs from its own forward, as one update
    per batch takes them) of the ZeRO-3 policy."""
    from gainrl.algo import micro_batches, pack_sequences
    from gainrl.config import TrainRunConfig, load_config
    from gainrl.engine import build_policy
    from gainrl.trainer import update_policy

    dtype = "bfloat16" if device.type == "cuda" else "float32"
    cfg = load_config([f"model.path={folder}", f"model.dtype={dtype}", "data.path=unused.jsonl",
                       "train.ds_config=ds_configs/zero3.json", f"train.micro_batch_size={sizes['micro_batch']}",
                       "train.gradient_checkpointing=true", f"rollout.max_prompt_tokens={sizes['prompt']}",
                       f"rollout.max_new_tokens={sizes['response']}", "train.prompts_per_step=1",
                       f"grpo.group_size={sizes['sequences']}", "sampler.prompts_per_epoch=1"], TrainRunConfig)
    generator = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, shape.vocab_size, (sizes["prompt"],), generator=generator).tolist()
               for _ in range(sizes["sequences"])]
    responses = [torch.randint(3, shape.vocab_size, (sizes["response"],), generator=generator).tolist()
                 for _ in range(sizes["sequences"])]
    seqs = pack_sequences(prompts, responses, pad_id=0)
    batches = micro_batches(len(prompts), cfg.train.micro_batch_size)
    parts = [seqs.select(rows) for rows in batches]
    advantages = torch.linspace(-1, 1, len(prompts))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    policy = build_policy(cfg, device, gradient_accumulation_steps=len(batches))
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    sums, _ = update_policy(policy, cfg.grpo, 1.0, parts, [advantages[rows] for rows in batches], None, None)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    norm = policy.grad_norm()
    finite = bool(torch.isfinite(torch.tensor(sums["loss"]))) and norm is not None and bool(
        torch.isfinite(torch.tensor(norm)))
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    tokens = int(seqs.attention_mask.sum())
    line = (f"learner: ZeRO-3 {dtype} update on {torch.distributed.get_backend()} (world size 1), {shape.name} "
            f"{shape.num_params / 1e9:.2f}B params, {len(prompts)} x {sizes['prompt'] + sizes['response']} tokens, "
            f"gradient checkpointing: {seconds:.2f} s ({tokens / seconds:.0f} tokens/s), loss {sums['loss']:.4f}, "
            f"grad norm {norm:.3g}, finite={finite}")
    del policy
    return line, (cfg, peak)


def scorer_check(folder: str, shape: ModelShape, sizes: dict, device: torch.device) -> str:
    """The cut-model scorer against a full forward of the same layers, tokens/s on the same batches."""
    from transformers import AutoModelForCausalLM

    from gainrl.data import Row
    from gainrl.prefill import load_prefill_model
    from gainrl.prompts import Prompt
    from gainrl.scorer import collate, score_batch

    dtype = "bfloat16" if device.type == "cuda" else "float32"
    generator = torch.Generator().manual_seed(1)
    batch, length, repeats = sizes["score_batch"], sizes["score_tokens"], sizes["repeats"]
    prompts = [Prompt(torch.randint(3, shape.vocab_size, (length,), generator=generator).tolist(), length // 4,
                      length - 8) for _ in range(batch)]
    rows = [Row(str(k), "", "", k) for k in range(batch)]

    def rate(run_once) -> float:
        run_once()  # warm-up: kernels, allocator
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            run_once()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return batch * length * repeats / (time.perf_counter() - start)

    cut = load_prefill_model(folder, -1, dtype=dtype, device=device)
    scorer_rate = rate(lambda: score_batch(cut, rows, prompts, pad_id=0))
    cut = None  # free it before the full model loads
    full = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).to(device).eval()
    input_ids, attention_mask, _, _ = collate(prompts, pad_id=0)
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    with torch.no_grad():
        full_rate = rate(lambda: full(input_ids=input_ids, attention_mask=attention_mask, use_cache=False))
    with open(os.path.join(folder, "config.json")) as f:
        layers = json.load(f)["num_hidden_layers"]
    return (f"scorer: {shape.name} shape cut to {layers} layers, {batch} x {length} tokens in {dtype}: scorer "
            f"{scorer_rate:.0f} tokens/s, full forward {full_rate:.0f} tokens/s, ratio {scorer_rate / full_rate:.2f}")


def memory_check(cfg, peak: Optional[int], shape: ModelShape, total_bytes: int) -> str:
    """The plan's update phase (learner state, gathered parameters, activations) against the measured peak."""
    from gainrl.plan import memory_plan
    plan = memory_plan(cfg, world_size=1, gpus_per_node=1, gpu_memory_bytes=total_bytes, shape=shape)
    context = plan.term("CUDA context, NCCL, allocator slack").num_bytes
    predicted = plan.update_bytes - context - (0 if cfg.rollout.sleep_between_steps else plan.vllm_bytes)
    measured = (f"torch.cuda.max_memory_allocated {peak / GIB:.2f} GiB, measured / predicted {peak / predicted:.2f}"
                if peak is not None else "no CUDA: nothing measured")
    return (f"memory: plan predicts {predicted / GIB:.2f} GiB for the update phase (its {context / GIB:.1f} GiB "
            f"context allowance left out), {measured}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny shape on the CPU (checks the script itself)")
    parser.add_argument("--out", default=None, help="folder for the random checkpoints (default: a temp folder)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning)
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device (use --smoke to run the script on CPU)")
    info = dist.init_distributed(600)
    device = info.device
    if args.smoke:
        learner_shape = scorer_shape = tiny_shape()
        sizes = dict(sequences=4, prompt=16, response=48, micro_batch=2, score_batch=4, score_tokens=64, repeats=2,
                     scorer_layers=2)
    else:
        learner_shape = load_model_shape("Qwen/Qwen2.5-0.5B")[0]
        scorer_shape = load_model_shape("Qwen/Qwen2.5-7B")[0]
        sizes = dict(sequences=8, prompt=512, response=1536, micro_batch=2, score_batch=16, score_tokens=512,
                     repeats=5, scorer_layers=4)
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        learner_dir = build_model_folder(learner_shape, learner_shape.num_layers, os.path.join(tmp, "learner"), dtype,
                                         device)
        line, (cfg, peak) = learner_check(learner_dir, learner_shape, sizes, device)
        print(line, flush=True)
        total = torch.cuda.get_device_properties(0).total_memory if device.type == "cuda" else 80 * GIB
        print(memory_check(cfg, peak, learner_shape, total), flush=True)
        scorer_dir = build_model_folder(scorer_shape, sizes["scorer_layers"], os.path.join(tmp, "scorer"), dtype,
                                        device)
        print(scorer_check(scorer_dir, scorer_shape, sizes, device), flush=True)
    dist.shutdown()


if __name__ == "__main__":
    main()
    dist.exit_process(0)
