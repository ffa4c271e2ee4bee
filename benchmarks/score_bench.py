"""CPU benchmark of the prefill scorer (METHOD.md sections 2 and 5).

Measures, on the same rows and the same length-sorted batches:
  (a) the project's scorer: gainrl.prefill.load_prefill_model + gainrl.scorer.score_batch
      (layers up to the hooked one only, closed-form concentration from segment sums);
  (b) a plain full forward of AutoModelForCausalLM on the same batches (LM head on every
      position, inference mode): forward_ratio = (a) / (b) in real prompt tokens per second;
  (c) the reference approach of METHOD.md section 5: batch size 1, full forward of
      AutoModelForCausalLM with a forward pre-hook on the last layer's MLP, every captured
      activation kept in a list until the end, then a full L x L cosine matrix per prompt:
      reference_ratio = (a) / (c).
and the peak RSS of (a) and (c) on N and 4N rows, each in a fresh spawned process:
mem_growth = peak RSS of (a) at 4N / at N.

    .venv/bin/python benchmarks/score_bench.py            # defaults: a few minutes on 2 cores

The last line printed is `forward_ratio=X reference_ratio=Y mem_growth=Z`.
"""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse  # noqa: E402
import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict  # noqa: E402

import torch  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_GSM8K = "/work/shared/data/math/gsm8k_train.jsonl"
BUNDLED_GSM8K = os.path.join(REPO, "gainrl", "assets", "gsm8k_train_512.jsonl")


# ---- set-up ------------------------------------------------------------------------------------

def model_config(args):
    from gainrl.config import TinyModelConfig
    return TinyModelConfig(hidden_size=args.hidden_size, num_layers=args.num_layers, num_heads=args.num_heads,
                           num_kv_heads=args.num_kv_heads, intermediate_size=args.intermediate_size,
                           tokenizer_vocab_size=args.tokenizer_vocab_size, model_vocab_size=args.model_vocab_size,
                           seed=0)


def ensure_model(args) -> str:
    """Build the benchmark model once under runs/bench/, keyed by its configuration."""
    from gainrl.tiny_model import build_tiny_model
    cfg = model_config(args)
    name = (f"qwen2-L{cfg.num_layers}-h{cfg.hidden_size}-a{cfg.num_heads}kv{cfg.num_kv_heads}"
            f"-i{cfg.intermediate_size}-tok{cfg.tokenizer_vocab_size}-v{cfg.model_vocab_size}")
    path = os.path.join(REPO, "runs", "bench", name)
    marker = os.path.join(path, "gainrl_tiny.json")
    if os.path.isfile(marker):
        with open(marker) as f:
            if json.load(f) == asdict(cfg):
                return path
    t0 = time.perf_counter()
    build_tiny_model(path, cfg)
    print(f"built {path} in {time.perf_counter() - t0:.1f}s", flush=True)
    return path


def load_prompts(args, model_path: str, limit: int):
    from gainrl.config import DataConfig, PromptConfig
    from gainrl.data import load_rows
    from gainrl.prompts import PromptBuilder
    from gainrl.scorer import load_tokenizer
    tokenizer = load_tokenizer(model_path)
    rows = load_rows(DataConfig(path=args.data, limit=limit)).rows
    builder = PromptBuilder(tokenizer, PromptConfig())
    prompts = [builder.build(row.problem) for row in rows]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return rows, prompts, pad_id


def torch_dtype(name: str) -> torch.dtype:
    return getattr(torch, name)


def load_project_model(model_path: str, args):
    from gainrl.prefill import load_prefill_model
    return load_prefill_model(model_path, -1, dtype=args.dtype, attn_implementation=args.attn,
                              device=torch.device("cpu"))


def load_full_model(model_path: str, args):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype(args.dtype),
                                                 attn_implementation=args.attn)
    return model.eval()


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ---- the three paths ----------------------------------------------------------------------------

def run_project(pm, rows, prompts, batches, pad_id):
    """(a) the project's scorer, exactly as run_scoring calls it."""
    from gainrl.scorer import score_batch
    records = []
    for batch in batches:
        records.extend(score_batch(pm, [rows[i] for i in batch], [prompts[i] for i in batch], pad_id))
    return records


def run_full_forward(model, prompts, batches, pad_id):
    """(b) a plain full forward (LM head on every position) of the same padded batches."""
    from gainrl.scorer import collate
    with torch.inference_mode():
        for batch in batches:
            input_ids, attention_mask, _, _ = collate([prompts[i] for i in batch], pad_id)
            logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
            del logits


def find_last_mlp(model):
    return model.model.layers[-1].mlp  # the baseline names modules, as the reference code does


