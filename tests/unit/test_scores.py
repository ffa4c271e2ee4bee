"""Score files: atomic write, round trip, refusal of a mismatched dataset; ranking and summary."""
import json
import os

import numpy as np
import pytest
from scipy.stats import spearmanr

from gainrl import scores


def columns(n=5):
    rng = np.random.default_rng(0)
    score = rng.normal(size=n)
    return {"id": [f"r{i}" for i in range(n)], "c_intra": list(score), "c_inter": [0.0] * n, "score": list(score),
            "prompt_tokens": list(range(10, 10 + n)), "num_p": [4] * n, "num_q": list(range(5, 5 + n)),
            "flags": [0] * n, "rank": scores.score_order(score).tolist()}


def test_round_trip_and_refusals(tmp_path):
    path = str(tmp_path / "s.scores.json")
    meta = {"dataset_fingerprint": "abc123", "dataset_rows": 5, "dataset_source": "d.jsonl", "layer": 3}
    scores.write_score_file(path, meta, columns())
    assert os.listdir(tmp_path) == ["s.scores.json"]  # no staging file left behind
    table = scores.read_score_file(path, "abc123", expect={"layer": 3})
    assert table.num_rows == 5 and table.metadata["layer"] == 3
    with pytest.raises(ValueError, match="does not match the dataset in use.*5 rows of d.jsonl"):
        scores.read_score_file(path, "other")
    with pytest.raises(ValueError, match="layer=3.*layer=4"):
        scores.read_score_file(path, "abc123", expect={"layer": 4})
    with pytest.raises(ValueError, match="not found"):
        scores.read_score_file(str(tmp_path / "absent.json"))
    (tmp_path / "torn.json").write_text(open(path).read()[:50])
    with pytest.raises(ValueError, match="not valid JSON"):
        scores.read_score_file(str(tmp_path / "torn.json"))
    (tmp_path / "binary.json").write_bytes(b'{"format": "\xff\xfe"}')
    with pytest.raises(ValueError, match=r"score file .*binary.json is not valid JSON \('utf-8' codec"):
        scores.read_score_file(str(tmp_path / "binary.json"))


def test_score_order_is_descending_with_stable_ties():
    s = np.array([0.1, 0.9, 0.5, 0.9, -1.0])
    rank = scores.score_order(s)
    assert rank.tolist() == [3, 0, 2, 1, 4]
    table = scores.ScoreTable(path="", metadata={}, columns={"rank": rank.tolist(), "id": list("abcde")})
    assert table.order().tolist() == [1, 3, 2, 0, 4]


def test_summary_correlations_match_scipy():
    rng = np.random.default_rng(1)
    s = rng.normal(size=200)
    tokens = (50 - 10 * s + rng.normal(size=200)).round()
    reference = scores.score_order(s + 0.1 * rng.normal(size=200))
    summary = scores.summarize(s, tokens, np.zeros(200, dtype=int), reference)
    assert summary["spearman_prompt_tokens"] == pytest.approx(spearmanr(s, tokens).statistic)
    assert summary["spearman_prompt_tokens"] < -0.9
    assert summary["spearman_reference_order"] > 0.9  # positions agree with our order
    assert summary["quantiles"]["p50"] == pytest.approx(np.median(s))


def test_reference_order_loading(tmp_path):
    import torch
    torch.save(torch.tensor([2, 0, 1]), tmp_path / "o.pt")
    (tmp_path / "o.json").write_text(json.dumps([2, 0, 1]))
    (tmp_path / "bad.json").write_text(json.dumps([2, 2, 1]))
    assert scores.load_reference_order(str(tmp_path / "o.pt")).tolist() == [2, 0, 1]
    assert scores.load_reference_order(str(tmp_path / "o.json")).tolist() == [2, 0, 1]
    with pytest.raises(ValueError, match="not a permutation"):
        scores.load_reference_order(str(tmp_path / "bad.json"))
