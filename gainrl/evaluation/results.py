"""Per-sample records of an evaluation (samples.jsonl), resuming from them, and per-benchmark summaries.

A benchmark's folder holds `run.json` (what produced the records: model, prompt, generation
settings), `samples.jsonl` (one record per completion: problem id, sample index, prompt,
completion, extracted answer, verdict) and `summary.json`. A re-run with the same run.json
skips the problems already graded; a re-run with different settings is refused, so that
records of two different runs are never mixed.

Several processes may share one benchmark (a multi-GPU evaluation): shard s of n takes problems
s, s + n, s + 2n, ... and appends to `shards/<s>-of-<n>.jsonl`. A problem counts as graded
wherever its records are (a re-run with another number of shards redoes nothing), and once every
problem is graded the records are merged, in problem order, into samples.jsonl.
"""
from __future__ import annotations

import glob
import json
import os
import socket
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, TypeVar

from ..jsonl import read_jsonl
from .passk import mean_accuracy, mean_pass_at_k

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """This process's share of every benchmark: problems index, index + count, ... (0 of 1: all)."""
    index: int = 0
    count: int = 1

    def share(self, items: Sequence[T]) -> list[T]:
        return list(items[self.index::self.count])

    def records_path(self, folder: str) -> str:
        if self.count == 1:
            return os.path.join(folder, "samples.jsonl")
        return os.path.join(folder, "shards", f"{self.index}-of-{self.count}.jsonl")

    def __str__(self) -> str:
        return f"shard {self.index + 1} of {self.count}"


def record_files(folder: str) -> list[str]:
    """Every file of `folder` that may hold records: samples.jsonl, then the shards' files."""
    return [os.path.join(folder, "samples.jsonl"), *sorted(glob.glob(os.path.join(folder, "shards", "*.jsonl")))]


def open_run(folder: str, run_key: dict, num_samples: int, shard: Shard = Shard()) -> dict[str, list[dict]]:
    """Create `folder` for the run described by `run_key`, or reopen it: the records of the problems
    graded so far (all `num_samples` samples) in any of its record files, by problem id. A folder
    with records of a run with another key is refused (ValueError). What a killed run left
    half-written in this shard's file (a cut last line, a problem with only some of its samples)
    is dropped from it, so that problem is redone."""
    os.makedirs(folder, exist_ok=True)
    key_path, own_path = os.path.join(folder, "run.json"), shard.records_path(folder)
    done = graded_records(folder, num_samples, skip=own_path)
    own = complete_problems(read_records(own_path), num_samples)
    if os.path.exists(key_path):
        with open(key_path, encoding="utf-8") as f:
            previous = json.load(f)
        if previous != run_key and (done or own):
            changed = sorted(k for k in set(previous) | set(run_key) if previous.get(k) != run_key.get(k))
            raise ValueError(f"{folder} holds results of a different run (it differs in: {', '.join(changed)}); "
                             "use another output_dir or name, or delete the folder")
    write_atomic(key_path, json.dumps(run_key, indent=1, sort_keys=True))
    os.makedirs(os.path.dirname(own_path), exist_ok=True)
    write_atomic(own_path, "".join(_line(r) for records in own.values() for r in records))
    return {**done, **own}


def check_one_model(out_dir: str, model_path: str, model_fingerprint: str) -> None:
    """Refuse (ValueError) an eval folder `<output_dir>/<name>` whose benchmarks hold results of another model:
    its summary would list two models' benchmarks as one's (two checkpoints named `final`, say). Checked before
    any record is touched; a benchmark folder without a record does not count."""
    if not os.path.isdir(out_dir):
        return
    for benchmark in sorted(os.listdir(out_dir)):
        key_path = os.path.join(out_dir, benchmark, "run.json")
        if not os.path.isfile(key_path) or not _has_records(os.path.join(out_dir, benchmark)):
            continue
        with open(key_path, encoding="utf-8") as f:
            previous = json.load(f)
        if previous.get("model_fingerprint") != model_fingerprint:
            raise ValueError(f"{out_dir} holds {benchmark} results of another model ({previous.get('model')}, "
                             f"fingerprint {str(previous.get('model_fingerprint'))[:12]}) than model.path {model_path} "
                             f"({model_fingerprint[:12]}), and its summary would mix the two: set another name or "
                             "output_dir")


