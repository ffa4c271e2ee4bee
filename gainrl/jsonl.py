"""Reading JSON Lines files (metrics, draws, validation, scorer shards, evaluation samples): the one reader."""
from __future__ import annotations

import json


def read_jsonl(path: str) -> list:
    """The file's records, in order. A last line that is not valid JSON is a torn write (a run writing
    it now, or killed while writing it) and is left out; any other bad line is an error naming the
    file and the line. Blank lines are skipped."""
    with open(path, encoding="utf-8") as f:
        numbered = [(number, line) for number, line in enumerate(f, start=1) if line.strip()]
    records = []
    for k, (number, line) in enumerate(numbered):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if k < len(numbered) - 1:
                raise ValueError(f"{path}: line {number} is not valid JSON ({e.msg}); fix or remove that "
                                 "line (only a torn last line is dropped by itself)") from None
    return records
