"""The efficiency experiment's analysis against hand-worked curves and synthetic run folders, the runner's
placeholder and child-error handling."""
import importlib.util
import json
import math
import os

import pytest

from gainrl.config import TrainRunConfig, load_config
from gainrl.experiment import (ExperimentConfig, ToTarget, accuracy_curve, analyse, analyse_runs, best_curriculum,
                               child_error, default_curricula, epochs_to_reach, fill_placeholders, plot_curves,
                               plot_zero_variance, read_run, read_score_metadata, report_markdown, results_json,
                               speedup, summary_line, uses_pass_rates, validate_experiment, wall_seconds, welch_test,
                               zero_variance_by_epoch)
from tests.helpers import REPO


def test_epochs_to_reach_is_where_the_curve_stays_at_or_above_the_target():
    assert epochs_to_reach([0.1, 0.3, 0.5, 0.4], 0.3) == 1
    assert epochs_to_reach([0.1, 0.5, 0.2, 0.5, 0.6], 0.45) == 3  # the spike at 1 does not count
    assert epochs_to_reach([0.5, 0.6], 0.2) == 0
    assert epochs_to_reach([0.1, 0.9, 0.2], 0.5) is None  # reached, then lost
    assert epochs_to_reach([0.1, 0.2], 0.9) is None


def test_target_epochs_and_speedup_by_hand():
    curves = {
        "uniform": {0: [0.1, 0.2, 0.3, 0.4], 1: [0.1, 0.1, 0.3, 0.6]},  # target = mean final = 0.5
        "gainrl": {0: [0.1, 0.5, 0.6, 0.6], 1: [0.1, 0.3, 0.5, 0.7]},  # stays >= 0.5 from 1 and from 2
        "length": {0: [0.1, 0.1, 0.1, 0.1], 1: [0.1, 0.2, 0.2, 0.2]},  # never: counted as 4
    }
    target, results = analyse(curves, "uniform")
    assert target == pytest.approx(0.5)
    assert results["uniform"].epochs_to_target == {0: None, 1: 3}  # a seed below the mean never gets there
    assert results["gainrl"].epochs_to_target == {0: 1, 1: 2}
    assert results["length"].censored_epochs(3) == [4, 4]
    # seed-mean curves: uniform [0.1, 0.15, 0.3, 0.5] -> 3; gainrl [0.1, 0.4, 0.55, 0.65] -> 2
    assert (results["uniform"].mean_curve_epochs, results["gainrl"].mean_curve_epochs) == (3, 2)
    assert speedup(results, "uniform", "gainrl", 3) == (pytest.approx(1.5), "")
    ratio, caveat = speedup(results, "uniform", "length", 3)  # never reached: E + 1 = 4 epochs, an upper bound
    assert ratio == pytest.approx(3 / 4) and "upper bound" in caveat
    report = report_markdown(target, results, "uniform", "gainrl", 3, "t")
    # final 0.6, 0.7: mean 65.0, sample std 7.1, +15.0 points over 0.5; epochs 1, 2: mean 1.50, sample std 0.71.
    # Welch: variances 0.005 and 0.02 over 2 seeds each: se = sqrt(0.0025 + 0.01), t = 0.15 / se = 1.34.
    # No run folders: steps, seconds and tokens are not known (-), a seed that did not get there is n.r.
    assert (f"| gainrl | 65.0 +- 7.1 | +15.0 | t 1.34, p {results['gainrl'].versus_baseline.p:.3f} | 2/2 | "
            "1.50 +- 0.71 (1, 2) | -, - | -, - | -, - | 2 |") in report
    assert "| length | 15.0 +- 7.1 | -35.0 | t -3.13, p " in report  # -0.35 / se
    assert "| 0/2 | 4.00 +- 0.00 (n.r., n.r.) | n.r., n.r. | n.r., n.r. | n.r., n.r. | n.r. |" in report
    assert "| uniform | 50.0 +- 14.1 | (baseline) | (baseline) | 1/2 | 3.50 +- 0.71 (n.r., 3) |" in report


def test_a_target_met_before_training_gives_no_speedup():
    target, results = analyse({"uniform": {0: [0.5, 0.4, 0.5]}, "gainrl": {0: [0.5, 0.5, 0.6]}}, "uniform")
    ratio, caveat = speedup(results, "uniform", "gainrl", 2)
    assert math.isnan(ratio) and "undefined" in caveat


