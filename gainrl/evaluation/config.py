"""Typed configuration of a benchmark evaluation (eval/run.py): defaults < YAML < key=value overrides."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING

from ..config import ModelConfig, PromptConfig, require
from .benchmarks import BENCHMARKS

CODE_SYSTEM_PROMPT = ("You are an expert Python programmer. Solve the task, then give the complete solution "
                      "(imports and every function it needs) in a single ```python code block.")


def default_prompts() -> dict[str, PromptConfig]:
    """Prompt formats by benchmark kind: math uses the training format (answer in \\boxed{}),
    code asks for one fenced Python block. A benchmark name as key overrides its kind's format."""
    return {
        "math": PromptConfig(),
        "code": PromptConfig(system_prompt=CODE_SYSTEM_PROMPT, one_shot_question=None, one_shot_answer=None),
    }


@dataclass
class GenerationConfig:
    num_samples: int = 1  # completions per problem (n); pass@k needs k <= n
    temperature: float = 0.0  # 0 = greedy (then num_samples must be 1)
    top_p: float = 1.0
    max_new_tokens: int = 4096  # completion cap; a completion cut here is counted as truncated
    max_model_len: Optional[int] = None  # prompt + completion tokens; None = the model's own limit
    pass_at: list[int] = field(default_factory=lambda: [1])  # k values reported as pass@k (each <= num_samples)
    seed: int = 0  # vLLM's sampling seed
    tensor_parallel_size: int = 1  # GPUs per model copy (e.g. 2-4 for a 7B model with long answers)
    gpu_memory_utilization: float = 0.9  # vLLM's share of each GPU
    cpu_kv_cache_gib: float = 1.0  # vLLM-CPU KV cache
    enforce_eager: bool = False  # skip graph capture (faster start, slower decoding)
    problems_per_chunk: int = 256  # problems generated and graded per chunk; results are saved after each


@dataclass
class GradingConfig:
    math_timeout_s: float = 10.0  # per-answer limit for math_verify; past it the sample is wrong ("timeout")
    code_timeout_s: float = 20.0  # wall-clock limit per program (HumanEval+/MBPP+ tests: 60-120 s)
    num_workers: int = 0  # grading processes; 0 = one per CPU core


@dataclass
class EvalRunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    benchmarks: list[str] = MISSING  # names from gainrl.evaluation.benchmarks.BENCHMARKS
    limit: Optional[int] = None  # evaluate the first N problems of each benchmark; None = all
    name: Optional[str] = None  # the checkpoint's label in outputs; None = the model folder's name
    output_dir: str = "runs/eval"  # results go to <output_dir>/<name>/<benchmark>/
    # this process evaluates problems shard_index, shard_index + num_shards, ... of every benchmark;
    # the last shard to finish merges them (gainrl.slurm sets both for each model copy of a job)
    num_shards: int = 1
    shard_index: int = 0
    paths: dict[str, str] = field(default_factory=dict)  # benchmark -> its file or dataset name, overriding the default
    math_files: dict[str, str] = field(default_factory=dict)  # more math benchmarks: name -> file of {id, problem, answer}
    # by kind (math, code) or benchmark; a benchmark's entry is a whole PromptConfig whose unset fields take
    # PromptConfig's defaults (the math format), not its kind's: give every field for a code benchmark
    prompts: dict[str, PromptConfig] = field(default_factory=default_prompts)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    grading: GradingConfig = field(default_factory=GradingConfig)


def validate_eval(cfg: EvalRunConfig) -> None:
    unknown = [name for name in cfg.benchmarks if name not in BENCHMARKS and name not in cfg.math_files]
    require(not unknown, "benchmarks", f"unknown {unknown}; known: {', '.join(BENCHMARKS)} (or add it to math_files)")
    clashes = [name for name in cfg.math_files if name in BENCHMARKS]
    require(not clashes, "math_files", f"{clashes} are registered benchmarks: pick other names")
    require(len(cfg.benchmarks) > 0, "benchmarks", "name at least one benchmark")
    require(len(set(cfg.benchmarks)) == len(cfg.benchmarks), "benchmarks", "a benchmark is named twice")
    unknown_paths = [name for name in cfg.paths if name not in BENCHMARKS]
    require(not unknown_paths, "paths", f"unknown benchmark {unknown_paths}")
    for key, prompt in cfg.prompts.items():
        require(key in ("math", "code") or key in BENCHMARKS or key in cfg.math_files, f"prompts.{key}",
                "must be a benchmark kind (math, code) or a benchmark name")
        require(prompt.question_template.count("{problem}") == 1, f"prompts.{key}.question_template",
                "must contain {problem} exactly once")
        require((prompt.one_shot_question is None) == (prompt.one_shot_answer is None), f"prompts.{key}.one_shot_answer",
                "one_shot_question and one_shot_answer are set together or not at all")
    require(cfg.limit is None or cfg.limit > 0, "limit", "must be positive or null")
    require(cfg.num_shards >= 1, "num_shards", f"must be >= 1, got {cfg.num_shards}")
    require(0 <= cfg.shard_index < cfg.num_shards, "shard_index",
            f"must be in [0, num_shards={cfg.num_shards}), got {cfg.shard_index}")
    require(cfg.model.dtype in ("auto", "float32", "bfloat16", "float16"), "model.dtype",
            f"must be auto, float32, bfloat16 or float16, got {cfg.model.dtype!r}")
    g = cfg.generation
    require(g.num_samples >= 1, "generation.num_samples", "must be >= 1")
    require(g.temperature >= 0, "generation.temperature", "must be >= 0")
    require(g.temperature > 0 or g.num_samples == 1, "generation.num_samples",
            "greedy decoding (temperature 0) gives one completion: set num_samples=1 or a temperature > 0")
    require(0 < g.top_p <= 1, "generation.top_p", "must be in (0, 1]")
    require(g.max_new_tokens > 0, "generation.max_new_tokens", "must be positive")
    require(g.max_model_len is None or g.max_model_len > 0, "generation.max_model_len", "must be positive or null")
    require(all(1 <= k <= g.num_samples for k in g.pass_at), "generation.pass_at",
            f"each k must be in [1, num_samples={g.num_samples}], got {g.pass_at}")
    require(g.tensor_parallel_size >= 1, "generation.tensor_parallel_size", "must be >= 1")
    require(g.problems_per_chunk > 0, "generation.problems_per_chunk", "must be positive")
    require(cfg.grading.math_timeout_s > 0, "grading.math_timeout_s", "must be positive")
    require(cfg.grading.code_timeout_s > 0, "grading.code_timeout_s", "must be positive")
    require(cfg.grading.num_workers >= 0, "grading.num_workers", "must be >= 0")