def run_reference(model, prompts):
    """(c) the reference approach: batch 1, full forward, hook on the last layer's MLP input,
    every activation kept until the end, then a full L x L cosine matrix per prompt.
    Returns (c_intra, c_inter) per prompt, from the correct 2-D Q x Q and Q x P blocks."""
    kept = []

    def pre_hook(module, inputs):
        kept.append(inputs[0].detach())

    handle = find_last_mlp(model).register_forward_pre_hook(pre_hook)
    try:
        with torch.inference_mode():
            for prompt in prompts:
                input_ids = torch.tensor([prompt.input_ids])
                model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False)
    finally:
        handle.remove()
    results = []
    with torch.inference_mode():
        for hidden, prompt in zip(kept, prompts):
            x = hidden[0].float()
            units = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            cos = units @ units.T  # [L, L]
            p, q = prompt.p_end, prompt.q_end
            n_q, n_p = q - p, p
            block_qq = cos[p:q, p:q]
            c_intra = ((block_qq.sum() - block_qq.diagonal().sum()) / (n_q * (n_q - 1))).item() if n_q >= 2 else 0.0
            c_inter = cos[p:q, :p].mean().item() if n_p > 0 and n_q > 0 else 0.0
            results.append((c_intra, c_inter))
    return results


# ---- memory: one fresh process per (path, rows) --------------------------------------------------

def memory_child(path_name: str, model_path: str, args_dict: dict, num_rows: int, queue) -> None:
    try:
        args = argparse.Namespace(**args_dict)
        torch.set_num_threads(args.threads)
        from gainrl.scorer import plan_batches
        rows, prompts, pad_id = load_prompts(args, model_path, num_rows)
        if path_name == "project":
            model = load_project_model(model_path, args)
        else:
            model = load_full_model(model_path, args)
        rss_after_load = current_rss_mib()
        peak_after_load = peak_rss_mib()
        t0 = time.perf_counter()
        if path_name == "project":
            batches = plan_batches([p.num_tokens for p in prompts], args.max_tokens)
            run_project(model, rows, prompts, batches, pad_id)
        else:
            run_reference(model, prompts)
        seconds = time.perf_counter() - t0
        queue.put({"rows": len(rows), "tokens": sum(p.num_tokens for p in prompts), "rss_after_load": rss_after_load,
                   "peak_after_load": peak_after_load, "peak": peak_rss_mib(), "seconds": seconds})
    except BaseException as e:  # report, do not hang the parent
        queue.put({"error": f"{type(e).__name__}: {e}"})
        raise


def measure_memory(path_name: str, model_path: str, args, num_rows: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=memory_child, args=(path_name, model_path, vars(args), num_rows, queue))
    proc.start()
    result = queue.get()
    proc.join()
    if "error" in result:
        raise RuntimeError(f"memory run {path_name} x {num_rows} rows failed: {result['error']}")
    return result


