"""GRPO math as pure tensor functions: group advantages, token log-probs and entropy, the policy loss, packing.

Nothing here touches torch.distributed or config objects: global quantities (the step's
total token or sequence count) come in as arguments, which is what lets a 2-rank loss be
tested against the 1-process one.
"""
from gainrl.algo.advantages import equal_reward_groups, group_advantages, group_reward_variance, wasted_group_fraction
from gainrl.algo.batching import (Sequences, logprob_gap, micro_batches, min_micro_batches, pack_sequences,
                                  padded_tokens, token_budget_micro_batches)
from gainrl.algo.logprobs import (align_to_scored, sequence_entropy, sequence_logprobs, token_entropy,
                                  token_logprobs)
from gainrl.algo.loss import AGGREGATIONS, STAT_KEYS, k3_kl, local_normalizer, policy_loss

__all__ = [
    "AGGREGATIONS", "STAT_KEYS", "Sequences", "align_to_scored", "equal_reward_groups", "group_advantages",
    "group_reward_variance", "k3_kl", "local_normalizer", "logprob_gap", "micro_batches", "min_micro_batches",
    "pack_sequences", "padded_tokens", "policy_loss", "sequence_entropy", "sequence_logprobs", "token_budget_micro_batches",
    "token_entropy", "token_logprobs", "wasted_group_fraction",
]
