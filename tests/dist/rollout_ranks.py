"""One rank of the rollout test: a learner (ZeRO-3 under torchrun, a plain model as one process)
and a colocated RolloutEngine; generate, train, push, compare log-probs. Writes rank<r>.json.

    torchrun --standalone --nproc_per_node 2 tests/dist/rollout_ranks.py --model DIR --out DIR [--tp 2]
    python tests/dist/rollout_ranks.py --model DIR --out DIR
"""
import argparse
import json
import os

import torch
import torch.distributed as dist

PROMPTS = [[5, 6, 7, 8, 9], [20, 21, 22]]
FIXED_SEQUENCE = list(range(3, 43))  # 40 tokens whose log-probs both sides compute
NUM_SAMPLES = 4
NUM_ROUNDS = 2  # train + push twice: the second push starts from the first one's state
BUCKET_BYTES = 64 * 1024  # the tiny model is ~0.55 MB in fp32: several buckets


def zero3_config() -> dict:
    return {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0,  # partition even the norms
                              "stage3_prefetch_bucket_size": 4096, "reduce_bucket_size": 4096},
        "optimizer": {"type": "Adam", "params": {"lr": 1e-2, "torch_adam": True}},
        "steps_per_print": 10**9,
    }


class Learner:
    """The policy: a DeepSpeed ZeRO-3 engine, or a plain model + Adam as one process."""

    def __init__(self, model_path: str, distributed: bool):
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        if distributed:
            import deepspeed
            self.module, self.optimizer, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                                                      config=zero3_config())
        else:
            self.module, self.optimizer = model, torch.optim.Adam(model.parameters(), lr=1e-2)
        self.distributed = distributed

    def sequence_logprobs(self, token_ids: list[int]) -> list[float]:
        with torch.no_grad():
            ids = torch.tensor([token_ids])
            logprobs = torch.log_softmax(self.module(input_ids=ids).logits[0, :-1].float(), dim=-1)
            return logprobs.gather(1, ids[0, 1:, None])[:, 0].tolist()

    def train_step(self, token_ids: list[int]) -> None:
        ids = torch.tensor([token_ids])
        loss = self.module(input_ids=ids, labels=ids).loss
        if self.distributed:
            self.module.backward(loss)
            self.module.step()
        else:
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad()


def error_of(call) -> str:
    try:
        call()
    except RuntimeError as e:
        return str(e)
    return ""


def max_abs_diff(a, b) -> float:
    return float((torch.tensor(a) - torch.tensor(b)).abs().max())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--tp", type=int, default=1, help="rollout.tensor_parallel_size")
    args = parser.parse_args()

    from gainrl.config import RolloutConfig
    from gainrl.dist import init_distributed
    from gainrl.rollout import RolloutEngine, check_weight_names, push_weights
    from gainrl.rollout.weight_push import unwrap_model

    info = init_distributed(timeout_s=300)
    distributed = info.world_size > 1
    torch.manual_seed(0)
    learner = Learner(args.model, distributed)
    cfg = RolloutConfig(max_new_tokens=12, temperature=1.0, top_p=1.0, cpu_kv_cache_gib=0.25,
                        tensor_parallel_size=args.tp)
    engine = RolloutEngine(args.model, cfg, dtype="float32", seed=1234, max_model_len=256)
    report = {"rank": info.rank, "world_size": info.world_size}

    # (a) sampling, and the reported log-probs against the learner's
    samples = engine.generate(PROMPTS, NUM_SAMPLES)
    report["completions"] = [[c.token_ids for c in per_prompt] for per_prompt in samples]
    report["finish_reasons"] = sorted({c.finish_reason for per_prompt in samples for c in per_prompt})
    report["sample_logprob_gap"] = max(
        max_abs_diff(c.logprobs, learner.sequence_logprobs(prompt + c.token_ids)[len(prompt) - 1:])
        for prompt, per_prompt in zip(PROMPTS, samples) for c in per_prompt)
    report["logprob_lengths_match"] = all(len(c.logprobs) == len(c.token_ids) for p in samples for c in p)
    greedy = engine.generate(PROMPTS, 1, greedy=True)
    report["greedy"] = [[c.token_ids, c.logprobs] for per_prompt in greedy for c in per_prompt]
    if args.tp == 1:  # the engines are independent: a different number of calls per rank must not hang
        report["uneven_calls"] = [len(engine.generate(PROMPTS[: 1 + call % 2], 2)) for call in range(1 + 2 * info.rank)]
    else:  # one engine: as many calls on every member, each with its own number of prompts (none too)
        report["uneven_calls"] = [len(engine.generate(PROMPTS[:2 - info.rank], 2)),
                                  len(engine.generate(PROMPTS if info.rank == 0 else [], 2))]

    # (c) names: tied alias present; a list without it, or with a stray name, is refused
    names = [name for name, _ in unwrap_model(learner.module).named_parameters(remove_duplicate=False)]
    report["learner_names"] = names
    report["check_errors"] = {}
    for case, bad_names in {"without_tied_head": [n for n in names if n != "lm_head.weight"],
                            "stray_name": names + ["model.layers.0.mlp.extra_proj.weight"]}.items():
        try:
            check_weight_names(bad_names, engine)
            report["check_errors"][case] = None
        except ValueError as e:
            report["check_errors"][case] = str(e)
    targets = check_weight_names(names, engine)

    # (b) train, push, compare on a fixed sequence
    report["rounds"] = []
    before = engine.sequence_logprobs([FIXED_SEQUENCE])[0]
    report["initial_gap"] = max_abs_diff(before, learner.sequence_logprobs(FIXED_SEQUENCE))
    report["protocol_errors"] = {}
    for round_index in range(NUM_ROUNDS):
        engine.sleep()
        for _ in range(3):
            learner.train_step(FIXED_SEQUENCE)
        if round_index == 0:  # the sleep protocol is enforced on CPU too
            report["protocol_errors"]["generate_asleep"] = error_of(lambda: engine.generate(PROMPTS, 1))
            report["protocol_errors"]["push_asleep"] = error_of(
                lambda: push_weights(learner.module, engine, BUCKET_BYTES, targets=targets))
        engine.wake(["weights"])
        if round_index == 0:
            engine.wake(["kv_cache"])
            report["protocol_errors"]["generate_before_push"] = error_of(lambda: engine.generate(PROMPTS, 1))
        stats = push_weights(learner.module, engine, BUCKET_BYTES, targets=targets)
        engine.wake()
        after = engine.sequence_logprobs([FIXED_SEQUENCE])[0]
        expected = learner.sequence_logprobs(FIXED_SEQUENCE)
        resampled = engine.generate(PROMPTS[:1], 2)[0]
        report["rounds"].append({
            "stats": stats,
            "gap": max_abs_diff(after, expected),  # vLLM after the push vs the learner
            "changed": max_abs_diff(after, before),  # vLLM after the push vs before it
            "sample_logprob_gap": max(
                max_abs_diff(c.logprobs, learner.sequence_logprobs(PROMPTS[0] + c.token_ids)[len(PROMPTS[0]) - 1:])
                for c in resampled),
        })
        before = after

    if distributed:
        dist.barrier()
    engine.close()
    report["dist_initialized_after_close"] = dist.is_initialized()
    if dist.is_initialized():
        dist.destroy_process_group()
    with open(os.path.join(args.out, f"rank{info.rank}.json"), "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
    from gainrl.dist import exit_process  # skips interpreter finalization (see there)
    exit_process(0)