def _has_records(folder: str) -> bool:
    return any(name.endswith(".jsonl") and os.path.getsize(os.path.join(parent, name))
               for parent, _, names in os.walk(folder) for name in names)


def graded_records(folder: str, num_samples: int, skip: Optional[str] = None) -> dict[str, list[dict]]:
    """The complete problems' records over all of `folder`'s record files (but `skip`), first file first."""
    done: dict[str, list[dict]] = {}
    for path in record_files(folder):
        if path != skip:
            for problem_id, records in complete_problems(read_records(path), num_samples).items():
                done.setdefault(problem_id, records)
    return done


def merge_records(folder: str, problem_ids: list[str], num_samples: int) -> Optional[dict[str, list[dict]]]:
    """Once every problem of `problem_ids` is graded (in any record file): their records, in that
    order, with samples.jsonl rewritten to hold every graded problem in that order (then those of
    earlier runs); None while some are not. Several processes may call it at once: each writes the
    same file atomically."""
    done = graded_records(folder, num_samples)
    if any(problem_id not in done for problem_id in problem_ids):
        return None
    ordered = {problem_id: done[problem_id] for problem_id in problem_ids}
    if len(record_files(folder)) > 1:  # shards to merge
        rest = [records for problem_id, records in done.items() if problem_id not in ordered]
        write_atomic(os.path.join(folder, "samples.jsonl"),
                     "".join(_line(r) for records in [*ordered.values(), *rest] for r in records))
    return ordered


def complete_problems(by_problem: dict[str, list[dict]], num_samples: int) -> dict[str, list[dict]]:
    """The problems that have every sample index 0..num_samples-1 (the last record of each wins)."""
    complete = {}
    for problem_id, records in by_problem.items():
        by_index = {r["sample"]: r for r in records}
        if set(by_index) == set(range(num_samples)):
            complete[problem_id] = [by_index[i] for i in range(num_samples)]
    return complete


def read_records(path: str) -> dict[str, list[dict]]:
    """Records by problem id. A last line cut short by a crash is dropped (its problem is redone)."""
    by_problem: dict[str, list[dict]] = defaultdict(list)
    if not os.path.exists(path):
        return by_problem
    for record in read_jsonl(path):
        by_problem[record["id"]].append(record)
    return by_problem


def _line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"


def append_records(path: str, records: Iterable[dict]) -> None:
    """Append whole problems' records in one write, fsynced: a kill loses at most the chunk in flight."""
    payload = "".join(_line(r) for r in records).encode("utf-8")
    with open(path, "ab") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())


def write_atomic(path: str, text: str) -> None:
    """Replace `path` with `text` so that a reader (or a kill) never sees half a file. The temporary
    name is per host and process: several evaluation processes (a multi-node job) may write it at once."""
    partial = f"{path}.{socket.gethostname()}.{os.getpid()}.partial"
    with open(partial, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


def summarize(records_by_problem: dict[str, list[dict]], num_samples: int, pass_at: list[int]) -> dict:
    """Benchmark metrics from complete problems' records (each with `num_samples` records)."""
    counts = []
    reasons: Counter = Counter()
    num_truncated = num_tokens = 0
    for problem_id, records in records_by_problem.items():
        if len(records) != num_samples:
            raise ValueError(f"problem {problem_id} has {len(records)} records, expected {num_samples}")
        counts.append((num_samples, sum(bool(r["correct"]) for r in records)))
        reasons.update(r["reason"] for r in records)
        num_truncated += sum(r["finish_reason"] == "length" for r in records)
        num_tokens += sum(r["num_tokens"] for r in records)
    num_records = num_samples * len(counts)
    summary = {"num_problems": len(counts), "num_samples": num_samples,
               "accuracy": mean_accuracy(counts) if counts else None}  # avg@n; greedy with n=1: pass@1
    for k in pass_at:
        summary[f"pass@{k}"] = mean_pass_at_k(counts, k) if counts else None
    summary.update(truncated_fraction=num_truncated / num_records if num_records else None,
                   mean_completion_tokens=num_tokens / num_records if num_records else None,
                   verdict_reasons=dict(sorted(reasons.items())))
    return summary
