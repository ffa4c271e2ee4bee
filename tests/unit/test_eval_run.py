"""eval/run.py end to end on CPU: the tiny model through vLLM on a math and a code benchmark, then a resumed run."""
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO

RUN = os.path.join(REPO, "eval", "run.py")
COMPARE = os.path.join(REPO, "eval", "compare.py")


def run(args, expect_ok=True):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    result = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert (result.returncode == 0) == expect_ok, f"{args} gave {result.returncode}:\n{result.stderr[-4000:]}"
    return result


def lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_eval_run_writes_records_and_summaries_and_resumes(tiny_model_dir, tmp_path):
    out = str(tmp_path / "eval")
    settings = ["--model", tiny_model_dir, "--benchmarks", "math500,humaneval", "--name", "tiny",
                f"output_dir={out}", "generation.enforce_eager=true"]
    common = settings + ["generation.max_new_tokens=16"]
    first_run = run([RUN, *common, "--limit", "3"])
    folder = os.path.join(out, "tiny")
    for benchmark in ("math500", "humaneval"):
        records = lines(os.path.join(folder, benchmark, "samples.jsonl"))
        assert len(records) == 3 and all(r["completion"] is not None and r["prompt"] for r in records)
        assert {"id", "sample", "prompt", "completion", "extracted", "correct", "reason"} <= set(records[0])
        summary = json.load(open(os.path.join(folder, benchmark, "summary.json")))
        assert summary["num_problems"] == 3 and sum(summary["verdict_reasons"].values()) == 3
    assert json.load(open(os.path.join(folder, "summary.json")))["name"] == "tiny"
    table = open(os.path.join(folder, "summary.md")).read()
    assert "| math500 | 3 | 1 |" in table and "| humaneval | 3 | 1 |" in table

    vllm_log = os.path.join(folder, "logs", "vllm.rank0.log")  # vLLM's lines, not the console's
    assert "init engine" in open(vllm_log).read() and "init engine" not in first_run.stdout + first_run.stderr
    first = lines(os.path.join(folder, "math500", "samples.jsonl"))
    run([RUN, *common, "--limit", "5"])  # the first 3 are graded already: only 2 more each
    records = lines(os.path.join(folder, "math500", "samples.jsonl"))
    assert records[:3] == first  # kept as they were, not redone
    assert len(records) == 5 and len({r["id"] for r in records}) == 5

    engines_built = open(vllm_log).read().count("init engine")  # (vLLM logs this line when it builds one)
    refused = run([RUN, *settings, "--limit", "5", "generation.max_new_tokens=8"], expect_ok=False)
    assert "differs in: max_new_tokens" in refused.stderr and "Traceback" not in refused.stderr
    assert open(vllm_log).read().count("init engine") == engines_built == 2  # refused before an engine was built

    run([COMPARE, folder, folder, "--output", str(tmp_path / "cmp")])
    assert (tmp_path / "cmp.md").read_text().count("| math500 |") == 1 and (tmp_path / "cmp.png").exists()


def test_an_eval_folder_with_another_models_benchmarks_is_refused(tmp_path):
    from gainrl.evaluation.results import check_one_model
    out = tmp_path / "final"  # two checkpoints both named final, evaluated into one output_dir
    check_one_model(str(out), "/runs/b/final", "b" * 64)  # no folder yet
    (out / "gsm8k" / "shards").mkdir(parents=True)
    (out / "gsm8k" / "run.json").write_text(json.dumps({"model": "/runs/a/final", "model_fingerprint": "a" * 64}))
    (out / "gsm8k" / "shards" / "0-of-1.jsonl").write_text("")
    check_one_model(str(out), "/runs/b/final", "b" * 64)  # no record yet: nothing to mix
    (out / "gsm8k" / "shards" / "0-of-1.jsonl").write_text('{"problem_id": "p1"}\n')
    check_one_model(str(out), "/runs/a/final", "a" * 64)  # the same model continues
    with pytest.raises(ValueError, match=r"holds gsm8k results of another model \(/runs/a/final, fingerprint "
                                         r"aaaaaaaaaaaa\) than model.path /runs/b/final \(bbbbbbbbbbbb\)"):
        check_one_model(str(out), "/runs/b/final", "b" * 64)
