"""A failure on one of 2 ranks reaches the user as that rank's own message, quickly: the other rank does not
mask it (no barrier on the way out pairs with a collective and hangs, no "Invalid process group specified")."""
import time

import pytest

from tests.launch import run, torchrun


def launch(mode: str):
    started = time.time()
    result = run(torchrun("tests/dist/failing_ranks.py", 2, mode), 120)
    return result, time.time() - started


def test_a_user_error_on_one_rank_is_its_own_message():
    result, took = launch("alone")
    assert result.returncode != 0 and took < 60
    assert "error (rank 1 of 2): rank one's own cause" in result.stderr
    assert "stopped (rank 0 of 2): another rank failed, and its own error above is the cause" in result.stderr
    assert "Invalid process group" not in result.stderr and "reached the end" not in result.stdout
    assert "Traceback" not in result.stderr.split("error (rank 1 of 2)")[0].split("stopped (rank 0")[0]


def test_a_crash_on_one_rank_keeps_its_traceback_and_names_the_rank():
    result, took = launch("crash")
    assert result.returncode != 0 and took < 60
    assert "RuntimeError: rank one crashed" in result.stderr and "error (rank 1 of 2)" in result.stderr
    assert "stopped (rank 0 of 2): another rank failed" in result.stderr


@pytest.mark.parametrize("mode, message", [
    ("check", "error: config key 'train.output_dir': cannot write in /nowhere (on rank 1)"),
    ("decide", "error: rank zero's verdict"),
])
def test_a_collective_check_fails_on_every_rank_and_prints_once(mode, message):
    result, took = launch(mode)
    assert result.returncode != 0 and took < 60  # torchrun exits 1 for any failed worker, whatever its code
    assert result.stderr.count(message) == 1, result.stderr[-2000:]
    assert "stopped" not in result.stderr and "reached the end" not in result.stdout


def test_no_failure_reaches_the_end_on_both_ranks():
    result, _ = launch("ok")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "rank 0 reached the end" in result.stdout and "rank 1 reached the end" in result.stdout


def test_a_reported_error_is_its_message_without_a_traceback():
    import sys
    script = ("from gainrl import dist\n"
              "def main(argv):\n"
              "    raise dist.ReportedError('train run seed 1 failed (exit 2); its error, from x.log:\\nerror: boom')\n"
              "dist.run_entry_point(main, [])\n")
    result = run([sys.executable, "-c", script], 60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: train run seed 1 failed (exit 2); its error, from x.log:\nerror: boom")
