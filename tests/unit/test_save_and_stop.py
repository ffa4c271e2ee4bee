"""checkpoint.SaveAndStop: when a run checkpoints and stops (steps, minutes, the stop file, the job's end),
on a fake clock, in one process (its broadcasts are then the identity)."""
import os

import pytest

from gainrl.checkpoint import JOB_END_ENV, SaveAndStop, deadline_margin_s
from gainrl.config import TrainRunConfig, load_config


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def make(tmp_path, *overrides, environ=None):
    cfg = load_config(["model.path=m", "data.path=d", f"train.output_dir={tmp_path}", *overrides], TrainRunConfig)
    clock = Clock()
    return SaveAndStop(cfg, clock=clock, environ=environ or {}), clock


def run_step(when, clock, step, seconds):
    when.start_step()
    clock.now += seconds
    return when.end_step(step)


def test_checkpoints_come_every_n_steps_and_every_m_minutes_whichever_first(tmp_path):
    when, clock = make(tmp_path, "train.checkpoint_every=3", "train.checkpoint_every_minutes=2")
    due = []
    for step in range(1, 8):  # 50 s steps: 120 s pass after step 3 (from the start), then after step 6's save
        save, reason = run_step(when, clock, step, 50.0)
        assert reason is None
        if save:
            when.saved(clock.now)
        due.append(save)
    assert due == [False, False, True, False, False, True, False]

    when, clock = make(tmp_path, "train.checkpoint_every=0", "train.checkpoint_every_minutes=2")
    due = []
    for step in range(1, 8):
        save, _ = run_step(when, clock, step, 50.0)
        if save:
            when.saved(clock.now)
        due.append(save)
    assert due == [False, False, True, False, False, True, False]  # 150 s, then 150 s after that save


def test_the_stop_file_stops_and_is_removed_when_honoured(tmp_path):
    when, clock = make(tmp_path, "train.checkpoint_every=0")
    assert when.stop_reason() is None
    (tmp_path / "STOP").touch()
    assert when.stop_reason() == f"stop file {tmp_path / 'STOP'}"
    assert run_step(when, clock, 1, 1.0) == (True, f"stop file {tmp_path / 'STOP'}")
    when.honoured()
    assert not (tmp_path / "STOP").exists() and when.stop_reason() is None


def test_a_stop_file_there_before_the_run_is_reported_and_not_honoured_until_touched_again(tmp_path, capsys):
    stale = tmp_path / "STOP"
    stale.write_text("")
    old = stale.stat().st_mtime_ns - 10**9
    os.utime(stale, ns=(old, old))  # an earlier run's
    when, clock = make(tmp_path, "train.checkpoint_every=0")
    assert f"the stop file {stale} was there before this run started" in capsys.readouterr().err
    assert when.stop_reason() is None and run_step(when, clock, 1, 1.0) == (False, None)
    assert stale.exists()  # left as it was
    stale.touch()  # a request now
    assert when.stop_reason() == f"stop file {stale}"


def test_the_run_stops_when_the_job_end_is_nearer_than_a_step_and_a_checkpoint(tmp_path):
    assert deadline_margin_s(100.0, 20.0) == 1.5 * 120 + 60 and deadline_margin_s(100.0, None) == 1.5 * 200 + 60
    when, clock = make(tmp_path, "train.checkpoint_every=0", environ={JOB_END_ENV: str(1000.0 + 1000)})
    assert when.stop_reason() is None  # no step measured yet: no margin to judge by
    assert run_step(when, clock, 1, 100.0) == (False, None)  # 900 s left > 360 s
    when.saved(clock.now - 20.0)  # a 20 s checkpoint: margin 240 s
    assert run_step(when, clock, 2, 100.0) == (False, None)  # 800 s left
    clock.now += 500.0  # 300 s left, more than 1.5 x (100 + 20) + 60 = 240 s
    assert when.stop_reason() is None
    clock.now += 70.0  # 230 s left
    reason = when.stop_reason()
    assert reason.startswith("the job ends in 230 s, less than a step and a checkpoint need (240 s")
    assert "--signal=B:USR1@240" in when.signal_margin_advice()


def test_a_malformed_job_end_is_an_error_naming_the_variable(tmp_path):
    with pytest.raises(ValueError, match=f"environment variable {JOB_END_ENV}='soon': expected Unix seconds"):
        make(tmp_path, environ={JOB_END_ENV: "soon"})
