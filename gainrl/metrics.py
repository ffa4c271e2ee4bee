"""Rank-0 console output: log lines and progress bars (other ranks stay silent)."""
from __future__ import annotations

import sys
import time

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
