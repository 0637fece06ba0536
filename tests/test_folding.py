"""Reparameterisations that train differently but save plain: the standardised head, the residual-MLP prompt."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import make_backbone, toy_task, write_toy_csv
from suffixtune.classifier import Classifier
from suffixtune.heads import LinearHead
from suffixtune.methods import get_method
from suffixtune.methods.soft_prompt import SoftPromptConfig
from suffixtune.training import DataArguments, MethodArguments, ModelArguments, TrainingArguments, train

TEXTS = ["a fine film", "dull and long", "the best thing all year", "I left early", "ok"]


def residual_mlp(embedding: torch.Tensor, mlp: torch.nn.Sequential) -> torch.Tensor:
    """E + W2 relu(W1 E + b1) + b2, written out: the prompt a --reparam method should read."""
    first, second = mlp[0], mlp[2]
    return embedding + torch.relu(embedding @ first.weight.T + first.bias) @ second.weight.T + second.bias


def features_with_a_massive_dimension(rows: int = 64, hidden: int = 32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(rows, hidden, generator=generator)
    features[:, 3] = 44.0 + 0.5 * torch.randn(rows, generator=generator)  # shared by every text, as in SmolLM2
    return features


def test_standardize_centres_and_scales_each_feature():
    features = features_with_a_massive_dimension()
    head = LinearHead(32, 2)
    head.standardize(features)
    reference = (features.numpy() - features.numpy().mean(0)) / features.numpy().std(0, ddof=1)
    seen = {}
    head.linear.register_forward_pre_hook(lambda module, inputs: seen.setdefault("x", inputs[0]))
    head(features)
    np.testing.assert_allclose(seen["x"].numpy(), reference, atol=1e-5)


def test_state_dict_holds_the_folded_plain_linear():
    features = features_with_a_massive_dimension()
    head = LinearHead(32, 3)
    head.standardize(features)
    torch.nn.init.normal_(head.linear.weight)
    torch.nn.init.normal_(head.linear.bias)
    mean, std = features.numpy().mean(0), features.numpy().std(0, ddof=1)
    weight, bias = head.linear.weight.detach().numpy(), head.linear.bias.detach().numpy()
    state = head.state_dict()
    assert set(state) == {"linear.weight", "linear.bias"}  # no statistics: the artifact is a plain Linear
    np.testing.assert_allclose(state["linear.weight"].numpy(), weight / std, rtol=1e-6)
    np.testing.assert_allclose(state["linear.bias"].numpy(), bias - (weight / std) @ mean, rtol=1e-5, atol=1e-5)
    plain = LinearHead(32, 3)
    plain.load_state_dict(state)
    torch.testing.assert_close(plain(features), head(features), atol=1e-4, rtol=1e-5)
    again = LinearHead(32, 3)
    again.standardize(features)
    again.load_state_dict(state)  # resuming a checkpoint: unfolded back to the standardised parameters
    torch.testing.assert_close(again.linear.weight, head.linear.weight, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again(features), head(features), atol=1e-4, rtol=1e-5)


def test_standardised_classifier_saves_and_loads_to_identical_logits(backbone, tmp_path):
    model, tokenizer = backbone
    classifier = Classifier.build(model, tokenizer, toy_task(2), "suffix", SoftPromptConfig(prompt_length=3))
    classifier.standardize_head(tokenizer(TEXTS).input_ids)
    torch.nn.init.normal_(classifier.head.linear.weight)
    before = classifier.predict_logits(TEXTS)
    classifier.save_pretrained(tmp_path)
    loaded = Classifier.from_pretrained(tmp_path, backbone=model, tokenizer=tokenizer)
    assert loaded.head.center is None  # served as a plain Linear
    torch.testing.assert_close(loaded.predict_logits(TEXTS), before, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_standardised_run_records_and_learns(tiny_model_dir, tmp_path):
    data = write_toy_csv(tmp_path / "train.csv", rows=64)
    output = tmp_path / "run"
    record = train(
        ModelArguments(model=str(tiny_model_dir)),
        DataArguments(train=str(data), validation=str(data), text_column="text"),
        MethodArguments(method="suffix", standardize="features"),
        SoftPromptConfig(prompt_length=2),
        TrainingArguments(output_dir=str(output), num_train_epochs=3, per_device_train_batch_size=8, learning_rate=1e-2,
                          disable_tqdm=True, save_strategy="no", load_best_model_at_end=False, logging_steps=4),
    )
    losses = [entry["loss"] for entry in record["train_log"]]
    assert losses[-1] < losses[0]
    assert record["config"]["method"]["standardize"] == "features"
    saved = json.loads((output / "suffixtune_config.json").read_text())
    loaded = Classifier.from_pretrained(output)
    assert loaded.head.center is None and saved["head"] == "linear"


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("method", ["suffix", "prefix", "suffix-lora"])
def test_reparameterised_prompt_folds_into_plain_vectors(tokenizer_dir, tmp_path, kind, method):
    model, tokenizer = make_backbone(kind, tokenizer_dir)
    config_class = get_method(method).config_class
    classifier = Classifier.build(model, tokenizer, toy_task(2), method, config_class(prompt_length=3, reparam=True, reparam_hidden_size=8))
    embedding = classifier.method.prompt.detach().clone()
    torch.testing.assert_close(classifier.method.prompt_vectors(), embedding)  # starts at the initial prompt
    torch.manual_seed(0)
    with torch.no_grad():
        for param in classifier.method.reparam.parameters():
            param.normal_(std=0.5)
    expected = residual_mlp(embedding, classifier.method.reparam)
    before = classifier.predict_logits(TEXTS)
    classifier.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "suffixtune_model.safetensors")
    assert not any("reparam" in name for name in saved)
    torch.testing.assert_close(saved["method.prompt"], expected, atol=1e-5, rtol=1e-5)
    fresh, tokenizer = make_backbone(kind, tokenizer_dir)
    loaded = Classifier.from_pretrained(tmp_path, backbone=fresh, tokenizer=tokenizer)
    torch.testing.assert_close(loaded.method.prompt_vectors(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loaded.predict_logits(TEXTS), before, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["suffix", "prefix"])
def test_a_folded_checkpoint_resumes_into_a_reparameterised_prompt(tokenizer_dir, tmp_path, method):
    model, tokenizer = make_backbone("gpt2", tokenizer_dir)
    config = get_method(method).config_class(prompt_length=3, reparam=True, reparam_hidden_size=8)
    trained, resumed = (Classifier.build(model, tokenizer, toy_task(2), method, config) for _ in range(2))
    torch.manual_seed(0)
    with torch.no_grad():
        for param in [*trained.method.reparam.parameters(), *resumed.method.reparam.parameters()]:
            param.normal_(std=0.5)
    expected = residual_mlp(trained.method.prompt.detach(), trained.method.reparam)
    resumed_first_layer = resumed.method.reparam[0].weight.detach().clone()
    trained.save_pretrained(tmp_path)  # a checkpoint holds the folded prompt, no MLP
    resumed.load_trained_weights(tmp_path)  # as a resumed run loads it: the MLP restarts at E + 0 = E
    torch.testing.assert_close(resumed.method.prompt_vectors(), expected, atol=1e-5, rtol=1e-5)
    assert torch.count_nonzero(resumed.method.reparam[2].weight) == 0 == torch.count_nonzero(resumed.method.reparam[2].bias)
    assert torch.equal(resumed.method.reparam[0].weight, resumed_first_layer)  # the hidden layer keeps its gradient path


def test_a_state_holding_the_mlp_itself_loads_it_unfolded(tokenizer_dir):
    model, tokenizer = make_backbone("gpt2", tokenizer_dir)
    config = SoftPromptConfig(prompt_length=3, reparam=True, reparam_hidden_size=8)
    trained, loaded = (Classifier.build(model, tokenizer, toy_task(2), "suffix", config) for _ in range(2))
    torch.manual_seed(0)
    with torch.no_grad():
        for param in trained.method.reparam.parameters():
            param.normal_(std=0.5)
    expected = residual_mlp(trained.method.prompt.detach(), trained.method.reparam)
    loaded.method.load_state_dict({name: p.detach() for name, p in trained.method.named_parameters()})
    assert torch.equal(loaded.method.reparam[2].weight, trained.method.reparam[2].weight)  # not reset to zero as for a folded state
    torch.testing.assert_close(loaded.method.prompt_vectors(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method,expected", [("suffix", "features"), ("suffix-lora", "features"), ("deep-prefix", "features"), ("prefix", "none"), ("head", "none")])
def test_standardize_defaults_to_where_it_was_measured(tiny_model_dir, tmp_path, method, expected):
    data = write_toy_csv(tmp_path / "train.csv", rows=16)
    record = train(
        ModelArguments(model=str(tiny_model_dir)),
        DataArguments(train=str(data), validation=str(data), text_column="text"),
        MethodArguments(method=method),
        get_method(method).config_class(),
        TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=1, per_device_train_batch_size=8, disable_tqdm=True,
                          save_strategy="no", load_best_model_at_end=False),
    )
    assert record["config"]["method"]["standardize"] == expected
