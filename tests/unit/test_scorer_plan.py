"""Batch planning and sharding: every row once, budgets kept, balanced, deterministic."""
import random

import pytest

from gainrl.scorer import plan_batches, shard_batches


@pytest.mark.parametrize("budget", [1, 64, 500, 10_000])
def test_every_row_once_and_budget_kept(budget):
    rng = random.Random(0)
    lengths = [rng.randint(1, 300) for _ in range(1000)]
    batches = plan_batches(lengths, budget)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(lengths)))
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert longest == lengths[batch[0]]  # longest first
        assert len(batch) == 1 or longest * len(batch) <= budget


@pytest.mark.parametrize("world_size", [1, 2, 3, 8, 64])
def test_shards_cover_all_batches_and_balance_tokens(world_size):
    rng = random.Random(1)
    lengths = [rng.randint(20, 400) for _ in range(5000)]
    batches = plan_batches(lengths, 4096)
    shards = shard_batches(batches, lengths, world_size)
    assert len(shards) == world_size
    assert sorted(map(tuple, (b for s in shards for b in s))) == sorted(map(tuple, batches))
    loads = [sum(lengths[b[0]] * len(b) for b in s) for s in shards]
    assert max(loads) - min(loads) <= max(lengths[b[0]] * len(b) for b in batches)  # greedy bound
    assert shards == shard_batches(batches, lengths, world_size)  # same plan on every rank
