"""Score files: one JSON per (model, layer, template, dataset), written atomically, and their reader.

A score file holds one column per quantity, one entry per row in the dataset's row order, and
metadata. Its kind (metadata "kind") says which columns it must have: an angle file (no kind, as
the scorer writes it) holds C_intra, C_inter, score, prompt tokens, flags and rank (0 = highest
score), with model path and fingerprint, layer, template hash, dataset fingerprint, w_inter,
package versions and a summary; a "pass_rate" file (gainrl.pass_rate) holds each row's pass rate
over sampled rollouts. The reader refuses a damaged file, or one whose dataset fingerprint
differs from the dataset it is used with, and says why.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .angles import FLAG_NO_PREFIX, FLAG_SHORT_QUESTION

FORMAT = "gainrl.scores/1"
COLUMNS = ("id", "c_intra", "c_inter", "score", "prompt_tokens", "num_p", "num_q", "flags", "rank")  # an angle file's
PASS_RATE_COLUMNS = ("id", "pass_rate", "num_correct", "num_samples", "prompt_tokens", "response_tokens")
KIND_COLUMNS = {"angle": COLUMNS, "pass_rate": PASS_RATE_COLUMNS}  # metadata "kind" -> required columns
MADE_BY = {"angle": "launchers/score.py", "pass_rate": "launchers/pass_rate.py"}  # what (re)computes a kind


def file_kind(metadata: dict) -> str:
    """A score file's kind: metadata "kind", or "angle" for a file without one (the scorer's)."""
    return metadata.get("kind", "angle")


@dataclass
class ScoreTable:
    path: str
    metadata: dict
    columns: dict  # name -> list, one entry per row, in the dataset's row order

    @property
    def num_rows(self) -> int:
        return len(self.columns["id"])

    def order(self) -> np.ndarray:
        """Row positions sorted by score, highest first (an angle file's rank column)."""
        return np.argsort(np.asarray(self.columns["rank"]), kind="stable")


def score_order(scores: np.ndarray) -> np.ndarray:
    """rank[i] = position of row i when rows are sorted by score, highest first (ties: row order)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def write_json_atomic(path: str, payload: dict) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, staging = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f, ensure_ascii=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(staging, path)
    except BaseException:
        if os.path.exists(staging):
            os.unlink(staging)
        raise


def write_score_file(path: str, metadata: dict, columns: dict) -> None:
    """Write a score file of metadata's kind (an angle file without a "kind"), checking its columns."""
    kind = file_kind(metadata)
    assert kind in KIND_COLUMNS, f"unknown score file kind {kind!r}"
    missing = [c for c in KIND_COLUMNS[kind] if c not in columns]
    assert not missing, f"score columns missing: {missing}"
    assert len({len(values) for values in columns.values()}) == 1, "score columns of different lengths"
    write_json_atomic(path, {"format": FORMAT, "metadata": metadata, "columns": columns})


def read_score_file(path: str, dataset_fingerprint: Optional[str] = None,
                    expect: Optional[dict] = None) -> ScoreTable:
    """Load a score file; refuse it if it was made for another dataset (or other `expect` metadata)."""
    if not os.path.isfile(path):
        raise ValueError(f"score file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            payload = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"score file {path} is not valid JSON ({e}); re-run the job that wrote it "
                         f"({' or '.join(MADE_BY.values())})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a gainrl score file (format {FORMAT})")
    metadata, columns = payload.get("metadata"), payload.get("columns")
    if not isinstance(metadata, dict) or not isinstance(columns, dict):
        raise ValueError(f"score file {path} is damaged: no metadata or columns")
    kind = file_kind(metadata)
    if kind not in KIND_COLUMNS:
        raise ValueError(f"score file {path} has kind {kind!r}; known kinds: {', '.join(KIND_COLUMNS)}")
    missing = [name for name in KIND_COLUMNS[kind] if not isinstance(columns.get(name), list)]
    if missing:
        raise ValueError(f"score file {path} is damaged: a {kind} file needs the columns {missing}; "
                         f"re-run {MADE_BY[kind]}")
    lengths = {name: len(columns[name]) for name in KIND_COLUMNS[kind]}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"score file {path} is damaged: column lengths {lengths}")
    if dataset_fingerprint is not None and metadata.get("dataset_fingerprint") != dataset_fingerprint:
        raise ValueError(
            f"score file {path} does not match the dataset in use: it was computed for "
            f"{metadata.get('dataset_rows')} rows of {metadata.get('dataset_source')} (fingerprint "
            f"{str(metadata.get('dataset_fingerprint'))[:12]}), the dataset in use has fingerprint "
            f"{dataset_fingerprint[:12]}. Rows were added, removed, reordered or edited: re-score with "
            f"{MADE_BY[kind]} using the same data settings.")
    for key, value in (expect or {}).items():
        if metadata.get(key) != value:
            raise ValueError(f"score file {path} was made with {key}={metadata.get(key)!r}, "
                             f"but {key}={value!r} is in use")
    return ScoreTable(path=path, metadata=metadata, columns=columns)


def load_reference_order(path: str) -> np.ndarray:
    """A published ordering: a permutation of row indices, highest score first (.pt or .json)."""
    if not os.path.isfile(path):
        raise ValueError(f"config key 'scorer.reference_order': file not found: {path}")
    if path.endswith(".pt"):
        import torch
        order = torch.load(path, weights_only=True).numpy()
    else:
        with open(path) as f:
            order = np.asarray(json.load(f))
    order = np.asarray(order, dtype=np.int64).reshape(-1)
    if not np.array_equal(np.sort(order), np.arange(len(order))):
        raise ValueError(f"{path}: not a permutation of 0..{len(order) - 1}")
    return order


def summarize(scores, prompt_tokens, flags, reference_positions=None) -> dict:
    """Score distribution, flagged rows, and rank correlations with prompt length and a
    published ordering (positions, 0 = highest; positive = the same order)."""
    from scipy.stats import spearmanr

    scores, flags = np.asarray(scores, dtype=np.float64), np.asarray(flags)
    levels = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
    summary = {
        "rows": int(len(scores)),
        "mean": float(scores.mean()),
        "std": float(scores.std()),
        "quantiles": {f"p{int(q * 100)}": float(v) for q, v in zip(levels, np.quantile(scores, levels))},
        "flagged_short_question": int(((flags & FLAG_SHORT_QUESTION) > 0).sum()),
        "flagged_no_prefix": int(((flags & FLAG_NO_PREFIX) > 0).sum()),
        "spearman_prompt_tokens": float(spearmanr(scores, prompt_tokens).statistic) if len(scores) > 2 else float("nan"),
    }
    if reference_positions is not None:
        summary["spearman_reference_order"] = float(spearmanr(score_order(scores), reference_positions).statistic)
    return summary


def format_summary(summary: dict) -> str:
    q = summary["quantiles"]
    lines = [f"rows {summary['rows']}  mean {summary['mean']:.4f}  std {summary['std']:.4f}",
             "quantiles  " + "  ".join(f"{k} {v:.4f}" for k, v in q.items()),
             f"flagged: |Q|<2 {summary['flagged_short_question']}, |P|=0 {summary['flagged_no_prefix']}",
             f"Spearman(score, prompt tokens) = {summary['spearman_prompt_tokens']:+.3f}"]
    if "spearman_reference_order" in summary:
        lines.append(f"Spearman(our order, reference order) = {summary['spearman_reference_order']:+.3f}")
    return "\n".join(lines)
