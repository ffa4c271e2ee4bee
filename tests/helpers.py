"""Paths and small helpers shared by the tests."""
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared")
BUNDLED_ROWS = os.path.join(REPO, "gainrl", "assets", "gsm8k_train_512.jsonl")
