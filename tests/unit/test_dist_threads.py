"""dist.all_local_cores: rank 0 borrows the waiting local ranks' threads, and gives them back."""
import os

import torch

from gainrl import dist


def test_all_local_cores_multiplies_threads_by_local_ranks_and_restores(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with dist.all_local_cores():
            assert torch.get_num_threads() == min(os.cpu_count() or 1, 2)
        assert torch.get_num_threads() == 1
        try:
            with dist.all_local_cores():
                raise RuntimeError("a failed build")
        except RuntimeError:
            pass
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
