"""The efficiency experiment's analysis against hand-worked curves."""
import pytest

from gainrl.experiment import analyse, epochs_to_reach, report_markdown, speedup


def test_epochs_to_reach_is_the_first_epoch_at_or_above_the_target():
    assert epochs_to_reach([0.1, 0.3, 0.5, 0.4], 0.3) == 1
    assert epochs_to_reach([0.1, 0.3, 0.5, 0.4], 0.45) == 2
    assert epochs_to_reach([0.5, 0.1], 0.2) == 0
    assert epochs_to_reach([0.1, 0.2], 0.9) is None


def test_target_epochs_and_speedup_by_hand():
    curves = {
        "uniform": {0: [0.1, 0.2, 0.3, 0.4], 1: [0.1, 0.1, 0.3, 0.6]},  # target = mean final = 0.5
        "gainrl": {0: [0.1, 0.5, 0.6, 0.6], 1: [0.1, 0.3, 0.5, 0.7]},  # reaches 0.5 after 1 and 2 epochs
        "length": {0: [0.1, 0.1, 0.1, 0.1], 1: [0.1, 0.2, 0.2, 0.2]},  # never: counted as 4
    }
    target, results = analyse(curves, "uniform")
    assert target == pytest.approx(0.5)
    assert results["uniform"].epochs_to_target == {0: None, 1: 3}  # a seed below the mean never gets there
    assert results["gainrl"].epochs_to_target == {0: 1, 1: 2}
    assert results["length"].mean_epochs(3) == 4.0
    # uniform: (4 + 3) / 2 = 3.5 epochs; gainrl: (1 + 2) / 2 = 1.5 epochs
    assert speedup(results, "uniform", "gainrl", 3) == pytest.approx(3.5 / 1.5)
    report = report_markdown(target, results, "uniform", "gainrl", 3, "t")
    assert "| gainrl | 65.0 +- 5.0 | 1.50 +- 0.50 | 2/2 | 1, 2 |" in report
    assert "| length | 15.0 +- 5.0 | 4.00 +- 0.00 | 0/2 | -, - |" in report


def test_runs_with_different_budgets_are_refused():
    with pytest.raises(ValueError, match="different numbers of validation points"):
        analyse({"uniform": {0: [0.1, 0.2]}, "gainrl": {0: [0.1, 0.2, 0.3]}}, "uniform")
