"""Run by test_checkpoint_disk.py inside a user + mount namespace, with MOUNT a small tmpfs: save a
ZeRO-3 checkpoint, shrink the tmpfs to leave room for half of another, save again, and record what
happened (the error, the complete checkpoints, whether the first one still loads) in RESULT.json.

    unshare -Urm python tests/dist/disk_full_rank.py MODEL_DIR MOUNT RESULT.json
"""
import json
import os
import shutil
import subprocess
import sys


def main(model_dir: str, mount: str, result_path: str) -> None:
    from transformers import AutoTokenizer

    from gainrl import checkpoint, dist
    from gainrl.config import TrainRunConfig, load_config
    from gainrl.engine import build_policy

    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "gainrl-test", mount], check=True)
    cfg = load_config([f"model.path={model_dir}", "model.dtype=float32", "data.path=unused.jsonl"], TrainRunConfig)
    info = dist.init_distributed(120)
    policy = build_policy(cfg, info.device, gradient_accumulation_steps=1)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    run_dir = os.path.join(mount, "run")
    state = {"world_size": info.world_size}
    first = checkpoint.save(policy, tokenizer, run_dir, {**state, "step": 1}, keep=1)
    used = shutil.disk_usage(mount).used
    subprocess.run(["mount", "-o", f"remount,size={used + used // 2}", mount], check=True)
    error = None
    try:
        checkpoint.save(policy, tokenizer, run_dir, {**state, "step": 2}, keep=1)
    except RuntimeError as e:
        error = str(e)
    loaded = checkpoint.load(policy, checkpoint.find_resume_checkpoint("auto", run_dir))
    result = {"first": first, "checkpoint_bytes": used, "error": error,
              "complete": checkpoint.complete_checkpoints(run_dir), "loaded_step": loaded["step"],
              "folders": sorted(n for n in os.listdir(os.path.join(run_dir, checkpoint.CHECKPOINTS))
                          if n.startswith("step_"))}
    with open(result_path, "w") as f:
        json.dump(result, f)
    dist.shutdown()


if __name__ == "__main__":
    from gainrl.dist import exit_process
    main(*sys.argv[1:])
    exit_process(0)
