"""Loading training and evaluation rows {id, problem, answer} from files or hub names.

Files (.json, .jsonl, .parquet) and hub names all go through `datasets`. Every row is
validated: a missing, empty or wrongly typed field is an error naming the file and row
(or the row is skipped and counted when asked), and duplicate ids are always an error.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Optional

import datasets

from .config import DataConfig

FILE_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}


@dataclass(frozen=True)
class Row:
    id: str  # unique row id
    problem: str  # question text
    answer: str  # reference answer
    index: int  # position in the source file (orderings published by others index by it)
    fields: dict = field(default_factory=dict, compare=False)  # data.keep_fields, as stored


@dataclass
class LoadedRows:
    rows: list[Row]
    source: str  # the file path or hub name
    num_skipped: int  # invalid rows skipped (skip_bad_rows)
    skipped_reasons: list[str]  # the first few reasons, for the log


def _load_table(cfg: DataConfig) -> datasets.Dataset:
    ext = os.path.splitext(cfg.path)[1].lower()
    if ext in FILE_FORMATS:
        if not os.path.isfile(cfg.path):
            raise ValueError(f"data.path: file not found: {cfg.path}")
        if ext != ".parquet":
            _check_text(cfg.path)
        try:
            return datasets.load_dataset(FILE_FORMATS[ext], data_files=cfg.path, split="train")
        except Exception as e:  # arrow's own message names no row: find the offending line
            raise ValueError(f"{cfg.path}: cannot be read as {ext}: {_first_bad_json_line(cfg.path) or e}") from e
    if os.path.exists(cfg.path):
        raise ValueError(f"data.path: {cfg.path} exists but is not a .json, .jsonl or .parquet file")
    try:
        return datasets.load_dataset(cfg.path, split=cfg.split)
    except Exception as e:
        raise ValueError(f"data.path: {cfg.path!r} is neither a local file nor a loadable dataset "
                         f"(split {cfg.split!r}): {e}") from e


def _check_text(path: str) -> None:
    """A JSON file must be UTF-8 text with something in it: else an error naming the line of the first bad byte,
    or saying it is empty (arrow's reader would fail on either without naming the file or the line)."""
    empty = True
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}, line {number}: not UTF-8 text (byte 0x{line[e.start]:02x} at column "
                                 f"{e.start + 1}): re-encode the file as UTF-8") from None
            empty = empty and not text.strip()
    if empty:
        raise ValueError(f"data.path: {path} is empty (no rows): a truncated copy, or the wrong file?")


def _first_bad_json_line(path: str) -> Optional[str]:
    """For JSON Lines files, the first line that is not a JSON object."""
    if not path.endswith(".jsonl"):
        return None
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                return f"line {line_no} is not valid JSON ({e.msg})"
            if not isinstance(obj, dict):
                return f"line {line_no} is not a JSON object"
    return None


def _field_text(record: dict, field: str, allow_number: bool) -> str:
    if field not in record or record[field] is None:
        raise ValueError(f"field {field!r} is missing")
    value = record[field]
    if isinstance(value, bool) or not isinstance(value, (str, int, float) if allow_number else str):
        raise ValueError(f"field {field!r} has type {type(value).__name__}, expected a string")
    text = str(value)
    if not text.strip():
        raise ValueError(f"field {field!r} is empty")
    return text


def load_rows(cfg: DataConfig) -> LoadedRows:
    table = _load_table(cfg)
    fields = [f for f in (cfg.id_field, cfg.problem_field, cfg.answer_field, *cfg.keep_fields) if f is not None]
    absent = [f for f in fields if f not in table.column_names]
    if absent:
        raise ValueError(f"{cfg.path}: no field(s) {absent} (fields are {table.column_names}); "
                         f"set data.id_field / data.problem_field / data.answer_field / data.keep_fields")
    rows, seen, skipped = [], {}, []
    for index, record in enumerate(table.select_columns(fields)):
        try:
            row_id = str(index) if cfg.id_field is None else _field_text(record, cfg.id_field, allow_number=True)
            row = Row(id=row_id, index=index,
                      problem=_field_text(record, cfg.problem_field, allow_number=False),
                      answer=_field_text(record, cfg.answer_field, allow_number=True),
                      fields={name: record[name] for name in cfg.keep_fields})
        except ValueError as e:
            if not cfg.skip_bad_rows:
                raise ValueError(f"{cfg.path}, row {index}: {e} (set data.skip_bad_rows=true to skip such rows)") from None
            skipped.append(f"row {index}: {e}")
            continue
        if row.id in seen:
            raise ValueError(f"{cfg.path}: duplicate id {row.id!r} in rows {seen[row.id]} and {index}")
        seen[row.id] = index
        rows.append(row)
        if cfg.limit is not None and len(rows) == cfg.limit:
            break
    if not rows:
        raise ValueError(f"{cfg.path}: no valid rows ({len(skipped)} skipped)")
    return LoadedRows(rows=rows, source=cfg.path, num_skipped=len(skipped), skipped_reasons=skipped[:5])


def dataset_fingerprint(rows: list[Row]) -> str:
    """Hash of the ordered (id, problem, answer) triples: what scores and indices refer to."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps([row.id, row.problem, row.answer], ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()
