"""Periodic re-scoring (sampler.rescore_every_epochs): the angle ranking recomputed with the policy being
trained, so the curriculum walks the current model's order rather than the start model's.

The same prefill scoring as gainrl/scorer.py (batches by padded tokens, dealt over the ranks,
`score_batch`'s closed forms), run through the learner itself: its angle probe sits on the scorer's
layer (scorer.layer), so no second copy of the model is loaded. Under ZeRO-3 every rank runs the same
number of forwards (a one-token forward where a rank has no batch left). Every rank gets every row's
score and sets the same new ordering; mu keeps its position.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from . import angles, dist, metrics
from .scorer import plan_batches, score_batch, shard_batches


def policy_scores(policy, rows, prompts, pad_id: int, max_tokens: int, w_inter: float) -> np.ndarray:
    """Every rank: the combined angle score of every prompt under `policy` (its `hidden_at_layer`)."""
    lengths = [p.num_tokens for p in prompts]
    shards = shard_batches(plan_batches(lengths, max_tokens), lengths, dist.get_world_size())
    mine = shards[dist.get_rank()]
    found = {}
    policy.train(False)
    try:
        for step in range(max(len(s) for s in shards)):
            if step >= len(mine):  # ZeRO-3 gathers parameters collectively
                policy.hidden_at_layer(torch.full((1, 1), pad_id), torch.ones((1, 1), dtype=torch.long))
                continue
            batch = mine[step]
            for i, record in zip(batch, score_batch(policy, [rows[i] for i in batch], [prompts[i] for i in batch],
                                                    pad_id)):
                found[i] = (record["c_intra"], record["c_inter"])
    finally:
        policy.train(True)
    for part in dist.all_gather(found):
        found.update(part)
    c_intra, c_inter = (torch.tensor([found[i][k] for i in range(len(prompts))], dtype=torch.float64) for k in (0, 1))
    return angles.combined_score(c_intra, c_inter, w_inter).numpy()


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation of two score vectors (ties broken by row order)."""
    ranks = [np.argsort(np.argsort(x, kind="stable"), kind="stable").astype(np.float64) for x in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1]) if len(a) > 1 else 1.0


def rescore(run, epoch: int) -> float:
    """Re-rank run.data with the current policy and give the sampler the new ordering; returns the seconds."""
    start = time.perf_counter()
    cfg = run.cfg
    scores = policy_scores(run.policy, run.data.rows, run.data.prompts, run.pad_id, cfg.scorer.max_tokens_per_batch,
                           cfg.scorer.w_inter)
    previous = np.empty(len(scores))
    previous[run.sampler.ordering] = -np.arange(len(scores))  # higher = earlier, like a descending score
    ordering = np.argsort(-scores if cfg.sampler.descending else scores, kind="stable")
    agreement = spearman(scores if cfg.sampler.descending else -scores, previous)
    run.sampler.reorder(ordering)
    seconds = time.perf_counter() - start
    metrics.log(f"epoch {epoch}: re-scored {len(scores)} rows with the current policy in {seconds:.1f} s; "
                f"rank correlation with the previous ordering {agreement:.3f}")
    return seconds
