"""Run by test_rank_errors_dist.py on 2 ranks (torchrun): one way a rank fails, through dist.run_entry_point.

    torchrun --standalone --nproc_per_node 2 tests/dist/failing_ranks.py MODE

MODE: `alone` (rank 1 raises a ValueError while rank 0 waits in a collective), `crash` (rank 1 raises a
RuntimeError there), `check` (every_rank_checks, failing on rank 1 only), `decide` (rank0_decides, failing
on rank 0), `ok` (no failure: both ranks reach shutdown).
"""
import sys

from gainrl import dist


def main(argv: list[str]) -> None:
    mode = argv[0]
    info = dist.init_distributed(60)
    if mode in ("alone", "crash") and info.rank == 1:
        if mode == "alone":
            raise ValueError("rank one's own cause")
        raise RuntimeError("rank one crashed")
    if mode == "check":
        def check():
            if dist.get_rank() == 1:
                raise ValueError("config key 'train.output_dir': cannot write in /nowhere")
        dist.every_rank_checks(check)
    if mode == "decide":
        def decide():
            raise ValueError("rank zero's verdict")
        dist.rank0_decides(decide)
    dist.all_gather(info.rank)  # where rank 0 waits when rank 1 has failed alone
    print(f"rank {info.rank} reached the end", flush=True)
    dist.shutdown()


if __name__ == "__main__":
    dist.run_entry_point(main, sys.argv[1:])
