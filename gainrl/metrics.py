"""Rank-0 output: log lines, progress bars, the run's log files (RunLog); a per-phase wall-time timer."""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from typing import Callable, Optional

from tqdm import tqdm

from .dist import get_rank, is_rank0
from .jsonl import read_jsonl
from .metric_names import VALIDATION_ACCURACY
from .tracking import Tracker


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


class RunLog:
    """The run's output sinks, written by rank 0: run.json (what the plots need besides the metrics, and the
    config), metrics.jsonl (a record per step), draws.jsonl (what each epoch trained on), validation.jsonl
    (held-out accuracy) and the dashboards (tracking.Tracker).

    A run resumed from the checkpoint at (`resumed_step`, `resumed_epoch`, `epoch_started`: whether
    that epoch's draw had been made) keeps what the checkpoint covers and drops what the killed run
    logged after it; a fresh run (resumed_step None) starts new files."""

    def __init__(self, output_dir: str, log_cfg, run_file: dict, resumed_step: Optional[int] = None,
                 resumed_epoch: int = 0, epoch_started: bool = False):
        resumed = resumed_step is not None
        if is_rank0():
            os.makedirs(output_dir, exist_ok=True)
            with open(os.path.join(output_dir, "run.json"), "w", encoding="utf-8") as f:
                json.dump(run_file, f, indent=1)

        def keep(test: Callable[[dict], bool]) -> Optional[Callable[[dict], bool]]:
            return test if resumed else None

        self.tracker = Tracker(output_dir, log_cfg, run_file["config"], resume_step=resumed_step)
        self.metrics = JsonLinesFile(os.path.join(output_dir, "metrics.jsonl"),
                                     keep(lambda r: r["step"] <= resumed_step))
        self.draws = JsonLinesFile(os.path.join(output_dir, "draws.jsonl"),
                                   keep(lambda r: r["epoch"] < resumed_epoch + epoch_started))
        self.validation = JsonLinesFile(os.path.join(output_dir, "validation.jsonl"),
                                        keep(lambda r: r["epoch"] <= resumed_epoch))

    def step(self, record: dict) -> None:
        self.metrics.write(record)
        self.tracker.log(record, record["step"])

    def draw(self, epoch: int, mu: Optional[float], indices, positions, extra: Optional[dict] = None) -> None:
        """An epoch's draw: its row indices and their positions in the ordering, and `extra` facts of it
        (the sampler update that moved mu to it, rows the skip filter set aside)."""
        self.draws.write({"epoch": epoch, "mu": mu, "indices": [int(i) for i in indices],
                          "positions": None if positions is None else [int(p) for p in positions], **(extra or {})})

    def validated(self, record: dict) -> None:
        self.validation.write(record)
        self.tracker.log({VALIDATION_ACCURACY: record["accuracy"]}, record["step"])

    def close(self) -> None:
        for sink in (self.metrics, self.draws, self.validation, self.tracker):
            sink.close()


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
