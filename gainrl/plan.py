"""The per-GPU memory plan of a training recipe: learner state, activations, logits and vLLM's share, and a verdict.

    python -m gainrl.plan --config RECIPE.yaml [key=value ...] --gpus-per-node 8 --nodes N [--gpu-memory-gib 80]

Pure arithmetic from the model's shape (its config.json, no weights) and the DeepSpeed JSON:
nothing runs on a GPU. The trainer prints the same plan at start-up (`memory_plan`). One rank
per GPU, W = gpus_per_node x nodes ranks. Two phases share each GPU:
- generation: the learner's resident state (weights, gradients, optimizer, reference model,
  context) + vLLM's share (rollout.gpu_memory_utilization of the whole GPU), which vLLM needs
  free when it is built after the learner. With rollout.offload_learner the learner's weights,
  gradients (and, with optim.fused_adam, its optimizer states) are in CPU memory meanwhile; a third
  phase then counts the weight push (the learner back whole, vLLM's weights, one bucket);
- update: the resident state + ZeRO-3's gathered parameters + one micro-batch's activations and
  logits (+ vLLM's share when rollout.sleep_between_steps is false: it then keeps its memory).
vLLM's weights and KV heads are split over rollout.tensor_parallel_size GPUs.
Every term is an estimate with its assumption written next to it; the allowances are round numbers.
"""
from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Optional

from huggingface_hub import try_to_load_from_cache

from .config import TrainRunConfig, load_config
from .dist import run_entry_point
from .ds_config import load_ds_config, persistent_numel, zero3_sizes

GIB = 2**30
MODEL_SHAPES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "model_shapes.json")
CONTEXT_ALLOWANCE = 2.5 * GIB  # CUDA context, NCCL buffers, ZeRO's reduce buckets, allocator fragmentation
VLLM_ALLOWANCE = 1.5 * GIB  # vLLM's own activations (its profiling peak), sampler buffers and CUDA graphs
LOGPROB_CHUNK_TOKENS = 256  # gainrl.algo.logprobs.DEFAULT_CHUNK_TOKENS: positions upcast to fp32 at a time
DTYPE_BYTES = {"auto": 2, "bfloat16": 2, "float16": 2, "float32": 4}  # the plan is for GPUs: auto = bfloat16
OFF_GPU = ("cpu", "nvme")  # DeepSpeed offload devices


