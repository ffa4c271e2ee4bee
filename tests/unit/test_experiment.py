"""The efficiency experiment's analysis against hand-worked curves."""
import math

import pytest

from gainrl.experiment import analyse, epochs_to_reach, report_markdown, speedup


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
    # final 0.6, 0.7: mean 65.0, sample std 7.1; epochs 1, 2: mean 1.50, sample std 0.71
    assert "| gainrl | 65.0 +- 7.1 | 1.50 +- 0.71 | 2/2 | 1, 2 | 2 |" in report
    assert "| length | 15.0 +- 7.1 | 4.00 +- 0.00 | 0/2 | -, - | - |" in report


def test_a_target_met_before_training_gives_no_speedup():
    target, results = analyse({"uniform": {0: [0.5, 0.4, 0.5]}, "gainrl": {0: [0.5, 0.5, 0.6]}}, "uniform")
    ratio, caveat = speedup(results, "uniform", "gainrl", 2)
    assert math.isnan(ratio) and "undefined" in caveat


def test_runs_with_different_budgets_are_refused():
    with pytest.raises(ValueError, match="different numbers of validation points"):
        analyse({"uniform": {0: [0.1, 0.2]}, "gainrl": {0: [0.1, 0.2, 0.3]}}, "uniform")