def test_runs_with_different_budgets_are_refused():
    with pytest.raises(ValueError, match="different numbers of validation points"):
        analyse({"uniform": {0: [0.1, 0.2]}, "gainrl": {0: [0.1, 0.2, 0.3]}}, "uniform")


# ---- Welch's t-test against closed forms of the t distribution ---------------------------------------------

def test_welch_test_against_the_closed_form_p_values_of_1_and_2_degrees_of_freedom():
    # equal variances 0.005, 2 seeds each: df = (0.0025 + 0.0025)^2 / (2 * 0.0025^2 / 1) = 2; t = 0.2 / sqrt(0.005)
    # = 2 sqrt 2; with 2 df the two-sided p = 1 - |t| / sqrt(t^2 + 2) = 1 - sqrt(8 / 10)
    result = welch_test([0.6, 0.7], [0.4, 0.5])
    assert (result.diff, result.t, result.df) == (pytest.approx(0.2), pytest.approx(2 * math.sqrt(2)), pytest.approx(2))
    assert result.p == pytest.approx(1 - math.sqrt(0.8))
    # one sample without spread: df = 1 (Cauchy), t = 0.2 / sqrt(0.02 / 2) = 2, p = 1 - (2 / pi) atan 2
    result = welch_test([0.6, 0.8], [0.5, 0.5])
    assert (result.t, result.df) == (pytest.approx(2), pytest.approx(1))
    assert result.p == pytest.approx(1 - 2 / math.pi * math.atan(2))
    # unequal variances 0.005 and 0.02: df = 0.0125^2 / (0.0025^2 + 0.01^2) = 1.4706
    assert welch_test([0.6, 0.7], [0.4, 0.6]).df == pytest.approx(0.0125 ** 2 / (0.0025 ** 2 + 0.01 ** 2))


def test_welch_test_needs_two_seeds_and_some_spread():
    assert welch_test([0.6], [0.4, 0.5]) is None and welch_test([0.6, 0.7], [0.5]) is None
    flat = welch_test([0.6, 0.6], [0.5, 0.5])
    assert flat.diff == pytest.approx(0.1) and math.isnan(flat.t) and math.isnan(flat.p)
    target, results = analyse({"uniform": {0: [0.1, 0.5]}, "gainrl": {0: [0.1, 0.6]}}, "uniform")
    report = report_markdown(target, results, "uniform", "gainrl", 1, "t")
    assert "| gainrl | 60.0 +- 0.0 | +10.0 | n/a | 1/1 |" in report


# ---- synthetic run folders ------------------------------------------------------------------------------

def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def step_records(elapsed, **columns):
    """One optimizer step per epoch: step k + 1 in epoch k, with the given columns (metrics.jsonl names)."""
    return [{"step": k + 1, "epoch": k, "accuracy": 0.5, "elapsed_s": e,
             **{key: values[k] for key, values in columns.items()}} for k, e in enumerate(elapsed)]


def write_run(root, name, seed, curve, steps, score_file=None):
    folder = root / name / f"seed_{seed}"
    folder.mkdir(parents=True)
    write_jsonl(folder / "validation.jsonl",  # validation after e epochs = after e steps
                [{"epoch": e, "step": e, "accuracy": a, "num_rows": 10} for e, a in enumerate(curve)])
    write_jsonl(folder / "metrics.jsonl", steps)
    (folder / "run.json").write_text(json.dumps({"score_file": score_file, "config": {}}))
    return str(folder)


def new_keys(elapsed, tokens, groups, zero, zero_tokens, extra=(0, 0, 0), rescore=None):
    columns = dict(rollout_tokens=tokens, num_groups=groups, num_zero_variance_groups=zero,
                   zero_variance_tokens=zero_tokens, num_extra_rollouts=extra, num_rollouts=[8 * g for g in groups])
    if rescore is not None:
        columns["time_rescore_s"] = rescore
    return step_records(elapsed, **columns)


