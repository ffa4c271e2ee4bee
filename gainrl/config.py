"""Typed configuration: dataclass defaults < YAML recipe < command-line dotlist overrides.

`load_config(argv)` is the only entry point. A mistyped key, a wrong type or an invalid
value raises `ValueError` naming the dotted key; values are checked, never rewritten.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Optional

import yaml
from omegaconf import DictConfig, MISSING, OmegaConf
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
class ArithmeticDataConfig:
    task: str = "expressions"  # expressions (gainrl.tasks.arithmetic) | chains (gainrl.tasks.chains)
    num_rows: int = 512  # problems written to data.path
    seed: int = 0  # which problems
    test_path: Optional[str] = None  # also write a held-out test split here (no problem of the training set)
    num_test: int = 64  # problems in the test split
    weights: Optional[list[float]] = None  # relative share of difficulty levels (expressions 1..8, chains 1..5
    #                                        steps); None = the task's default mix


@dataclass
class ModelConfig:
    path: str = MISSING  # local model folder (or a hub id when online)
    dtype: str = "auto"  # float32 | bfloat16 | float16 | auto (bfloat16 on GPU, float32 on CPU)
    attn_implementation: str = "sdpa"  # sdpa | eager | flash_attention_2
    build_tiny: Optional[TinyModelConfig] = None  # if set and `path` is absent, build a tiny model there
    warm_start: bool = False  # with build_tiny: fine-tune it on data.path's answers first (gainrl.warmstart, cached)
    warm_start_field: Optional[str] = None  # row field holding the response to fine-tune on (a worked solution);
    #                                         None = "The answer is \\boxed{answer}."
    warm_start_target_accuracy: float = 0.35  # stop once the training batches' sampled accuracy reaches this


@dataclass
class DataConfig:
    path: str = MISSING  # .json / .jsonl / .parquet file, or a dataset name on the hub
    split: str = "train"  # split, for hub names
    id_field: Optional[str] = "id"  # field holding a unique row id; None = the row's position
    problem_field: str = "problem"  # field holding the question text
    answer_field: str = "answer"  # field holding the reference answer
    limit: Optional[int] = None  # keep the first N rows (after validation); None = all
    skip_bad_rows: bool = False  # skip and count invalid rows instead of failing
    keep_fields: list[str] = field(default_factory=list)  # more fields kept per row (code: entry_point, test, test_type)
    build_arithmetic: Optional[ArithmeticDataConfig] = None  # if set and `path` is absent, write synthetic problems


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
    max_prompt_tokens: int = 8192  # a longer prompt is refused by its row id (it would take minutes, alone)
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


# ---- training (launchers/train.py): the scorer's sections plus the ones below ----------------

@dataclass
class SamplerConfig:
    schedule: str = "gaussian"  # gaussian (GAIN-RL's moving Gaussian) | uniform (vanilla GRPO: a fresh random
    # subset) | learnability (weights p(1 - p) from each row's observed pass rate)
    order: str = "score"  # what the Gaussian walks over: score | random (a seeded permutation) | a score-file column
    descending: bool = True  # order highest first (score: most concentrated first; prompt_tokens: false = shortest)
    prompts_per_epoch: int = 256  # B: prompts drawn (without replacement) per epoch
    units: str = "positions"  # how sigma, n, adj_min, adj_max, mu0 are given: positions | fraction (of N)
    sigma: float = 1000.0  # width of the Gaussian over positions
    n: float = 500.0  # step scale of the mu update
    alpha: float = 2.0  # tanh sharpness of the mu update
    beta: float = 0.5  # target accuracy in [0, 1]
    adj_min: float = 0.0  # lower clip of one mu step
    adj_max: float = 1000.0  # upper clip of one mu step
    mu0: float = 0.0  # initial mu
    use_angle: bool = True  # include the training-time angle term n * tanh(alpha * ang) in the update
    center_angle: bool = False  # the angle term from the signal minus the earlier epochs' mean (gaussian)
    rescore_every_epochs: int = 0  # re-score the training set with the current policy every K epochs; 0 = never
    prior_pass_rate: float = 0.5  # learnability: the pass rate assumed for a row not yet seen (Beta prior mean)
    prior_strength: float = 1.0  # learnability: the prior's weight in pseudo-rollouts
    skip_zero_variance: bool = False  # GRESO: skip a row whose last z groups had one reward, w.p. 1 - keep_base^z
    skip_keep_base: float = 0.5
    dynamic_sampling: bool = False  # DAPO: drop groups whose rewards are all equal and draw more until the
    dynamic_max_rounds: int = 3  # step's batch is full, at most this many extra rounds (then fill with dropped ones)
    dynamic_over_draw: float = 1.5  # an extra round draws this many times the groups still missing


@dataclass
class GrpoConfig:
    group_size: int = 8  # G: rollouts per prompt (>= 2)
    scale_by_std: bool = True  # divide group-centred rewards by the group's std
    clip_low: float = 0.2  # ratio clipped to [1 - clip_low, 1 + clip_high]
    clip_high: float = 0.2
    kl_coef: float = 0.0  # k3 KL to the reference policy; 0 = no reference model is built
    entropy_coef: float = 0.0  # entropy bonus (0 = off)
    aggregation: str = "token"  # token: mean over all response tokens of the step | sequence: mean of per-sequence means
    updates_per_batch: int = 1  # optimizer passes over each step's rollouts


@dataclass
class RolloutConfig:
    max_prompt_tokens: int = 512  # longer prompts are an error at start-up
    max_new_tokens: int = 512  # response length cap
    temperature: float = 1.0
    top_p: float = 1.0
    gpu_memory_utilization: float = 0.4  # vLLM's share of the GPU (colocated with the learner)
    sleep_between_steps: bool = True  # on GPU, free vLLM's memory while the learner trains
    enforce_eager: Optional[bool] = None  # skip vLLM's graph capture; None = off on GPU (CUDA graphs), on on CPU
    max_num_seqs: Optional[int] = None  # vLLM's limit on sequences decoded at once; None = vLLM's default
    max_num_batched_tokens: Optional[int] = None  # vLLM's tokens per scheduler step; None = vLLM's default
    cpu_kv_cache_gib: float = 1.0  # vLLM-CPU KV cache per rank
    push_bucket_mib: int = 256  # weight push: gathered bytes per bucket from ZeRO-3 shards to vLLM
    # consecutive ranks of a node share one vLLM engine split over their GPUs (vLLM's tensor parallelism): a
    # model too large for one GPU beside the learner's shards; each rank still trains on its own share
    tensor_parallel_size: int = 1
    # the learner's weights, gradients and optimizer states leave the GPU while vLLM generates (DeepSpeed's
    # offload_states / reload_states; the optimizer states only with optim.fused_adam, which DeepSpeed requires)
    offload_learner: bool = False


@dataclass
class RewardConfig:
    kind: str = "math"  # math (last \boxed{} against the answer) | code (the row's tests run on the program, sandboxed)
    timeout_s: float = 5.0  # per-sample limit (math: grading; code: the program's wall and CPU time); 0 reward past it
    num_workers: int = 2  # grading processes per rank (math_verify workers; code: programs run at once)
    pass_fraction: bool = False  # code: reward = fraction of a script test's asserts that pass (else all or nothing)


@dataclass
class OptimConfig:
    lr: float = 1e-6  # AdamW learning rate (constant after warm-up)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max global gradient norm
    warmup_steps: int = 0
    fused_adam: bool = False  # DeepSpeed's FusedAdam on GPU: JIT-compiled at the first step (needs nvcc matching
    #                           torch's CUDA); off = torch's AdamW (no compiler needed)


@dataclass
class TrainConfig:
    epochs: int = 10  # sampler epochs; each draws prompts_per_epoch prompts
    prompts_per_step: int = 256  # prompts per optimizer step; divides sampler.prompts_per_epoch
    micro_batch_size: int = 4  # sequences per forward/backward on one rank
    # or: rows sorted by length and cut to this many padded tokens (rows x longest row) per forward/backward,
    # as many micro-batches on every rank (the gradient is the same; far less padding with long-tailed answers)
    max_tokens_per_micro_batch: Optional[int] = None
    gradient_checkpointing: bool = False  # recompute activations in backward (long responses, big models)
    # ZeRO-3: the smallest parameters, up to this much, stay whole on every GPU (never gathered); the rest are
    # partitioned. A small model: all of it; a 7B one: norms, biases and attention matrices
    zero3_persist_gib: float = 2.0
    ds_config: str = "ds_configs/zero3.json"  # DeepSpeed JSON for the policy (and the reference model)
    score_file: Optional[str] = None  # ranking to walk; None = score the dataset first (scorer section)
    allow_score_file_from_other_model: bool = False  # use a train.score_file made with another model than model.path
    output_dir: str = "runs/train"  # metrics.jsonl, plots and checkpoints go here
    checkpoint_every: int = 50  # steps between checkpoints (<output_dir>/checkpoints/step_N); 0 = only at the end
    checkpoint_every_minutes: float = 0.0  # also checkpoint when this long has passed since the last one; 0 = off
    keep_checkpoints: int = 2  # complete checkpoints kept (the newest); older ones are deleted
    resume: str = "auto"  # auto: continue from the newest complete checkpoint if any | never | a step_N folder
    max_nonfinite_steps: int = 3  # a NaN/inf loss skips the step; this many in a row save and stop the run
    stop_file: Optional[str] = None  # if this file appears: checkpoint and stop (slurm requeue); None = <output_dir>/STOP


@dataclass
class ValidationConfig:
    path: Optional[str] = None  # held-out problems (the fields of `data`); None = no validation
    every_epochs: int = 1  # greedy accuracy on them before training and after every N epochs
    limit: Optional[int] = None  # the first N rows; None = all


@dataclass
class LogConfig:
    tensorboard: bool = True  # <output_dir>/tensorboard
    wandb: bool = False  # Weights & Biases (pip extra `wandb`)
    wandb_project: str = "gainrl"
    wandb_mode: str = "offline"  # offline (sync later with `wandb sync`) | online
    plots: bool = True  # <output_dir>/plots/*.png at the end (also: python launchers/plot_run.py RUN_DIR)


@dataclass
class TrainRunConfig(Config):
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    grpo: GrpoConfig = field(default_factory=GrpoConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    log: LogConfig = field(default_factory=LogConfig)


def config_dict(cfg) -> dict:
    """A typed config as plain nested dicts (what run files and checkpoints record)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg))


