"""CPU benchmark of the learner's part of a GRPO step under DeepSpeed ZeRO-3 (2 ranks): how the rows
are cut into micro-batches, and whether a separate no-grad forward computes the old log-probs.

Each rank holds the same number of rollouts: a fixed prompt length and response lengths drawn from
a log-normal distribution (p95 / p5 = --spread, capped at --max-response), like GRPO answers of a
few hundred to a few thousand tokens. Timed, interleaved over --repeats, in the same processes:
  (a) fixed: `train.micro_batch_size` rows at a time in the order generated, every micro-batch padded
      to the step's longest row (the split before token budgets), then the separate no-grad forward
      and the update (what every step did before, and a run with grpo.updates_per_batch > 1 does);
  (a') the same, each micro-batch cut to its own longest row (the fixed split now);
  (b) token budget: rows sorted by length, cut to `train.max_tokens_per_micro_batch` padded tokens
      (by default the fixed split's worst case: micro_batch_size x the longest row, so neither
      needs more activation memory), as many micro-batches on every rank; forward and update as (a);
  (c) token budget, one update per batch: the old log-probs from the update's own forward.
Each is a whole learner phase (the no-grad forward, if any, and forward + backward + optimizer step
of every micro-batch), timed on the slowest rank. The weights change between the runs, which does
not change the work.

    .venv/bin/python benchmarks/update_bench.py          # relaunches itself under torchrun, 2 ranks

The last line printed is `token_budget_vs_fixed=X skip_forward_vs_full=Y padded_fraction_before=A after=B
vs_fixed_cut=Z`: X = median (a) / median (b), Y = median (b) / median (c), the fraction of the forward's
tokens that are padding under (a) and (b), and Z = median (a') / median (b).
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from bench_models import add_model_args, bench_model_path, run_on_ranks  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2, help="ranks (torchrun --nproc_per_node)")
    parser.add_argument("--repeats", type=int, default=3, help="timed learner phases per method, interleaved")
    parser.add_argument("--rollouts-per-rank", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=24)
    parser.add_argument("--median-response", type=int, default=40, help="median response length (tokens)")
    parser.add_argument("--spread", type=float, default=10.0, help="p95 / p5 of the response lengths")
    parser.add_argument("--max-response", type=int, default=400, help="the response cap (rollout.max_new_tokens)")
    parser.add_argument("--micro-batch-size", type=int, default=4, help="rows per micro-batch of (a)")
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="token budget of (b) and (c); default micro-batch size x (prompt + response cap)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    add_model_args(parser)
    parser.set_defaults(num_layers=4, hidden_size=384, num_heads=6, num_kv_heads=2, intermediate_size=1024,
                        model_vocab_size=32768)
    return parser.parse_args(argv)


def response_lengths(args, rank: int) -> list[int]:
    """Log-normal lengths with p95 / p5 = spread around the median, capped; different on every rank."""
    generator = torch.Generator().manual_seed(1000 + rank)
    sigma = math.log(args.spread) / (2 * 1.6449)
    normal = torch.randn(args.rollouts_per_rank, generator=generator, dtype=torch.float64)
    lengths = (math.log(args.median_response) + sigma * normal).exp().round().clamp(1, args.max_response)
    return [int(n) for n in lengths]


def rank_main(args) -> None:
    from gainrl import dist
    from gainrl.algo import Sequences, group_advantages, pack_sequences, padded_tokens
    from gainrl.config import TrainRunConfig, load_config
    from gainrl.engine import build_policy
    from gainrl.trainer import no_grad_logprobs, plan_micro_batches, update_policy

    info = dist.init_distributed(timeout_s=1800)
    model_path = bench_model_path(args)
    budget = args.max_tokens or args.micro_batch_size * (args.prompt_tokens + args.max_response)
    base = [f"model.path={model_path}", f"model.dtype={args.dtype}", "data.path=unused.jsonl",
            f"train.micro_batch_size={args.micro_batch_size}", "grpo.kl_coef=0", "rollout.temperature=1.0"]
    configs = {"fixed": load_config(base, TrainRunConfig),
               "token_budget": load_config([*base, f"train.max_tokens_per_micro_batch={budget}"], TrainRunConfig)}
    policy = build_policy(configs["fixed"], info.device, gradient_accumulation_steps=1)
    vocab = policy.module.config.vocab_size

    generator = torch.Generator().manual_seed(info.rank)
    lengths = response_lengths(args, info.rank)
    prompts = [torch.randint(3, vocab, (args.prompt_tokens,), generator=generator).tolist() for _ in lengths]
    responses = [torch.randint(3, vocab, (n,), generator=generator).tolist() for n in lengths]
    seqs = pack_sequences(prompts, responses, pad_id=0)
    advantages = group_advantages(torch.rand(len(lengths), generator=generator), 4, scale_by_std=True)
    tokens = seqs.attention_mask.sum(dim=1).tolist()

    methods = {"fixed_step_width": ("fixed", True), "fixed": ("fixed", True), "token_budget": ("token_budget", True),
               "token_budget_skip": ("token_budget", False)}
    rows = {name: plan_micro_batches(seqs, configs[config].train) for name, (config, _) in methods.items()}

    def uncut(rows: list[int]) -> Sequences:  # the rows at the step's width, as micro-batches were before
        index = torch.as_tensor(rows)
        return Sequences(seqs.input_ids[index], seqs.attention_mask[index], seqs.response_mask[index],
                         [seqs.response_lengths[r] for r in rows], seqs.sampled_logp[index])

    def learner_phase(name: str) -> float:
        config, separate = methods[name]
        cfg = configs[config]
        parts = [uncut(r) if name == "fixed_step_width" else seqs.select(r) for r in rows[name]]
        dist.barrier()
        start = time.perf_counter()
        old_logp = no_grad_logprobs(policy, None, parts, 1.0)[0] if separate else None
        update_policy(policy, cfg.grpo, 1.0, parts, [advantages[r] for r in rows[name]], old_logp, None)
        seconds = time.perf_counter() - start
        return max(dist.all_gather(seconds))

    learner_phase("token_budget_skip")  # warm-up: first-touch allocations
    times = {name: [] for name in methods}
    for rep in range(args.repeats):
        for name in methods:
            times[name].append(learner_phase(name))
            if info.rank == 0:
                print(f"  repeat {rep + 1}/{args.repeats} {name:<18} {times[name][-1]:7.2f}s", flush=True)

    real = dist.all_reduce_sums({"n": float(sum(tokens))})["n"]
    padded = {name: dist.all_reduce_sums({"n": float(padded_tokens(tokens, rows[name]))})["n"] for name in methods}
    padded["fixed_step_width"] = dist.all_reduce_sums({"n": float(len(tokens) * max(tokens))})["n"]
    num_params = sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel() for p in policy.module.parameters())
    all_lengths = [n for rank_lengths in dist.all_gather(lengths) for n in rank_lengths]
    if info.rank != 0:
        dist.shutdown()
        return
    medians = {name: statistics.median(t) for name, t in times.items()}
    print()
    print(f"model {os.path.relpath(model_path, REPO)}: {num_params / 1e6:.1f}M parameters, {args.dtype}, "
          f"{info.world_size} ranks, ZeRO-3 (gloo); torch threads {torch.get_num_threads()}")
    print(f"{args.rollouts_per_rank} rollouts per rank: prompt {args.prompt_tokens} tokens, responses "
          f"{min(all_lengths)}-{max(all_lengths)} tokens (median {statistics.median(all_lengths):.0f}); "
          f"fixed: {args.micro_batch_size} rows per micro-batch; token budget {budget}")
    print(f"  {'method':<20} {'micro-batches':>13} {'padded':>7} {'median s':>9} {'best s':>7}")
    for name in methods:
        print(f"  {name:<20} {len(rows[name]):>13} {1 - real / padded[name]:>7.1%} {medians[name]:>9.2f} "
              f"{min(times[name]):>7.2f}")
    print(f"token_budget_vs_fixed={medians['fixed_step_width'] / medians['token_budget']:.2f} "
          f"skip_forward_vs_full={medians['token_budget'] / medians['token_budget_skip']:.2f} "
          f"padded_fraction_before={1 - real / padded['fixed_step_width']:.2f} "
          f"after={1 - real / padded['token_budget']:.2f} vs_fixed_cut={medians['fixed'] / medians['token_budget']:.2f}")
    dist.shutdown()


def main(argv=None) -> None:
    run_on_ranks(__file__, parse_args(argv), argv, rank_main)


if __name__ == "__main__":
    main()
