"""metrics.JsonLinesFile on resume: keeps the records asked for, survives a torn last line."""
import json

import pytest

from gainrl.jsonl import read_jsonl
from gainrl.metrics import JsonLinesFile


def test_a_resumed_file_keeps_the_records_up_to_the_checkpoint_and_drops_a_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": s / 3}) + "\n" for s in (1, 2, 3)) + '{"step": 4, "lo')
    resumed = JsonLinesFile(str(path), keep=lambda r: r["step"] <= 2)
    resumed.write({"step": 3, "loss": 0.5})
    resumed.close()
    assert read_jsonl(str(path)) == [{"step": 1, "loss": 1 / 3}, {"step": 2, "loss": 2 / 3}, {"step": 3, "loss": 0.5}]
    fresh = JsonLinesFile(str(path))  # no keep: a new run's file
    fresh.close()
    assert path.read_text() == ""


def test_a_bad_line_before_the_last_is_an_error_naming_it(tmp_path):
    path = tmp_path / "draws.jsonl"
    path.write_text('{"epoch": 0}\nnot json\n{"epoch": 1}\n')
    with pytest.raises(ValueError, match=r"draws.jsonl: line 2 is not valid JSON"):
        JsonLinesFile(str(path), keep=lambda r: True)
    assert path.read_text() == '{"epoch": 0}\nnot json\n{"epoch": 1}\n'  # nothing lost