@pytest.fixture
def arena(tmp_path):
    """Five curricula x 2 seeds x 3 epochs (one step each). uniform's final accuracies 0.5, 0.5: target 0.5."""
    angle, pass_rate = tmp_path / "angle.json", tmp_path / "pass_rate.json"
    angle.write_text(json.dumps({"format": "gainrl.scores/1", "metadata": {"seconds": 42.0}, "columns": {}}))
    pass_rate.write_text(json.dumps({"format": "gainrl.scores/1", "columns": {}, "metadata": {
        "kind": "pass_rate", "seconds": 30.5, "num_rollouts": 768, "rollout_tokens": 5000}}))
    root, four = tmp_path / "experiment", [4, 4, 4]
    spec = {
        "uniform": [([0.1, 0.2, 0.3, 0.5], new_keys([10, 20, 30], [100] * 3, four, [2, 2, 2], [40] * 3), None),
                    ([0.1, 0.1, 0.3, 0.5], new_keys([10, 20, 40], [100, 100, 200], four, [2, 1, 1], [40, 20, 20]),
                     None)],
        # the same angle file as gainrl, from a run before the new keys were logged (elapsed_s only)
        "gainrl_centred": [([0.1, 0.3, 0.6, 0.6], step_records([10, 20, 30]), angle),
                           ([0.1, 0.3, 0.5, 0.8], step_records([10, 20, 30]), angle)],
        "gainrl": [([0.1, 0.5, 0.6, 0.6], new_keys([10, 30, 45], [100, 200, 150], four, [1, 2, 0], [20, 50, 0],
                                                    rescore=[0, 5, 0]), angle),
                   # resumed after step 2: its clock restarts, 8 s after the restart = 26 + 8 s since the start
                   ([0.1, 0.3, 0.5, 0.8], new_keys([12, 26, 8], [120, 180, 160], four, [1, 1, 2], [30, 40, 60],
                                                    rescore=[0, 4, 0]), angle)],
        "difficulty": [([0.1, 0.2, 0.5, 0.5], new_keys([10, 20, 30], [150] * 3, four, [0, 1, 1], [0, 30, 30]),
                        pass_rate),
                       ([0.1, 0.4, 0.4, 0.4], new_keys([11, 22, 33], [100] * 3, four, [4, 4, 4], [100] * 3),
                        pass_rate)],
        "dapo": [([0.1, 0.2, 0.5, 0.5], new_keys([10, 20, 30], [150] * 3, [6, 4, 8], [2, 0, 4], [30, 0, 60],
                                                 extra=[8, 0, 16]), None),
                 ([0.1, 0.4, 0.5, 0.6], new_keys([15, 36, 50], [100, 200, 100], [4, 6, 6], [0, 2, 2], [0, 40, 20],
                                                  extra=[0, 8, 8]), None)],
    }
    logs = {name: {seed: read_run(write_run(root, name, seed, curve, steps, None if f is None else str(f)))
                   for seed, (curve, steps, f) in enumerate(runs)} for name, runs in spec.items()}
    metadata = {str(f): read_score_metadata(str(f)) for f in (angle, pass_rate)}
    target, results = analyse_runs(logs, "uniform", metadata)
    return target, results, str(angle), str(pass_rate)


def test_steps_seconds_and_tokens_to_the_target_per_seed(arena):
    target, results, _, _ = arena
    assert target == pytest.approx(0.5)
    to = {name: r.to_target for name, r in results.items()}
    assert to["uniform"] == {0: ToTarget(3, 3, 30.0, 300.0), 1: ToTarget(3, 3, 40.0, 400.0)}
    # seed 0 reaches it after epoch 1 (step 1: 10 s, 100 tokens); seed 1 after 2 (26 s, 120 + 180 tokens)
    assert to["gainrl"] == {0: ToTarget(1, 1, 10.0, 100.0), 1: ToTarget(2, 2, 26.0, 300.0)}
    assert to["gainrl_centred"] == {0: ToTarget(2, 2, 20.0, None), 1: ToTarget(2, 2, 20.0, None)}  # no token counts
    assert to["difficulty"] == {0: ToTarget(2, 2, 20.0, 300.0), 1: ToTarget(None)}  # seed 1 stays at 0.4
    assert to["dapo"] == {0: ToTarget(2, 2, 20.0, 300.0), 1: ToTarget(2, 2, 36.0, 300.0)}


