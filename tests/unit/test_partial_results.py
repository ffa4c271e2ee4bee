"""Resume shards: finished rows survive, a torn last line is dropped and cut off, keys are checked."""
import json

import pytest

from gainrl.scorer import RECORD_FIELDS, PartialResults


def record(i):
    return {"id": f"r{i}", "c_intra": 0.5, "c_inter": 0.1, "prompt_tokens": 20, "num_p": 5, "num_q": 10, "flags": 0}


def test_torn_line_is_ignored_and_repaired(tmp_path):
    partial = PartialResults(str(tmp_path / "x.partial"), key="k1")
    assert partial.load(resume=True) == {}
    with partial.open_shard(0) as f:
        f.write(json.dumps(record(0)) + "\n" + json.dumps(record(1)) + "\n" + json.dumps(record(2))[:17])
    with partial.open_shard(1) as f:
        f.write(json.dumps(record(3)) + "\n")
    done = PartialResults(str(tmp_path / "x.partial"), key="k1").load(resume=True)
    assert sorted(done) == ["r0", "r1", "r3"] and set(done["r0"]) == set(RECORD_FIELDS)
    with partial.open_shard(0) as f:  # appending after the repair gives whole lines
        f.write(json.dumps(record(2)) + "\n")
    assert sorted(PartialResults(str(tmp_path / "x.partial"), key="k1").load(resume=True)) == ["r0", "r1", "r2", "r3"]


def test_no_resume_starts_over_and_foreign_key_is_refused(tmp_path):
    folder = str(tmp_path / "x.partial")
    partial = PartialResults(folder, key="k1")
    partial.load(resume=True)
    with partial.open_shard(0) as f:
        f.write(json.dumps(record(0)) + "\n")
    with pytest.raises(ValueError, match="another \\(model, layer, template, dataset\\)"):
        PartialResults(folder, key="k2").load(resume=True)
    assert PartialResults(folder, key="k2").load(resume=False) == {}


def test_a_folder_left_by_a_failed_start_is_no_obstacle(tmp_path):
    """A start that failed before its first batch: the folder (if any) holds no row, whatever its key says."""
    folder = tmp_path / "x.partial"
    partial = PartialResults(str(folder), key="k1")
    assert partial.load(resume=True) == {} and not folder.exists()  # loading writes nothing
    with partial.open_shard(0):
        pass  # opened, nothing scored yet: the run failed here
    partial.remove_if_empty()
    assert not folder.exists()
    folder.mkdir()
    (folder / "key.json").write_text(json.dumps({"key": "another model's"}))
    (folder / "rank-00000.jsonl").write_text("")
    assert PartialResults(str(folder), key="k2").load(resume=True) == {} and not folder.exists()
    with partial.open_shard(0) as f:  # a scored row is kept by remove_if_empty
        f.write(json.dumps(record(0)) + "\n")
    partial.remove_if_empty()
    assert sorted(PartialResults(str(folder), key="k1").load(resume=True)) == ["r0"]