@dataclass(frozen=True)
class ModelShape:
    """What the arithmetic needs of a dense decoder (Llama/Qwen2 style: RMSNorm, GQA attention, SwiGLU MLP)."""
    name: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    qkv_bias: bool

    @property
    def layer_params(self) -> int:
        """One decoder layer: q, k, v (biases if qkv_bias), o (no bias), gate/up/down, two RMSNorm weights."""
        h, q_width, kv_width = self.hidden_size, self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        bias = q_width + 2 * kv_width if self.qkv_bias else 0
        return h * q_width + 2 * h * kv_width + bias + q_width * h + 3 * h * self.intermediate_size + 2 * h

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def num_params(self) -> int:
        """Embedding + layers + final norm + lm_head (unless tied to the embedding)."""
        lm_head = 0 if self.tie_word_embeddings else self.embedding_params
        return self.embedding_params + self.num_layers * self.layer_params + self.hidden_size + lm_head

    def layer_numels(self) -> list[int]:
        """One decoder layer's parameters' element counts (they sum to layer_params)."""
        h, q_width, kv_width = self.hidden_size, self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        bias = [q_width, kv_width, kv_width] if self.qkv_bias else []
        return [h * q_width, h * kv_width, h * kv_width, q_width * h, *[h * self.intermediate_size] * 3, h, h, *bias]

    def param_numels(self) -> list[int]:
        """Every parameter's element count, as transformers builds the model (tied weights once)."""
        head = [] if self.tie_word_embeddings else [self.embedding_params]
        return [self.embedding_params, *self.layer_numels() * self.num_layers, self.hidden_size, *head]

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """k and v of every layer's kv heads."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * dtype_bytes


def shape_from_config(config: dict, name: str, where: str) -> ModelShape:
    """A transformers config.json (dict) -> ModelShape; `where` names it in errors."""
    if any(config.get(key) for key in ("num_experts", "num_local_experts", "n_routed_experts")):
        raise ValueError(f"{where}: a mixture-of-experts model; the memory plan covers dense decoders only")
    missing = [key for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                               "vocab_size") if key not in config]
    if missing:
        raise ValueError(f"{where}: no {', '.join(missing)} (not a decoder config the memory plan can read)")
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    return ModelShape(
        name=name, hidden_size=hidden, num_layers=config["num_hidden_layers"], num_heads=heads,
        num_kv_heads=config.get("num_key_value_heads") or heads,
        head_dim=config.get("head_dim") or hidden // heads, intermediate_size=config["intermediate_size"],
        vocab_size=config["vocab_size"],
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),  # Qwen2's and Llama's default
        qkv_bias=bool(config.get("attention_bias", config.get("model_type") == "qwen2")),  # Qwen2: always biased
    )


def read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None


def load_model_shape(path: str, hub_cache_dir: Optional[str] = None) -> tuple[ModelShape, str]:
    """(shape, where it came from) for model.path, offline: <path>/config.json, then the Hugging Face cache's
    config.json of that hub id (never downloaded), then the bundled table (hub id or its basename, any case)."""
    local = os.path.join(path, "config.json")
    if os.path.isfile(local):
        return shape_from_config(read_json(local), path, local), local
    try:
        cached = try_to_load_from_cache(path, "config.json", cache_dir=hub_cache_dir)
    except ValueError:  # not a valid hub id (huggingface_hub's HFValidationError)
        cached = None
    if isinstance(cached, str):  # else None (not cached) or a sentinel (cached as missing upstream)
        return shape_from_config(read_json(cached), path, cached), f"the Hugging Face cache: {cached}"
    models = read_json(MODEL_SHAPES)["models"]
    by_name = {key.lower(): key for key in models} | {key.rsplit("/", 1)[-1].lower(): key for key in models}
    key = by_name.get(path.lower()) or by_name.get(path.rstrip("/").rsplit("/", 1)[-1].lower())
    if key is not None:
        shape = shape_from_config(models[key], key, f"{MODEL_SHAPES}[{key}]")
        return shape, "the bundled table gainrl/assets/model_shapes.json"
    raise ValueError(f"config key 'model.path': no config.json for {path!r}: looked in {local} (a local folder), "
                     f"the Hugging Face cache (hub id {path!r}, offline: nothing is downloaded) and the bundled "
                     f"table gainrl/assets/model_shapes.json ({len(models)} hub ids); pass a local folder with "
                     "its config.json (model.path=/path/to/model)")


@dataclass(frozen=True)
class ZeroSetup:
    """What the plan reads of a DeepSpeed JSON's zero_optimization section."""
    stage: int
    offload_optimizer: bool  # optimizer states (and, from stage 2, gradient partitions) in CPU memory
    offload_param: bool  # stage 3 only: parameter partitions in CPU memory, gathered to the GPU when used
    prefetch_elements: int  # stage3_prefetch_bucket_size
    persistence_threshold: int  # stage 3: parameters with fewer elements stay whole on every GPU
    persistent_elements: int  # the elements of those


