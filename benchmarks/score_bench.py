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
import multiprocessing as mp  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from bench_models import add_model_args, ensure_model  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_GSM8K = "/work/shared/data/math/gsm8k_train.jsonl"
BUNDLED_GSM8K = os.path.join(REPO, "gainrl", "assets", "gsm8k_train_512.jsonl")


# ---- set-up ------------------------------------------------------------------------------------

def load_prompts(args, model_path: str, limit: int):
    from gainrl.config import DataConfig, PromptConfig
    from gainrl.data import load_rows
    from gainrl.prompts import PromptBuilder, build_prompts
    from gainrl.models import load_tokenizer, pad_token_id
    tokenizer = load_tokenizer(model_path)
    rows = load_rows(DataConfig(path=args.data, limit=limit)).rows
    builder = PromptBuilder(tokenizer, PromptConfig())
    prompts = build_prompts(builder, rows)
    pad_id = pad_token_id(tokenizer)
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

def vm_hwm_mib() -> float:
    """This address space's own peak RSS (VmHWM): unlike ru_maxrss it is not inherited across exec."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


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
        t0 = time.perf_counter()
        if path_name == "project":
            batches = plan_batches([p.num_tokens for p in prompts], args.max_tokens)
            run_project(model, rows, prompts, batches, pad_id)
        else:
            run_reference(model, prompts)
        seconds = time.perf_counter() - t0
        queue.put({"rows": len(rows), "tokens": sum(p.num_tokens for p in prompts), "rss_after_load": rss_after_load,
                   "peak": peak_rss_mib(), "hwm": vm_hwm_mib(), "seconds": seconds})
    except BaseException as e:  # report, do not leave the parent waiting
        queue.put({"error": f"{type(e).__name__}: {e}"})
        raise


def measure_memory(path_name: str, model_path: str, args, num_rows: int) -> dict:
    """Run one path on `num_rows` rows in a fresh spawned process; its peak RSS comes back.

    Linux carries the parent's peak RSS into a child's ru_maxrss across fork/exec, so this
    must be called while the parent is still small (before it loads any model); the child's
    own VmHWM, which exec resets, is reported alongside as a check."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=memory_child, args=(path_name, model_path, vars(args), num_rows, queue))
    saved = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    if args.malloc_mmap_threshold is not None:  # glibc reads it at start-up: only the child is affected
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(args.malloc_mmap_threshold)
    try:
        proc.start()
    finally:
        if args.malloc_mmap_threshold is not None:
            if saved is None:
                del os.environ["MALLOC_MMAP_THRESHOLD_"]
            else:
                os.environ["MALLOC_MMAP_THRESHOLD_"] = saved
    result = queue.get()
    proc.join()
    if "error" in result:
        raise RuntimeError(f"memory run {path_name} x {num_rows} rows failed: {result['error']}")
    return result


