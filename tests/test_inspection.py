"""Prompt inspection: nearest tokens by cosine, the nearest-token prompt's metric, and prompt-to-prompt similarity."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import write_toy_csv
from suffixtune.backbone import load_backbone
from suffixtune.classifier import Classifier
from suffixtune.cli import main
from suffixtune.errors import ConfigError
from suffixtune.inspection import compare_prompts, inspect_prompt
from suffixtune.methods.soft_prompt import SoftPromptConfig
from suffixtune.tasks.data import custom_task
from suffixtune.training import DataArguments


def save_classifier(tiny_model_dir, tmp_path, name, method="suffix", prompt_ids=None, noise=0.0):
    train = write_toy_csv(tmp_path / "train.csv", rows=16)
    backbone, tokenizer = load_backbone(str(tiny_model_dir))
    config = SoftPromptConfig(prompt_length=len(prompt_ids)) if prompt_ids else None
    classifier = Classifier.build(backbone, tokenizer, custom_task(train, "text", None, "label", False), method, config)
    if prompt_ids:
        with torch.no_grad():
            vocabulary = backbone.get_input_embeddings().weight
            classifier.method.prompt.copy_(vocabulary[torch.tensor(prompt_ids)] + noise * torch.randn(len(prompt_ids), vocabulary.shape[1]))
    classifier.save_pretrained(tmp_path / name)
    return tmp_path / name, tokenizer


def test_a_prompt_of_token_embeddings_inspects_as_those_tokens(tiny_model_dir, tmp_path):
    ids = [1049, 922, 4633]  # " great", " good", " negative" in GPT-2's vocabulary
    directory, tokenizer = save_classifier(tiny_model_dir, tmp_path, "exact", prompt_ids=ids)
    validation = write_toy_csv(tmp_path / "validation.csv", rows=24, seed=1)
    inspection = inspect_prompt(directory, DataArguments(validation=str(validation)), top_k=2)
    assert [position[0]["token_id"] for position in inspection.nearest] == ids
    assert all(position[0]["cosine"] == pytest.approx(1.0, abs=1e-4) for position in inspection.nearest)
    assert all(position[0]["distance"] == pytest.approx(0.0, abs=1e-3) for position in inspection.nearest)
    assert all(position[0]["cosine"] > position[1]["cosine"] for position in inspection.nearest)
    assert inspection.nearest_prompt == tokenizer.decode(ids)
    assert inspection.hard_metrics["accuracy"] == inspection.soft_metrics["accuracy"] and inspection.metric_lost == 0


def test_compare_and_the_cli(tiny_model_dir, tmp_path, capsys):
    first, _ = save_classifier(tiny_model_dir, tmp_path, "first", prompt_ids=[1049, 922])
    torch.manual_seed(0)
    second, _ = save_classifier(tiny_model_dir, tmp_path, "second", prompt_ids=[922, 1049, 4633], noise=0.01)
    comparison = compare_prompts(first, second)
    assert len(comparison["cosine"]) == 2 and len(comparison["cosine"][0]) == 3
    assert comparison["cosine"][0][1] == pytest.approx(1.0, abs=0.01)  # " great" is position 0 of one, 1 of the other
    assert comparison["best_match_cosine"] == pytest.approx(1.0, abs=0.01)
    assert comparison["same_position_cosine"][0] < 0.9

    assert main(["inspect", str(first), "--compare", str(second), "--top-k", "1", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["nearest_prompt"] == " great good" and printed["compare"]["second"] == str(second)
    assert main(["inspect", str(first), "--top-k", "1"]) == 0
    assert "nearest-token prompt: ' great good'" in capsys.readouterr().out


def test_a_method_without_prompt_vectors_is_refused_by_name(tiny_model_dir, tmp_path, capsys):
    directory, _ = save_classifier(tiny_model_dir, tmp_path, "probe", method="head")
    with pytest.raises(ConfigError, match="method 'head' has no prompt vectors"):
        inspect_prompt(directory)
    assert main(["inspect", str(directory)]) == 2
    assert "inspect a run of prefix or suffix" in capsys.readouterr().err
