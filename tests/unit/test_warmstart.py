"""Supervised warm start: the loss it trains is the plain response loss, it lowers it, and it caches."""
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from gainrl.config import PromptConfig
from gainrl.prompts import PromptBuilder
from gainrl.tasks import chains
from gainrl.tasks.arithmetic import make_problems, write_split
from gainrl.warmstart import (MARKER, RESPONSE_TEMPLATE, build_examples, collate, expected_accuracy, learning_rate,
                              main, problem_response_pairs, prompt_config_from_recipe, response_token_losses, rows_hash,
                              shared_prefix_length, warm_start)

ROWS = make_problems(24, seed=0)


@pytest.fixture(autouse=True)
def one_thread():
    """Ops this small gain nothing from a second thread, and on a busy 2-core machine the
    threads' barriers made these tests 10x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def full_sequence_token_losses(model, examples) -> list[torch.Tensor]:
    """Brute force: each prompt + response through the whole model; per-token response cross-entropy."""
    with torch.no_grad():
        return [F.cross_entropy(model(torch.tensor([prompt + response])).logits[0][len(prompt) - 1:-1],
                                torch.tensor(response), reduction="none") for prompt, response in examples]


def full_sequence_loss(model, examples) -> float:
    return torch.cat(full_sequence_token_losses(model, examples)).mean().item()


def test_examples_are_training_prompts_plus_boxed_answer(tiny_model_dir, tiny_tokenizer):
    examples = build_examples(tiny_tokenizer, problem_response_pairs(ROWS[:3]), PromptConfig())
    builder = PromptBuilder(tiny_tokenizer, PromptConfig())
    for row, (prompt, response) in zip(ROWS, examples):
        assert prompt == builder.build(row["problem"]).input_ids
        assert response[-1] == tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
        assert tiny_tokenizer.decode(response[:-1]) == f"The answer is \\boxed{{{row['answer']}}}."


def test_shared_prefix_length_is_the_longest_common_prefix():
    examples = [([1, 2, 3, 4, 5], [9]), ([1, 2, 3, 7, 5, 6], [9]), ([1, 2, 3, 4], [9])]
    assert shared_prefix_length(examples) == 3
    assert shared_prefix_length([([1, 2, 3], [9]), ([1, 2, 3], [8])]) == 2  # each row keeps its last prompt token
    assert shared_prefix_length([([5, 2], [9]), ([1, 2], [9])]) == 0


def test_cached_prefix_loss_equals_the_full_forward(tiny_model_dir, tiny_tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    examples = build_examples(tiny_tokenizer, problem_response_pairs(ROWS[:6]), PromptConfig())
    prefix_length = shared_prefix_length(examples)
    assert prefix_length > 50  # system prompt and one-shot exchange are shared
    prefix_ids = torch.tensor(examples[0][0][:prefix_length])
    cached = response_token_losses(model, prefix_ids, *collate(examples, prefix_length, tiny_tokenizer.pad_token_id))
    plain = response_token_losses(model, prefix_ids[:0], *collate(examples, 0, tiny_tokenizer.pad_token_id))
    brute = full_sequence_token_losses(model, examples)
    assert torch.allclose(cached, torch.cat(brute), atol=1e-5)
    assert torch.allclose(plain, cached, atol=1e-5)
    # and the gradients agree: the prefix's cache carries them back to the shared tokens
    cached_grads = torch.autograd.grad(cached.mean(), list(model.parameters()))
    plain_grads = torch.autograd.grad(plain.mean(), list(model.parameters()))
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(cached_grads, plain_grads))


def test_expected_accuracy_is_the_mean_probability_of_whole_responses():
    token_losses = torch.tensor([0.1, 0.2, 0.0, 1.0, 2.0, 0.5])
    rows = torch.tensor([0, 0, 0, 1, 1, 2])
    expected = (math.exp(-0.3) + math.exp(-3.0) + math.exp(-0.5)) / 3
    assert expected_accuracy(token_losses, rows, 3) == pytest.approx(expected)
    assert expected_accuracy(torch.zeros(4), torch.tensor([0, 0, 1, 1]), 2) == pytest.approx(1.0)


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    assert learning_rate(0, 100, 1.0, 5) == pytest.approx(0.2)
    assert learning_rate(4, 100, 1.0, 5) == pytest.approx(1.0)
    assert learning_rate(5, 100, 1.0, 5) == pytest.approx(1.0)
    assert learning_rate(100, 100, 1.0, 5) == pytest.approx(0.1)
    assert learning_rate(52, 100, 1.0, 5) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 47 / 95)))


def test_warm_start_trains_saves_and_caches(tiny_model_dir, tiny_tokenizer, tmp_path, capsys):
    out = str(tmp_path / "warm")
    settings = dict(steps=30, lr=3e-3, batch_size=8, seed=0, target_accuracy=None, log_every=10)
    assert warm_start(tiny_model_dir, out, ROWS, PromptConfig(), **settings) == out
    examples = build_examples(tiny_tokenizer, problem_response_pairs(ROWS), PromptConfig())
    base_loss = full_sequence_loss(AutoModelForCausalLM.from_pretrained(tiny_model_dir), examples)
    warm_loss = full_sequence_loss(AutoModelForCausalLM.from_pretrained(out), examples)
    assert warm_loss < 0.5 * base_loss
    question = "What is 3 + 4?"
    assert AutoTokenizer.from_pretrained(out)(question)["input_ids"] == tiny_tokenizer(question)["input_ids"]
    assert GenerationConfig.from_pretrained(out).eos_token_id is not None
    marker = json.load(open(os.path.join(out, MARKER)))
    assert marker["inputs"]["steps"] == 30 and marker["inputs"]["num_rows"] == len(ROWS)
    result = marker["result"]
    assert result["num_steps"] == 30 and result["stopped_by"] == "steps"
    assert result["final_loss"] < result["first_loss"]
    assert "step 30/30" in capsys.readouterr().err
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".staging-")]

    weights = [name for name in os.listdir(out) if name.endswith(".safetensors")][0]
    built_at = os.stat(os.path.join(out, weights)).st_mtime_ns
    warm_start(tiny_model_dir, out, ROWS, PromptConfig(), **settings)  # same inputs: cached
    assert os.stat(os.path.join(out, weights)).st_mtime_ns == built_at
    assert "cached" in capsys.readouterr().err

    # different inputs rebuild (a few steps each, to keep the test fast)
    quick = dict(settings, steps=3)
    for rows, prompt_cfg, changed in ((ROWS, PromptConfig(), "steps"), (ROWS[:-1], PromptConfig(), "rows"),
                                      (ROWS[:-1], PromptConfig(system_prompt=None), "prompt")):
        before = json.load(open(os.path.join(out, MARKER)))["inputs"]
        warm_start(tiny_model_dir, out, rows, prompt_cfg, **quick)
        after = json.load(open(os.path.join(out, MARKER)))["inputs"]
        assert after[changed] != before[changed] and after["steps"] == 3
        assert "step 3/3" in capsys.readouterr().err


def test_same_inputs_give_the_same_weights(tiny_model_dir, tmp_path):
    settings = dict(steps=5, lr=1e-3, batch_size=4, seed=1, target_accuracy=None)
    a = warm_start(tiny_model_dir, str(tmp_path / "a"), ROWS, PromptConfig(), **settings)
    b = warm_start(tiny_model_dir, str(tmp_path / "b"), ROWS, PromptConfig(), **settings)
    wa = AutoModelForCausalLM.from_pretrained(a).state_dict()
    wb = AutoModelForCausalLM.from_pretrained(b).state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_bad_inputs_are_value_errors(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="not a local model folder"):
        warm_start(str(tmp_path / "missing"), str(tmp_path / "out"), ROWS, PromptConfig(), steps=1)
    with pytest.raises(ValueError, match="no rows"):
        warm_start(tiny_model_dir, str(tmp_path / "out"), [], PromptConfig(), steps=1)
    with pytest.raises(ValueError, match="answer"):
        warm_start(tiny_model_dir, str(tmp_path / "out"), ROWS, PromptConfig(), steps=1, response_template="{x}")


def test_a_response_field_gives_each_row_its_own_target(tiny_model_dir, tiny_tokenizer, tmp_path):
    rows = [{**row, "solution": f"{row['answer']}={row['answer']}. The answer is \\boxed{{{row['answer']}}}."}
            for row in ROWS]
    pairs = problem_response_pairs(rows, response_field="solution")
    assert pairs == [(row["problem"], row["solution"]) for row in rows]
    assert problem_response_pairs(rows)[0][1] == RESPONSE_TEMPLATE.format(answer=rows[0]["answer"])
    prompt, response = build_examples(tiny_tokenizer, pairs[:1], PromptConfig())[0]
    assert tiny_tokenizer.decode(response) == rows[0]["solution"] + tiny_tokenizer.eos_token
    out = warm_start(tiny_model_dir, str(tmp_path / "warm"), rows, PromptConfig(), steps=2, batch_size=4,
                     response_field="solution")
    inputs = json.load(open(os.path.join(out, MARKER)))["inputs"]
    assert inputs["response_field"] == "solution" and inputs["rows"] == rows_hash(pairs)
    with pytest.raises(ValueError, match=f"row '{ROWS[1]['id']}' has no text in its response field 'solution'"):
        problem_response_pairs([rows[0], ROWS[1]], response_field="solution")
    write_split(str(tmp_path / "chains.jsonl"), chains.make_problems(12, seed=0))  # the CLI keeps the field
    main(["--base", tiny_model_dir, "--data", str(tmp_path / "chains.jsonl"), "--out", str(tmp_path / "cli"),
          "--steps", "1", "--batch_size", "4", "--response_field", "solution"])
    assert json.load(open(tmp_path / "cli" / MARKER))["inputs"]["response_field"] == "solution"


def test_cli_reads_rows_and_the_recipe_prompt(tiny_model_dir, tmp_path):
    write_split(str(tmp_path / "train.jsonl"), ROWS)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model:\n  path: somewhere\n"
                      "prompt:\n  system_prompt: null\n  question_template: 'Q: {problem}'\n")
    out = str(tmp_path / "warm")
    main(["--base", tiny_model_dir, "--data", str(tmp_path / "train.jsonl"), "--out", out,
          "--recipe", str(recipe), "--steps", "2", "--batch_size", "4"])
    inputs = json.load(open(os.path.join(out, MARKER)))["inputs"]
    assert inputs["prompt"]["system_prompt"] is None and inputs["prompt"]["question_template"] == "Q: {problem}"
    assert inputs["rows"] == rows_hash(problem_response_pairs(ROWS)) and inputs["steps"] == 2
    recipe.write_text("prompt:\n  sytem_prompt: x\n")
    with pytest.raises(ValueError, match="prompt.sytem_prompt"):
        prompt_config_from_recipe(str(recipe))


def test_training_stops_at_the_target_accuracy(tiny_model_dir, tmp_path):
    out = warm_start(tiny_model_dir, str(tmp_path / "warm"), ROWS, PromptConfig(), steps=200, lr=3e-3,
                     batch_size=8, seed=0, target_accuracy=0.002)
    result = json.load(open(os.path.join(out, MARKER)))["result"]
    assert result["stopped_by"] == "target_accuracy" and 20 <= result["num_steps"] < 200
    assert result["expected_accuracy"] >= 0.002
    # the target was really reached: the mean probability of the target responses (the estimate lags, as it
    # is measured on batches before their update, and is noisy)
    examples = build_examples(AutoTokenizer.from_pretrained(out), problem_response_pairs(ROWS), PromptConfig())
    measured = sum(math.exp(-t.sum().item()) for t in full_sequence_token_losses(
        AutoModelForCausalLM.from_pretrained(out), examples)) / len(examples)
    assert measured > 0.5 * result["expected_accuracy"]
