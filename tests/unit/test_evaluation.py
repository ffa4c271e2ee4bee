"""Evaluation plumbing: flags and config, benchmark loading, records and resume, summaries and tables."""
import json
import os
import sys

import pytest

from gainrl.config import load_config
from gainrl.evaluation.benchmarks import BENCHMARKS, load_problems, resolve_benchmark
from gainrl.evaluation.config import EvalRunConfig, validate_eval
from gainrl.evaluation.report import checkpoint_table, comparison_table, plot_comparison
from gainrl.evaluation.evaluate import evaluate_benchmark
from gainrl.evaluation.generate import Sample
from gainrl.evaluation.results import Shard, append_records, open_run, read_records, summarize
from tests.helpers import REPO

sys.path.insert(0, os.path.join(REPO, "eval"))
from run import translate_flags  # noqa: E402  (eval/run.py)


def eval_config(argv):
    return load_config(translate_flags(argv), EvalRunConfig, validate_eval)


def test_the_issue_command_line_maps_onto_the_config():
    cfg = eval_config(["--model", "m", "--benchmarks", "math500, humaneval", "--limit", "8", "generation.seed=3"])
    assert (cfg.model.path, cfg.benchmarks, cfg.limit, cfg.generation.seed) == ("m", ["math500", "humaneval"], 8, 3)
    assert cfg.prompts["math"].system_prompt and "boxed" in cfg.prompts["math"].system_prompt  # training format
    assert "python" in cfg.prompts["code"].system_prompt.lower()


@pytest.mark.parametrize("argv,key", [
    (["--model", "m", "--benchmarks", "math5000"], "benchmarks"),
    (["--model", "m", "--benchmarks", "gsm8k", "generation.num_samples=4"], "generation.num_samples"),  # greedy
    (["--model", "m", "--benchmarks", "gsm8k", "generation.temperature=0.6", "generation.num_samples=4",
      "generation.pass_at=[1,8]"], "generation.pass_at"),
    (["--model", "m", "--benchmarks", "gsm8k", "paths.gsm9k=x.jsonl"], "paths"),
    (["--model", "m", "--benchmarks", "gsm8k", "prompts.gsm8k.question_template=no placeholder"],
     "prompts.gsm8k.question_template"),
    (["--model", "m", "--benchmarks", "gsm8k", "generation.temprature=1"], "generation.temprature"),
    (["--model", "m", "--benchmarks", "gsm8k", "num_shards=4", "shard_index=4"], "shard_index"),
    (["--model", "m", "--benchmarks", "gsm8k", "num_shards=0"], "num_shards"),
])
def test_bad_settings_are_errors_naming_the_key(argv, key):
    with pytest.raises(ValueError, match=f"'{key}'"):
        eval_config(argv)


def test_every_bundled_benchmark_loads_with_its_documented_size():
    sizes = {"gsm8k": 1319, "math500": 500, "aime24": 30, "amc23": 40, "amc22_23": 83, "minerva": 272,
             "olympiadbench": 675, "humaneval": 164, "mbpp": 257}
    for name, size in sizes.items():
        problems = load_problems(name)
        assert len(problems) == size, name
        assert len({p.id for p in problems}) == size
    assert load_problems("amc22_23")[0].answer == "142"  # a JSON number 142.0 in the file
    assert all(p.row["meta"]["split"] == "test" for p in load_problems("mbpp"))
    mbpp = load_problems("mbpp", limit=3)
    assert len(mbpp) == 3 and all(p.row["entry_point"] in p.text for p in mbpp)  # the prompt names the function
    assert set(BENCHMARKS) == set(sizes) | {"humanevalplus", "mbppplus"}


def test_a_users_math_file_is_a_benchmark_with_the_default_rules(tmp_path):
    path = tmp_path / "held_out.jsonl"
    path.write_text(json.dumps({"id": "q1", "problem": "What is 6*7?", "answer": 42.0}) + "\n")
    cfg = eval_config(["--model", "m", "--benchmarks", "held_out,gsm8k", f"math_files.held_out={path}"])
    benchmark = resolve_benchmark("held_out", cfg.math_files)
    assert (benchmark.kind, benchmark.default_source()) == ("math", str(path))
    assert [(p.id, p.answer) for p in load_problems(benchmark)] == [("q1", "42")]
    with pytest.raises(ValueError, match="'math_files'"):
        eval_config(["--model", "m", "--benchmarks", "gsm8k", f"math_files.gsm8k={path}"])
    with pytest.raises(ValueError, match="unknown benchmark 'held_out'"):
        resolve_benchmark("held_out", {})


