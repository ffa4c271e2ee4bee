"""Evaluate a checkpoint on math and code benchmarks with vLLM: per-sample records and summary tables.

    python eval/run.py --model PATH --benchmarks math500,humaneval [--limit N] [--config eval/configs/X.yaml] [key=value ...]

Greedy pass@1 by default; sampled avg@k and pass@k with e.g. `generation.temperature=0.6
generation.num_samples=16 generation.pass_at=[1,8,16]`. A 7B model on GPUs:
`generation.tensor_parallel_size=2`. Writes <output_dir>/<name>/<benchmark>/samples.jsonl (one
record per completion), summary.json per benchmark, and <output_dir>/<name>/summary.{md,json};
a re-run skips what is already graded. Several processes (e.g. one per GPU) share the problems
with `num_shards=N shard_index=I` each; the last to finish merges. Compare checkpoints with
eval/compare.py.
"""
import dataclasses
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

from gainrl import dist, metrics  # noqa: E402
from gainrl.config import load_config  # noqa: E402
from gainrl.evaluation.benchmarks import Benchmark, load_problems, resolve_benchmark  # noqa: E402
from gainrl.evaluation.config import EvalRunConfig, validate_eval  # noqa: E402
from gainrl.evaluation.evaluate import evaluate_benchmark  # noqa: E402
from gainrl.evaluation.generate import EvalGenerator  # noqa: E402
from gainrl.evaluation.grading import Graders  # noqa: E402
from gainrl.evaluation.report import checkpoint_table, update_checkpoint_summary  # noqa: E402
from gainrl.evaluation.results import Shard, check_one_model, open_run  # noqa: E402
from gainrl.models import check_weight_files, checkpoint_fingerprint  # noqa: E402
from gainrl.preflight import check_writable  # noqa: E402
from gainrl.prompts import PromptBuilder  # noqa: E402
from gainrl.vllm_logs import send_vllm_logs_to  # noqa: E402

FLAGS = {"--model": "model.path", "--benchmarks": "benchmarks", "--limit": "limit", "--name": "name",
         "--output-dir": "output_dir"}


def translate_flags(argv: list[str]) -> list[str]:
    """`--model P --benchmarks a,b --limit N` -> the config overrides they stand for."""
    out, args = [], list(argv)
    while args:
        arg = args.pop(0)
        flag, _, value = arg.partition("=")
        if flag in FLAGS:
            if not value:
                if not args:
                    raise ValueError(f"{flag} needs a value")
                value = args.pop(0)
            key = FLAGS[flag]
            if key == "benchmarks":
                out.append(f"{key}=[{','.join(v.strip() for v in value.split(',') if v.strip())}]")
            else:  # a path or name stays a string ("007" is not 7); --limit stays a number
                out.append(f"{key}={value if key == 'limit' else json.dumps(value)}")
        else:
            out.append(arg)
    return out


def run_key(cfg: EvalRunConfig, benchmark: Benchmark, source: str, prompts: PromptBuilder) -> dict:
    """What decides the records: a different key is a different run (see gainrl.evaluation.results)."""
    g = cfg.generation
    dtype = cfg.model.dtype if cfg.model.dtype != "auto" else ("bfloat16" if on_gpu() else "float32")
    return {"model": os.path.abspath(cfg.model.path), "model_fingerprint": checkpoint_fingerprint(cfg.model.path),
            "dtype": dtype, "benchmark": benchmark.name, "prompt": prompts.template_hash(),
            "source": os.path.abspath(source) if os.path.exists(source) else source,  # a file, or a dataset name
            "num_samples": g.num_samples, "temperature": g.temperature, "top_p": g.top_p,
            "max_new_tokens": g.max_new_tokens, "max_model_len": g.max_model_len, "seed": g.seed,
            "grading": dataclasses.asdict(cfg.grading) if benchmark.kind == "code"
            else {"math_timeout_s": cfg.grading.math_timeout_s}}


def on_gpu() -> bool:
    """What the engine will run on, asked of vLLM's platform (NVML), without initialising CUDA in this process."""
    from vllm.platforms import current_platform
    return current_platform.is_cuda_alike()


def main(argv: list[str]) -> None:
    from transformers import AutoTokenizer

    # vLLM's tensor-parallel workers: spawned, not forked ("Cannot re-initialize CUDA in forked subprocess")
    os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")

    cfg = load_config(translate_flags(argv), EvalRunConfig, validate_eval)
    if not os.path.isdir(cfg.model.path):
        raise ValueError(f"config key 'model.path': no model folder at {cfg.model.path}")
    name = cfg.name or os.path.basename(os.path.normpath(cfg.model.path))
    out_dir = os.path.join(cfg.output_dir, name)
    check_weight_files(cfg.model.path)  # an export cut short: named here, not by vLLM's loader minutes later
    check_writable(out_dir, "output_dir")
    check_one_model(out_dir, cfg.model.path, checkpoint_fingerprint(cfg.model.path))
    # Everything that can be wrong with the input fails here, before the engine is built
    tokenizer = AutoTokenizer.from_pretrained(cfg.model.path)
    shard = Shard(cfg.shard_index, cfg.num_shards)
    jobs = []
    for benchmark_name in cfg.benchmarks:
        benchmark = resolve_benchmark(benchmark_name, cfg.math_files)
        source = cfg.paths.get(benchmark_name) or benchmark.default_source()
        problems = load_problems(benchmark, source, cfg.limit)
        prompts = PromptBuilder(tokenizer, cfg.prompts.get(benchmark_name) or cfg.prompts[benchmark.kind])
        key = run_key(cfg, benchmark, source, prompts)
        open_run(os.path.join(out_dir, benchmark_name), key, cfg.generation.num_samples, shard)  # refuses another run
        jobs.append((benchmark, problems, prompts, key))

    send_vllm_logs_to(os.path.join(out_dir, "logs"))  # vLLM's lines there; the console keeps each warning once
    generator = EvalGenerator(cfg.model.path, cfg.model.dtype, cfg.generation)
    graders = Graders(cfg.grading)
    finished, pending = {}, []
    try:
        for benchmark, problems, prompts, key in jobs:
            summary = evaluate_benchmark(benchmark, problems, prompts, generator, graders.grade,
                                         os.path.join(out_dir, benchmark.name), key, cfg.generation, shard)
            if summary is None:  # other shards still run: the last to finish merges
                pending.append(benchmark.name)
                continue
            metrics.log(f"{benchmark.name}: accuracy {100 * summary['accuracy']:.1f}% over {summary['num_problems']} "
                        f"problems x {summary['num_samples']} samples")
            finished[benchmark.name] = summary
            summaries = update_checkpoint_summary(out_dir, name, finished)  # survives a later failure
    finally:
        graders.close()
        generator.close()
    if pending:
        metrics.log(f"{shard} done; {', '.join(pending)} wait for other shards (the last to finish merges them, "
                    f"as does `python -m gainrl.slurm summarize eval -- ARGS`)")
    if finished:
        print(checkpoint_table(name, summaries))
        metrics.log(f"wrote {out_dir}/summary.md, summary.json and per-benchmark samples.jsonl")


if __name__ == "__main__":  # vLLM may spawn helper processes: the guard is required
    dist.run_entry_point(main, sys.argv[1:])