def test_run_totals_zero_variance_and_selection_cost(arena):
    _, results, angle, pass_rate = arena
    gainrl = results["gainrl"].totals
    assert (gainrl[0].rescore_s, gainrl[0].extra_rollouts, gainrl[0].rollout_tokens) == (5, 0, 450)
    assert (gainrl[0].zero_variance_fraction, gainrl[0].zero_variance_token_share) == (3 / 12, pytest.approx(70 / 450))
    assert (gainrl[1].rescore_s, gainrl[1].rollout_tokens, gainrl[1].zero_variance_tokens) == (4, 460, 130)
    dapo = results["dapo"].totals
    assert (dapo[0].extra_rollouts, dapo[0].groups, dapo[0].zero_variance_groups) == (24, 18, 6)
    assert (dapo[1].extra_rollouts, dapo[1].zero_variance_fraction, dapo[1].zero_variance_token_share) == (16, 4 / 16,
                                                                                                         60 / 400)
    assert dapo[0].rescore_s is None  # no re-scoring: the key is not logged
    old = results["gainrl_centred"].totals[0]
    assert (old.rollout_tokens, old.extra_rollouts, old.zero_variance_fraction) == (None, None, None)
    assert results["gainrl"].zero_variance == {0: [0.25, 0.5, 0.0], 1: [0.25, 0.25, 0.5]}
    assert results["gainrl_centred"].zero_variance == {0: None, 1: None}

    selection = {name: r.selection for name, r in results.items()}
    assert selection["gainrl"].score_files == (angle,) and selection["gainrl"].kinds == ("angle",)
    assert (selection["gainrl"].seconds, selection["gainrl"].rollout_tokens) == (42.0, None)
    assert selection["gainrl"].shared_with == ("gainrl_centred",) and selection["gainrl_centred"].shared_with == (
        "gainrl",)
    assert selection["difficulty"].kinds == ("pass_rate",) and selection["difficulty"].shared_with == ()
    assert (selection["difficulty"].seconds, selection["difficulty"].rollout_tokens) == (30.5, 5000)
    assert (selection["dapo"].score_files, selection["dapo"].seconds, selection["dapo"].rollout_tokens) == ((), 0, 0)


def test_the_significance_tests_against_uniform(arena):
    _, results, _, _ = arena
    assert results["uniform"].versus_baseline is None
    gainrl = results["gainrl"].versus_baseline  # 0.6, 0.8 against 0.5, 0.5: t = 2 with 1 df
    assert (gainrl.diff, gainrl.t, gainrl.df) == (pytest.approx(0.2), pytest.approx(2), pytest.approx(1))
    assert gainrl.p == pytest.approx(1 - 2 / math.pi * math.atan(2))
    difficulty = results["difficulty"].versus_baseline  # 0.5, 0.4: t = -0.05 / sqrt(0.005 / 2) = -1, p = 1/2
    assert (difficulty.t, difficulty.p) == (pytest.approx(-1), pytest.approx(0.5))


def table(report: str, header: str) -> list[str]:
    """The rows of the report's table whose header line starts with `header`."""
    lines = report.splitlines()
    start = next(k for k, line in enumerate(lines) if line.startswith(header)) + 2
    end = next((k for k in range(start, len(lines)) if not lines[k].startswith("| ")), len(lines))
    return lines[start:end]


