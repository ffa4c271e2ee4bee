"""Shared fixtures: a tiny model and tokenizer built offline once per session."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from gainrl.config import TinyModelConfig
    from gainrl.tiny_model import build_tiny_model
    return build_tiny_model(str(tmp_path_factory.mktemp("models") / "tiny"), TinyModelConfig())


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tiny_model_dir)
