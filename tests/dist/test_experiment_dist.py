"""launchers/experiment.py end to end on a reduced config (the smoke test; the full experiment is run
by hand): the pass-rate job, then uniform and difficulty (which walks its file), one seed, one epoch each
of the tests' recipe on 2 ranks, then the report with its cost columns, and a second call that runs
nothing. (Every curriculum's loop on 2 ranks: tests/dist/test_arena_dist.py.)"""
import json
import os
import re
import sys

from gainrl.experiment import default_curricula
from tests.launch import DEMO, demo_overrides, expect_ok, run

CURRICULA = ("uniform", "difficulty")


def test_two_curricula_run_and_the_report_ends_with_the_summary(tmp_path, copy_inputs):
    inputs, out = copy_inputs(tmp_path / "inputs"), tmp_path / "experiment"
    overrides = demo_overrides(inputs) + ["validation.limit=16", "train.epochs=1", "sampler.prompts_per_epoch=24",
                                          "train.prompts_per_step=24", "log.tensorboard=false", "log.plots=false"]
    config = tmp_path / "experiment.yaml"
    config.write_text(json.dumps({"recipe": DEMO, "overrides": overrides, "seeds": [0], "num_ranks": 2, "method": "difficulty",
                                  "curricula": {name: default_curricula()[name] for name in CURRICULA},
                                  "output_dir": str(out)}))  # JSON is YAML
    experiment = [sys.executable, "launchers/experiment.py", "--config", str(config)]
    result = expect_ok(experiment, 900)
    last = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"speedup_vs_uniform=\S+ seeds=1 best=(uniform|difficulty)", last), last
    curves = json.load(open(out / "curves.json"))["curves"]
    assert sorted(curves) == sorted(CURRICULA)
    for name, by_seed in curves.items():
        assert len(by_seed["0"]) == 2 and all(0 <= a <= 1 for a in by_seed["0"]), (name, by_seed)
    draws = {name: json.loads(open(out / name / "seed_0" / "draws.jsonl").readline())["indices"]
             for name in CURRICULA}
    assert len({tuple(d) for d in draws.values()}) == 2  # two orders, two different draws
    steps = [json.loads(line) for line in open(out / "uniform" / "seed_0" / "metrics.jsonl")]
    assert all(r["num_extra_rollouts"] == 0 and r["rollout_tokens"] > 0 for r in steps)
    report = (out / "report.md").read_text()
    assert all(f"| {name} |" in report for name in curves)
    assert "| curriculum | score file | scoring s |" in report
    assert "| difficulty | pass_rate |" in report
    assert "zero-variance groups %" in report
    pass_rates = json.load(open(out / "pass_rate.json"))["metadata"]
    assert pass_rates["kind"] == "pass_rate" and pass_rates["samples"] == 4 and pass_rates["world_size"] == 2
    assert pass_rates["rollout_tokens"] > 0
    assert json.load(open(out / "difficulty" / "seed_0" / "run.json"))["score_file"] == str(out / "pass_rate.json")
    rates = json.load(open(out / "pass_rate.json"))["columns"]["pass_rate"]
    drawn = [rates[i] for i in draws["difficulty"]]  # the Gaussian starts at the easiest rows
    assert sum(drawn) / len(drawn) > sum(rates) / len(rates) + 0.1, (drawn, sum(rates) / len(rates))
    assert (out / "accuracy.png").stat().st_size > 10_000 and (out / "waste.png").stat().st_size > 10_000
    # a second call finds every run finished and only rewrites the report
    again = run(experiment, 300, env=os.environ)  # the caller's env unchanged, as before
    assert again.returncode == 0 and again.stderr.count("finished earlier") == 2, again.stderr[-3000:]