def changed_keys(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts."""
    keys = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


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
    seen: dict[str, str] = {}
    for override in overrides:  # the last one would win without a word: a typo'd sweep, a pasted line
        key = override.split("=", 1)[0].strip().lstrip("+~")
        if key in seen:
            raise ValueError(f"config key '{key}': given twice on the command line ({seen[key]}, {override}): "
                             "give it once")
        seen[key] = override
    return config_path, overrides


def layered_overrides(*layers: list[str]) -> list[str]:
    """key=value lists merged in order, a later layer's key replacing an earlier one's (a deliberate layering,
    such as an experiment's shared overrides under each curriculum's; on a command line a repeat is an error)."""
    merged: dict[str, str] = {}
    for layer in layers:
        for override in layer:
            key = override.split("=", 1)[0].strip()
            merged.pop(key, None)  # the later value, at the later place
            merged[key] = override
    return list(merged.values())


def load_recipe(path: str):
    """The YAML file at `path` as an OmegaConf mapping; a clear error naming the file otherwise."""
    if not os.path.isfile(path):
        raise ValueError(f"config file not found: {path}")
    try:
        loaded = OmegaConf.load(path)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        raise ValueError(f"config file {path}: not valid YAML{line}: {getattr(e, 'problem', None) or e}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"config file {path}: not UTF-8 text (byte {e.start}): is it a YAML file?") from None
    if not isinstance(loaded, DictConfig):
        raise ValueError(f"config file {path}: its top level must be a mapping of sections (model:, data:, ...), "
                         f"got a {type(loaded).__name__.replace('Config', '').lower() or 'value'}")
    return loaded


def load_config(argv: list[str], schema: type = Config, validator: Optional[Callable] = None):
    """Build the typed config from `--config RECIPE.yaml key=value ...`, checked by `validator`
    (by default `validate`, for the training and scoring configs)."""
    config_path, overrides = parse_args(argv)
    merged = OmegaConf.structured(schema)
    try:
        if config_path is not None:
            merged = OmegaConf.merge(merged, load_recipe(config_path))
        merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(overrides))
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        where = f" (in {config_path} or the overrides)" if config_path else ""
        raise ValueError(f"config key '{key}': {e.msg if hasattr(e, 'msg') else e}{where}") from None
    (validator or validate)(cfg)
    return cfg


def require(ok: bool, key: str, message: str) -> None:
    """Raise the config error for `key` unless `ok`."""
    if not ok:
        raise ValueError(f"config key '{key}': {message}")


def validate(cfg: Config) -> None:
    """Range and consistency checks that types alone cannot express."""
    require(cfg.model.dtype in ("auto", "float32", "bfloat16", "float16"), "model.dtype",
            f"must be auto, float32, bfloat16 or float16, got {cfg.model.dtype!r}")
    require(cfg.model.attn_implementation in ("sdpa", "eager", "flash_attention_2"),
            "model.attn_implementation", f"unknown {cfg.model.attn_implementation!r}")
    tiny = cfg.model.build_tiny
    if tiny is not None:
        require(tiny.hidden_size % tiny.num_heads == 0, "model.build_tiny.num_heads", "must divide hidden_size")
        require(tiny.num_heads % tiny.num_kv_heads == 0, "model.build_tiny.num_kv_heads", "must divide num_heads")
        require(tiny.tokenizer_vocab_size >= 300, "model.build_tiny.tokenizer_vocab_size",
                "must be >= 300 (256 byte tokens + specials + merges)")
    require(cfg.data.limit is None or cfg.data.limit > 0, "data.limit", "must be positive or null")
    require(not cfg.model.warm_start or cfg.model.build_tiny is not None, "model.warm_start",
            "needs model.build_tiny (the warm start fine-tunes the tiny model it builds)")
    require(cfg.model.warm_start_field is None or cfg.model.warm_start, "model.warm_start_field",
            "needs model.warm_start: true (it names what the warm start trains on)")
    require(0 < cfg.model.warm_start_target_accuracy <= 1, "model.warm_start_target_accuracy", "must be in (0, 1]")
    require(cfg.data.build_arithmetic is None or cfg.data.build_arithmetic.task in ("expressions", "chains"),
            "data.build_arithmetic.task", "must be expressions or chains")
    require(cfg.data.build_arithmetic is None or cfg.data.build_arithmetic.num_rows > 0,
            "data.build_arithmetic.num_rows", "must be positive")
    require(cfg.data.build_arithmetic is None or cfg.data.build_arithmetic.num_test > 0,
            "data.build_arithmetic.num_test", "must be positive")
    require(cfg.prompt.question_template.count("{problem}") == 1, "prompt.question_template",
            "must contain {problem} exactly once")
    require((cfg.prompt.one_shot_question is None) == (cfg.prompt.one_shot_answer is None),
            "prompt.one_shot_answer", "one_shot_question and one_shot_answer are set together or not at all")
    require(cfg.scorer.max_tokens_per_batch > 0, "scorer.max_tokens_per_batch", "must be positive")
    require(cfg.scorer.max_prompt_tokens > 0, "scorer.max_prompt_tokens", "must be positive")
    require(cfg.dist.timeout_s > 0, "dist.timeout_s", "must be positive")
    if isinstance(cfg, TrainRunConfig):
        validate_training(cfg)


def validate_training(cfg: TrainRunConfig) -> None:
    """Checks of the training sections; those that need the data (B <= N) run at start-up."""
    s, g, r, o, t = cfg.sampler, cfg.grpo, cfg.rollout, cfg.optim, cfg.train
    require(s.schedule in ("gaussian", "uniform", "learnability"), "sampler.schedule",
            f"must be gaussian, uniform or learnability, got {s.schedule!r}")
    require(not s.center_angle or (s.schedule == "gaussian" and s.use_angle), "sampler.center_angle",
            "needs sampler.schedule=gaussian and sampler.use_angle=true (it changes the angle term)")
    require(s.rescore_every_epochs >= 0, "sampler.rescore_every_epochs", "must be >= 0 (0 = never)")
    require(s.rescore_every_epochs == 0 or (s.schedule == "gaussian" and s.order == "score"),
            "sampler.rescore_every_epochs", "re-scores the angle ranking: needs sampler.schedule=gaussian and "
            "sampler.order=score")
    require(0 < s.prior_pass_rate < 1, "sampler.prior_pass_rate", "must be in (0, 1)")
    require(s.prior_strength > 0, "sampler.prior_strength", "must be positive")
    require(0 < s.skip_keep_base < 1, "sampler.skip_keep_base", "must be in (0, 1)")
    require(s.dynamic_max_rounds >= 1, "sampler.dynamic_max_rounds", "must be >= 1")
    require(s.dynamic_over_draw >= 1, "sampler.dynamic_over_draw", "must be >= 1")
    require(s.units in ("positions", "fraction"), "sampler.units", f"must be positions or fraction, got {s.units!r}")
    require(s.prompts_per_epoch > 0, "sampler.prompts_per_epoch", "must be positive")
    require(s.sigma > 0, "sampler.sigma", "must be positive")
    require(s.n >= 0, "sampler.n", "must be >= 0")
    require(s.alpha > 0, "sampler.alpha", "must be positive")
    require(0 <= s.beta <= 1, "sampler.beta", "is a target accuracy: must be in [0, 1]")
    require(s.adj_min <= s.adj_max, "sampler.adj_min", f"must be <= sampler.adj_max ({s.adj_max})")
    require(s.mu0 >= 0, "sampler.mu0", "must be >= 0")
    if s.units == "fraction":
        for key in ("sigma", "n", "adj_min", "adj_max", "mu0"):
            require(abs(getattr(s, key)) <= 1, f"sampler.{key}", "with sampler.units=fraction, must be in [-1, 1]")
    require(g.group_size >= 2, "grpo.group_size", f"must be >= 2 (GRPO compares rollouts of a prompt), got {g.group_size}")
    require(0 <= g.clip_low < 1, "grpo.clip_low", "must be in [0, 1)")
    require(g.clip_high >= 0, "grpo.clip_high", "must be >= 0")
    require(g.kl_coef >= 0, "grpo.kl_coef", "must be >= 0")
    require(g.entropy_coef >= 0, "grpo.entropy_coef", "must be >= 0")
    require(g.aggregation in ("token", "sequence"), "grpo.aggregation", f"must be token or sequence, got {g.aggregation!r}")
    require(g.updates_per_batch >= 1, "grpo.updates_per_batch", "must be >= 1")
    require(r.max_prompt_tokens > 0, "rollout.max_prompt_tokens", "must be positive")
    require(r.max_new_tokens > 0, "rollout.max_new_tokens", "must be positive")
    require(r.temperature > 0, "rollout.temperature", "must be positive (GRPO needs sampled rollouts)")
    require(0 < r.top_p <= 1, "rollout.top_p", "must be in (0, 1]")
    require(0 < r.gpu_memory_utilization < 1, "rollout.gpu_memory_utilization", "must be in (0, 1)")
    require(r.cpu_kv_cache_gib > 0, "rollout.cpu_kv_cache_gib", "must be positive")
    require(r.push_bucket_mib > 0, "rollout.push_bucket_mib", "must be positive")
    require(r.tensor_parallel_size >= 1, "rollout.tensor_parallel_size", "must be >= 1")
    require(cfg.reward.kind in ("math", "code"), "reward.kind", f"unknown reward {cfg.reward.kind!r} (math, code)")
    if cfg.reward.kind == "code":  # the sandbox job needs the row's prompt (data.problem_field) and these
        missing = [f for f in ("entry_point", "test", "test_type") if f not in cfg.data.keep_fields]
        require(not missing, "data.keep_fields", f"reward.kind=code needs the row fields {missing} kept")
    require(cfg.reward.timeout_s > 0, "reward.timeout_s", "must be positive")
    require(cfg.reward.num_workers > 0, "reward.num_workers", "must be positive")
    require(o.lr > 0, "optim.lr", "must be positive")
    require(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), "optim.betas", "must be two numbers in [0, 1)")
    require(o.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
    require(o.grad_clip > 0, "optim.grad_clip", "must be positive")
    require(o.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0")
    require(t.epochs > 0, "train.epochs", "must be positive")
    require(t.prompts_per_step > 0, "train.prompts_per_step", "must be positive")
    require(s.prompts_per_epoch % t.prompts_per_step == 0, "train.prompts_per_step",
            f"must divide sampler.prompts_per_epoch ({s.prompts_per_epoch})")
    require(t.micro_batch_size > 0, "train.micro_batch_size", "must be positive")
    require(t.zero3_persist_gib >= 0, "train.zero3_persist_gib", "must be >= 0")
    require(t.max_tokens_per_micro_batch is None or t.max_tokens_per_micro_batch > 0,
            "train.max_tokens_per_micro_batch", "must be positive or null")
    require(t.checkpoint_every >= 0, "train.checkpoint_every", "must be >= 0 (0 = only at the end)")
    require(t.checkpoint_every_minutes >= 0, "train.checkpoint_every_minutes", "must be >= 0 (0 = off)")
    require(r.max_num_seqs is None or r.max_num_seqs > 0, "rollout.max_num_seqs", "must be positive or null")
    require(r.max_num_batched_tokens is None or r.max_num_batched_tokens > 0, "rollout.max_num_batched_tokens",
            "must be positive or null")
    require(t.keep_checkpoints >= 1, "train.keep_checkpoints", "must be >= 1")
    require(t.max_nonfinite_steps >= 1, "train.max_nonfinite_steps", "must be >= 1")
    require(t.resume in ("auto", "never") or os.path.isdir(t.resume), "train.resume",
            f"must be auto, never or an existing checkpoint folder, got {t.resume!r}")
    require(cfg.validation.every_epochs >= 1, "validation.every_epochs", "must be >= 1")
    require(cfg.validation.limit is None or cfg.validation.limit > 0, "validation.limit", "must be positive or null")
    require(cfg.log.wandb_mode in ("offline", "online"), "log.wandb_mode",
            f"must be offline or online, got {cfg.log.wandb_mode!r}")
