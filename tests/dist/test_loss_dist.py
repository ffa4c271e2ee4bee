"""The policy loss across processes: 2 ranks (1 or 2 micro-batches each) equal 1 process, loss and gradients."""
import pytest
import torch

from gainrl.algo import local_normalizer
from tests.dist.loss_ranks import ALL_ROWS, build_batch, build_model, loss_and_grads
from tests.launch import expect_ok, torchrun


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("loss") / "ranks.pt")
    expect_ok(torchrun("tests/dist/loss_ranks.py", 2, out), 120)
    return torch.load(out)


@pytest.mark.parametrize("num_micro_batches", [1, 2])
@pytest.mark.parametrize("aggregation", ["token", "sequence"])
def test_two_ranks_equal_one_process(two_rank_results, aggregation, num_micro_batches):
    model = build_model()
    batch = build_batch(model)
    normalizer = local_normalizer(batch["mask"], aggregation)
    loss, grads = loss_and_grads(model, batch, ALL_ROWS, normalizer, aggregation)
    ranks = two_rank_results[aggregation, num_micro_batches]
    assert sum(ranks["rank_counts"]) == normalizer
    if aggregation == "token":
        assert ranks["rank_counts"][0] != ranks["rank_counts"][1]  # the ranks' shares really are unequal
    assert ranks["loss"] == pytest.approx(loss, abs=1e-6)
    assert abs(loss) > 1e-3 and all(grad.abs().max() > 1e-4 for grad in grads)  # not a comparison of zeros
    for name, (ours, theirs) in zip([n for n, _ in model.named_parameters()], zip(grads, ranks["grads"])):
        torch.testing.assert_close(theirs, ours, atol=1e-6, rtol=0, msg=lambda m: f"{name}: {m}")
