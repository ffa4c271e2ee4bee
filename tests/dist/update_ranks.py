"""Run by test_update_dist.py under 1 process or torchrun: one GRPO update of the ZeRO-3 policy on a fixed
batch of 8 sequences (each rank takes its contiguous half), with an SGD optimizer of lr 1, so that the
parameter change is minus the gradient. Rank 0 saves the change of every parameter and the loss terms.
With rollout.offload_learner=true the learner's state goes to CPU memory and back before each forward.

    python tests/dist/update_ranks.py MODEL_DIR DS_CONFIG OUT.pt AGGREGATION [key=value ...]
"""
import os
import sys

import torch


def fixed_batch(vocab_size: int, pad_id: int):
    """8 sequences of varied prompt and response lengths, with advantages and a perturbed "old" log-prob offset."""
    generator = torch.Generator().manual_seed(0)
    prompt_ids, response_ids = [], []
    for k in range(8):
        prompt_ids.append(torch.randint(3, vocab_size, (5 + k % 3,), generator=generator).tolist())
        response_ids.append(torch.randint(3, vocab_size, (2 + (5 * k) % 7,), generator=generator).tolist())
    advantages = torch.tensor([1.0, -0.5, 0.25, -1.0, 0.75, -0.25, 0.5, -0.75])
    return prompt_ids, response_ids, advantages


def main(model_dir: str, ds_config: str, out: str, aggregation: str, *overrides: str) -> None:
    from deepspeed import zero

    from gainrl import dist
    from gainrl.config import TrainRunConfig, load_config
    from gainrl.engine import build_policy, build_reference
    from gainrl.algo import pack_sequences
    from gainrl.trainer import no_grad_logprobs, plan_micro_batches, update_policy

    cfg = load_config([f"model.path={model_dir}", "model.dtype=float32", "data.path=unused.jsonl",
                       f"train.ds_config={ds_config}", "train.micro_batch_size=2", "grpo.kl_coef=0.05",
                       "grpo.entropy_coef=0.01", "rollout.temperature=0.9", f"grpo.aggregation={aggregation}", "optim.grad_clip=1e9",
                       *overrides],
                      TrainRunConfig)
    info = dist.init_distributed(120)
    torch.manual_seed(0)
    prompt_ids, response_ids, advantages = fixed_batch(vocab_size=500, pad_id=0)
    share = len(prompt_ids) // info.world_size
    mine = slice(info.rank * share, (info.rank + 1) * share)
    seqs = pack_sequences(prompt_ids[mine], response_ids[mine], pad_id=0)
    rows = plan_micro_batches(seqs, cfg.train)  # fixed-size, or to train.max_tokens_per_micro_batch
    parts = [seqs.select(r) for r in rows]

    policy = build_policy(cfg, info.device, gradient_accumulation_steps=len(rows))
    reference = build_reference(cfg, info.device, replicate=False)  # the partitioned path (the trainer replicates on CPU)
    params = [p for _, p in policy.module.named_parameters()]
    with zero.GatheredParameters(params):
        before = {name: p.detach().clone() for name, p in policy.module.named_parameters()}
    moved = []

    def away_and_back():  # rollout.offload_learner: the learner's state in CPU memory and back, as around generation
        if cfg.rollout.offload_learner:
            moved.append(policy.offload())
            policy.reload()

    away_and_back()
    old_logp, ref_logp, angle = no_grad_logprobs(policy, reference, parts, temperature=cfg.rollout.temperature)
    away_and_back()
    ref_gap = max((logp - ref).abs().max().item() for logp, ref in zip(old_logp, ref_logp))  # same weights: 0
    # ratios != 1 so that clipping takes part: shift each sequence's old log-probs by its global index
    offsets = 0.1 * (torch.arange(len(prompt_ids))[mine] % 4 + 1).float()
    old_logp = [logp - offsets[r, None] for logp, r in zip(old_logp, rows)]
    ref_logp = [ref + 0.5 * offsets[r, None] for ref, r in zip(ref_logp, rows)]  # a KL term that is not 0
    sums, _ = update_policy(policy, cfg.grpo, cfg.rollout.temperature, parts, [advantages[mine][r] for r in rows],
                            old_logp, ref_logp)
    totals = dist.all_reduce_sums(sums)
    with zero.GatheredParameters(params):
        delta = {name: (p.detach() - before[name]).clone() for name, p in policy.module.named_parameters()}
    angle_of_row = {row: a for r, part_angle in zip(rows, angle) for row, a in zip(r, part_angle.tolist())}
    angles = dist.all_gather([angle_of_row[row] for row in range(share)])
    if dist.is_rank0():
        torch.save({"delta": delta, "totals": totals, "ref_gap": ref_gap, "num_micro_batches": len(rows),
                    "angles": [a for chunk in angles for a in chunk], "offloaded": moved}, out)
    dist.shutdown()


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    main(*sys.argv[1:])
    from gainrl.dist import exit_process  # skips interpreter finalization (see there)
    exit_process(0)
