"""launchers/experiment.py end to end on a reduced config (the smoke test; the full experiment is run
by hand): the four curricula, one seed, one epoch each of the demo recipe on 1 rank, then the report."""
import json
import os
import subprocess
import sys

from tests.helpers import REPO

DEMO = os.path.join(REPO, "launchers", "recipes", "demo_cpu.yaml")


def test_four_curricula_run_and_the_report_ends_with_the_speedup(tmp_path):
    inputs = tmp_path / "inputs"
    overrides = [f"model.path={inputs}/model", f"data.path={inputs}/train.jsonl",
                 f"data.build_arithmetic.test_path={inputs}/test.jsonl", f"validation.path={inputs}/test.jsonl",
                 "validation.limit=16", f"scorer.output_dir={inputs}/scores", "train.epochs=1",
                 "sampler.prompts_per_epoch=24", "train.prompts_per_step=24", "log.tensorboard=false",
                 "log.plots=false"]
    config = tmp_path / "experiment.yaml"
    config.write_text(json.dumps({"recipe": DEMO, "overrides": overrides, "seeds": [0], "num_ranks": 1,
                                  "output_dir": str(tmp_path / "experiment")}))  # JSON is YAML
    result = subprocess.run([sys.executable, "launchers/experiment.py", "--config", str(config)], cwd=REPO,
                            env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
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
    again = subprocess.run([sys.executable, "launchers/experiment.py", "--config", str(config)], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stderr.count("finished earlier") == 4, again.stderr[-3000:]
