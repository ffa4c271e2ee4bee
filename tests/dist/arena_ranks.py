"""Run under torchrun by test_arena_dist.py: the training loop on 2 gloo ranks with the fakes of
tests/fakes.py at its boundaries (the real sampler, its rank-0 draws and extra draws, the outcome
gathering, the checkpoints and resume), for one curriculum: a whole run, then a run stopped mid-epoch and
resumed. Each rank writes the rows it generated for, per sampling call, in both.

    torchrun --standalone --nproc_per_node 2 tests/dist/arena_ranks.py MODEL_DIR OUT_DIR OVERRIDE...
"""
import json
import os
import sys

import torch

from gainrl import checkpoint, dist
from gainrl.config import DataConfig, TrainRunConfig, load_config
from gainrl.data import dataset_fingerprint, load_rows
from gainrl.models import load_tokenizer
from gainrl.prompts import PromptBuilder, build_prompts
from gainrl.sampler import build_sampler
from gainrl.trainer import Run, TrainData, restore, run_training
from tests.fakes import FakePolicy, FakeReward, FakeRollout
from tests.helpers import BUNDLED_ROWS

NUM_ROWS, GROUP_SIZE, STOP_AFTER = 24, 2, 3


def make_run(model_dir, out, overrides, on_generate=None):
    cfg = load_config([f"model.path={model_dir}", f"data.path={BUNDLED_ROWS}", f"train.output_dir={out}",
                       "sampler.prompts_per_epoch=8", "sampler.sigma=5", "sampler.n=2", "sampler.adj_max=8",
                       "train.prompts_per_step=4", f"grpo.group_size={GROUP_SIZE}", "train.micro_batch_size=2",
                       "train.epochs=3", "train.checkpoint_every=0", "train.keep_checkpoints=9",
                       "log.tensorboard=false", "log.plots=false", *overrides], TrainRunConfig)
    tokenizer = load_tokenizer(model_dir)
    rows = load_rows(DataConfig(path=BUNDLED_ROWS, limit=NUM_ROWS)).rows
    prompts = build_prompts(PromptBuilder(tokenizer, cfg.prompt), rows)
    columns = {"score": [float((7 * i) % NUM_ROWS) for i in range(NUM_ROWS)]}
    torch.manual_seed(cfg.seed + dist.get_rank())  # the ranks' rollouts differ, as real engines' do
    run = Run(cfg, TrainData(rows, prompts, dataset_fingerprint(rows)), tokenizer,
              build_sampler(cfg.sampler, columns, NUM_ROWS, seed=cfg.seed), FakePolicy(model_dir, []),
              None, FakeRollout([], on_generate), FakeReward(), tokenizer.pad_token_id)
    row_of = {tuple(p.input_ids): i for i, p in enumerate(prompts)}
    return run, row_of


def sampled_rows(run, row_of, when):
    """Per sampling call: (epoch, steps done, rows)."""
    return [[*at, [row_of[tuple(p)] for p in call]] for at, call in zip(when, run.rollout.sampled_prompts)]


def main(model_dir: str, out_dir: str, overrides: list[str]) -> None:
    dist.init_distributed(timeout_s=120)
    runs, when = [], {"whole": [], "first": [], "resumed": []}

    def recorder(name, stop=False):
        def on_generate(num_generates):  # where the loop stands at each sampling call
            state = runs[-1].state
            when[name].append((state.epoch, state.step))
            if stop and dist.is_rank0() and state.step == STOP_AFTER:  # honoured before this step's update
                open(os.path.join(out_dir, "parts", "STOP"), "w").close()
        return on_generate

    whole, row_of = make_run(model_dir, os.path.join(out_dir, "whole"), overrides, recorder("whole"))
    runs.append(whole)
    run_training(whole)
    first, _ = make_run(model_dir, os.path.join(out_dir, "parts"), overrides, recorder("first", stop=True))
    runs.append(first)
    stopped_at = run_training(first)["step"]
    resumed, _ = make_run(model_dir, os.path.join(out_dir, "parts"), overrides, recorder("resumed"))
    runs.append(resumed)
    restore(resumed, checkpoint.resume_point(resumed.cfg))
    run_training(resumed)
    with open(os.path.join(out_dir, f"rank-{dist.get_rank()}.json"), "w") as f:
        json.dump({"whole": sampled_rows(whole, row_of, when["whole"]), "stopped_at": stopped_at,
                   "parts": [call for call in sampled_rows(first, row_of, when["first"]) if call[1] < stopped_at]
                   + sampled_rows(resumed, row_of, when["resumed"]),  # the step stopped part-way is redone
                   "sampler": resumed.sampler.state_dict() if dist.is_rank0() else None,
                   "whole_sampler": whole.sampler.state_dict() if dist.is_rank0() else None}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
    dist.exit_process(0)
