"""Bucket planning of the weight push (pure): sizes respected, vLLM layers and shared tensors kept together."""
from gainrl.rollout.weight_push import plan_buckets


def test_buckets_respect_size_and_keep_groups_together():
    sizes = [40, 10, 10, 10, 30, 30, 5, 0]
    keys = [("embed",), ("qkv",), ("qkv",), ("qkv",), ("o",), ("mlp",), ("norm",), ("embed",)]  # last: tied alias
    assert plan_buckets(sizes, keys, 50) == [[0, 7], [1, 2, 3], [4], [5, 6]]


def test_oversized_group_gets_its_own_bucket():
    assert plan_buckets([10, 100, 10], [("a",), ("b",), ("c",)], 50) == [[0], [1], [2]]


def test_entries_sharing_any_key_form_one_atom():
    # 0 and 2 share a tensor, 2 and 3 share a layer: 0, 2, 3 travel together, at 0's position
    keys = [("t0", "l0"), ("t1", "l1"), ("t0", "l2"), ("t3", "l2")]
    assert plan_buckets([1, 1, 1, 1], keys, 2) == [[0, 2, 3], [1]]
