"""The offline tiny model: loads in transformers, reloads its tokenizer with the same ids."""
import json
import os

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from gainrl.config import TinyModelConfig
from gainrl.tiny_model import build_tiny_model, bundled_corpus, train_tokenizer


def test_tiny_model_size_and_forward(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    num_params = sum(p.numel() for p in model.parameters())
    assert 50_000 < num_params < 250_000  # ~100k-parameter test model
    assert model.config.model_type == "qwen2" and model.config.tie_word_embeddings
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tokenizer("Natalia sold 48 clips.", return_tensors="pt")["input_ids"]
    logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], model.config.vocab_size) and torch.isfinite(logits).all()


def test_reloaded_tokenizer_gives_the_trained_ids(tiny_model_dir):
    trained = train_tokenizer(bundled_corpus(), TinyModelConfig().tokenizer_vocab_size)
    reloaded = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert type(reloaded).__name__ == "Qwen2Tokenizer"
    texts = ["Weng earns $12 an hour; café 3,000.5 \\boxed{x}\n\n  tabs\tend", "<|im_start|>user\nhi<|im_end|>"]
    for text in texts:
        assert trained(text)["input_ids"] == reloaded(text)["input_ids"]
        assert reloaded.decode(reloaded(text)["input_ids"]) == text
    assert reloaded.chat_template and reloaded.eos_token == "<|im_end|>"


def test_sizes_are_parameters_and_building_is_deterministic(tmp_path):
    cfg = TinyModelConfig(hidden_size=64, num_layers=3, num_heads=2, num_kv_heads=2, intermediate_size=96,
                          tokenizer_vocab_size=512, model_vocab_size=4096, seed=7)
    a = build_tiny_model(str(tmp_path / "a"), cfg)
    b = build_tiny_model(str(tmp_path / "b"), cfg)
    config = json.load(open(os.path.join(a, "config.json")))
    assert (config["num_hidden_layers"], config["vocab_size"], config["intermediate_size"]) == (3, 4096, 96)
    wa = AutoModelForCausalLM.from_pretrained(a).state_dict()
    wb = AutoModelForCausalLM.from_pretrained(b).state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
