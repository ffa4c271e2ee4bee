"""Rank 0 draws, every rank trains on its indices: 2 ranks with different seeds equal 1 process."""
import json
import os

from tests.dist.sampler_ranks import SIGNALS, make_sampler, seed_of_rank
from tests.helpers import REPO
from tests.launch import expect_ok, torchrun

SCRIPT = os.path.join(REPO, "tests", "dist", "sampler_ranks.py")


def test_every_rank_gets_rank0_draws(tmp_path):
    expect_ok(torchrun(SCRIPT, 2, str(tmp_path)), 120)
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]

    one_process = make_sampler(seed_of_rank(0))
    expected = []
    for acc, ang in SIGNALS:
        expected.append(one_process.draw().tolist())
        one_process.update(acc, ang)
    own_draws_of_rank1 = make_sampler(seed_of_rank(1)).draw().tolist()
    assert own_draws_of_rank1 != expected[0]  # rank 1 would have drawn otherwise: the broadcast matters

    assert ranks[0]["draws"] == expected and ranks[1]["draws"] == expected
    assert ranks[0]["state"] == json.loads(json.dumps(one_process.state_dict()))
    assert ranks[1]["state"]["mu"] == one_process.mu and ranks[1]["state"]["epoch"] == len(SIGNALS)
    untouched = json.loads(json.dumps(make_sampler(seed_of_rank(1)).state_dict()))["rng"]
    assert ranks[1]["state"]["rng"] == untouched  # rank 1 never drew: its RNG did not move
    for rank in ranks:  # the digest check the trainer runs each epoch stops every rank on a mismatch
        assert "ranks disagree on a rank-dependent array" in rank["mismatch_error"]