def test_the_report_tables_by_hand(arena):
    target, results, _, _ = arena
    report = report_markdown(target, results, "uniform", "gainrl", 3, "t")
    headers = ("| curriculum | final accuracy", "| curriculum | score", "| curriculum | 0 |")
    main, cost, by_epoch = (table(report, header) for header in headers)
    assert "| uniform | 50.0 +- 0.0 | (baseline) | (baseline) | 2/2 | 3.00 +- 0.00 (3, 3) | 3 +- 0 (3, 3) | " \
           "35.0 +- 7.1 (30.0, 40.0) | 350 +- 70.7 (300, 400) | 3 |" in main
    # steps 1, 2: mean 1.5, std 0.71; seconds 10, 26: 18 +- 11.3; tokens 100, 300: 200 +- 141.4
    assert "| gainrl | 70.0 +- 14.1 | +20.0 | t 2.00, p 0.295 | 2/2 | 1.50 +- 0.71 (1, 2) | 1.5 +- 0.7 (1, 2) | " \
           "18.0 +- 11.3 (10.0, 26.0) | 200 +- 141.4 (100, 300) | 2 |" in main
    assert "| gainrl_centred | 70.0 +- 14.1 | +20.0 | t 2.00, p 0.295 | 2/2 | 2.00 +- 0.00 (2, 2) | 2 +- 0 (2, 2) | " \
           "20.0 +- 0.0 (20.0, 20.0) | -, - | 2 |" in main
    # seed 1 never gets there: censored at 4 epochs; the mean curve [.1, .3, .45, .45] never does either
    assert "| difficulty | 45.0 +- 7.1 | -5.0 | t -1.00, p 0.500 | 1/2 | 3.00 +- 1.41 (2, n.r.) | 2, n.r. | " \
           "20.0, n.r. | 300, n.r. | n.r. |" in main
    assert "| dapo | 55.0 +- 7.1 | +5.0 | t 1.00, p 0.500 | 2/2 | 2.00 +- 0.00 (2, 2) | 2 +- 0 (2, 2) | " \
           "28.0 +- 11.3 (20.0, 36.0) | 300 +- 0 (300, 300) | 2 |" in main
    # zero-variance groups 6/12, 4/12: 41.7 +- 11.8 %; their tokens 120, 80 (of 300, 400: 40% and 20%)
    assert "| uniform | none | 0.0 | 0 | - | 0 +- 0 | 350 +- 70.7 | 41.7 +- 11.8 | 100 +- 28.3 (30.0%) |" in cost
    assert "| gainrl_centred | angle, shared with gainrl | 42.0 | - | - | - | - | - | - |" in cost
    # 3/12, 4/12 groups: 29.2 +- 5.9 %; tokens 70, 130 of 450, 460: mean share (15.6 + 28.3) / 2 = 21.9%
    assert "| gainrl | angle, shared with gainrl_centred | 42.0 | - | 4.5 +- 0.7 | 0 +- 0 | 455 +- 7.1 | " \
           "29.2 +- 5.9 | 100 +- 42.4 (21.9%) |" in cost
    assert "| difficulty | pass_rate | 30.5 | 5000 | - | 0 +- 0 | 375 +- 106.1 | 58.3 +- 58.9 | " \
           "180 +- 169.7 (56.7%) |" in cost
    assert "| dapo | none | 0.0 | 0 | - | 20 +- 5.7 | 425 +- 35.4 | 29.2 +- 5.9 | 75 +- 21.2 (17.5%) |" in cost
    assert "| gainrl | 10.0 | 40.0 | 55.0 | 70.0 |" in by_epoch  # by epoch: the seed-mean curve
    assert "computed once" in report and "no paired per-problem test" in report


def test_the_last_line_and_the_best_curriculum(arena):
    _, results, _, _ = arena
    # gainrl_centred and gainrl end at the same mean (70%); gainrl needs fewer epochs (1.5 against 2): it is best,
    # though listed after gainrl_centred. Mean curves: uniform reaches 0.5 after 3 epochs, gainrl after 2.
    assert summary_line(results, "uniform", "gainrl", 3) == "speedup_vs_uniform=1.50 seeds=2 best=gainrl"
    assert best_curriculum({k: results[k] for k in ("uniform", "difficulty")}, 3) == "uniform"


def test_curves_json_and_the_plots(arena, tmp_path):
    target, results, _, _ = arena
    data = json.loads(json.dumps(results_json(target, results), allow_nan=False))
    assert data["curves"]["dapo"]["1"] == [0.1, 0.4, 0.5, 0.6]
    assert data["to_target"]["difficulty"]["1"] == {"epochs": None, "steps": None, "seconds": None,
                                                    "rollout_tokens": None}
    assert data["totals"]["dapo"]["0"]["extra_rollouts"] == 24 and data["versus_baseline"]["uniform"] is None
    plot_curves(str(tmp_path / "accuracy.png"), target, results, "t")
    assert plot_zero_variance(str(tmp_path / "waste.png"), results, "t")
    assert (tmp_path / "accuracy.png").stat().st_size > 10_000 and (tmp_path / "waste.png").stat().st_size > 10_000
    old_only = {"gainrl_centred": results["gainrl_centred"]}
    assert not plot_zero_variance(str(tmp_path / "none.png"), old_only, "t") and not (tmp_path / "none.png").exists()