# ---- main ------------------------------------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="CPU benchmark of the prefill scorer against a full forward "
                                                 "and the batch-1 reference approach.")
    parser.add_argument("--data", default=SHARED_GSM8K if os.path.isfile(SHARED_GSM8K) else BUNDLED_GSM8K)
    parser.add_argument("--rows", type=int, default=64, help="rows for the throughput runs")
    parser.add_argument("--mem-rows", type=int, default=128, help="N for the scorer's memory runs (N and 4N)")
    parser.add_argument("--ref-mem-rows", type=int, default=None,
                        help="N for the reference's memory runs (N and 4N); default: --mem-rows / 4")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats per path (best is reported)")
    parser.add_argument("--max-tokens", type=int, default=16384, help="scorer token budget per batch "
                        "(scorer.max_tokens_per_batch)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--num-layers", type=int, default=8)
    parser.add_argument("--hidden-size", type=int, default=512)
    parser.add_argument("--num-heads", type=int, default=8)
    parser.add_argument("--num-kv-heads", type=int, default=2)
    parser.add_argument("--intermediate-size", type=int, default=1408)
    parser.add_argument("--tokenizer-vocab-size", type=int, default=1024)
    parser.add_argument("--model-vocab-size", type=int, default=151936)
    args = parser.parse_args(argv)
    if args.ref_mem_rows is None:
        args.ref_mem_rows = max(1, args.mem_rows // 4)
    return args


def main(argv=None) -> None:
    wall0 = time.perf_counter()
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from gainrl.scorer import plan_batches

    model_path = ensure_model(args)
    rows, prompts, pad_id = load_prompts(args, model_path, args.rows)
    lengths = [p.num_tokens for p in prompts]
    batches = plan_batches(lengths, args.max_tokens)
    real_tokens = sum(lengths)
    padded_tokens = sum(lengths[b[0]] * len(b) for b in batches)
    print(f"model {os.path.relpath(model_path, REPO)}  dtype {args.dtype}  attn {args.attn}  "
          f"threads {args.threads}  torch {torch.__version__}")
    print(f"data {args.data}: {len(rows)} rows, {real_tokens} prompt tokens "
          f"(min/median/max {min(lengths)}/{int(statistics.median(lengths))}/{max(lengths)}), "
          f"{len(batches)} batches under {args.max_tokens} tokens, padded {padded_tokens} "
          f"({padded_tokens / real_tokens:.3f}x)", flush=True)

    project = load_project_model(model_path, args)
    full = load_full_model(model_path, args)
    n_params = sum(p.numel() for p in full.parameters())
    n_prefill = sum(p.numel() for p in project.module.parameters())
    print(f"parameters: full model {n_params / 1e6:.1f}M, prefill model {n_prefill / 1e6:.1f}M", flush=True)

    # warm-up: one batch (one prompt for the batch-1 reference) per path
    warm = batches[len(batches) // 2]
    run_project(project, rows, prompts, [warm], pad_id)
    run_full_forward(full, prompts, [warm], pad_id)
    run_reference(full, [prompts[warm[0]]])

    times = {"project": [], "forward": [], "reference": []}
    records, reference = None, None
    for rep in range(args.repeats):
        t0 = time.perf_counter()
        records = run_project(project, rows, prompts, batches, pad_id)
        times["project"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        run_full_forward(full, prompts, batches, pad_id)
        times["forward"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        reference = run_reference(full, prompts)
        times["reference"].append(time.perf_counter() - t0)
        print(f"repeat {rep + 1}/{args.repeats}: " + "  ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()),
              flush=True)

    # the three paths must agree on the scores they compute
    by_id = {r["id"]: r for r in records}
    d_intra = max(abs(by_id[row.id]["c_intra"] - ref[0]) for row, ref in zip(rows, reference))
    d_inter = max(abs(by_id[row.id]["c_inter"] - ref[1]) for row, ref in zip(rows, reference))

    best = {k: min(v) for k, v in times.items()}
    tps = {k: real_tokens / v for k, v in best.items()}
    forward_ratio = tps["project"] / tps["forward"]
    reference_ratio = tps["project"] / tps["reference"]
    print()
    print(f"throughput ({len(rows)} rows, {real_tokens} real prompt tokens, best of {args.repeats})")
    print(f"  {'path':<44} {'best s':>8} {'median s':>9} {'tokens/s':>10} {'rows/s':>8}")
    labels = {"project": "(a) project scorer (prefill to MLP input)",
              "forward": "(b) full forward, same batches",
              "reference": "(c) reference: batch 1, full fwd, L x L"}
    for key, label in labels.items():
        print(f"  {label:<44} {best[key]:>8.2f} {statistics.median(times[key]):>9.2f} {tps[key]:>10.1f} "
              f"{len(rows) / best[key]:>8.2f}")
    print(f"  scores (a) vs (c): max |diff| c_intra {d_intra:.2e}, c_inter {d_inter:.2e}")
    del project, full

    mem_growth = float("nan")
    if not args.skip_memory:
        print()
        print("peak memory, each run in a fresh spawned process (MiB; 'after load' = RSS right after model load)")
        print(f"  {'path':<28} {'rows':>5} {'tokens':>7} {'after load':>11} {'peak':>8} {'peak-load':>10} {'run s':>7}")
        mem = {}
        for name, n in (("project", args.mem_rows), ("project", 4 * args.mem_rows),
                        ("reference", args.ref_mem_rows), ("reference", 4 * args.ref_mem_rows)):
            r = measure_memory(name, model_path, args, n)
            mem[(name, n)] = r
            label = "(a) project scorer" if name == "project" else "(c) reference"
            print(f"  {label:<28} {r['rows']:>5} {r['tokens']:>7} {r['rss_after_load']:>11.0f} {r['peak']:>8.0f} "
                  f"{r['peak'] - r['rss_after_load']:>10.0f} {r['seconds']:>7.1f}", flush=True)
        small, large = mem[("project", args.mem_rows)], mem[("project", 4 * args.mem_rows)]
        ref_small, ref_large = mem[("reference", args.ref_mem_rows)], mem[("reference", 4 * args.ref_mem_rows)]
        mem_growth = large["peak"] / small["peak"]

        def above(r):
            return r["peak"] - r["rss_after_load"]
        print(f"  (a) 4N/N: peak x{mem_growth:.3f}, peak above load {above(small):.0f} -> {above(large):.0f} MiB")
        print(f"  (c) 4N/N: peak x{ref_large['peak'] / ref_small['peak']:.3f}, peak above load "
              f"{above(ref_small):.0f} -> {above(ref_large):.0f} MiB "
              f"({(above(ref_large) - above(ref_small)) / (ref_large['rows'] - ref_small['rows']) * 1024:.0f} KiB "
              f"per extra row)")

    print()
    print(f"wall time {time.perf_counter() - wall0:.0f}s")
    print(f"forward_ratio={forward_ratio:.2f} reference_ratio={reference_ratio:.2f} mem_growth={mem_growth:.2f}")


if __name__ == "__main__":
    sys.exit(main())
