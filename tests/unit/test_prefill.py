"""The cut model: its captured MLP input equals a full model's; nothing after the hook exists."""
import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM

from gainrl.models import find_decoder_layers, find_mlp, resolve_layer
from gainrl.prefill import MlpInputCapture, load_prefill_model


def full_model_mlp_inputs(path, input_ids, attention_mask):
    """Every layer's MLP input from an uncut model, via forward pre-hooks (the brute-force way)."""
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    layers = find_decoder_layers(model, model.config.num_hidden_layers)
    captured = {}
    for i, layer in enumerate(layers):
        mlp = layer.get_submodule(find_mlp(layer, model.config.hidden_size, model.config.intermediate_size))
        mlp.register_forward_pre_hook(lambda m, args, i=i: captured.__setitem__(i, args[0]))
    with torch.no_grad():
        model(input_ids=input_ids, attention_mask=attention_mask)
    return captured


@pytest.mark.parametrize("layer", [-1, 0])
def test_cut_model_matches_full_model(tiny_model_dir, layer):
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, 1000, (3, 21), generator=g)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 15:] = 0  # right padding
    expected = full_model_mlp_inputs(tiny_model_dir, input_ids, attention_mask)
    cut = load_prefill_model(tiny_model_dir, layer, dtype="float32")
    hidden = cut.hidden_at_layer(input_ids, attention_mask)
    resolved = resolve_layer(layer, cut.num_layers)
    assert torch.allclose(hidden, expected[resolved], atol=1e-6)


def test_nothing_after_the_hook_is_built(tiny_model_dir):
    cut = load_prefill_model(tiny_model_dir, 0, dtype="float32")
    module = cut.module
    layers = find_decoder_layers(module, 1)
    assert len(layers) == 1  # later layers are not even loaded
    assert isinstance(layers[0].mlp, MlpInputCapture)  # the hooked MLP does not run
    assert not any(isinstance(m, nn.Linear) and m.out_features == module.config.vocab_size for m in module.modules())
    assert sum(isinstance(m, nn.Identity) for m in module.modules()) == 1  # the final norm
    assert cut.num_layers == 2 and cut.layer == 0


def test_layer_out_of_range_names_the_key(tiny_model_dir):
    with pytest.raises(ValueError, match="scorer.layer"):
        load_prefill_model(tiny_model_dir, 5)
    with pytest.raises(ValueError, match="model.path"):
        load_prefill_model(tiny_model_dir + "-absent", 0)