def read_zero_setup(ds_config_path: str, shape: ModelShape, dtype: str, micro_batch_size: int,
                    persist_gib: float) -> ZeroSetup:
    """The zero_optimization section of train.ds_config, "auto" filled as the engine fills it."""
    numels = shape.param_numels()
    try:
        ds = load_ds_config(ds_config_path, sizes=zero3_sizes(numels, shape.hidden_size, persist_gib * GIB,
                                                             DTYPE_BYTES[dtype]),
                            dtype=dtype, micro_batch_size=micro_batch_size)
    except ValueError as e:
        raise ValueError(f"config key 'train.ds_config': {e}") from None
    zero = ds.get("zero_optimization", {})
    stage = zero.get("stage", 0)
    threshold = int(zero.get("stage3_param_persistence_threshold", 100_000))  # DeepSpeed's default
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"config key 'train.ds_config': {ds_config_path}: zero_optimization.stage must be "
                         f"0, 1, 2 or 3, got {stage!r}")
    return ZeroSetup(
        stage=stage,
        offload_optimizer=zero.get("offload_optimizer", {}).get("device", "none") in OFF_GPU,
        offload_param=stage == 3 and zero.get("offload_param", {}).get("device", "none") in OFF_GPU,
        prefetch_elements=int(zero.get("stage3_prefetch_bucket_size", 50_000_000)),  # DeepSpeed's default
        persistence_threshold=threshold if stage == 3 else 0,
        persistent_elements=persistent_numel(numels, threshold) if stage == 3 else 0,
    )


@dataclass(frozen=True)
class Term:
    """One line of the budget."""
    name: str
    num_bytes: float  # per GPU
    note: str  # what it assumes
    knob: str  # what shrinks it


def gib(num_bytes: float) -> str:
    return f"{num_bytes / GIB:.1f}"


@dataclass
class Plan:
    """The terms of both phases per GPU, what does not fit (empty: it fits), and the table that shows them."""
    header: list[str]
    gpu_memory_bytes: int
    resident: list[Term]  # the learner's state, on the GPU in both phases
    vllm: list[Term]  # weights, allowance, KV cache: vLLM's share (or the least it needs, when that is more)
    vllm_share_bytes: float
    kv_line: str
    update: list[Term]  # gathered parameters, activations (as configured), logits
    activations_unused: Term  # the other activations variant, printed for comparison
    vllm_in_update: bool  # rollout.sleep_between_steps is false: vLLM keeps its share through the update
    problems: list[str]
    reference_replicated: bool = False  # ZeRO-3: the reference model fits beside the learner whole
    offloaded: list[Term] = field(default_factory=list)  # parts of resident terms in CPU memory while vLLM
    #                                                      generates (rollout.offload_learner), same names
    push_bucket_bytes: float = 0.0  # rollout.push_bucket_mib: gathered weights on their way to vLLM

    @property
    def offloaded_bytes(self) -> float:
        return sum(t.num_bytes for t in self.offloaded)

    @property
    def generation_resident_bytes(self) -> float:
        """The learner's state on the GPU while vLLM generates (and when vLLM is built)."""
        return self.resident_bytes - self.offloaded_bytes

    @property
    def push_bytes(self) -> float:
        """The weight push: the learner back whole, vLLM's weights awake (its KV cache not yet), one bucket.
        Without the offload it is less than the generation phase; with it, it can be the larger one."""
        return self.resident_bytes + self.vllm[0].num_bytes + self.push_bucket_bytes

    def phases(self) -> list[tuple[str, float]]:
        return [("generation", self.generation_bytes), ("update", self.update_bytes)] \
            + ([("push", self.push_bytes)] if self.offloaded else [])

    @property
    def resident_bytes(self) -> float:
        return sum(t.num_bytes for t in self.resident)

    @property
    def vllm_bytes(self) -> float:
        return sum(t.num_bytes for t in self.vllm)

    @property
    def generation_bytes(self) -> float:
        return self.generation_resident_bytes + self.vllm_bytes

    @property
    def update_bytes(self) -> float:
        return (self.resident_bytes + sum(t.num_bytes for t in self.update)
                + (self.vllm_bytes if self.vllm_in_update else 0))

    @property
    def fits(self) -> bool:
        return not self.problems

    @property
    def verdict(self) -> str:
        if self.problems:
            return "does not fit: " + "; also ".join(self.problems)
        phase, peak = max(self.phases(), key=lambda p: p[1])
        return f"fits: peak {gib(peak)} of {gib(self.gpu_memory_bytes)} GiB per GPU ({phase} phase)"

    def term(self, name: str) -> Term:
        for t in self.resident + self.vllm + self.update + [self.activations_unused]:
            if t.name == name:
                return t
        raise KeyError(name)

    def lines(self) -> list[str]:
        def row(t: Term) -> str:
            return f"  {t.name:<38}{gib(t.num_bytes):>7}  {t.note}"

        update_sum = "resident + update" + (" + vLLM" if self.vllm_in_update else "")
        generation = "resident + vLLM" if not self.offloaded else "resident - offloaded + vLLM"
        offload = [f"  {'offloaded while vLLM generates':<38}{gib(self.offloaded_bytes):>7}  "
                   f"{', '.join(t.name for t in self.offloaded)} (rollout.offload_learner)"] if self.offloaded else []
        push = [f"  {'push: resident + vLLM weights':<38}{gib(self.push_bytes):>7}  and one "
                f"{gib(self.push_bucket_bytes)} GiB bucket (rollout.push_bucket_mib)"] if self.offloaded else []
        return (self.header
                + [f"{'learner, resident in both phases':<40}{'GiB':>7}"] + [row(t) for t in self.resident]
                + [f"  {'resident':<38}{gib(self.resident_bytes):>7}", *offload,
                   f"vLLM: its share {gib(self.vllm_share_bytes)} GiB (rollout.gpu_memory_utilization x GPU)"
                   + ("" if self.vllm_in_update else ", freed during the update")]
                + [row(t) for t in self.vllm] + [f"  {self.kv_line}", "learner update, one micro-batch"]
                + [row(t) for t in self.update] + [row(self.activations_unused) + " (not used)"]
                + ["phases",
                   f"  {'generation: ' + generation:<38}{gib(self.generation_bytes):>7}",
                   f"  {'update: ' + update_sum:<38}{gib(self.update_bytes):>7}", *push,
                   self.verdict])