# ---- main ------------------------------------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="CPU benchmark of the prefill scorer against a full forward "
                                                 "and the batch-1 reference approach.")
    parser.add_argument("--data", default=SHARED_GSM8K if os.path.isfile(SHARED_GSM8K) else BUNDLED_GSM8K,
                        help="rows {id, problem, answer} (.jsonl/.json/.parquet)")
    parser.add_argument("--rows", type=int, default=32, help="rows for the throughput runs")
    parser.add_argument("--repeats", type=int, default=2,
                        help="timed repeats of (b) and (c); (a) runs twice per repeat, interleaved; best is reported")
    parser.add_argument("--max-tokens", type=int, default=16384,
                        help="scorer token budget per batch (scorer.max_tokens_per_batch; the library default)")
    parser.add_argument("--sweep-max-tokens", default="1024,4096",
                        help="other token budgets to time the scorer (a) alone with, comma-separated ('' = none)")
    parser.add_argument("--mem-rows", type=int, default=128,
                        help="N for the scorer's memory runs (N and 4N rows); N rows must fill at least one "
                             "batch of --max-tokens, or the growth measured is that of the batch, not of the rows")
    parser.add_argument("--ref-mem-rows", type=int, default=None,
                        help="N for the reference's memory runs (N and 4N rows); default --mem-rows / 4")
    parser.add_argument("--mem-repeats", type=int, default=3,
                        help="runs of each scorer memory configuration (the median peak is used: glibc's heap "
                             "makes a single peak vary by +-10%%)")
    parser.add_argument("--ref-mem-repeats", type=int, default=1, help="runs of each reference memory configuration")
    parser.add_argument("--malloc-mmap-threshold", type=int, default=None,
                        help="set MALLOC_MMAP_THRESHOLD_ (bytes) in every memory child, e.g. 1048576: a fixed "
                             "threshold makes glibc return freed activations to the OS (default: glibc's own)")
    parser.add_argument("--skip-memory", action="store_true", help="skip the memory runs")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    add_model_args(parser)
    args = parser.parse_args(argv)
    if args.ref_mem_rows is None:
        args.ref_mem_rows = max(1, args.mem_rows // 4)
    args.sweep_max_tokens = [int(x) for x in args.sweep_max_tokens.split(",") if x.strip()]
    return args


def memory_phase(args, model_path: str) -> dict:
    parent_peak = peak_rss_mib()
    print(f"memory runs (fresh spawned processes; this process's peak RSS so far: {parent_peak:.0f} MiB)", flush=True)
    runs = {("project", args.mem_rows): [], ("project", 4 * args.mem_rows): [],
            ("reference", args.ref_mem_rows): [], ("reference", 4 * args.ref_mem_rows): []}
    order = [key for rep in range(args.mem_repeats) for key in list(runs)[:2]]  # N, 4N, N, 4N, ...
    order += [key for rep in range(args.ref_mem_repeats) for key in list(runs)[2:]]
    for name, n in order:
        r = measure_memory(name, model_path, args, n)
        runs[(name, n)].append(r)
        print(f"  {name} x {r['rows']} rows: peak {r['peak']:.0f} MiB (VmHWM {r['hwm']:.0f}) in {r['seconds']:.1f}s",
              flush=True)
        if r["peak"] <= parent_peak * 1.01:
            print(f"  WARNING: this child's ru_maxrss ({r['peak']:.0f} MiB) may be the parent's, inherited")
    results = {}
    for key, rs in runs.items():  # the run with the median peak (the lower middle one for an even count)
        results[key] = dict(sorted(rs, key=lambda r: r["peak"])[(len(rs) - 1) // 2], all_peaks=[r["peak"] for r in rs])
    return results


def throughput_phase(args, model_path: str) -> dict:
    from gainrl.scorer import plan_batches
    rows, prompts, pad_id = load_prompts(args, model_path, args.rows)
    lengths = [p.num_tokens for p in prompts]
    batches = plan_batches(lengths, args.max_tokens)
    sweep = {budget: plan_batches(lengths, budget) for budget in args.sweep_max_tokens if budget != args.max_tokens}
    real_tokens = sum(lengths)

    def padded(bs):
        return sum(lengths[b[0]] * len(b) for b in bs)

    print(f"throughput data {args.data}: {len(rows)} rows, {real_tokens} prompt tokens "
          f"(min/median/max {min(lengths)}/{int(statistics.median(lengths))}/{max(lengths)}), "
          f"{len(batches)} batch(es) under {args.max_tokens} tokens, padded {padded(batches)} "
          f"({padded(batches) / real_tokens:.3f}x)", flush=True)

    project = load_project_model(model_path, args)
    full = load_full_model(model_path, args)
    n_full = sum(p.numel() for p in full.parameters())
    n_prefill = sum(p.numel() for p in project.module.parameters())

    # warm-up: one batch per path (one prompt for the batch-1 reference)
    warm = batches[len(batches) // 2]
    run_project(project, rows, prompts, [warm], pad_id)
    run_full_forward(full, prompts, [warm], pad_id)
    run_reference(full, [prompts[warm[0]]])

    times = {"project": [], "forward": [], "reference": []}
    times.update({("sweep", budget): [] for budget in sweep})
    records, reference = None, None

    def timed(key, fn):
        t0 = time.perf_counter()
        out = fn()
        times[key].append(time.perf_counter() - t0)
        return out

    for rep in range(args.repeats):  # interleaved, so that slow spells of a noisy machine hit every path
        records = timed("project", lambda: run_project(project, rows, prompts, batches, pad_id))
        timed("forward", lambda: run_full_forward(full, prompts, batches, pad_id))
        for budget, bs in sweep.items():
            timed(("sweep", budget), lambda: run_project(project, rows, prompts, bs, pad_id))
        timed("project", lambda: run_project(project, rows, prompts, batches, pad_id))
        reference = timed("reference", lambda: run_reference(full, prompts))
        print(f"  repeat {rep + 1}/{args.repeats}: " + "  ".join(
            f"{k if isinstance(k, str) else f'project@{k[1]}'} "
            + "/".join(f"{t:.2f}" for t in v[-2 if k == 'project' else -1:]) + "s"
            for k, v in times.items()), flush=True)

    by_id = {r["id"]: r for r in records}  # the paths must agree on the scores
    d_intra = max(abs(by_id[row.id]["c_intra"] - ref[0]) for row, ref in zip(rows, reference))
    d_inter = max(abs(by_id[row.id]["c_inter"] - ref[1]) for row, ref in zip(rows, reference))
    return {"rows": len(rows), "tokens": real_tokens, "times": times, "n_full": n_full, "n_prefill": n_prefill,
            "padded": {args.max_tokens: padded(batches), **{k: padded(v) for k, v in sweep.items()}},
            "num_batches": {args.max_tokens: len(batches), **{k: len(v) for k, v in sweep.items()}},
            "d_intra": d_intra, "d_inter": d_inter}


def main(argv=None) -> None:
    wall0 = time.perf_counter()
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    model_path = ensure_model(args)
    mem = None if args.skip_memory else memory_phase(args, model_path)  # first: this process must be small
    tp = throughput_phase(args, model_path)

    times, tokens = tp["times"], tp["tokens"]
    best = {k: min(v) for k, v in times.items()}
    tps = {k: tokens / v for k, v in best.items()}
    forward_ratio = tps["project"] / tps["forward"]
    reference_ratio = tps["project"] / tps["reference"]

    print()
    print(f"model {os.path.relpath(model_path, REPO)}: {tp['n_full'] / 1e6:.1f}M parameters "
          f"({tp['n_prefill'] / 1e6:.1f}M in the prefill model, no LM head, last MLP cut); dtype {args.dtype}, "
          f"attn {args.attn}, {args.threads} thread(s), torch {torch.__version__}")
    print(f"throughput: {tp['rows']} rows, {tokens} real prompt tokens; best of {len(times['forward'])} "
          f"((a): {len(times['project'])}); tokens/s counts unpadded prompt tokens")
    print(f"  {'path':<48} {'batches':>7} {'padded':>7} {'best s':>7} {'median s':>8} {'tokens/s':>9} "
          f"{'(a)/this':>8}")
    rows_out = [("project", f"(a) project scorer, max_tokens={args.max_tokens}", tp["num_batches"][args.max_tokens],
                 tp["padded"][args.max_tokens]),
                ("forward", "(b) full forward (LM head), same batches", tp["num_batches"][args.max_tokens],
                 tp["padded"][args.max_tokens]),
                ("reference", "(c) reference: batch 1, full fwd, kept, L x L", tp["rows"], tokens)]
    rows_out += [(k, f"(a') project scorer, max_tokens={k[1]}", tp["num_batches"][k[1]], tp["padded"][k[1]])
                 for k in times if not isinstance(k, str)]
    for key, label, nb, pad in rows_out:
        print(f"  {label:<48} {nb:>7} {pad:>7} {best[key]:>7.2f} {statistics.median(times[key]):>8.2f} "
              f"{tps[key]:>9.1f} {tps['project'] / tps[key]:>8.2f}")
    for k in times:
        if not isinstance(k, str):
            print(f"  with max_tokens={k[1]}: forward_ratio would be {tps[k] / tps['forward']:.2f}, "
                  f"reference_ratio {tps[k] / tps['reference']:.2f} (batches differ from (b)'s)")
    print(f"  scores (a) vs (c): max |diff| c_intra {tp['d_intra']:.1e}, c_inter {tp['d_inter']:.1e}")

    mem_growth = float("nan")
    if mem is not None:
        if mem[("project", args.mem_rows)]["tokens"] < args.max_tokens:
            print(f"WARNING: N={args.mem_rows} rows hold fewer tokens than one batch ({args.max_tokens}): "
                  "mem_growth then measures a fuller batch, not more rows; raise --mem-rows")
        print()
        malloc = "glibc default" if args.malloc_mmap_threshold is None else \
            f"MALLOC_MMAP_THRESHOLD_={args.malloc_mmap_threshold}"
        print(f"peak memory (MiB), each run in a fresh spawned process ({malloc}): the child's ru_maxrss (median run; "
              "all runs' in brackets), its VmHWM, RSS right after model load")
        print(f"  {'path':<40} {'rows':>5} {'tokens':>7} {'load':>6} {'peak':>6} {'VmHWM':>6} {'peak-load':>9} "
              f"{'run s':>6}  all peaks")
        for (name, n), r in mem.items():
            label = f"(a) project scorer, max_tokens={args.max_tokens}" if name == "project" else \
                "(c) reference (activations kept)"
            print(f"  {label:<40} {r['rows']:>5} {r['tokens']:>7} {r['rss_after_load']:>6.0f} {r['peak']:>6.0f} "
                  f"{r['hwm']:>6.0f} {r['peak'] - r['rss_after_load']:>9.0f} {r['seconds']:>6.1f}  "
                  f"[{' '.join(f'{p:.0f}' for p in r['all_peaks'])}]")
        small, large = mem[("project", args.mem_rows)], mem[("project", 4 * args.mem_rows)]
        rsmall, rlarge = mem[("reference", args.ref_mem_rows)], mem[("reference", 4 * args.ref_mem_rows)]
        mem_growth = large["peak"] / small["peak"]

        def above(r):
            return r["peak"] - r["rss_after_load"]

        def per_row(a, b):
            return (above(b) - above(a)) / max(1, b["rows"] - a["rows"]) * 1024

        print(f"  (a) N={small['rows']} -> 4N={large['rows']}: peak x{mem_growth:.3f}; above load "
              f"{above(small):.0f} -> {above(large):.0f} MiB ({per_row(small, large):+.0f} KiB per extra row)")
        kept_kib = args.hidden_size * torch_dtype(args.dtype).itemsize * rlarge["tokens"] / rlarge["rows"] / 1024
        print(f"  (c) N={rsmall['rows']} -> 4N={rlarge['rows']}: peak x{rlarge['peak'] / rsmall['peak']:.3f}; above "
              f"load {above(rsmall):.0f} -> {above(rlarge):.0f} MiB ({per_row(rsmall, rlarge):+.0f} KiB per extra "
              f"row; the kept activations alone are ~{kept_kib:.0f} KiB per row)")

    print()
    print(f"wall time {time.perf_counter() - wall0:.0f}s")
    print(f"forward_ratio={forward_ratio:.2f} reference_ratio={reference_ratio:.2f} mem_growth={mem_growth:.2f}")


if __name__ == "__main__":
    sys.exit(main())
