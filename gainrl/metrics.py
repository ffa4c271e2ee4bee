"""Rank-0 output: log lines, progress bars, the metrics.jsonl file; and a per-phase wall-time timer."""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from typing import Callable, Optional

from tqdm import tqdm

from .dist import get_rank, is_rank0


def silence_other_ranks() -> None:
    """Library progress bars and info logs only on rank 0."""
    if not is_rank0():
        import datasets
        import transformers
        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()
        transformers.logging.set_verbosity_error()


def log(message: str) -> None:
    if is_rank0():
        print(f"[gainrl {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def progress(total: int, desc: str, unit: str = "row") -> tqdm:
    """A progress bar with rate and ETA on rank 0 (throttled when the output is a log file)."""
    interactive = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, disable=get_rank() != 0, dynamic_ncols=interactive,
                mininterval=0.5 if interactive else 10.0, file=sys.stderr)


def read_jsonl(path: str) -> list[dict]:
    """A JSON Lines file's records. A torn last line (a run writing it now, or killed while writing it)
    is left out; a bad line before it is an error naming the line."""
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    records = []
    for k, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if k < len(lines) - 1:
                raise ValueError(f"{path}: line {k + 1} is not valid JSON") from None
    return records


class JsonLinesFile:
    """A JSON Lines file written by rank 0 only (e.g. `<run dir>/metrics.jsonl`), flushed after every record.

    `keep`: continue an existing file, keeping only its records for which keep(record) is true (a
    resumed run drops what the killed run logged after its checkpoint); None starts a new file."""

    def __init__(self, path: str, keep: Optional[Callable[[dict], bool]] = None):
        self.path = path
        self.file = None
        if is_rank0():
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            if keep is not None and os.path.exists(path):  # rewritten aside, then swapped in: a kill loses nothing
                kept = [record for record in read_jsonl(path) if keep(record)]
                with open(path + ".tmp", "w", encoding="utf-8") as f:
                    f.writelines(json.dumps(record) + "\n" for record in kept)
                os.replace(path + ".tmp", path)
            self.file = open(path, "a" if keep is not None else "w", encoding="utf-8")

    def write(self, record: dict) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


class PhaseTimer:
    """Wall time per named phase: `with timer("generate"): ...`; `timer.seconds` maps phase -> s."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start
