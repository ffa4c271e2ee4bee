"""launchers/experiment.py end to end on a reduced config (the smoke test; the full experiment is run
by hand): the four curricula, one seed, one epoch each of the demo recipe on 1 rank, then the report."""
import json
import os
import sys

from tests.launch import DEMO, demo_overrides, expect_ok, run


def test_four_curricula_run_and_the_report_ends_with_the_speedup(tmp_path):
    inputs = tmp_path / "inputs"
    overrides = demo_overrides(inputs) + ["validation.limit=16", "train.epochs=1", "sampler.prompts_per_epoch=24",
                                          "train.prompts_per_step=24", "log.tensorboard=false", "log.plots=false"]
    config = tmp_path / "experiment.yaml"
    config.write_text(json.dumps({"recipe": DEMO, "overrides": overrides, "seeds": [0], "num_ranks": 1,
                                  "output_dir": str(tmp_path / "experiment")}))  # JSON is YAML
    experiment = [sys.executable, "launchers/experiment.py", "--config", str(config)]
    result = expect_ok(experiment, 900)
    assert result.stdout.strip().splitlines()[-1].startswith("speedup_vs_uniform=")
    assert result.stdout.strip().endswith(" seeds=1")
    curves = json.load(open(tmp_path / "experiment" / "curves.json"))["curves"]
    assert sorted(curves) == ["gainrl", "length", "random_order", "uniform"]
    for name, by_seed in curves.items():
        assert len(by_seed["0"]) == 2 and all(0 <= a <= 1 for a in by_seed["0"]), (name, by_seed)
    draws = {name: json.loads(open(tmp_path / "experiment" / name / "seed_0" / "draws.jsonl").readline())["indices"]
             for name in curves}
    assert len({tuple(d) for d in draws.values()}) == 4  # four curricula, four different draws
    report = (tmp_path / "experiment" / "report.md").read_text()
    assert all(f"| {name} |" in report for name in curves)
    assert (tmp_path / "experiment" / "accuracy.png").stat().st_size > 10_000
    # a second call finds every run finished and only rewrites the report
    again = run(experiment, 300, env=os.environ)  # the caller's env unchanged, as before
    assert again.returncode == 0 and again.stderr.count("finished earlier") == 4, again.stderr[-3000:]
