"""Config: defaults < YAML < dotlist; bad keys, types and values name the dotted key."""
import glob
import os

import pytest

from gainrl.config import Config, TrainRunConfig, load_config, parse_args


def write(tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return str(path)


def test_precedence_defaults_yaml_dotlist(tmp_path):
    recipe = write(tmp_path, "model: {path: m}\ndata: {path: d.jsonl}\nscorer: {layer: 3, w_inter: 2.0}\n")
    cfg = load_config(["--config", recipe, "scorer.layer=-2"])
    assert cfg.scorer.layer == -2  # dotlist wins over YAML
    assert cfg.scorer.w_inter == 2.0  # YAML wins over defaults
    assert cfg.scorer.max_tokens_per_batch == 16384  # default
    assert cfg.model.path == "m"


def test_launcher_local_rank_argument_is_ignored(tmp_path):
    recipe = write(tmp_path, "model: {path: m}\ndata: {path: d.jsonl}\n")
    assert parse_args(["--local_rank=1", "--config", recipe, "seed=3"]) == (recipe, ["seed=3"])
    assert load_config(["--local_rank=1", "--config", recipe, "seed=3"]).seed == 3


@pytest.mark.parametrize("override, key", [
    ("scorer.layr=1", "scorer.layr"),  # unknown key
    ("scorer.layer=last", "scorer.layer"),  # wrong type
    ("model.build_tiny.hidden_size=big", "model.build_tiny.hidden_size"),
])
def test_bad_override_names_the_dotted_key(tmp_path, override, key):
    recipe = write(tmp_path, "model: {path: m}\ndata: {path: d.jsonl}\n")
    with pytest.raises(ValueError, match=f"'{key}'"):
        load_config(["--config", recipe, override])


def test_unknown_key_in_yaml_names_the_dotted_key(tmp_path):
    recipe = write(tmp_path, "model: {path: m}\ndata: {path: d.jsonl, fields: x}\n")
    with pytest.raises(ValueError, match="'data.fields'"):
        load_config(["--config", recipe])


@pytest.mark.parametrize("override, key", [
    ("model.dtype=fp8", "model.dtype"),
    ("scorer.max_tokens_per_batch=0", "scorer.max_tokens_per_batch"),
    ("prompt.question_template=no-placeholder", "prompt.question_template"),
    ("prompt.one_shot_answer=null", "prompt.one_shot_answer"),
    ("data.limit=0", "data.limit"),
])
def test_invalid_values_are_rejected_not_rewritten(tmp_path, override, key):
    recipe = write(tmp_path, "model: {path: m}\ndata: {path: d.jsonl}\n")
    with pytest.raises(ValueError, match=f"'{key}'"):
        load_config(["--config", recipe, override])


def test_missing_required_value_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="model.path"):
        load_config(["data.path=x.jsonl"])
    with pytest.raises(ValueError, match="config file not found"):
        load_config(["--config", str(tmp_path / "absent.yaml")])


RECIPES = os.path.join(os.path.dirname(__file__), "..", "..", "launchers", "recipes")


@pytest.mark.parametrize("recipe", sorted(glob.glob(os.path.join(RECIPES, "*.yaml"))), ids=os.path.basename)
def test_shipped_recipes_load(recipe):
    name = os.path.basename(recipe)
    if name.startswith("experiment_"):  # an experiment over a training recipe (launchers/experiment.py)
        from gainrl.experiment import ExperimentConfig, validate_experiment
        experiment = load_config(["--config", recipe], ExperimentConfig, validator=validate_experiment)
        load_config(["--config", experiment.recipe, *experiment.overrides], TrainRunConfig)
        for overrides in experiment.curricula.values():
            load_config(["--config", experiment.recipe, *experiment.overrides, *overrides], TrainRunConfig)
        return
    load_config(["--config", recipe], Config if name.startswith("score_") else TrainRunConfig)


def test_training_sections_are_checked(tmp_path):
    recipe = write(tmp_path, "model: {path: m}\ndata: {path: d.jsonl}\n")
    cfg = load_config(["--config", recipe], TrainRunConfig)
    assert cfg.grpo.group_size == 8 and cfg.sampler.schedule == "gaussian"
    for override, key in [("grpo.group_size=1", "grpo.group_size"), ("sampler.beta=2", "sampler.beta"),
                          ("train.prompts_per_step=100", "train.prompts_per_step"),
                          ("sampler.units=fraction", "sampler.sigma"), ("grpo.aggregation=mean", "grpo.aggregation"),
                          ("rollout.temperature=0", "rollout.temperature"), ("sampler.shedule=uniform", "sampler.shedule")]:
        with pytest.raises(ValueError, match=f"'{key}'"):
            load_config(["--config", recipe, override], TrainRunConfig)


EVAL_CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "eval", "configs")


def test_warm_start_keys_are_checked(tmp_path):
    recipe = write(tmp_path, "model: {path: m}\ndata: {path: d.jsonl}\n")
    with pytest.raises(ValueError, match="'model.warm_start_field'"):
        load_config(["--config", recipe, "model.warm_start_field=solution"], TrainRunConfig)
    with pytest.raises(ValueError, match="'model.warm_start_target_accuracy'"):
        load_config(["--config", recipe, "model.warm_start_target_accuracy=0"], TrainRunConfig)
    with pytest.raises(ValueError, match="'data.build_arithmetic.task': must be expressions or chains"):
        load_config(["--config", write(tmp_path, "model: {path: m}\ndata: {path: d.jsonl, build_arithmetic: "
                                                 "{task: words}}\n")], TrainRunConfig)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(EVAL_CONFIGS, "*.yaml"))), ids=os.path.basename)
def test_shipped_eval_configs_load(path):
    from gainrl.evaluation.config import EvalRunConfig, validate_eval
    load_config(["--config", path, "model.path=m"], EvalRunConfig, validate_eval)


def test_the_demo_evaluates_with_its_training_prompt():
    from gainrl.evaluation.config import EvalRunConfig, validate_eval
    demo = load_config(["--config", os.path.join(RECIPES, "demo_cpu.yaml")], TrainRunConfig)
    evaluation = load_config(["--config", os.path.join(EVAL_CONFIGS, "demo_cpu.yaml"), "model.path=m"], EvalRunConfig,
                             validate_eval)
    assert evaluation.prompts["math"] == demo.prompt
    assert evaluation.math_files["chains_test"] == demo.validation.path == demo.data.build_arithmetic.test_path
    assert evaluation.math_files["chains_train"] == demo.data.path
    assert evaluation.generation.max_new_tokens == demo.rollout.max_new_tokens


@pytest.mark.parametrize("text, message", [
    (b"model:\n  path: [1\n", r"config file .*bad.yaml: not valid YAML at line 3, column 1: did not find expected"),
    (b"- model\n- data\n", r"config file .*bad.yaml: its top level must be a mapping of sections .*got a list"),
    (b"model:\n  path: \xff\xfe\n", r"config file .*bad.yaml: not UTF-8 text \(byte 15\)"),
])
def test_a_recipe_that_is_not_a_yaml_mapping_names_the_file(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_bytes(text)
    with pytest.raises(ValueError, match=message):
        load_config(["--config", str(path), "model.path=m", "data.path=d"], TrainRunConfig)


def test_an_override_given_twice_is_an_error_naming_both():
    with pytest.raises(ValueError, match=r"config key 'train.epochs': given twice on the command line "
                                         r"\(train.epochs=2, train.epochs=3\)"):
        load_config(["model.path=m", "data.path=d", "train.epochs=2", "train.epochs=3"], TrainRunConfig)