def test_an_old_run_folder_gives_dashes_not_errors(tmp_path):
    """A run from before the new keys: no score_file in run.json, metrics without token or group counts."""
    for name in ("uniform", "gainrl"):
        folder = tmp_path / name / "seed_0"
        folder.mkdir(parents=True)
        final = 0.4 if name == "uniform" else 0.5
        write_jsonl(folder / "validation.jsonl", [{"epoch": 0, "step": 0, "accuracy": 0.2},
                                                  {"epoch": 1, "step": 2, "accuracy": final}])
        write_jsonl(folder / "metrics.jsonl", step_records([5.0, 9.0]))
        (folder / "run.json").write_text(json.dumps({"config": {}}))
    logs = {name: {0: read_run(str(tmp_path / name / "seed_0"))} for name in ("uniform", "gainrl")}
    assert logs["gainrl"][0].score_file is None and accuracy_curve(logs["gainrl"][0].validation) == [0.2, 0.5]
    target, results = analyse_runs(logs, "uniform", {})
    assert results["gainrl"].to_target[0] == ToTarget(1, 2, 9.0, None)
    report = report_markdown(target, results, "uniform", "gainrl", 1, "t")
    assert "| gainrl | 50.0 +- 0.0 | +10.0 | n/a | 1/1 | 1.00 +- 0.00 (1) | 2 | 9.0 | - | 1 |" in report
    assert "| gainrl | none | 0.0 | 0 | - | - | - | - | - |" in report
    assert summary_line(results, "uniform", "gainrl", 1) == "speedup_vs_uniform=1.00 seeds=1 best=gainrl"


def test_read_run_names_a_missing_validation_file(tmp_path):
    with pytest.raises(ValueError, match="validation.jsonl not found"):
        read_run(str(tmp_path))
    assert read_score_metadata(str(tmp_path / "absent.json")) is None


