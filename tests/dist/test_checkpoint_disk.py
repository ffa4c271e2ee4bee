"""A full disk while a checkpoint is written: a clear error, and the previous checkpoint intact.

The disk is real: a tmpfs mounted in a private user + mount namespace (no privileges needed where
unprivileged user namespaces are allowed; skipped elsewhere), shrunk after the first checkpoint to
leave room for half of the second.
"""
import json
import shutil
import subprocess
import sys

import pytest

from tests.launch import expect_ok


def namespaces_work() -> bool:
    unshare = shutil.which("unshare")
    return unshare is not None and subprocess.run(
        [unshare, "-Urm", "mount", "-t", "tmpfs", "none", "/mnt"], capture_output=True).returncode == 0


@pytest.mark.skipif(not namespaces_work(), reason="needs unshare with user and mount namespaces")
def test_a_full_disk_leaves_the_previous_checkpoint_intact(tiny_model_dir, tmp_path):
    mount, result_path = tmp_path / "disk", tmp_path / "result.json"
    mount.mkdir()
    expect_ok(["unshare", "-Urm", sys.executable, "tests/dist/disk_full_rank.py", tiny_model_dir, str(mount),
               str(result_path)], 300)
    result = json.loads(result_path.read_text())
    first = result["first"]
    assert result["error"] is not None, "the second checkpoint fitted: the disk was not full"
    assert " MiB free on its file system" in result["error"]  # torch.save's own message is cryptic
    assert f"checkpoint {first[:-1]}2 could not be written" in result["error"]
    assert f"the last complete checkpoint, {first}, is intact" in result["error"]
    assert result["complete"] == [first] and result["loaded_step"] == 1
    assert result["folders"] == ["step_00000001", "step_00000002.partial"]  # removed by the next save or resume
