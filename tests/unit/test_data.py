"""Loading rows from json, jsonl and parquet; bad rows, skipping, duplicates, field mapping."""
import json

import pytest

from gainrl.config import DataConfig
from gainrl.data import dataset_fingerprint, load_rows

from tests.helpers import BUNDLED_ROWS


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


GOOD = [{"id": f"r{i}", "problem": f"What is {i}+{i}?", "answer": str(2 * i)} for i in range(5)]


def test_jsonl_json_and_parquet_give_the_same_rows(tmp_path):
    import pandas as pd
    jsonl = write_jsonl(tmp_path / "a.jsonl", GOOD)
    (tmp_path / "a.json").write_text(json.dumps(GOOD))
    pd.DataFrame(GOOD).to_parquet(tmp_path / "a.parquet")
    loaded = [load_rows(DataConfig(path=p)).rows for p in (jsonl, str(tmp_path / "a.json"), str(tmp_path / "a.parquet"))]
    assert loaded[0] == loaded[1] == loaded[2]
    assert [r.id for r in loaded[0]] == [f"r{i}" for i in range(5)]
    assert loaded[0][3].problem == "What is 3+3?" and loaded[0][3].answer == "6" and loaded[0][3].index == 3


def test_field_mapping_and_positional_ids(tmp_path):
    records = [{"question": "Q1", "solution": 7}, {"question": "Q2", "solution": 8}]
    path = write_jsonl(tmp_path / "m.jsonl", records)
    rows = load_rows(DataConfig(path=path, id_field=None, problem_field="question", answer_field="solution")).rows
    assert [(r.id, r.problem, r.answer) for r in rows] == [("0", "Q1", "7"), ("1", "Q2", "8")]


@pytest.mark.parametrize("bad, reason", [
    ({"id": "x", "problem": "", "answer": "1"}, "'problem' is empty"),
    ({"id": "x", "problem": "   ", "answer": "1"}, "'problem' is empty"),
    ({"id": "x", "answer": "1"}, "'problem' is missing"),
    ({"id": "x", "problem": "p", "answer": None}, "'answer' is missing"),
])
def test_bad_row_names_file_and_row(tmp_path, bad, reason):
    path = write_jsonl(tmp_path / "bad.jsonl", GOOD[:2] + [bad] + GOOD[2:])
    with pytest.raises(ValueError, match=rf"bad\.jsonl, row 2: field {reason}"):
        load_rows(DataConfig(path=path))
    loaded = load_rows(DataConfig(path=path, skip_bad_rows=True))
    assert loaded.num_skipped == 1 and len(loaded.rows) == 5
    assert [r.index for r in loaded.rows] == [0, 1, 3, 4, 5]  # source positions kept


def test_wrong_type_is_reported_with_the_line(tmp_path):
    records = GOOD[:3] + [{"id": "z", "problem": ["a", "list"], "answer": "1"}]
    path = write_jsonl(tmp_path / "typed.jsonl", records)
    with pytest.raises(ValueError, match=r"typed\.jsonl, row 3: field 'problem' has type list"):
        load_rows(DataConfig(path=path))


def test_number_where_text_is_expected_names_the_row(tmp_path):
    records = GOOD[:3] + [{"id": "z", "problem": 12, "answer": "1"}]
    path = write_jsonl(tmp_path / "typed.jsonl", records)
    with pytest.raises(ValueError, match=r"typed\.jsonl, row 3: field 'problem' has type int"):
        load_rows(DataConfig(path=path))


def test_line_that_is_not_an_object(tmp_path):
    (tmp_path / "list.jsonl").write_text(json.dumps(GOOD[0]) + "\n[1, 2]\n")
    with pytest.raises(ValueError, match=r"list\.jsonl.*line 2 is not a JSON object"):
        load_rows(DataConfig(path=str(tmp_path / "list.jsonl")))


def test_wrong_type_in_parquet_names_the_row(tmp_path):
    import pandas as pd
    pd.DataFrame({"id": ["a", "b"], "problem": [1.5, 2.5], "answer": ["1", "2"]}).to_parquet(tmp_path / "t.parquet")
    with pytest.raises(ValueError, match=r"t\.parquet, row 0: field 'problem' has type float"):
        load_rows(DataConfig(path=str(tmp_path / "t.parquet")))


def test_invalid_json_line(tmp_path):
    (tmp_path / "broken.jsonl").write_text(json.dumps(GOOD[0]) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"broken\.jsonl.*line 2 is not valid JSON"):
        load_rows(DataConfig(path=str(tmp_path / "broken.jsonl")))


def test_duplicate_ids_are_an_error_even_when_skipping(tmp_path):
    path = write_jsonl(tmp_path / "dup.jsonl", GOOD + [dict(GOOD[1])])
    for skip in (False, True):
        with pytest.raises(ValueError, match=r"duplicate id 'r1' in rows 1 and 5"):
            load_rows(DataConfig(path=path, skip_bad_rows=skip))


def test_missing_file_missing_field_and_empty_dataset(tmp_path):
    with pytest.raises(ValueError, match="file not found"):
        load_rows(DataConfig(path=str(tmp_path / "absent.jsonl")))
    path = write_jsonl(tmp_path / "f.jsonl", GOOD)
    with pytest.raises(ValueError, match=r"no field\(s\) \['question'\]"):
        load_rows(DataConfig(path=path, problem_field="question"))
    path = write_jsonl(tmp_path / "all_bad.jsonl", [{"id": "a", "problem": "", "answer": "1"}])
    with pytest.raises(ValueError, match="no valid rows"):
        load_rows(DataConfig(path=path, skip_bad_rows=True))


def test_limit_and_fingerprint(tmp_path):
    rows = load_rows(DataConfig(path=BUNDLED_ROWS, limit=10)).rows
    assert len(rows) == 10
    fp = dataset_fingerprint(rows)
    assert fp == dataset_fingerprint(list(rows))
    assert fp != dataset_fingerprint(rows[::-1])  # order matters: scores index rows
    edited = [rows[0].__class__(id=rows[0].id, problem=rows[0].problem + " ", answer=rows[0].answer, index=0)] + rows[1:]
    assert fp != dataset_fingerprint(edited)


def test_hub_name_that_cannot_be_loaded_is_a_clear_error():
    # offline (conftest sets HF_DATASETS_OFFLINE=1): fails at once, naming the key and the name
    with pytest.raises(ValueError, match=r"data.path: 'no-such-org/no-such-dataset' is neither a local file"):
        load_rows(DataConfig(path="no-such-org/no-such-dataset"))
    with pytest.raises(ValueError, match="is not a .json, .jsonl or .parquet file"):
        load_rows(DataConfig(path=BUNDLED_ROWS.rsplit("/", 1)[0]))


@pytest.mark.parametrize("name, content, message", [
    ("empty.jsonl", b"", r"data.path: .*empty.jsonl is empty \(no rows\)"),
    ("blank.jsonl", b"\n  \n", r"data.path: .*blank.jsonl is empty \(no rows\)"),
    ("empty.json", b"", r"data.path: .*empty.json is empty \(no rows\)"),
    ("latin1.jsonl", b'{"id": "a", "problem": "1+1", "answer": "2"}\n{"id": "b", "problem": "caf\xe9", "answer": "1"}\n',
     r"latin1.jsonl, line 2: not UTF-8 text \(byte 0xe9 at column 28\): re-encode the file as UTF-8"),
])
def test_an_empty_or_non_utf8_file_is_named_with_its_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_rows(DataConfig(path=str(path)))