def activation_bytes_per_layer_token(shape: ModelShape, dtype_bytes: int) -> int:
    """What autograd keeps of one decoder layer per token (transformers' Qwen2/Llama code, SDPA or flash
    attention, so no L x L term): the two RMSNorm inputs upcast to fp32 (4h each) and their outputs (the
    q/k/v and gate/up inputs, h each); q, k and v as SDPA gets them, k and v repeated to all heads
    (transformers repeats GQA heads whenever a padding mask is passed, as the learner's micro-batches do);
    SDPA's output and the o_proj input (a contiguous copy of it); gate and up outputs, silu(gate) and the
    down_proj input (4 x intermediate). Residual adds and RoPE keep nothing per token."""
    h, attention_width = shape.hidden_size, shape.num_heads * shape.head_dim
    return 2 * 4 * h + dtype_bytes * (2 * h + 3 * attention_width + 2 * attention_width
                                      + 4 * shape.intermediate_size)


def learner_knob(zero: ZeroSetup) -> str:
    if zero.stage < 3:
        return "ZeRO-3 (train.ds_config=ds_configs/zero3.json), more nodes (--nodes) or ds_configs/zero3_offload.json"
    if not (zero.offload_optimizer and zero.offload_param):
        return "more nodes (--nodes) or train.ds_config=ds_configs/zero3_offload.json"
    return "more nodes (--nodes)"


