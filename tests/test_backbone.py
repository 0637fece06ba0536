"""Backbone loading: pad tokens without resizing, and the bundled SmolLM2 converted from its GGUF."""

import importlib.util

import pytest
import torch

from suffixtune import load_backbone


def test_pad_token_reuses_eos_without_resizing(tiny_model_dir):
    model, tokenizer = load_backbone(str(tiny_model_dir))
    assert tokenizer.pad_token == tokenizer.eos_token == "<|endoftext|>"
    assert model.config.pad_token_id == tokenizer.eos_token_id
    assert model.get_input_embeddings().num_embeddings == len(tokenizer) == 50257
    assert not any(p.requires_grad for p in model.parameters())
    assert not model.training


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="needs the gguf package (pip install suffixtune[smollm2])")
def test_bundled_smollm2_is_the_real_model():
    model, tokenizer = load_backbone("smollm2-135m")
    assert type(model).__name__ == "LlamaForCausalLM"
    assert (model.config.num_hidden_layers, model.config.hidden_size, model.config.num_key_value_heads) == (30, 576, 3)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert tokenizer.pad_token_id == 2
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        next_token = model(ids).logits[0, -1].softmax(-1)
    assert tokenizer.decode(next_token.argmax()) == " Paris"
    assert next_token.max() > 0.5


def test_unknown_model_is_a_clear_error(tmp_path):
    from suffixtune.errors import ConfigError

    with pytest.raises(ConfigError, match=r"cannot load model '.*no-such-model': it is not a local model directory"):
        load_backbone(str(tmp_path / "no-such-model"))


def test_a_model_error_is_one_line(monkeypatch):
    import suffixtune.backbone
    from suffixtune.errors import ConfigError

    def offline(*args, **kwargs):  # how transformers words a hub id it cannot fetch offline: two lines
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.\nCheck your internet connection.")

    monkeypatch.setattr(suffixtune.backbone.AutoTokenizer, "from_pretrained", offline)
    with pytest.raises(ConfigError) as caught:
        load_backbone("someone/no-such-model")
    assert str(caught.value).endswith("could not provide it (We couldn't connect to 'https://huggingface.co' to load the "
                                      "files. Check your internet connection.)")
