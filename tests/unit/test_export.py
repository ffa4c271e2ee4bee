"""Which folder the export reads: the newest complete step_* of a run, never an unfinished .partial save."""
import shutil

import pytest

from gainrl.export import find_checkpoint


@pytest.fixture
def run_dir(tmp_path):
    checkpoints = tmp_path / "run" / "checkpoints"
    for name in ("step_00000002", "step_00000010", "step_00000011.partial", "step_00000012.partial"):
        (checkpoints / name).mkdir(parents=True)
        (checkpoints / name / "train_state.json").write_text("{}")  # the last file a save writes
    (checkpoints / "zero_to_fp32.py").write_text("")  # DeepSpeed copies its scripts beside the tags
    (checkpoints / "step_00000099.json").write_text("")
    return tmp_path / "run"


def test_the_newest_complete_step_of_a_run_or_its_checkpoints_folder(run_dir):
    newest = str(run_dir / "checkpoints" / "step_00000010")
    assert find_checkpoint(str(run_dir)) == newest
    assert find_checkpoint(str(run_dir / "checkpoints") + "/") == newest
    (run_dir / "checkpoints" / "step_00000100").mkdir()  # no train state: a folder from elsewhere, not complete
    assert find_checkpoint(str(run_dir)) == newest


def test_a_named_step_folder_is_taken_as_it_is(run_dir):
    for name in ("step_00000002", "step_00000011.partial", "step_00000077"):  # export_checkpoint checks it
        assert find_checkpoint(str(run_dir / "checkpoints" / name)) == str(run_dir / "checkpoints" / name)


def test_errors_name_the_folder(run_dir, tmp_path):
    with pytest.raises(ValueError, match="checkpoint folder not found: .*nowhere"):
        find_checkpoint(str(tmp_path / "nowhere"))
    for name in ("step_00000002", "step_00000010"):
        shutil.rmtree(run_dir / "checkpoints" / name)
    with pytest.raises(ValueError, match=r"no complete step_\* checkpoint in .*run/checkpoints .*'.partial' folders are"):
        find_checkpoint(str(run_dir))
