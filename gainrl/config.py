"""Typed configuration: dataclass defaults < YAML recipe < command-line dotlist overrides.

`load_config(argv)` is the only entry point. A mistyped key, a wrong type or an invalid
value raises `ValueError` naming the dotted key; values are checked, never rewritten.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant. The user asks a question, and you solve it. "
    "Think step by step, then give the final answer within \\boxed{}."
)
DEFAULT_ONE_SHOT_QUESTION = "What is 2+2?"
DEFAULT_ONE_SHOT_ANSWER = "2 plus 2 equals 4. The final answer is \\boxed{4}."


@dataclass
class TinyModelConfig:
    hidden_size: int = 64  # model width; head_dim = hidden_size / num_heads must be >= 32 for vLLM-CPU
    num_layers: int = 2  # decoder layers
    num_heads: int = 2  # attention heads
    num_kv_heads: int = 1  # key/value heads (GQA); divides num_heads
    intermediate_size: int = 128  # MLP width
    tokenizer_vocab_size: int = 1024  # BPE vocabulary trained offline, special tokens included
    model_vocab_size: Optional[int] = None  # embedding rows; None = the tokenizer's size (151936 mimics Qwen)
    seed: int = 0  # weight initialisation seed


@dataclass
class ModelConfig:
    path: str = MISSING  # local model folder (or a hub id when online)
    dtype: str = "auto"  # float32 | bfloat16 | float16 | auto (bfloat16 on GPU, float32 on CPU)
    attn_implementation: str = "sdpa"  # sdpa | eager | flash_attention_2
    build_tiny: Optional[TinyModelConfig] = None  # if set and `path` is absent, build a tiny model there


@dataclass
class DataConfig:
    path: str = MISSING  # .json / .jsonl / .parquet file, or a dataset name on the hub
    split: str = "train"  # split, for hub names
    id_field: Optional[str] = "id"  # field holding a unique row id; None = the row's position
    problem_field: str = "problem"  # field holding the question text
    answer_field: str = "answer"  # field holding the reference answer
    limit: Optional[int] = None  # keep the first N rows (after validation); None = all
    skip_bad_rows: bool = False  # skip and count invalid rows instead of failing


@dataclass
class PromptConfig:
    system_prompt: Optional[str] = DEFAULT_SYSTEM_PROMPT  # None = no system message
    one_shot_question: Optional[str] = DEFAULT_ONE_SHOT_QUESTION  # None = no one-shot exchange
    one_shot_answer: Optional[str] = DEFAULT_ONE_SHOT_ANSWER
    question_template: str = "{problem}"  # user message; must contain {problem} exactly once
    chat_template: Optional[str] = None  # Jinja template overriding the tokenizer's own (text or file path)


@dataclass
class ScorerConfig:
    layer: int = -1  # decoder layer whose MLP input is scored; negative counts from the end
    w_inter: float = 8.0  # score = C_intra + w_inter * C_inter
    max_tokens_per_batch: int = 16384  # padded tokens per prefill batch (batch size x longest prompt)
    output_dir: str = "runs/scores"  # score files are named after (dataset, model, layer, template)
    output: Optional[str] = None  # explicit score file path; overrides output_dir naming
    ds_config: Optional[str] = None  # DeepSpeed JSON: partition the model with ZeRO-3; None = a replica per rank
    reference_order: Optional[str] = None  # an authors' ordering (.pt or .json) to correlate with
    resume: bool = True  # continue from the rows a killed run already scored
    plot: bool = True  # write <score file>.png: score histogram and score vs prompt length


@dataclass
class DistConfig:
    timeout_s: int = 1800  # collective timeout; a dead rank makes the others fail after this


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    scorer: ScorerConfig = field(default_factory=ScorerConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    seed: int = 0  # global seed


def parse_args(argv: list[str]) -> tuple[Optional[str], list[str]]:
    """Split `--config PATH` and `key=value` overrides; drop the launcher's --local_rank."""
    config_path, overrides = None, []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--config":
            if not args:
                raise ValueError("--config needs a path")
            config_path = args.pop(0)
        elif arg.startswith("--config="):
            config_path = arg.split("=", 1)[1]
        elif arg.startswith("--local_rank") or arg.startswith("--local-rank"):
            if "=" not in arg and args:  # deepspeed passes --local_rank=N; torch.distributed.launch may split it
                args.pop(0)
        elif "=" in arg and not arg.startswith("-"):
            overrides.append(arg)
        else:
            raise ValueError(f"unexpected argument {arg!r}: expected --config PATH and key=value overrides")
    return config_path, overrides


def load_config(argv: list[str], schema: type = Config):
    """Build the typed config from `--config RECIPE.yaml key=value ...`."""
    config_path, overrides = parse_args(argv)
    merged = OmegaConf.structured(schema)
    try:
        if config_path is not None:
            if not os.path.isfile(config_path):
                raise ValueError(f"config file not found: {config_path}")
            merged = OmegaConf.merge(merged, OmegaConf.load(config_path))
        merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(overrides))
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        where = f" (in {config_path} or the overrides)" if config_path else ""
        raise ValueError(f"config key '{key}': {e.msg if hasattr(e, 'msg') else e}{where}") from None
    validate(cfg)
    return cfg


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ValueError(f"config key '{key}': {message}")


def validate(cfg: Config) -> None:
    """Range and consistency checks that types alone cannot express."""
    _require(cfg.model.dtype in ("auto", "float32", "bfloat16", "float16"), "model.dtype",
             f"must be auto, float32, bfloat16 or float16, got {cfg.model.dtype!r}")
    _require(cfg.model.attn_implementation in ("sdpa", "eager", "flash_attention_2"),
             "model.attn_implementation", f"unknown {cfg.model.attn_implementation!r}")
    tiny = cfg.model.build_tiny
    if tiny is not None:
        _require(tiny.hidden_size % tiny.num_heads == 0, "model.build_tiny.num_heads", "must divide hidden_size")
        _require(tiny.num_heads % tiny.num_kv_heads == 0, "model.build_tiny.num_kv_heads", "must divide num_heads")
        _require(tiny.tokenizer_vocab_size >= 300, "model.build_tiny.tokenizer_vocab_size",
                 "must be >= 300 (256 byte tokens + specials + merges)")
    _require(cfg.data.limit is None or cfg.data.limit > 0, "data.limit", "must be positive or null")
    _require(cfg.prompt.question_template.count("{problem}") == 1, "prompt.question_template",
             "must contain {problem} exactly once")
    _require((cfg.prompt.one_shot_question is None) == (cfg.prompt.one_shot_answer is None),
             "prompt.one_shot_answer", "one_shot_question and one_shot_answer are set together or not at all")
    _require(cfg.scorer.max_tokens_per_batch > 0, "scorer.max_tokens_per_batch", "must be positive")
    _require(cfg.dist.timeout_s > 0, "dist.timeout_s", "must be positive")
