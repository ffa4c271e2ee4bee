"""Every curriculum and filter of the arena on 2 ranks (fakes at the loop's boundaries, tests/dist/arena_ranks.py):
every rank trains on its share of rank 0's draw (and of dynamic sampling's extra draws), the ranks' rows
never overlap, and a run stopped mid-epoch and resumed draws exactly what the whole run drew."""
import json
import os

import pytest

from tests.helpers import REPO
from tests.launch import expect_ok, torchrun

SCRIPT = os.path.join(REPO, "tests", "dist", "arena_ranks.py")
CURRICULA = {
    "uniform": ["sampler.schedule=uniform"],
    "learnability": ["sampler.schedule=learnability"],
    "greso": ["sampler.schedule=uniform", "sampler.skip_zero_variance=true"],
    "dapo": ["sampler.schedule=gaussian", "sampler.order=score", "sampler.dynamic_sampling=true"],
    "gainrl_centred_rescore": ["sampler.order=score", "sampler.center_angle=true", "sampler.rescore_every_epochs=1"],
}


def jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("name", sorted(CURRICULA))
def test_ranks_share_rank0s_rows_and_a_resumed_run_draws_the_same(name, tmp_path, tiny_model_dir):
    expect_ok(torchrun(SCRIPT, 2, tiny_model_dir, str(tmp_path), *CURRICULA[name]), 300)
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    draws = jsonl(tmp_path / "whole" / "draws.jsonl")
    assert jsonl(tmp_path / "parts" / "draws.jsonl") == draws
    # the stop file appears while step 4 generates: it stops before that step's update, which the resumed run redoes
    assert ranks[0]["stopped_at"] == 3 and ranks[0]["sampler"] == ranks[0]["whole_sampler"]

    assert ranks[0]["whole"] == ranks[0]["parts"] and ranks[1]["whole"] == ranks[1]["parts"]
    for rank, calls in enumerate(ranks[r]["whole"] for r in (0, 1)):
        for epoch, draw in enumerate(draws):
            for step in range(2):  # 2 steps per epoch of 4 prompts: 2 per rank
                mine = [rows for e, done, rows in calls if e == epoch and done == 2 * epoch + step]
                assert mine[0] == draw["indices"][4 * step + 2 * rank: 4 * step + 2 * rank + 2]
                assert len(mine) == 1 or name == "dapo"  # only dynamic sampling samples again within a step
    for epoch in range(len(draws)):  # within an epoch no row is sampled twice, on any rank
        rows = [row for r in (0, 1) for e, _, call in ranks[r]["whole"] if e == epoch for row in call]
        assert len(rows) == len(set(rows)) and len(rows) >= 8
        assert name != "dapo" or epoch > 0 or len(rows) > 8  # random rewards: some groups are redrawn
