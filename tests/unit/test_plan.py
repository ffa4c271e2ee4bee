"""The memory plan: parameter counts and budget terms against arithmetic written out from the shapes,
verdicts for the 7B recipe and a 72B model, where shapes come from, and the command line."""
import glob
import json
import os

import pytest
import yaml

from gainrl.config import TrainRunConfig, load_config
from gainrl.plan import GIB, ModelShape, load_model_shape, main, memory_plan
from tests.helpers import REPO

RECIPE_7B = "launchers/recipes/qwen2.5-math-7b-deepscaler.yaml"
RECIPE_05B = "launchers/recipes/qwen2.5-0.5b-gsm8k.yaml"
GPU = 80 * GIB

# Qwen/Qwen2.5-0.5B's config.json on the hub (the fields that matter, and some that do not)
QWEN_05B_CONFIG = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu", "hidden_size": 896,
    "intermediate_size": 4864, "max_position_embeddings": 32768, "num_attention_heads": 14,
    "num_hidden_layers": 24, "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "tie_word_embeddings": True, "torch_dtype": "bfloat16", "vocab_size": 151936,
}
P_05B = (151936 * 896  # embedding (tied lm_head)
         + 24 * ((896 * 896 + 896) + 2 * (896 * 128 + 128) + 896 * 896 + 3 * 896 * 4864 + 2 * 896)
         + 896)  # final norm
P_7B = (2 * 152064 * 3584  # embedding + lm_head
        + 28 * ((3584 * 3584 + 3584) + 2 * (3584 * 512 + 512) + 3584 * 3584 + 3 * 3584 * 18944 + 2 * 3584)
        + 3584)
P_72B = (2 * 152064 * 8192
         + 80 * ((8192 * 8192 + 8192) + 2 * (8192 * 1024 + 1024) + 8192 * 8192 + 3 * 8192 * 29568 + 2 * 8192)
         + 8192)


@pytest.fixture
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO)  # recipes name ds_configs/ relative to the repository root


@pytest.fixture
def empty_hub_cache(tmp_path):
    path = tmp_path / "hub"
    path.mkdir()
    return str(path)


def bundled(name: str, hub_cache: str) -> ModelShape:
    shape, source = load_model_shape(name, hub_cache_dir=hub_cache)
    assert "bundled table" in source
    return shape


def plan_for(recipe: str, overrides=(), *, hub_cache: str, world_size=8):
    cfg = load_config(["--config", recipe, *overrides], TrainRunConfig)
    return memory_plan(cfg, world_size=world_size, gpus_per_node=8, gpu_memory_bytes=GPU, hub_cache_dir=hub_cache)


def test_parameter_counts_from_the_shapes(empty_hub_cache):
    assert P_05B == 494_032_768
    assert bundled("Qwen/Qwen2.5-0.5B", empty_hub_cache).num_params == P_05B
    assert bundled("Qwen/Qwen2.5-0.5B-Instruct", empty_hub_cache).num_params == P_05B
    assert bundled("Qwen/Qwen2.5-7B", empty_hub_cache).num_params == P_7B
    assert bundled("Qwen/Qwen2.5-Math-7B", empty_hub_cache).num_params == P_7B
    assert bundled("Qwen/Qwen2.5-72B-Instruct", empty_hub_cache).num_params == P_72B
    assert round(P_7B / 1e9, 2) == 7.62 and round(P_72B / 1e9, 1) == 72.7


