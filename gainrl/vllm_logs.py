"""vLLM's log lines go to a file under the run's folder; the console keeps the first of each warning.

vLLM logs through the "vllm" logger with a stream handler of its own, which it configures when it is
imported and again whenever an engine is built. Left alone, three quarters of a CPU demo's console
were vLLM's: engine start-up lines and, at every weight push, "Failed to load weights" for the rotary
embedding and "Successfully reset prefix cache". `send_vllm_logs_to(folder)` writes a logging config
in the standard library's dictConfig schema and points VLLM_LOGGING_CONFIG_PATH at it, which vLLM
applies itself both times (no change to vLLM's code or objects): every record of INFO and up goes to
`<folder>/vllm.rank<R>.log`; rank 0's console gets each distinct warning or error once (another
rank's, errors only), with a pointer to the file. Call it before the first engine is built.
"""
from __future__ import annotations

import json
import logging
import os

from . import dist

CONFIG_ENV = "VLLM_LOGGING_CONFIG_PATH"
_WRITTEN: set[str] = set()  # the config files this process pointed CONFIG_ENV at (any other value is the user's)


class FirstOfEach(logging.Filter):
    """Lets a record through the first time its logger, level and message template are seen."""

    def __init__(self):
        super().__init__()
        self.seen: set[tuple] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def log_config(log_path: str, console_level: str) -> dict:
    """The dictConfig: vLLM's records to `log_path`, those of `console_level` and up once to stderr."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "file": {"format": "%(asctime)s %(levelname)s %(name)s [%(filename)s:%(lineno)d] %(message)s"},
            "console": {"format": f"[vllm %(levelname)s] %(message)s (repeats only in {log_path})"},
        },
        "filters": {"first_of_each": {"()": f"{__name__}.FirstOfEach"}},
        "handlers": {
            "file": {"class": "logging.FileHandler", "filename": log_path, "mode": "a", "level": "INFO",
                     "formatter": "file"},
            "console": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "level": console_level,
                        "filters": ["first_of_each"], "formatter": "console"},
        },
        "loggers": {"vllm": {"handlers": ["file", "console"], "level": "INFO", "propagate": False}},
    }


def send_vllm_logs_to(folder: str) -> str:
    """Route this process's vLLM logs to `folder`/vllm.rank<R>.log (created); returns the log's path. A user's
    own VLLM_LOGGING_CONFIG_PATH wins (nothing is changed then)."""
    if os.environ.get(CONFIG_ENV) and os.environ[CONFIG_ENV] not in _WRITTEN:
        return os.environ[CONFIG_ENV]
    os.makedirs(folder, exist_ok=True)
    rank = dist.get_rank()
    log_path = os.path.abspath(os.path.join(folder, f"vllm.rank{rank}.log"))
    config_path = log_path[:-len(".log")] + ".logging.json"
    with open(config_path, "w", encoding="utf-8") as f:
        json.dump(log_config(log_path, "WARNING" if rank == 0 else "ERROR"), f, indent=1)
    os.environ[CONFIG_ENV] = config_path
    _WRITTEN.add(config_path)
    return log_path