def memory_plan(cfg: TrainRunConfig, *, world_size: int, gpus_per_node: int, gpu_memory_bytes: int,
                shape: Optional[ModelShape] = None, hub_cache_dir: Optional[str] = None) -> Plan:
    """The per-GPU memory budget of `cfg` on `world_size` ranks (one per GPU) of `gpu_memory_bytes` each;
    without `shape`, load_model_shape(cfg.model.path, hub_cache_dir) finds it."""
    if world_size < 1 or gpus_per_node < 1 or gpu_memory_bytes <= 0:
        raise ValueError(f"need a positive world size, GPUs per node and GPU memory, got {world_size}, "
                         f"{gpus_per_node}, {gpu_memory_bytes}")
    source = "the caller"
    if shape is None:
        shape, source = load_model_shape(cfg.model.path, hub_cache_dir)
    dtype = "bfloat16" if cfg.model.dtype == "auto" else cfg.model.dtype
    b = DTYPE_BYTES[dtype]
    t, r, g = cfg.train, cfg.rollout, cfg.grpo
    zero = read_zero_setup(t.ds_config, shape, dtype, t.micro_batch_size, t.zero3_persist_gib)
    P, W, G, h, V = shape.num_params, world_size, gpu_memory_bytes, shape.hidden_size, shape.vocab_size
    seq_tokens = r.max_prompt_tokens + r.max_new_tokens
    if t.max_tokens_per_micro_batch is None:
        tokens = t.micro_batch_size * seq_tokens  # a micro-batch is padded to its longest row: at most L each
        micro_batch = f"{t.micro_batch_size} x {seq_tokens} tokens"
    else:  # the budget, or one sequence longer than it
        tokens = max(t.max_tokens_per_micro_batch, seq_tokens)
        micro_batch = f"{tokens:,} tokens (train.max_tokens_per_micro_batch)"
    shard = f"1/{W} shard"

    # -- the learner's resident state, on the GPU in both phases ------------------------------------
    knob = learner_knob(zero)
    # ZeRO-3 keeps the parameters under the persistence threshold whole on every GPU, beside the shards
    persistent = b * zero.persistent_elements * (1 if zero.offload_param else 1 - 1 / W)  # beyond the shard
    partitioned_weights = persistent + (0 if zero.offload_param else b * P / W)
    weights = partitioned_weights if zero.stage == 3 else b * P
    # stage 2-3 keep a gradient partition (on the CPU with offload_optimizer); stage 0-1 the full gradient
    grads = (0 if zero.offload_optimizer else b * P / W) if zero.stage >= 2 else b * P
    # mixed precision: fp32 master weights + Adam m and v (12 B/param); fp32 training: m and v only
    optimizer_bytes_per_param = 12 if b == 2 else 8
    optimizer_what = "fp32 master + Adam m, v" if b == 2 else "Adam m, v"
    optimizer = 0 if zero.offload_optimizer else optimizer_bytes_per_param * P / (W if zero.stage >= 1 else 1)
    # engine.build_reference: partitioned (offload included) like the policy under ZeRO-3, else a full replica;
    # under ZeRO-3 a replica too where it fits beside the learner (decided below)
    reference = 0 if g.kl_coef == 0 else (partitioned_weights if zero.stage == 3 else b * P)
    weights_where = "in CPU memory" if zero.offload_param else shard if zero.stage == 3 else "full"
    if zero.stage == 3 and zero.persistent_elements:
        weights_where += f" + {gib(b * zero.persistent_elements)} GiB whole (train.zero3_persist_gib)"
    resident = [
        Term("policy weights", weights, f"{dtype}, {weights_where}", knob),
        Term("gradients", grads, f"{dtype}, " + ("full" if zero.stage < 2 else
                                                 "in CPU memory" if zero.offload_optimizer else shard), knob),
        Term("optimizer states", optimizer, ("in CPU memory" if zero.offload_optimizer else
                                             f"{optimizer_bytes_per_param} B/param {optimizer_what}, "
                                             + (shard if zero.stage >= 1 else "full")), knob),
        Term("reference model", reference, "grpo.kl_coef=0: none" if g.kl_coef == 0 else
             f"{dtype}, {weights_where}", knob + " or grpo.kl_coef=0 (no reference model)"),
        Term("CUDA context, NCCL, allocator slack", CONTEXT_ALLOWANCE, "allowance",
             "a fixed allowance: make room in the other terms"),
    ]
    resident_bytes = sum(term.num_bytes for term in resident)

    # -- vLLM: a copy per TP group of ranks in its share of each GPU; the KV cache gets what is left ------
    share = r.gpu_memory_utilization * G
    tp = r.tensor_parallel_size
    vllm_weights = b * P / tp
    # each GPU holds its slice of the KV heads (whole heads: replicated when there are fewer than tp)
    kv_per_token = shape.kv_bytes_per_token(b) * math.ceil(shape.num_kv_heads / tp) // shape.num_kv_heads
    kv_bytes = share - vllm_weights - VLLM_ALLOWANCE
    kv_tokens = max(0, int(kv_bytes // kv_per_token))
    kv_sequences = kv_tokens // seq_tokens
    least = vllm_weights + VLLM_ALLOWANCE + seq_tokens * kv_per_token  # vLLM refuses less than one sequence's KV
    utilization_needed = math.ceil(least / G * 100) / 100
    tensor_parallel = f"a larger rollout.tensor_parallel_size (now {tp}; divides the GPUs per node)"
    if least > G:
        weights_knob = (f"vLLM's weights, split over {tp} GPUs, still exceed one: {tensor_parallel}" if tp > 1
                        else f"one full copy of vLLM's weights exceeds a GPU: {tensor_parallel}")
    elif least > share:
        weights_knob = f"raise rollout.gpu_memory_utilization to at least {utilization_needed:.2f} or {tensor_parallel}"
    else:
        weights_knob = f"{tensor_parallel}, or make room in the learner's state: {knob}"
    away = learner_offload(zero, b * P / W, optimizer, cfg.optim.fused_adam) if r.offload_learner else []
    most_share = math.floor((G - resident_bytes + sum(t.num_bytes for t in away)) / G * 100) / 100
    vllm = [
        Term("vLLM weights", vllm_weights, f"{dtype}, " + (f"1/{tp} of a copy (tensor parallel {tp})" if tp > 1
                                                           else "full copy (tensor parallel 1)"), weights_knob),
        Term("vLLM activations and CUDA graphs", VLLM_ALLOWANCE, "allowance",
             "a fixed allowance: make room in the other terms"),
        Term("vLLM KV cache", max(kv_bytes, least - vllm_weights - VLLM_ALLOWANCE),
             "the rest of the share" if least <= share else "one sequence: the least vLLM starts with",
             f"lower rollout.gpu_memory_utilization (the learner leaves room for at most {most_share:.2f})"),
    ]
    per_engine = t.prompts_per_step // W * g.group_size * tp
    kv_line = (f"KV cache left in the share: {kv_tokens:,} tokens at {kv_per_token:,} B per GPU = {kv_sequences:,} "
               f"full-length sequences of {seq_tokens} tokens (an engine of {tp} GPU{'s' if tp > 1 else ''} "
               f"generates {per_engine:,} per step)")

    # -- the update: gathered parameters, one micro-batch's activations and logits -----------------
    largest_module = max(shape.layer_params, shape.embedding_params)
    # estimate: ZeRO-3 gathers the largest module whole (less what persists: already counted) and backward
    # makes its full gradient before the reduce-scatter, while the prefetch bucket brings in the next ones
    partitioned_layer = sum(n for n in shape.layer_numels() if n >= zero.persistence_threshold)
    largest_gathered = max(shape.embedding_params if shape.embedding_params >= zero.persistence_threshold else 0,
                           partitioned_layer)
    gathered = b * (largest_gathered + largest_module + (zero.prefetch_elements if largest_gathered else 0)) \
        if zero.stage == 3 else 0
    per_layer_token = activation_bytes_per_layer_token(shape, b)
    final_norm = (4 + b) * h  # the final RMSNorm's fp32 input and its output (the lm_head input)
    full = tokens * (shape.num_layers * per_layer_token + final_norm)
    # checkpointing keeps each layer's input and recomputes one layer at a time in backward
    checkpointed = tokens * (shape.num_layers * b * h + per_layer_token + final_norm)
    # gainrl.algo.logprobs keeps the logits in the model's dtype for backward and never makes a [tokens, V]
    # fp32 tensor (chunks of 256 positions: fp32 rows, probabilities, gradient rows); backward adds the
    # logits' gradient (one more with an entropy bonus, which takes its own gradient of the same logits)
    logits_copies = 2 + (1 if g.entropy_coef > 0 else 0)
    logits = tokens * V * b * logits_copies + 3 * LOGPROB_CHUNK_TOKENS * V * 4
    shorter = "shorter sequences (rollout.max_new_tokens, rollout.max_prompt_tokens)"
    smaller_batch = ("a smaller train.max_tokens_per_micro_batch" if t.max_tokens_per_micro_batch is not None
                     else "a smaller train.micro_batch_size" if t.micro_batch_size > 1 else shorter)
    full_term = Term("activations, no checkpointing", full, f"{micro_batch} x {shape.num_layers} layers",
                     f"train.gradient_checkpointing=true or {smaller_batch}")
    checkpointed_term = Term("activations, gradient checkpointing", checkpointed,
                             f"{micro_batch}: layer inputs + one layer", smaller_batch)
    update = [
        Term("ZeRO-3 gathered parameters", gathered,
             "estimate: largest module + its gradient + prefetch bucket" if zero.stage == 3 else "none below ZeRO-3",
             "the largest module is gathered whole: make room in the other terms"),
        checkpointed_term if t.gradient_checkpointing else full_term,
        Term("logits and their gradient", logits, f"{tokens:,} tokens x {V:,} vocab x {b} B x {logits_copies}"
             " (often the largest)", smaller_batch),
    ]

    offloaded = [name for name, on in (("optimizer", zero.offload_optimizer), ("parameters", zero.offload_param))
                 if on]
    nodes = -(-W // gpus_per_node)
    header = [
        f"memory plan: {shape.name}, {P / 1e9:.2f}e9 parameters in {dtype} (shape from {source})",
        f"  {W} ranks = {gpus_per_node} GPUs per node x {nodes} node{'s' if nodes > 1 else ''}, "
        f"{gib(G)} GiB per GPU; ZeRO stage {zero.stage} ({t.ds_config}), offload: "
        f"{' and '.join(offloaded) + ' to CPU' if offloaded else 'none'}",
        f"  sequences of {seq_tokens} tokens ({r.max_prompt_tokens} prompt + {r.max_new_tokens} new), "
        f"micro-batch {micro_batch}, gradient checkpointing {'on' if t.gradient_checkpointing else 'off'}, "
        f"reference model {'yes' if g.kl_coef > 0 else 'no'}, vLLM "
        + ("asleep during the update" if r.sleep_between_steps else "awake during the update")
        + f", tensor parallel {r.tensor_parallel_size}" + (", learner offloaded while vLLM generates"
                                                           if r.offload_learner else ""),
    ]
    plan = Plan(header=header, gpu_memory_bytes=G, resident=resident, vllm=vllm, vllm_share_bytes=share,
                kv_line=kv_line, update=update,
                activations_unused=full_term if t.gradient_checkpointing else checkpointed_term,
                vllm_in_update=not r.sleep_between_steps, problems=[])
    if r.offload_learner:
        plan.offloaded, plan.push_bucket_bytes = away, r.push_bucket_mib * 2**20
    plan.problems = find_problems(plan, kv_sequences, seq_tokens, utilization_needed)
    if g.kl_coef > 0 and zero.stage == 3 and plan.fits:  # a plain replica, if the learner still fits with it
        extra = b * P - reference
        if (all(phase_bytes + extra <= G for _, phase_bytes in plan.phases())
                and plan.generation_resident_bytes + extra <= (1 - r.gpu_memory_utilization) * G):
            plan.resident = [Term("reference model", b * P, f"{dtype}, a full replica (fits beside the learner: "
                                  "no gathers in its forward)", knob + " or grpo.kl_coef=0 (no reference model)")
                             if term.name == "reference model" else term for term in plan.resident]
            plan.reference_replicated = True
    return plan


def learner_offload(zero: ZeroSetup, weight_shard: float, optimizer: float, fused_adam: bool) -> list[Term]:
    """What rollout.offload_learner moves to CPU memory while vLLM generates (DeepSpeed's offload_states, ZeRO-3
    only): the weight and gradient shards (the whole persistent parameters stay), and the optimizer states
    only with FusedAdam (DeepSpeed refuses them for torch's optimizers)."""
    if zero.stage != 3 or zero.offload_param:
        raise ValueError("config key 'rollout.offload_learner': needs ZeRO-3 without offload_param (DeepSpeed's "
                         "offload_states): use ds_configs/zero3.json, or turn it off")
    moved = [Term("policy weights", weight_shard, "its shard", ""),
             Term("gradients", 0 if zero.offload_optimizer else weight_shard, "its shard", "")]
    if fused_adam:
        moved.append(Term("optimizer states", optimizer, "fp32 master and Adam states", ""))
    return moved


def find_problems(plan: Plan, kv_sequences: int, seq_tokens: int, utilization_needed: float) -> list[str]:
    """Each phase over the GPU's memory, named with its largest term and that term's knob; a KV cache short
    of one full-length sequence."""
    G, problems = plan.gpu_memory_bytes, []
    kept = [Term(t.name, t.num_bytes - sum(o.num_bytes for o in plan.offloaded if o.name == t.name), t.note, t.knob)
            for t in plan.resident]
    phases = [("generation", plan.generation_bytes, kept + plan.vllm),
              ("update", plan.update_bytes, plan.resident + plan.update + (plan.vllm if plan.vllm_in_update else []))]
    if plan.offloaded:
        phases.append(("push", plan.push_bytes, plan.resident + plan.vllm[:1]))
    for phase, total, terms in phases:
        if total > G:
            largest = max(terms, key=lambda t: t.num_bytes)
            problems.append(f"{phase} phase needs {gib(total)} of {gib(G)} GiB per GPU; largest term "
                            f"{largest.name} {gib(largest.num_bytes)} GiB: {largest.knob}")
        elif phase == "generation" and kv_sequences < 1:
            problems.append(f"vLLM's KV cache holds less than one full-length sequence ({seq_tokens} tokens) in "
                            f"its share of {gib(plan.vllm_share_bytes)} GiB: raise rollout.gpu_memory_utilization "
                            f"to at least {utilization_needed:.2f}")
    return problems


def parse_plan_args(argv: list[str]) -> tuple[int, int, float, list[str]]:
    """(gpus per node, nodes, GPU memory in GiB, the rest for load_config) from the command line."""
    values: dict[str, Optional[str]] = {"--gpus-per-node": None, "--nodes": None, "--gpu-memory-gib": "80"}
    rest, args = [], list(argv)
    while args:
        arg = args.pop(0)
        flag, has_value, value = arg.partition("=")
        if flag not in values:
            rest.append(arg)
            continue
        if not has_value:
            if not args:
                raise ValueError(f"{flag} needs a value")
            value = args.pop(0)
        values[flag] = value
    numbers = {}
    for flag, value in values.items():
        if value is None:
            raise ValueError(f"{flag} is required (usage: python -m gainrl.plan --config RECIPE.yaml "
                             "--gpus-per-node 8 --nodes N [--gpu-memory-gib 80])")
        try:
            numbers[flag] = float(value) if flag == "--gpu-memory-gib" else int(value)
        except ValueError:
            raise ValueError(f"{flag} must be a number, got {value!r}") from None
        if numbers[flag] <= 0:
            raise ValueError(f"{flag} must be positive, got {value!r}")
    return numbers["--gpus-per-node"], numbers["--nodes"], numbers["--gpu-memory-gib"], rest


def main(argv: list[str]) -> None:
    gpus_per_node, nodes, gpu_memory_gib, rest = parse_plan_args(argv)
    cfg = load_config(rest, TrainRunConfig)
    plan = memory_plan(cfg, world_size=gpus_per_node * nodes, gpus_per_node=gpus_per_node,
                       gpu_memory_bytes=int(gpu_memory_gib * GIB))
    print("\n".join(plan.lines()))


if __name__ == "__main__":
    run_entry_point(main, sys.argv[1:])
