"""The benchmarks' mid-size random models: built once under runs/bench/, keyed by their shape."""
import argparse
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
from dataclasses import asdict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """The model-shape options (defaults: 8 layers, hidden 512, Qwen's 151936-row embedding and head)."""
    parser.add_argument("--num-layers", type=int, default=8)
    parser.add_argument("--hidden-size", type=int, default=512)
    parser.add_argument("--num-heads", type=int, default=8)
    parser.add_argument("--num-kv-heads", type=int, default=2)
    parser.add_argument("--intermediate-size", type=int, default=1408)
    parser.add_argument("--tokenizer-vocab-size", type=int, default=1024)
    parser.add_argument("--model-vocab-size", type=int, default=151936,
                        help="embedding/LM-head rows (Qwen's); 0 = the tokenizer's size")


def model_config(args):
    from gainrl.config import TinyModelConfig
    return TinyModelConfig(hidden_size=args.hidden_size, num_layers=args.num_layers, num_heads=args.num_heads,
                           num_kv_heads=args.num_kv_heads, intermediate_size=args.intermediate_size,
                           tokenizer_vocab_size=args.tokenizer_vocab_size,
                           model_vocab_size=args.model_vocab_size or None, seed=0)


def bench_model_path(args) -> str:
    cfg = model_config(args)
    name = (f"qwen2-L{cfg.num_layers}-h{cfg.hidden_size}-a{cfg.num_heads}kv{cfg.num_kv_heads}"
            f"-i{cfg.intermediate_size}-tok{cfg.tokenizer_vocab_size}-v{cfg.model_vocab_size}")
    return os.path.join(REPO, "runs", "bench", name)


def build_child(args_dict: dict) -> None:
    from gainrl.tiny_model import build_tiny_model
    args = argparse.Namespace(**args_dict)
    build_tiny_model(bench_model_path(args), model_config(args))


def ensure_model(args) -> str:
    """Build the model once, keyed by its configuration, in a spawned process so that the
    caller stays small (score_bench measures peak memory of its children)."""
    path = bench_model_path(args)
    marker = os.path.join(path, "gainrl_tiny.json")
    if os.path.isfile(marker):
        with open(marker) as f:
            if json.load(f) == asdict(model_config(args)):
                return path
    start = time.perf_counter()
    proc = mp.get_context("spawn").Process(target=build_child, args=(vars(args),))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"building {path} failed (exit code {proc.exitcode})")
    print(f"built {path} in {time.perf_counter() - start:.1f}s", flush=True)
    return path


def run_on_ranks(script: str, args, argv, rank_main) -> None:
    """The benchmark's entry point: under torchrun, `rank_main(args)` with one torch thread per rank;
    otherwise build the model once and exec torchrun with `args.nproc` ranks on `script` and `argv`."""
    if "LOCAL_RANK" in os.environ:
        import torch
        torch.set_num_threads(1)
        rank_main(args)
        return
    path = ensure_model(args)
    print(f"model {path}; relaunching under torchrun with {args.nproc} ranks", flush=True)
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), PYTHONUNBUFFERED="1")
    os.execve(torchrun, [torchrun, "--standalone", f"--nproc_per_node={args.nproc}", os.path.abspath(script),
                         *(argv if argv is not None else sys.argv[1:])], env)
