"""Names of metrics.jsonl keys that are built from parts or read back by name: one place for both sides.

Counts are named num_*; a phase's wall time per step is time_<phase>_s.
"""
from __future__ import annotations

from typing import Optional

VALIDATION_ACCURACY = "validation_accuracy"
_PHASE_PREFIX, _PHASE_SUFFIX = "time_", "_s"


def phase_seconds_key(phase: str) -> str:
    """The key of one step phase's wall time: generate -> time_generate_s."""
    return f"{_PHASE_PREFIX}{phase}{_PHASE_SUFFIX}"


def phase_of(key: str) -> Optional[str]:
    """The phase whose wall time `key` holds (time_generate_s -> generate), or None for any other key."""
    if key.startswith(_PHASE_PREFIX) and key.endswith(_PHASE_SUFFIX) and len(key) > len(_PHASE_PREFIX + _PHASE_SUFFIX):
        return key[len(_PHASE_PREFIX):-len(_PHASE_SUFFIX)]
    return None