def test_7b_recipe_terms_and_verdict(in_repo, empty_hub_cache):
    plan = plan_for(RECIPE_7B, hub_cache=empty_hub_cache)
    P, W = P_7B, 8
    # train.zero3_persist_gib=2 (2**30 bf16 elements) keeps whole every parameter but the MLP matrices
    # (67.9M elements each: 4 more would pass the budget), the embedding and the head
    persistent = 28 * ((3584 * 3584 + 3584) + 2 * (3584 * 512 + 512) + 3584 * 3584 + 2 * 3584) + 3584
    assert persistent == 822_416_896 and persistent + 4 * 3584 * 18944 > 2**30
    weights = 2 * P / W + 2 * persistent * (1 - 1 / W)
    assert plan.term("policy weights").num_bytes == pytest.approx(weights)
    assert plan.term("gradients").num_bytes == 2 * P / W
    assert plan.term("optimizer states").num_bytes == 12 * P / W
    # kl_coef 0.001: a full replica fits beside the learner (partitioned, it would take `weights`)
    assert plan.reference_replicated and plan.term("reference model").num_bytes == 2 * P
    resident = weights + 2 * P / W + 12 * P / W + 2 * P + 2.5 * GIB
    assert resident <= 0.5 * GPU  # the learner's half of the GPU (rollout.gpu_memory_utilization 0.5)
    assert plan.resident_bytes == pytest.approx(resident)
    assert plan.term("vLLM weights").num_bytes == 2 * P
    kv = 0.5 * GPU - 2 * P - 1.5 * GIB
    assert plan.term("vLLM KV cache").num_bytes == pytest.approx(kv)
    kv_tokens = int(kv // (2 * 28 * 4 * 128 * 2))
    assert f"{kv_tokens:,} tokens" in plan.kv_line and f"{kv_tokens // 4024:,} full-length" in plan.kv_line
    assert "an engine of 1 GPU generates 1,024 per step" in plan.kv_line  # 1024 prompts / 8 ranks x 8 rollouts
    # the embedding matrix (545M) is the largest module, ahead of one layer (233M); DeepSpeed's prefetch bucket
    gathered = 2 * (2 * 152064 * 3584 + 50_000_000)
    assert plan.term("ZeRO-3 gathered parameters").num_bytes == gathered
    tokens = 2 * 4024
    per_layer_token = 2 * 4 * 3584 + 2 * (2 * 3584 + 5 * 3584 + 4 * 18944)
    assert per_layer_token == 230_400
    final_norm = 6 * 3584
    checkpointed = tokens * (28 * 2 * 3584 + per_layer_token + final_norm)
    assert plan.term("activations, gradient checkpointing").num_bytes == checkpointed
    assert plan.term("activations, no checkpointing").num_bytes == tokens * (28 * per_layer_token + final_norm)
    logits = tokens * 152064 * 2 * 2 + 3 * 256 * 152064 * 4
    assert plan.term("logits and their gradient").num_bytes == logits
    assert plan.generation_bytes == pytest.approx(resident + 0.5 * GPU)
    assert plan.update_bytes == pytest.approx(resident + gathered + checkpointed + logits)
    assert plan.fits
    assert plan.verdict == f"fits: peak {(resident + 0.5 * GPU) / GIB:.1f} of 80.0 GiB per GPU (generation phase)"
    lines = plan.lines()
    assert lines[-1] == plan.verdict
    assert "Qwen/Qwen2.5-Math-7B" in lines[0] and "bundled table" in lines[0]
    assert "8 ranks = 8 GPUs per node x 1 node" in lines[1] and "ZeRO stage 3" in lines[1]
    assert "offload: none" in lines[1]


def test_05b_recipe_terms(in_repo, empty_hub_cache):
    plan = plan_for(RECIPE_05B, hub_cache=empty_hub_cache)  # no gradient checkpointing, micro-batch 16 of 1024
    P = 494_032_768
    assert plan.term("optimizer states").num_bytes == 12 * P / 8
    per_layer_token = 2 * 4 * 896 + 2 * (2 * 896 + 5 * 896 + 4 * 4864)
    full = 16 * 1024 * (24 * per_layer_token + 6 * 896)
    assert plan.term("activations, no checkpointing").num_bytes == full
    assert plan.term("logits and their gradient").num_bytes == 16 * 1024 * 151936 * 2 * 2 + 3 * 256 * 151936 * 4
    # 494M elements: all of it persists (train.zero3_persist_gib=2), so nothing is gathered; backward still makes
    # the largest module's (the tied embedding's) full gradient
    assert plan.term("policy weights").num_bytes == pytest.approx(2 * P / 8 + 2 * P * 7 / 8)
    assert plan.term("ZeRO-3 gathered parameters").num_bytes == 2 * 151936 * 896
    kv = 0.4 * GPU - 2 * P - 1.5 * GIB
    assert plan.term("vLLM KV cache").num_bytes == pytest.approx(kv)
    assert f"{int(kv // (2 * 24 * 2 * 64 * 2)):,} tokens" in plan.kv_line
    assert plan.fits


def test_72b_on_one_node_does_not_fit(in_repo, empty_hub_cache):
    plan = plan_for(RECIPE_7B, ["model.path=Qwen/Qwen2.5-72B-Instruct"], hub_cache=empty_hub_cache)
    assert plan.term("vLLM weights").num_bytes == 2 * P_72B  # 135.4 GiB: more than a whole GPU
    assert plan.term("optimizer states").num_bytes == 12 * P_72B / 8
    assert not plan.fits
    verdict = plan.lines()[-1]
    assert verdict == plan.verdict and verdict.startswith("does not fit: generation phase needs")
    assert "largest term vLLM weights 135.4 GiB" in verdict and "rollout.tensor_parallel_size" in verdict
    assert "update phase needs" in verdict and "largest term optimizer states" in verdict
    assert "--nodes" in verdict and "zero3_offload.json" in verdict


def test_72b_on_four_nodes_with_offload_is_held_back_by_vllm_alone(in_repo, empty_hub_cache):
    overrides = ["model.path=Qwen/Qwen2.5-72B-Instruct", "train.ds_config=ds_configs/zero3_offload.json"]
    plan = plan_for(RECIPE_7B, overrides, world_size=32, hub_cache=empty_hub_cache)
    # on the GPU only what persists whole (train.zero3_persist_gib=2): norms and biases (the 160 k and v
    # matrices, 8.4M elements each, would pass the budget); the rest in CPU memory
    norms_and_biases = 80 * (2 * 8192 + 8192 + 2 * 1024) + 8192
    for name in ("policy weights", "reference model"):
        assert plan.term(name).num_bytes == 2 * norms_and_biases
    for name in ("gradients", "optimizer states"):
        assert plan.term(name).num_bytes == 0
    assert plan.resident_bytes == 4 * norms_and_biases + 2.5 * GIB
    assert plan.update_bytes < GPU
    assert "offload: optimizer and parameters to CPU" in plan.lines()[1]
    assert plan.verdict.startswith("does not fit: generation phase") and "update phase" not in plan.verdict
    assert "vLLM weights" in plan.verdict


def test_72b_recipe_fits_four_nodes_with_vllm_over_eight_gpus_and_the_learner_offloaded(in_repo, empty_hub_cache):
    recipe = os.path.join("launchers", "recipes", "qwen2.5-72b-deepscaler.yaml")
    plan = plan_for(recipe, world_size=32, hub_cache=empty_hub_cache)
    P, W = P_72B, 32
    assert plan.term("vLLM weights").num_bytes == 2 * P / 8  # rollout.tensor_parallel_size=8
    kv = 0.8 * GPU - 2 * P / 8 - 1.5 * GIB
    assert plan.term("vLLM KV cache").num_bytes == pytest.approx(kv)
    kv_per_gpu = 2 * 80 * 1 * 128 * 2  # 8 KV heads over 8 GPUs: one each
    assert f"{int(kv // kv_per_gpu):,} tokens at {kv_per_gpu:,} B per GPU" in plan.kv_line
    assert "an engine of 8 GPUs generates 2,048 per step" in plan.kv_line  # 8 ranks x 1024 / 32 x 8 rollouts
    # optim.fused_adam: DeepSpeed moves the weight and gradient shards and the optimizer states
    assert [(t.name, t.num_bytes) for t in plan.offloaded] == [
        ("policy weights", 2 * P / W), ("gradients", 2 * P / W), ("optimizer states", 12 * P / W)]
    assert plan.generation_bytes == pytest.approx(plan.resident_bytes - 16 * P / W + 0.8 * GPU)
    assert plan.push_bytes == pytest.approx(plan.resident_bytes + 2 * P / 8 + 256 * 2**20)
    assert plan.fits and plan.generation_bytes < GPU and plan.push_bytes < GPU
    lines = "\n".join(plan.lines())
    assert "tensor parallel 8, learner offloaded while vLLM generates" in lines and "push: resident" in lines
    # the same without the offload: the learner's shards and vLLM's 0.8 do not both fit
    stays = plan_for(recipe, ["rollout.offload_learner=false"], world_size=32, hub_cache=empty_hub_cache)
    assert not stays.fits and stays.verdict.startswith("does not fit: generation phase")
    # and with torch's AdamW DeepSpeed keeps the optimizer states on the GPU: counted as staying
    adamw = plan_for(recipe, ["optim.fused_adam=false"], world_size=32, hub_cache=empty_hub_cache)
    assert [t.name for t in adamw.offloaded] == ["policy weights", "gradients"] and not adamw.fits


def test_tensor_parallel_groups_split_vllm_weights_and_replicate_kv_heads_they_cannot_split(in_repo,
                                                                                           empty_hub_cache):
    plan = plan_for(RECIPE_7B, ["rollout.tensor_parallel_size=8"], hub_cache=empty_hub_cache)
    assert plan.term("vLLM weights").num_bytes == 2 * P_7B / 8
    assert "at 14,336 B per GPU" in plan.kv_line  # 4 KV heads over 8 GPUs: each keeps one whole (57,344 / 4)
    assert "an engine of 8 GPUs generates 8,192 per step" in plan.kv_line


def test_offloading_the_learner_needs_zero3_without_parameter_offload(in_repo, empty_hub_cache):
    with pytest.raises(ValueError, match="'rollout.offload_learner': needs ZeRO-3 without offload_param"):
        plan_for(RECIPE_7B, ["rollout.offload_learner=true", "train.ds_config=ds_configs/zero3_offload.json"],
                 hub_cache=empty_hub_cache)


def test_zero2_keeps_full_weights_and_a_full_reference(in_repo, empty_hub_cache):
    plan = plan_for(RECIPE_7B, ["train.ds_config=ds_configs/zero2.json"], hub_cache=empty_hub_cache)
    assert plan.term("policy weights").num_bytes == 2 * P_7B
    assert plan.term("gradients").num_bytes == 2 * P_7B / 8
    assert plan.term("optimizer states").num_bytes == 12 * P_7B / 8
    assert plan.term("reference model").num_bytes == 2 * P_7B
    assert plan.term("ZeRO-3 gathered parameters").num_bytes == 0


def test_a_kv_cache_short_of_one_sequence_asks_for_more_utilization(in_repo, empty_hub_cache):
    # 0.19 x 80 GiB = 15.2 GiB < 14.2 GiB of weights + 1.5 GiB allowance
    plan = plan_for(RECIPE_7B, ["rollout.gpu_memory_utilization=0.19"], hub_cache=empty_hub_cache)
    assert plan.generation_bytes < GPU and not plan.fits
    least = 2 * P_7B + 1.5 * GIB + 4024 * 57344
    assert round(least / GPU, 4) == 0.1988
    assert plan.verdict == ("does not fit: vLLM's KV cache holds less than one full-length sequence (4024 tokens) in "
                            "its share of 15.2 GiB: raise rollout.gpu_memory_utilization to at least 0.20")


def test_activations_over_the_gpu_name_gradient_checkpointing(in_repo, empty_hub_cache):
    plan = plan_for(RECIPE_7B, ["train.gradient_checkpointing=false", "train.max_tokens_per_micro_batch=16096"],
                    hub_cache=empty_hub_cache)
    assert plan.verdict.startswith("does not fit: update phase needs")
    assert "largest term activations, no checkpointing" in plan.verdict
    assert "train.gradient_checkpointing=true or a smaller train.max_tokens_per_micro_batch" in plan.verdict
    fixed = plan_for(RECIPE_7B, ["train.gradient_checkpointing=false", "train.max_tokens_per_micro_batch=null",
                                 "train.micro_batch_size=4"], hub_cache=empty_hub_cache)
    assert fixed.term("activations, no checkpointing").num_bytes == plan.term("activations, no checkpointing").num_bytes
    assert "train.gradient_checkpointing=true or a smaller train.micro_batch_size" in fixed.verdict


def test_awake_vllm_counts_in_the_update(in_repo, empty_hub_cache):
    asleep = plan_for(RECIPE_7B, ["grpo.kl_coef=0"], hub_cache=empty_hub_cache)
    awake = plan_for(RECIPE_7B, ["grpo.kl_coef=0", "rollout.sleep_between_steps=false"], hub_cache=empty_hub_cache)
    assert awake.update_bytes == pytest.approx(asleep.update_bytes + 0.5 * GPU)
    # with KL: vLLM's share through the update leaves no room for a replica of the reference model
    with_kl = plan_for(RECIPE_7B, ["rollout.sleep_between_steps=false"], hub_cache=empty_hub_cache)
    assert plan_for(RECIPE_7B, hub_cache=empty_hub_cache).reference_replicated and not with_kl.reference_replicated
    assert with_kl.term("reference model").num_bytes == with_kl.term("policy weights").num_bytes  # partitioned


def test_a_local_config_json_is_read_and_matches_the_bundled_shape(tmp_path, empty_hub_cache):
    folder = tmp_path / "Qwen2.5-0.5B"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(QWEN_05B_CONFIG))
    shape, source = load_model_shape(str(folder), hub_cache_dir=empty_hub_cache)
    assert source == str(folder / "config.json")
    assert shape.num_params == 494_032_768
    assert (shape.head_dim, shape.qkv_bias, shape.tie_word_embeddings) == (64, True, True)
    table = bundled("Qwen/Qwen2.5-0.5B", empty_hub_cache)
    assert {**vars(shape), "name": None} == {**vars(table), "name": None}