def test_a_bad_row_is_an_error_naming_the_file_and_row(tmp_path):
    path = tmp_path / "bench.jsonl"
    rows = [{"id": "a", "problem": "1+1?", "answer": "2"}, {"id": "b", "problem": "2+2?", "answer": ""}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(ValueError, match=r"bench.jsonl, row 1 has no answer"):
        load_problems("gsm8k", str(path))
    rows[1] = {"id": "a", "problem": "2+2?", "answer": "4"}
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(ValueError, match=r"row 1 repeats id 'a'"):
        load_problems("gsm8k", str(path))
    with pytest.raises(ValueError, match="file not found"):
        load_problems("gsm8k", str(tmp_path / "missing.jsonl"))


def record(problem_id, sample, correct, finish="stop", tokens=10, reason="exact"):
    return {"id": problem_id, "sample": sample, "correct": correct, "finish_reason": finish, "num_tokens": tokens,
            "reason": reason}


def test_a_rerun_reopens_the_records_and_a_different_run_is_refused(tmp_path):
    folder = str(tmp_path / "gsm8k")
    key = {"model": "m", "temperature": 0.0}
    assert open_run(folder, key, 1) == {}
    assert open_run(folder, {"model": "other"}, 1) == {}  # no records yet: another run may take the folder
    append_records(os.path.join(folder, "samples.jsonl"), [record("p1", 0, True), record("p2", 0, False)])
    reopened = open_run(folder, {"model": "other"}, 1)
    assert sorted(reopened) == ["p1", "p2"] and reopened["p1"][0]["correct"] is True
    with pytest.raises(ValueError, match="differs in: model, temperature"):
        open_run(folder, key, 1)


def test_what_a_killed_run_left_half_written_is_dropped_and_later_records_stay_readable(tmp_path):
    folder = str(tmp_path / "math500")
    samples = os.path.join(folder, "samples.jsonl")
    key = {"model": "m"}
    open_run(folder, key, 2)
    complete = [record("p1", 0, True), record("p1", 1, False)]
    half = [record("p2", 0, True)]  # one of its two samples, then the kill ...
    with open(samples, "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in complete + half) + '{"id": "p2", "sam')  # ... mid-line
    done = open_run(folder, key, 2)
    assert list(done) == ["p1"]  # p2 is redone
    append_records(samples, [record("p2", 0, False), record("p2", 1, False)])
    reread = read_records(samples)
    assert [len(reread[p]) for p in ("p1", "p2")] == [2, 2]  # the redo did not land on the cut line
    assert open_run(folder, key, 2)["p2"][0]["correct"] is False


def test_a_corrupt_line_before_the_last_is_an_error_naming_it(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text('{"id": "p0", "sam\n' + json.dumps(record("p1", 0, True)) + "\n")
    with pytest.raises(ValueError, match="line 1"):
        read_records(str(path))


class PromptDeterminedGenerator:
    """vLLM's place: each prompt's samples follow from its tokens alone (as greedy decoding's do)."""

    def __init__(self, num_samples):
        self.num_samples, self.prompts = num_samples, []

    def generate(self, prompt_token_ids):
        self.prompts += prompt_token_ids
        return [[Sample(f"answer {(sum(ids) + 3 * i) % 7}", len(ids) % 9 + i, "stop" if i else "length")
                 for i in range(self.num_samples)] for ids in prompt_token_ids]


def grade_last_digit(benchmark, problems, completions):
    return [(c.endswith(("1", "4")), c[-1], f"digit_{c[-1]}") for c in completions]


def test_shards_of_a_benchmark_merge_into_what_one_process_writes(tmp_path, tiny_tokenizer):
    from gainrl.evaluation.config import GenerationConfig
    from gainrl.prompts import PromptBuilder
    benchmark = resolve_benchmark("math500")
    problems = load_problems(benchmark, limit=11)
    prompts = PromptBuilder(tiny_tokenizer, EvalRunConfig().prompts["math"])
    gen = GenerationConfig(num_samples=2, temperature=0.6, pass_at=[1, 2], problems_per_chunk=2)
    key = {"model": "m", "benchmark": "math500"}

    def evaluate(folder, shard):
        generator = PromptDeterminedGenerator(gen.num_samples)
        summary = evaluate_benchmark(benchmark, problems, prompts, generator, grade_last_digit, str(folder), key, gen,
                                     shard)
        return summary, len(generator.prompts)

    whole, asked = evaluate(tmp_path / "one", Shard())
    assert asked == 11 and whole["num_problems"] == 11 and 0 < whole["accuracy"] < 1
    merged = [evaluate(tmp_path / "three", Shard(index, 3)) for index in (2, 0, 1)]
    assert [asked for _, asked in merged] == [3, 4, 4]  # problems 2, 5, 8 / 0, 3, 6, 9 / 1, 4, 7, 10
    assert [summary for summary, _ in merged] == [None, None, whole]  # the last shard to finish merges
    assert read_jsonl_lines(tmp_path / "three" / "samples.jsonl") == read_jsonl_lines(tmp_path / "one" / "samples.jsonl")
    assert json.loads((tmp_path / "three" / "summary.json").read_text()) == whole
    assert sorted(os.listdir(tmp_path / "three" / "shards")) == ["0-of-3.jsonl", "1-of-3.jsonl", "2-of-3.jsonl"]
    assert evaluate(tmp_path / "three", Shard(1, 2)) == (whole, 0)  # another split: graded problems are not redone
    with pytest.raises(ValueError, match="differs in: model"):
        evaluate_benchmark(benchmark, problems, prompts, PromptDeterminedGenerator(2), grade_last_digit,
                           str(tmp_path / "three"), {**key, "model": "other"}, gen, Shard(0, 2))


def read_jsonl_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_summary_metrics_by_hand():
    records = {"p1": [record("p1", i, c) for i, c in enumerate([True, False, False, False])],
               "p2": [record("p2", i, c, finish="length", tokens=30) for i, c in enumerate([True, True, False, True])],
               "p3": [record("p3", i, False, reason="no_boxed") for i in range(4)]}
    summary = summarize(records, num_samples=4, pass_at=[1, 2, 4])
    assert summary["accuracy"] == pytest.approx((0.25 + 0.75 + 0) / 3)
    assert summary["pass@1"] == pytest.approx(summary["accuracy"])
    assert summary["pass@2"] == pytest.approx((0.5 + 1 + 0) / 3)  # p1: 1 - C(3,2)/C(4,2) = 0.5
    assert summary["pass@4"] == pytest.approx(2 / 3)
    assert summary["truncated_fraction"] == pytest.approx(4 / 12)
    assert summary["mean_completion_tokens"] == pytest.approx((8 * 10 + 4 * 30) / 12)
    assert summary["verdict_reasons"] == {"exact": 8, "no_boxed": 4}
    with pytest.raises(ValueError, match="p1 has 4 records, expected 8"):
        summarize(records, num_samples=8, pass_at=[1])


def test_tables_and_plot(tmp_path):
    def bench(name, accuracy):
        return {"benchmark": name, "num_problems": 10, "num_samples": 1, "accuracy": accuracy, "pass@1": accuracy,
                "truncated_fraction": 0.1, "mean_completion_tokens": 123.4}
    base = {"name": "base", "benchmarks": [bench("gsm8k", 0.5), bench("math500", 0.25)]}
    tuned = {"name": "tuned", "benchmarks": [bench("gsm8k", 0.75)]}
    table = checkpoint_table("base", base["benchmarks"])
    assert "| gsm8k | 10 | 1 | 50.0 | 10.0 | 123 |" in table
    compared = comparison_table([base, tuned])
    assert "| gsm8k | 50.0 | 75.0 |" in compared and "| math500 | 25.0 | - |" in compared
    assert "| mean of 1 | 50.0 | 75.0 |" in compared  # only benchmarks that both were evaluated on
    plot_comparison(str(tmp_path / "c.png"), [base, tuned])
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_graders_score_known_answers_right_and_wrong_ones_wrong():
    from gainrl.evaluation.config import GradingConfig
    from gainrl.evaluation.grading import Graders
    graders = Graders(GradingConfig(num_workers=2, code_timeout_s=30))
    try:
        math = load_problems("minerva", limit=3)
        completions = [f"So the answer is \\boxed{{{p.answer}}}." for p in math] + ["\\boxed{-12345}"]
        verdicts = graders.grade(BENCHMARKS["minerva"], math + math[:1], completions)
        assert [v[0] for v in verdicts] == [True, True, True, False]
        assert verdicts[0][1] == math[0].answer  # the extracted answer is recorded
        code = load_problems("humaneval", limit=3) + load_problems("mbpp", limit=2)
        solutions = [f"```python\n{p.row['prompt']}{p.row['canonical_solution']}\n```" if p.row["test_type"] == "check_fn"
                     else f"Here it is:\n```python\n{p.row['canonical_solution']}\n```" for p in code]
        verdicts = graders.grade(BENCHMARKS["humaneval"], code, solutions)
        assert [v[0] for v in verdicts] == [True] * 5, verdicts
        swapped = graders.grade(BENCHMARKS["humaneval"], code[:2], solutions[1:3])  # another problem's solution
        assert [v[0] for v in swapped] == [False, False]
    finally:
        graders.close()