def test_wall_seconds_continue_across_resumes_and_waste_sums_over_an_epochs_steps():
    steps = [{"step": k + 1, "elapsed_s": e} for k, e in enumerate([5, 9, 3, 6, 2])]  # restarted twice
    assert wall_seconds(steps) == {1: 5, 2: 9, 3: 12, 4: 15, 5: 17}
    steps = [{"step": k + 1, "epoch": k // 2, "num_groups": 4, "num_zero_variance_groups": z}
             for k, z in enumerate([1, 3, 0, 2])]
    assert zero_variance_by_epoch(steps) == [0.5, 0.25]
    assert zero_variance_by_epoch([{"step": 1, "epoch": 0, "num_groups": 4}]) is None


# ---- the runner: placeholders and child errors -------------------------------------------------------------

def load_launcher():
    spec = importlib.util.spec_from_file_location("experiment_launcher", os.path.join(REPO, "launchers",
                                                                                      "experiment.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_pass_rate_placeholder_is_filled_with_the_experiments_file(tmp_path):
    assert uses_pass_rates(default_curricula())
    assert not uses_pass_rates({k: v for k, v in default_curricula().items() if k != "difficulty"})
    assert fill_placeholders(["a=1", "train.score_file='{pass_rate_file}'"], "/x/p.json") == [
        "a=1", "train.score_file='/x/p.json'"]
    launcher = load_launcher()
    cfg = ExperimentConfig(recipe=os.path.join(REPO, "launchers", "recipes", "demo_cpu.yaml"),
                           overrides=["train.epochs=2"], output_dir=str(tmp_path / "out"), pass_rate_samples=3)
    args = launcher.train_args(cfg, "difficulty", 1)
    assert f"train.score_file='{tmp_path}/out/pass_rate.json'" in args
    assert load_config(args, TrainRunConfig).train.score_file == f"{tmp_path}/out/pass_rate.json"
    assert launcher.train_args(cfg, "gainrl", 1) == [
        "--config", cfg.recipe, "train.epochs=2", "sampler.schedule=gaussian", "sampler.order=score", "seed=1",
        f"train.output_dir={tmp_path}/out/gainrl/seed_1", "validation.every_epochs=1"]
    assert launcher.pass_rate_args(cfg) == ["--config", cfg.recipe, "train.epochs=2", "pass_rate.samples=3",
                                            f"pass_rate.output={tmp_path}/out/pass_rate.json"]
    # prepare_pass_rates always runs the job, which reuses a finished file or refuses a foreign one: tested
    # in tests/unit/test_pass_rate.py, and end to end (a second experiment call) in tests/dist/test_experiment_dist.py


def test_unknown_placeholders_and_samples_are_config_errors():
    bad = ExperimentConfig(recipe="r.yaml", curricula={"uniform": ["sampler.schedule=uniform"],
                                                       "gainrl": ["train.score_file={scores}"]})
    with pytest.raises(ValueError, match=r"'curricula.gainrl'.*\{scores\}"):
        validate_experiment(bad)
    with pytest.raises(ValueError, match="'pass_rate_samples'"):
        validate_experiment(ExperimentConfig(recipe="r.yaml", pass_rate_samples=0))
    validate_experiment(ExperimentConfig(recipe="r.yaml"))  # the defaults, with their placeholder, are fine


LAUNCHER = "[2026-12-02 23:40:38,164] [INFO] [launch.py:253:sigkill_handler] Killing subprocess 25046"
LAUNCHER_EXIT = ("[2026-12-02 23:40:38,165] [ERROR] [launch.py:259:sigkill_handler] ['/v/bin/python', '-u', "
                 "'launchers/train.py'] exits with return code = 1")


def test_child_error_is_the_users_error_line_without_the_launchers_lines():
    log = "\n".join(["[2026-12-02 23:40:28,159] [INFO] [launch.py:245:main] process 25046 spawned", "loading",
                     "error: config key 'sampler.schedule': must be gaussian, uniform or learnability, got 'x'",
                     LAUNCHER, LAUNCHER_EXIT])
    assert child_error(log) == log.splitlines()[2]  # "error: config key ..."


def test_child_error_is_the_last_traceback_to_its_end():
    first = ["Traceback (most recent call last):", '  File "a.py", line 1', "KeyError: 'x'"]
    last = ["Traceback (most recent call last):", '  File "train.py", line 9, in main', "    step()",
            "RuntimeError: 3 steps in a row had a NaN loss"]
    log = "\n".join(["step 1", *first, "step 2", "[rank1]: something", *last, LAUNCHER, LAUNCHER_EXIT])
    assert child_error(log) == "\n".join(last)
    deep = ["Traceback (most recent call last):"] + [f'  File "f{k}.py", line {k}' for k in range(60)] + ["OSError: x"]
    assert child_error("\n".join(deep + [LAUNCHER_EXIT])).splitlines() == deep[-40:]
    # no traceback: from the last line naming an error; nothing at all: the log's last lines
    assert child_error("a\nb\ntorch.OutOfMemoryError: no room\nc\n" + LAUNCHER_EXIT) == \
        "torch.OutOfMemoryError: no room\nc"
    missing = "/v/bin/python: can't open file '/r/launchers/pass_rate.py': [Errno 2] No such file or directory"
    assert child_error("\n".join(["[2026-12-02 23:51:11,519] [INFO] [launch.py:245:main] process 1 spawned", missing,
                                  LAUNCHER, LAUNCHER_EXIT])) == missing
    plain = [f"line {k}" for k in range(50)]
    assert child_error("\n".join(plain + [LAUNCHER_EXIT])).splitlines() == plain[-40:]
    assert child_error(LAUNCHER_EXIT) == LAUNCHER_EXIT  # nothing but the launcher's lines: those


def test_a_config_listing_some_curricula_runs_those_alone(tmp_path):
    """A YAML mapping merges into a default mapping key by key: the defaults must not be in the schema's mapping."""
    config = tmp_path / "experiment.yaml"
    config.write_text("recipe: r.yaml\n"
                      "curricula: {uniform: [sampler.schedule=uniform], gainrl: [sampler.order=score]}\n")
    cfg = load_config(["--config", str(config)], ExperimentConfig, validator=validate_experiment)
    assert cfg.curricula == {"uniform": ["sampler.schedule=uniform"], "gainrl": ["sampler.order=score"]}
    assert load_config(["recipe=r.yaml"], ExperimentConfig, validator=validate_experiment).curricula == \
        default_curricula()


def test_child_error_reads_the_rank_tagged_lines_of_a_failed_distributed_child():
    cause = "error (rank 1 of 2): checkpoint /r/step_00000002: /r/step_00000002/rng/rank_00001.pt is missing; ..."
    stopped = "stopped (rank 0 of 2): another rank failed, and its own error above is the cause (here: RuntimeError)"
    log = "\n".join(["[2026-12-02 23:40:28,159] [INFO] [launch.py:245:main] process 1 spawned", "loading",
                     "Traceback (most recent call last):", '  File "x.py", line 1', "OSError: inner", cause, stopped,
                     LAUNCHER, LAUNCHER_EXIT])
    assert child_error(log) == cause + "\n" + stopped
