"""Tracker: TensorBoard scalars read back as logged, a resume hides the killed run's later points, W&B
offline runs keep their id across a resume, and a missing wandb package is a clear error."""
import glob
import math
import os
import struct
import subprocess
import sys
from dataclasses import dataclass

import pytest

from gainrl.tracking import WANDB_ID_FILE, Tracker, tag_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class LogConfig:  # the fields of gainrl.config.LogConfig that the Tracker reads
    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "gainrl-tests"
    wandb_mode: str = "offline"


def tensorboard_scalars(output_dir: str) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] as TensorBoard shows them (after its purge of restarted steps)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(os.path.join(output_dir, "tensorboard"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def record(step: int, reward: float) -> dict:
    return {"step": step, "epoch": 0, "mu": 12.5, "reward_mean": reward, "loss": float("nan"), "entropy_mean": None,
            "grad_norm": 3, "time_generate_s": 1.25, "elapsed_s": 10.0 * step, "note": "text", "indices": [1, 2]}


def test_tags_group_related_metrics():
    assert tag_for("time_generate_s") == "time/generate_s"
    assert tag_for("mu") == "curriculum/mu"
    assert tag_for("reward_mean") == "train/reward_mean"


def test_tensorboard_scalars_read_back(tmp_path):
    out = str(tmp_path)
    tracker = Tracker(out, LogConfig(), {"sampler": {"sigma": 30.0}}, resume_step=None)
    for step, reward in ((1, 0.25), (2, 0.5), (3, 0.75)):
        tracker.log(record(step, reward), step)
    tracker.close()
    scalars = tensorboard_scalars(out)
    assert sorted(scalars) == ["curriculum/epoch", "curriculum/mu", "time/elapsed_s", "time/generate_s",
                               "train/grad_norm", "train/loss", "train/reward_mean"]  # None, text, lists left out
    assert scalars["train/reward_mean"] == [(1, 0.25), (2, 0.5), (3, 0.75)]
    assert scalars["time/generate_s"] == [(1, 1.25), (2, 1.25), (3, 1.25)]
    assert scalars["train/grad_norm"] == [(1, 3.0), (2, 3.0), (3, 3.0)]
    assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3] and all(math.isnan(v) for _, v in scalars["train/loss"])
    assert not os.path.exists(os.path.join(out, "wandb"))  # W&B is off by default


def test_resume_hides_the_killed_runs_later_points_and_a_fresh_run_hides_all(tmp_path):
    out = str(tmp_path)
    killed = Tracker(out, LogConfig(), {}, resume_step=None)
    for step in range(1, 6):  # checkpoint at step 2, killed after step 5
        killed.log(record(step, step / 8), step)  # float32-exact values
    killed.close()
    resumed = Tracker(out, LogConfig(), {}, resume_step=2)
    for step in (3, 4):
        resumed.log(record(step, step), step)
    resumed.close()
    assert tensorboard_scalars(out)["train/reward_mean"] == [(1, 0.125), (2, 0.25), (3, 3.0), (4, 4.0)]
    again = Tracker(out, LogConfig(), {}, resume_step=None)  # started over in the same output_dir
    again.log(record(1, 0.5), 1)
    again.close()
    assert tensorboard_scalars(out)["train/reward_mean"] == [(1, 0.5)]


def wandb_records(path: str):
    """Decode an offline .wandb file: a LevelDB-style log (7-byte file header, 32 KiB blocks, each chunk
    crc32 / length / type, type 1 = a whole record, 2-4 = first / middle / last piece) of protobuf Records."""
    from wandb.proto import wandb_internal_pb2
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b":W&B"
    pos, block, pieces = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos: pos + 7])
        pieces += data[pos + 7: pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(pieces)
            pieces = b""
            yield rec


def wandb_history(run_dir: str) -> list[dict]:
    [path] = glob.glob(os.path.join(run_dir, "run-*.wandb"))
    history = []
    for rec in wandb_records(path):
        if rec.WhichOneof("record_type") == "history":
            items = {item.key or "/".join(item.nested_key): item.value_json for item in rec.history.item}
            history.append({key: value for key, value in items.items() if not key.startswith("_")})
    return history


def wandb_run_id(run_dir: str) -> str:
    [path] = glob.glob(os.path.join(run_dir, "run-*.wandb"))
    return next(rec.run.run_id for rec in wandb_records(path) if rec.WhichOneof("record_type") == "run")


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """W&B with no network and nothing written outside tmp_path."""
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return LogConfig(tensorboard=False, wandb=True)


def test_wandb_offline_run_and_resume_keep_the_id(tmp_path, offline_wandb):
    out = str(tmp_path / "run")
    first = Tracker(out, offline_wandb, {"sampler": {"sigma": 30.0}}, resume_step=None)
    for step in (1, 2):
        first.log(record(step, step / 4), step)
    first.close()
    with open(os.path.join(out, WANDB_ID_FILE)) as f:
        run_id = f.read().strip()
    [first_dir] = glob.glob(os.path.join(out, "wandb", f"offline-run-*-{run_id}"))
    history = wandb_history(first_dir)
    assert [(h["step"], h["train/reward_mean"], h["curriculum/mu"]) for h in history] == \
        [("1", "0.25", "12.5"), ("2", "0.5", "12.5")]
    assert "train/entropy_mean" not in history[0] and not os.path.exists(os.path.join(out, "tensorboard"))

    resumed = Tracker(out, offline_wandb, {}, resume_step=1)
    resumed.log(record(2, 0.75), 2)
    resumed.close()
    runs = sorted(glob.glob(os.path.join(out, "wandb", "offline-run-*")))
    assert len(runs) == 2 and [wandb_run_id(r) for r in runs] == [run_id, run_id]  # the same W&B run, continued
    resumed_dir = next(r for r in runs if r != first_dir)
    assert [(h["step"], h["train/reward_mean"]) for h in wandb_history(resumed_dir)] == [("2", "0.75")]

    fresh = Tracker(out, offline_wandb, {}, resume_step=None)  # a new run in the same folder: a new W&B run
    fresh.close()
    with open(os.path.join(out, WANDB_ID_FILE)) as f:
        assert f.read().strip() != run_id


def test_missing_wandb_names_the_key_and_the_extra(tmp_path):
    """Run where `import wandb` fails as it does when the package is absent (in a child process, so this
    one's imports stay as they are)."""
    script = f"""
import importlib.abc, sys
class NoWandb(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "wandb" or name.startswith("wandb."):
            raise ModuleNotFoundError("No module named 'wandb'", name="wandb")
sys.meta_path.insert(0, NoWandb())
sys.path.insert(0, "tests/unit")
from test_tracking import LogConfig
from gainrl.tracking import Tracker
try:
    Tracker({str(tmp_path / "run")!r}, LogConfig(tensorboard=True, wandb=True), {{}}, None)
except ValueError as e:
    print(e)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "config key 'log.wandb'" in done.stdout and "pip install -e .[wandb]" in done.stdout, done.stdout
    assert not os.path.exists(tmp_path / "run")  # failed before writing anything (no TensorBoard files either)