def test_a_cached_hub_config_is_read_offline(tmp_path):
    cache = tmp_path / "hub"
    snapshot = cache / "models--someorg--Small-LM" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({**QWEN_05B_CONFIG, "num_hidden_layers": 2}))
    (cache / "models--someorg--Small-LM" / "refs").mkdir()
    (cache / "models--someorg--Small-LM" / "refs" / "main").write_text("a" * 40)
    shape, source = load_model_shape("someorg/Small-LM", hub_cache_dir=str(cache))
    assert source.startswith("the Hugging Face cache") and shape.num_layers == 2


def test_bundled_table_matches_ids_in_any_case_and_by_basename(empty_hub_cache):
    assert bundled("qwen/qwen2.5-math-7b", empty_hub_cache).name == "Qwen/Qwen2.5-Math-7B"
    assert bundled("Qwen2.5-Math-7B", empty_hub_cache).name == "Qwen/Qwen2.5-Math-7B"
    assert bundled("/models/Qwen2.5-72B-Instruct", empty_hub_cache).num_params == P_72B  # a folder not here


def test_every_hub_model_of_the_recipes_is_bundled(empty_hub_cache):
    for recipe in glob.glob(os.path.join(REPO, "launchers", "recipes", "*.yaml")):
        with open(recipe) as f:
            path = (yaml.safe_load(f).get("model") or {}).get("path", "runs/")
        if not path.startswith("runs/"):  # the CPU recipes build their tiny models under runs/
            bundled(path, empty_hub_cache)


def test_an_unknown_model_names_the_key_and_the_places_looked(empty_hub_cache):
    with pytest.raises(ValueError) as error:
        load_model_shape("nobody/Mystery-3B", hub_cache_dir=empty_hub_cache)
    message = str(error.value)
    for part in ("'model.path'", "nobody/Mystery-3B/config.json", "Hugging Face cache", "bundled table",
                 "pass a local folder with its config.json"):
        assert part in message


def test_a_mixture_of_experts_config_is_refused(tmp_path, empty_hub_cache):
    (tmp_path / "config.json").write_text(json.dumps({**QWEN_05B_CONFIG, "num_experts": 64}))
    with pytest.raises(ValueError, match="mixture-of-experts"):
        load_model_shape(str(tmp_path), hub_cache_dir=empty_hub_cache)


def test_the_log_prob_chunk_matches_the_loss_code():
    from gainrl.algo.logprobs import DEFAULT_CHUNK_TOKENS
    from gainrl.plan import LOGPROB_CHUNK_TOKENS
    assert LOGPROB_CHUNK_TOKENS == DEFAULT_CHUNK_TOKENS


def test_command_line_prints_the_plan_and_the_verdict_last(in_repo, capsys):
    main(["--config", RECIPE_7B, "--gpus-per-node", "8", "--nodes=1", "--gpu-memory-gib=80"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("memory plan: Qwen/Qwen2.5-Math-7B")
    assert lines[-1].startswith("fits: peak")
    main(["--config", RECIPE_7B, "model.path=Qwen/Qwen2.5-72B-Instruct", "--gpus-per-node=8", "--nodes", "1"])
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("does not fit: generation phase")


@pytest.mark.parametrize("argv, message", [
    (["--config", RECIPE_7B, "--gpus-per-node", "8"], "--nodes is required"),
    (["--config", RECIPE_7B, "--gpus-per-node", "8", "--nodes", "two"], "--nodes must be a number"),
    (["--config", RECIPE_7B, "--gpus-per-node", "0", "--nodes", "1"], "--gpus-per-node must be positive"),
    (["--config", RECIPE_7B, "--gpus-per-node", "8", "--nodes"], "--nodes needs a value"),
    (["--config", RECIPE_7B, "--gpus-per-node", "8", "--nodes", "1", "model.path=nobody/Mystery-3B"],
     "config key 'model.path'"),
    (["--config", RECIPE_7B, "--gpus-per-node", "8", "--nodes", "1", "train.ds_config=ds_configs/none.json"],
     "config key 'train.ds_config'"),
])
def test_command_line_errors(in_repo, argv, message):
    with pytest.raises(ValueError, match=message):
        main(argv)


def test_a_shape_given_by_the_caller_is_used(in_repo):
    cfg = load_config(["--config", RECIPE_7B], TrainRunConfig)
    shape = ModelShape(name="small", hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=32,
                       intermediate_size=128, vocab_size=1024, tie_word_embeddings=True, qkv_bias=True)
    plan = memory_plan(cfg, world_size=2, gpus_per_node=2, gpu_memory_bytes=GPU, shape=shape)
    assert plan.term("vLLM weights").num_bytes == 2 * shape.num_params
    assert "small" in plan.lines()[0] and "shape from the caller" in plan.lines()[0]


@pytest.mark.parametrize("seed", range(10))
def test_the_persistence_threshold_keeps_the_most_small_parameters_the_budget_allows(seed):
    import random
    from gainrl.ds_config import persistence_threshold, persistent_numel
    rng = random.Random(seed)
    numels = [rng.choice([64, 512, 4096, 4096, 65536, 10**6]) for _ in range(rng.randint(1, 30))]
    budget = rng.randint(0, sum(numels) + 10)
    candidates = sorted(set(numels)) + [max(numels) + 1]  # "persist everything smaller than t", t = each size
    best = max(t for t in [min(numels)] + candidates if sum(n for n in numels if n < t) <= budget)
    assert persistence_threshold(numels, budget) == best
    assert persistent_numel(numels, best) <= budget


def test_the_shapes_parameter_list_is_the_models(tiny_model_dir):
    from gainrl.models import parameter_numels
    shape, _ = load_model_shape(tiny_model_dir)
    assert sorted(shape.param_numels()) == sorted(parameter_numels(tiny_model_dir))
    assert sum(shape.param_numels()) == shape.num_params
